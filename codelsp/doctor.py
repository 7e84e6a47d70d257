"""`codelsp doctor`: what a user needs to debug a setup, and exit 0 only when it works."""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any

from . import __version__
from .buildflags import AMX_FLAGS, cpu_flags, safe_cmake_args
from .modelfile import ModelError, check_model, kv_plan, resolve_model
from .settings import Settings

def system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()


def amx_risk(info: str | None = None, flags: set[str] | None = None) -> bool:
    """True when this llama.cpp build uses AMX on a CPU that has it: quantized models crash on
    some (virtualised) machines with a general protection fault in ggml_backend_amx_mul_mat."""
    info = system_info() if info is None else info
    flags = cpu_flags() if flags is None else flags
    return "AMX_INT8 = 1" in info and bool(flags & AMX_FLAGS)


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def run_doctor(args: argparse.Namespace, options: dict[str, Any]) -> int:
    ok = True
    settings, problems = Settings().merged(options, "command line")
    out = sys.stdout
    print(f"codelsp          {__version__}", file=out)
    print(f"python           {platform.python_version()} ({sys.executable})", file=out)
    try:
        import llama_cpp
    except ImportError as exc:
        print(f"llama-cpp-python NOT INSTALLED ({exc}); see the README's set-up command", file=out)
        return 1
    info_line = system_info()
    print(f"llama-cpp-python {llama_cpp.__version__}", file=out)
    print(f"llama.cpp build  {info_line}", file=out)
    gpu = bool(llama_cpp.llama_supports_gpu_offload())
    print(
        "GPU offload      "
        + ("yes (this build can offload layers to a GPU)" if gpu else
           "no: this llama-cpp-python build is CPU-only; reinstall it with CMAKE_ARGS=\"-DGGML_CUDA=on\" "
           "(NVIDIA) or \"-DGGML_METAL=on\" (macOS) to use a GPU"),
        file=out,
    )
    for p in problems:
        print(f"setting problem  {p}", file=out)
        ok = False

    try:
        path, is_demo = resolve_model(settings.model)
        info = check_model(path)
    except ModelError as exc:
        print(f"model            ERROR: {exc}", file=out)
        return 1
    print(f"model            {path}{' (embedded demo model)' if is_demo else ''}", file=out)
    print(f"  name           {info.name}", file=out)
    print(f"  architecture   {info.architecture}, {info.n_layers} layers, trained context {info.context_length}", file=out)
    print(f"  size           {_mib(info.file_size)}{', quantized' if info.quantized else ''}", file=out)
    print(f"  chat template  {'present' if info.has_chat_template else 'none (code actions use the Llama-2 [INST] format)'}", file=out)

    plan = kv_plan(info, settings)
    weights, one_ctx, with_cache = info.file_size, plan.bytes_per_slot, plan.total_bytes
    avail = available_memory()
    need = weights + with_cache
    fits = avail is None or need <= avail
    print(
        f"  memory         weights {_mib(weights)} + KV {_mib(one_ctx)} per {plan.context}-token context; "
        f"with the prompt cache {_mib(with_cache)}; total {_mib(need)}"
        + (f"; available {_mib(avail)}: {'fits' if fits else 'DOES NOT FIT'}" if avail else ""),
        file=out,
    )
    if not fits:
        ok = False
        print("                 lower --ctx / --prompt-cache-bytes or choose a smaller quantization", file=out)

    if info.quantized and amx_risk(info_line):
        print(
            "  WARNING        this llama.cpp build uses AMX and this CPU has AMX: on virtual machines "
            "quantized models crash (general protection fault in ggml_backend_amx_mul_mat).\n"
            "                 Rebuild llama-cpp-python without native AMX:\n"
            f"                 CMAKE_ARGS=\"{safe_cmake_args()}\" pip install --force-reinstall --no-cache-dir "
            "--no-binary llama-cpp-python llama-cpp-python",
            file=out,
        )
        print("result           NOT OK: the model would crash this build (model not loaded)", file=out)
        return 1

    from .engine import Engine
    from .llama import SamplerParams

    engine = Engine()
    try:
        model = engine.load(settings).future.result()

        def probe(job):
            fim = model.fim.describe()
            toks = model.tokenize("def hello():\n", True)
            bos = [model.fim.bos] if model.fim.bos is not None else []
            gen = model.generate("doctor", bos + toks, max_tokens=4, sampler=SamplerParams.from_settings(settings))
            return fim, gen, model.chat_template is not None

        fim, gen, has_template = engine.run_sync(probe)
        print(f"  FIM            {fim}", file=out)
        if not model.fim.has_fim:
            print("                 (completion still works by continuing the prefix; a FIM model such as "
                  "codellama-7b is much better)", file=out)
        print("  stop tokens    end-of-generation tokens of the vocabulary"
              + (f" + {sorted(model.fim.stop_ids)}" if model.fim.stop_ids else ""), file=out)
        print(f"  KV cache       {model.n_slots} document slot(s) of {settings.context_size} tokens, {_mib(model.kv_bytes)}", file=out)
        s = gen.stats
        rate = s.generated / (s.gen_ms / 1000) if s.gen_ms > 0 and s.generated else 0.0
        print(f"  test run       loaded in {model.load_ms:.0f} ms; {s.evaluated} prompt tokens in {s.prompt_ms:.0f} ms; "
              f"{s.generated} tokens generated ({rate:.1f} tok/s)", file=out)
    except ModelError as exc:
        print(f"model            ERROR: {exc}", file=out)
        return 1
    finally:
        engine.shutdown()
    print(f"result           {'OK' if ok else 'NOT OK (see above)'}", file=out)
    return 0 if ok else 1

