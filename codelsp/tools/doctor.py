"""`codelsp doctor`: what a user needs to debug a setup, and exit 0 only when it works."""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any

from codelsp import __version__
from codelsp.engine.buildflags import AMX_FLAGS, cpu_flags, safe_cmake_args
from codelsp.models import memplan
from codelsp.models.errors import ModelError
from codelsp.models.demo import DEMO
from codelsp.models.modelfile import check_model, resolve_models
from codelsp.settings import Settings

def system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()


def amx_risk(info: str | None = None, flags: set[str] | None = None) -> bool:
    """True when this llama.cpp build uses AMX on a CPU that has it: quantized models crash on
    some (virtualised) machines with a general protection fault in ggml_backend_amx_mul_mat."""
    info = system_info() if info is None else info
    flags = cpu_flags() if flags is None else flags
    return "AMX_INT8 = 1" in info and bool(flags & AMX_FLAGS)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


CPU_ONLY_HINT = (
    "no: this llama-cpp-python build is CPU-only; to use a GPU reinstall it with "
    "CMAKE_ARGS=\"-DGGML_CUDA=on\" (NVIDIA) or \"-DGGML_METAL=on\" (macOS), see the README's 'GPU builds'"
)


def describe_plan(p: memplan.MemPlan, out: Any) -> None:
    """The memory plan: where each model's layers go, and bytes for weights, KV, compute."""
    gib = memplan.gib
    for m in p.models:
        fp = m.fp
        label = "memory" if m.role == "model" else "instruct mem."
        kv = fp.kv
        pool = f"{kv.cells:,} cells of {kv.cache_type}, {kv.bytes_per_token:,} bytes per token" if kv else ""
        print(
            f"  {label:<15}weights {gib(fp.weights)} + KV {gib(fp.kv_bytes)} ({pool}) "
            f"+ compute {gib(fp.compute_bytes)} = {gib(m.total_bytes)}",
            file=out,
        )
        where = f"{m.describe_layers()}: GPU {gib(m.gpu_bytes)}, system {gib(m.cpu_bytes)}"
        print(f"{'':17}{where}" + (f" ({m.note})" if m.note else ""), file=out)
        if kv is not None:
            print(f"{'':17}" + describe_cache(kv, on_gpu=m.gpu_layers >= m.all_layers and m.gpu_bytes > 0), file=out)
    limit = p.ram_limit
    verdict = "fits" if p.fits and not p.swaps else "fits only with swap (slow)" if p.fits else "DOES NOT FIT"
    ram = f"; system memory available {gib(limit)}: {verdict}" if limit is not None else ""
    gpu = ""
    if p.memory.gpu_free is not None:
        gpu = f"; GPU free {gib(p.memory.gpu_free)}"
    print(
        f"  {'total':<15}{gib(p.total_bytes)}"
        + (" for both models" if len(p.models) > 1 else "")
        + f": GPU {gib(p.gpu_bytes)}, system {gib(p.cpu_bytes)}{gpu}{ram}",
        file=out,
    )
    for problem in p.problems:
        print(f"{'':17}{problem}", file=out)


def describe_cache(kv, *, on_gpu: bool) -> str:
    """How many documents of a typical size (and of a full context) each tier of the prompt cache
    holds: the KV pool (on the GPU or in system memory) and the system-memory tier."""
    gib = memplan.gib
    if kv.n_seq <= 1:
        return f"prompt cache: none (one request at a time in {kv.cells:,} cells)" + (f"; {kv.note}" if kv.note else "")
    typical = memplan.TYPICAL_DOCUMENT_TOKENS
    in_kv, in_host = kv.documents(typical)
    full_kv, full_host = kv.documents(kv.context)
    where = "on the GPU" if on_gpu else "in the KV (system memory)"
    line = (f"prompt cache: {in_kv} documents of {typical:,} tokens {where} ({full_kv} of a full {kv.context:,}-token context)"
            f" + {in_host} in system memory ({full_host} full; hostCacheBytes {gib(kv.host_bytes)})")
    return line + (f"; {kv.note}" if kv.note else "")


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
    memory = memplan.probe_memory()
    print(
        "GPU offload      "
        + ("yes (this build can offload layers to a GPU)" if memory.gpu_offload else CPU_ONLY_HINT),
        file=out,
    )
    for line in memplan.describe_memory(memory):
        print(line, file=out)
    for p in problems:
        print(f"setting problem  {p}", file=out)
        ok = False

    try:
        paths = resolve_models(settings)
        info = check_model(paths.base)
        infos = [(info, False)]
        if paths.instruct is not None:
            infos.append((check_model(paths.instruct), True))
    except ModelError as exc:
        print(f"model            ERROR: {exc}", file=out)
        return 1
    for i, (minfo, instruct) in enumerate(infos):
        label = "instruct model" if instruct else "model"
        note = f" (embedded default model: {DEMO.describe()})" if paths.is_demo and not instruct else ""
        print(f"{label:<17}{minfo.path}{note}", file=out)
        print(f"  name           {minfo.name}", file=out)
        print(f"  architecture   {minfo.architecture}, {minfo.n_layers} layers, trained context {minfo.context_length}", file=out)
        print(f"  size           {_mib(minfo.file_size)}{', quantized' if minfo.quantized else ''}", file=out)
        print(f"  chat template  {'present' if minfo.has_chat_template else 'none (code actions use the Llama-2 [INST] format)'}", file=out)
    if paths.instruct is None and (settings.instruct_model or settings.instruct_hf_repo):
        print("instruct model   the base model (same file: one copy serves both)", file=out)

    plan = memplan.plan(infos, settings, memory)
    describe_plan(plan, out)
    if not plan.fits:
        print(f"result           NOT OK: {plan.error()} (model not loaded)", file=out)
        return 1

    if any(i.quantized for i, _ in infos) and amx_risk(info_line):
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

    from codelsp.engine.worker import Engine
    from codelsp.engine.generation import SamplerParams

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
        print(f"  KV cache       pool of {model.pool.cells:,} cells ({model.kv.cache_type}), {_mib(model.kv_bytes)}; "
              f"system-memory tier {_mib(model.kv.host_bytes)}", file=out)
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

