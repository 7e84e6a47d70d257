"""Which way of loading a model crashes: every load path of codelsp side by side, each in its own
process (issue 21 item 1).

On a CUDA build `codelsp complete`/`serve` died with SIGSEGV inside `llama_model_load_from_file`
while `codelsp doctor` loaded the same file, and a plain `llama_model_load_from_file` did too. This
runs each variant that separates those paths in a fresh `python -X faulthandler` process (so a
crash prints the Python frame it happened under and ends only that variant) with a time limit,
and prints a table variant -> ok / SIGSEGV / timeout / exit N. Every variant runs with all layers
on the GPU and, where marked, again with none (`gpu_layers=0`, `--n-gpu-layers 0`).

    python -m codelsp.tools.loadcheck --model qwen7b.gguf [--json out.json] [--timeout 120]

With `cuda-gdb` on PATH (the CUDA toolkit's debugger, which also debugs programs without GPU
code) the first variant that dies of a signal is run once more under it, and its native stack
(`bt`, every thread's top frames) is saved: `--gdb-out FILE`. On a CPU build every variant
should be ok; the test suite runs this on the CPU with a tiny model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALL = "all"  # every layer: 0x7FFFFFFF for the bindings (what codelsp passes for nGpuLayers -1)

# Snippets share a prelude that defines PATH (the model), NGL (layers for llama.cpp) and plain_load().
PRELUDE = r'''
import os, sys
PATH = os.environ["CODELSP_LOADCHECK_MODEL"]
NGL = int(os.environ["CODELSP_LOADCHECK_NGL"])
def plain_load():
    import llama_cpp
    p = llama_cpp.llama_model_default_params()
    p.n_gpu_layers = NGL
    m = llama_cpp.llama_model_load_from_file(PATH.encode(), p)
    assert m, "llama_model_load_from_file returned NULL"
    llama_cpp.llama_model_free(m)
def codelsp_load():
    from codelsp.engine.llama import load_model
    from codelsp.settings import Settings
    load_model(PATH, Settings(), gpu_layers=NGL).close()
'''


@dataclass(frozen=True)
class Variant:
    name: str
    what: str  # one line for the table
    code: str | None = None  # Python run after PRELUDE; None: `cmd` instead
    cmd: tuple[str, ...] = ()  # a codelsp command (after `python -m codelsp`); {model} {file} {ngl}
    at_zero: bool = False  # also run with no layers on the GPU


VARIANTS: tuple[Variant, ...] = (
    Variant("plain", "llama_model_load_from_file + llama_model_default_params", "plain_load()", at_zero=True),
    Variant("backend-init", "+ llama_backend_init() first",
            "import llama_cpp; llama_cpp.llama_backend_init(); plain_load()"),
    Variant("logger-error", "+ llama-cpp-python's logger at ERROR first (as codelsp)",
            "import logging; logging.getLogger('llama-cpp-python').setLevel(logging.ERROR); plain_load()"),
    Variant("logger-debug", "+ llama-cpp-python's logger at DEBUG (its callback prints every line)",
            "import logging; logging.getLogger('llama-cpp-python').setLevel(logging.DEBUG); plain_load()"),
    Variant("system-info", "+ llama_print_system_info() first (as doctor)",
            "import llama_cpp; llama_cpp.llama_print_system_info(); plain_load()"),
    Variant("device-probe", "+ ggml device probe first (memplan.probe_memory, as doctor)",
            "from codelsp.models.memplan import probe_memory; probe_memory(); plain_load()"),
    Variant("stdout-dup", "+ fd 1 pointed at stderr first (as complete/serve: cli._private_stdout)",
            "os.dup2(2, 1); plain_load()"),
    Variant("engine-imported", "+ numpy and codelsp.engine imported first",
            "import numpy, codelsp.engine.llama, codelsp.engine.worker; plain_load()"),
    Variant("codelsp-load", "codelsp load_model(path, Settings(), gpu_layers=N), main thread",
            "codelsp_load()", at_zero=True),
    Variant("codelsp-load-probed", "  the same after probe_memory()",
            "from codelsp.models.memplan import probe_memory; probe_memory(); codelsp_load()"),
    Variant("codelsp-load-sysinfo", "  the same after llama_print_system_info()",
            "import llama_cpp; llama_cpp.llama_print_system_info(); codelsp_load()"),
    Variant("codelsp-load-both", "  the same after both (doctor's order)",
            "import llama_cpp; llama_cpp.llama_print_system_info();"
            " from codelsp.models.memplan import probe_memory; probe_memory(); codelsp_load()"),
    Variant("engine-thread", "Engine().load(Settings(model=...)) in the engine thread (as every command)",
            "from codelsp.engine.worker import Engine; from codelsp.settings import Settings; e = Engine();"
            " s, _ = Settings().merged({'model': PATH, 'nGpuLayers': -1 if NGL >= 0x7FFFFFFF else NGL}, 'x');"
            " e.load(s).future.result(); e.shutdown()", at_zero=True),
    Variant("complete", "codelsp complete (whole command)",
            cmd=("complete", "{file}:2:5", "--model", "{model}", "--max-tokens", "4", "--n-gpu-layers", "{ngl}"),
            at_zero=True),
    Variant("doctor", "codelsp doctor (whole command)",
            cmd=("doctor", "--model", "{model}", "--n-gpu-layers", "{ngl}"), at_zero=True),
)


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _argv(v: Variant, ngl: str, model: str, file: str) -> list[str]:
    py = [sys.executable, "-X", "faulthandler"]
    if v.code is not None:
        return py + ["-c", PRELUDE + v.code]
    cli_ngl = "-1" if ngl == ALL else ngl
    return py + ["-m", "codelsp"] + [a.format(model=model, file=file, ngl=cli_ngl) for a in v.cmd]


def _env(model: str, ngl: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CODELSP_LOADCHECK_MODEL"] = model
    env["CODELSP_LOADCHECK_NGL"] = str(0x7FFFFFFF if ngl == ALL else int(ngl))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_one(v: Variant, ngl: str, model: str, file: str, timeout: float) -> dict[str, Any]:
    """Run variant `v` with `ngl` layers in its own process; its result row."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run(_argv(v, ngl, model, file), env=_env(model, ngl), capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL, errors="replace")
        rc, out = r.returncode, (r.stdout or "") + (r.stderr or "")
        result = "ok" if rc == 0 else _signal_name(rc) if rc < 0 else f"exit {rc}"
    except subprocess.TimeoutExpired as exc:
        rc, result = None, "timeout"
        out = ((exc.stdout or b"") + (exc.stderr or b"")).decode("utf-8", "replace") \
            if isinstance(exc.stdout or b"", bytes) else f"{exc.stdout or ''}{exc.stderr or ''}"
    tail = out.strip().splitlines()[-25:]
    return {"variant": v.name, "gpu_layers": ngl, "what": v.what, "result": result, "rc": rc,
            "seconds": round(time.perf_counter() - t0, 2), "tail": tail}


def gdb_backtrace(v: Variant, ngl: str, model: str, file: str, timeout: float) -> str | None:
    """The native stack of variant `v` under cuda-gdb, or None when cuda-gdb is not on PATH."""
    gdb = shutil.which("cuda-gdb") or shutil.which("gdb")
    if gdb is None:
        return None
    cmd = [gdb, "-batch", "-ex", "set pagination off", "-ex", "set print thread-events off",
           "-ex", "run", "-ex", "bt", "-ex", "info threads", "-ex", "thread apply all bt 12",
           "--args", *_argv(v, ngl, model, file)]
    try:
        r = subprocess.run(cmd, env=_env(model, ngl), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, errors="replace")
        return f"$ {' '.join(cmd[:12])} ...\n{r.stdout}\n{r.stderr}"
    except subprocess.TimeoutExpired:
        return f"{gdb}: no answer in {timeout:.0f} s"


def run_variants(model: str, *, timeout: float = 120, levels: tuple[str, ...] = (ALL, "0"),
                 only: set[str] | None = None, budget: float | None = None,
                 progress: Any = None, file: str | None = None) -> list[dict[str, Any]]:
    """Every variant (or those in `only`) at each of `levels` (ALL and/or a number of layers;
    0 only where the variant is marked for it), each in its own process. `budget`: seconds
    after which no new variant starts (those left get "skipped"). `file`: the source file
    `codelsp complete` completes in (default: a small one in a temporary folder)."""
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="codelsp-loadcheck-") as tmp:
        file = file or sample_file(tmp)
        for ngl in levels:
            for v in VARIANTS:
                if (only and v.name not in only) or (ngl != ALL and not v.at_zero):
                    continue
                if budget is not None and time.monotonic() - t0 > budget:
                    rows.append({"variant": v.name, "gpu_layers": ngl, "what": v.what, "result": "skipped",
                                 "rc": None, "seconds": 0.0, "tail": []})
                    continue
                row = run_one(v, ngl, model, file, timeout)
                rows.append(row)
                if progress is not None:
                    print(format_row(row), file=progress, flush=True)
    return rows


def sample_file(folder: str) -> str:
    """A small Python file to complete in (line 2, column 5: an empty function body)."""
    path = Path(folder) / "sample.py"
    path.write_text("def add(a, b):\n    \n\nprint(add(1, 2))\n", encoding="utf-8")
    return str(path)


def format_row(r: dict[str, Any]) -> str:
    return f"{r['variant']:<22} {str(r['gpu_layers']):>4} {r['result']:<9} {r['seconds']:>7.1f} s  {r['what']}"


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'variant':<22} {'ngl':>4} {'result':<9} {'time':>9}  what"
    return "\n".join([head, "-" * len(head)] + [format_row(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m codelsp.tools.loadcheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the GGUF file to load")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per variant (default 120)")
    ap.add_argument("--budget", type=float, help="start no variant after this many seconds")
    ap.add_argument("--levels", default=f"{ALL},0", help=f"GPU layers to try: {ALL!r} and/or numbers (default {ALL},0)")
    ap.add_argument("--only", help="comma-separated variant names")
    ap.add_argument("--json", metavar="FILE", help="write the rows (with each one's last output lines) here")
    ap.add_argument("--gdb-out", metavar="FILE", help="with cuda-gdb on PATH: the native stack of the first crash")
    ap.add_argument("--list", action="store_true", help="list the variants and exit")
    a = ap.parse_args(argv)
    if a.list:
        for v in VARIANTS:
            print(f"{v.name:<22} {v.what}")
        return 0
    levels = tuple(x.strip() for x in a.levels.split(",") if x.strip())
    only = {x.strip() for x in a.only.split(",")} if a.only else None
    print(f"loading {a.model} in {len(VARIANTS)} ways, each in its own process ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="codelsp-loadcheck-") as tmp:
        return _check(a, levels, only, sample_file(tmp))


def _check(a: argparse.Namespace, levels: tuple[str, ...], only: set[str] | None, file: str) -> int:
    rows = run_variants(a.model, timeout=a.timeout, levels=levels, only=only, budget=a.budget,
                        progress=sys.stderr, file=file)
    print(table(rows))
    crashed = [r for r in rows if r["result"] not in ("ok", "skipped")]
    for r in crashed:
        print(f"\n--- {r['variant']} (ngl {r['gpu_layers']}): {r['result']}; last lines:\n" + "\n".join(r["tail"]))
    report: dict[str, Any] = {"model": a.model, "rows": rows}
    first_signal = next((r for r in rows if r["result"].startswith("SIG")), None)
    if first_signal is not None and a.gdb_out:
        v = next(v for v in VARIANTS if v.name == first_signal["variant"])
        bt = gdb_backtrace(v, first_signal["gpu_layers"], a.model, file, max(a.timeout, 180))
        if bt is not None:
            Path(a.gdb_out).write_text(bt, encoding="utf-8")
            report["gdb"] = {"variant": v.name, "file": a.gdb_out}
            print(f"\nnative stack of {v.name} under a debugger: {a.gdb_out}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
