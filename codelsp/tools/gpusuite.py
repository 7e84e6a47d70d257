"""The GPU benchmark of issue 21 in one rerunnable pass: `python -m codelsp.tools.gpusuite`.

One idempotent pass for a device call with a time budget (`--budget` seconds; no step starts
after it): every step is skipped when its result is already in the work folder (`--work`, kept
between calls while the machine stays warm), so a second call picks up where the first stopped.

1. `info`: the GPU (nvidia-smi), the CPU, Python, CUDA; after the build llama.cpp's devices.
2. `build` (not with `--no-build`): llama.cpp from `--src` (a .tar.xz/.tar.gz of its source: the
   GPU kit's llama-src.tar.xz, or an sdist's vendor/llama.cpp; or a folder) into WORK/src, with
   CUDA, as shared libraries for the Python binding (LLAMA_CPP_LIB_PATH) plus llama-server and
   llama-bench. `--no-build`: the installed llama-cpp-python, and llama-server/llama-bench where
   they are found (CODELSP_LLAMA_SERVER, codelsp's cache, PATH).
3. `models`: random-weight GGUFs of real shapes (codelsp/tools/shapes.py) with the tokenizer of
   `--vocab` (a GGUF or a .json.gz dump), written while the build runs.
4. Measurements, in priority order, each with its own time limit (`--only` picks some):
   bench-decode (llama-bench pp512/tg128 -ngl 99 -fa 1 on qwen7b and codellama7b), doctor,
   load-variants (codelsp/tools/loadcheck.py), editing-qwen7b (`codelsp bench --editing
   --llama-server --json`, both arms on the GPU), switching-codellama7b (`codelsp bench
   --switching --json`), decode-qwen7b and first-suggestion-qwen7b (codelsp/tools/gpumeasure.py).

Raw output of each step goes to OUT/<step>.txt, and OUT/summary.json names the GPU, the model
shapes and llama.cpp's build next to every result (rewritten after each step).

The device call, from the project root (the checkout is sent, ../shared is not: copy the GPU kit's
source tarball, site/ and vocabulary into the ignored folder .gpu/ first):

    mkdir -p .gpu && cp -r ../shared/gpu/site ../shared/gpu/llama-src.tar.xz ../shared/gpu/qwen-vocab.json.gz .gpu/
    run: carry [".gpu"], timeout_s 600, command
    PYTHONPATH=$PWD:$PWD/.gpu/site python3 -m codelsp.tools.gpusuite --src .gpu/llama-src.tar.xz \
        --vocab .gpu/qwen-vocab.json.gz --work /root/gw --out $OUT --budget 570
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent  # the project: what PYTHONPATH needs
TARGETS = ("llama", "llama-server", "llama-bench")


@dataclass
class Step:
    name: str
    need_s: int  # start only with this much budget left
    limit_s: int  # its own time limit
    argv: list[str]
    json_out: bool = False  # its stdout is one JSON object (the result); else parsed by name


class Suite:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.t0 = time.monotonic()
        self.work = Path(a.work).resolve()
        self.out = Path(a.out).resolve()
        self.res = self.work / "res"
        self.done = self.work / "done"
        for d in (self.work, self.out, self.res, self.done):
            d.mkdir(parents=True, exist_ok=True)
        self.models = self.work / "models"
        self.models.mkdir(exist_ok=True)
        self.bin = self.work / "src" / "build" / "bin"
        self.env = dict(os.environ)
        paths = [str(ROOT)] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        self.env["PYTHONUNBUFFERED"] = "1"
        if not a.no_build:
            self.env["LLAMA_CPP_LIB_PATH"] = str(self.bin)
            self.env["CODELSP_LLAMA_SERVER"] = str(self.bin / "llama-server")

    # --- bookkeeping ------------------------------------------------------------------
    def left(self) -> float:
        return self.a.budget - (time.monotonic() - self.t0)

    def log(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.0f}s] {msg}"
        print(line, flush=True)
        with open(self.res / "steps.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def save(self) -> None:
        for f in self.res.iterdir():
            if f.is_file():
                shutil.copy2(f, self.out / f.name)

    def run(self, name: str, argv: list[str], limit: float, cwd: Path | None = None) -> int | None:
        """Run `argv` with stdout+stderr into res/NAME.txt; its exit code, None on timeout."""
        self.log(f"run {name} (limit {limit:.0f} s): {' '.join(argv)[:300]}")
        t = time.monotonic()
        with open(self.res / f"{name}.txt", "w", encoding="utf-8") as f:
            try:
                rc: int | None = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=self.env, cwd=cwd,
                                                timeout=max(limit, 1), stdin=subprocess.DEVNULL).returncode
            except subprocess.TimeoutExpired:
                rc = None
            except OSError as exc:
                f.write(f"cannot run: {exc}\n")
                rc = 127
        self.log(f"{name}: {'timeout' if rc is None else f'rc={rc}'} after {time.monotonic() - t:.0f} s")
        return rc

    # --- steps ----------------------------------------------------------------------------
    def info(self) -> None:
        if (self.done / "info").exists():
            return
        lines = [f"python {platform.python_version()} ({sys.executable})", f"cpus {os.cpu_count()}"]
        for argv in (["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader"],
                     ["nvidia-smi"], ["nvcc", "--version"], ["lscpu"]):
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
                lines.append(f"$ {' '.join(argv)}\n{r.stdout.strip()}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                lines.append(f"$ {' '.join(argv)}\n(unavailable: {exc})")
        (self.res / "info.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.done / "info").touch()

    def start_models(self) -> subprocess.Popen | None:
        """Write the models not yet written, in the background; None when all are there."""
        todo = [s for s in self.a.shapes if not (self.models / f"{s}.gguf").exists()]
        if not todo:
            return None
        if not self.a.vocab:
            raise SystemExit("gpusuite: --vocab is needed to write the models " + ", ".join(todo))
        script = "; ".join(f"from codelsp.tools.shapes import main; main(['--shape', {s!r}, '--vocab', "
                           f"{str(self.a.vocab)!r}, '--out', {str(self.models / (s + '.gguf'))!r}])" for s in todo)
        self.log(f"writing models {', '.join(todo)} in the background")
        log = open(self.res / "models.txt", "a", encoding="utf-8")
        return subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def build(self) -> bool:
        if self.a.no_build:
            return True
        if all((self.bin / t).exists() for t in ("llama-server", "llama-bench")) and any(self.bin.glob("libllama.so*")):
            return True
        src = self.work / "src"
        if not (src / "CMakeLists.txt").exists():
            if not self.a.src:
                self.log("no llama.cpp built and no --src given")
                return False
            unpack(Path(self.a.src), src)
        if not (src / "build" / "build.ninja").exists() and not (src / "build" / "Makefile").exists():
            gen = ["-G", "Ninja"] if shutil.which("ninja") else []
            rc = self.run("cmake-configure", ["cmake", "-B", "build", *gen, *cmake_flags(self.a)],
                          min(120, self.left()), cwd=src)
            if rc != 0:
                return False
        rc = self.run("build", ["cmake", "--build", "build", "--target", *TARGETS, "-j", str(self.a.jobs)],
                      self.left() - 20, cwd=src)
        return rc == 0

    def steps(self) -> list[Step]:
        py = [sys.executable]
        main_model = str(self.models / f"{self.a.shapes[0]}.gguf")
        second = str(self.models / f"{self.a.shapes[1]}.gguf") if len(self.a.shapes) > 1 else main_model
        bench = str(self.bin / "llama-bench") if not self.a.no_build else shutil.which("llama-bench") or "llama-bench"
        models = ",".join(dict.fromkeys([main_model, second]))
        ngl = ["--n-gpu-layers", str(self.a.n_gpu_layers)] if self.a.n_gpu_layers is not None else []
        return [
            Step("bench-decode", 60, 240, [bench, "-m", models, "-ngl", "99", "-fa", "1", "-p", "512", "-n", "128",
                                           "-r", "3", "-o", "json"], json_out=True),
            Step("doctor", 30, 120, py + ["-m", "codelsp", "doctor", "--model", main_model, *ngl]),
            Step("load-variants", 60, 300, py + ["-m", "codelsp.tools.loadcheck", "--model", main_model,
                                                 "--timeout", str(self.a.variant_timeout), "--budget", "200",
                                                 "--levels", self.a.variant_levels,
                                                 "--json", str(self.res / "load-variants.json"),
                                                 "--gdb-out", str(self.res / "load-variants-gdb.txt")]),
            Step("editing", 150, 420, py + ["-m", "codelsp", "bench", "--editing", "--llama-server", "--json",
                                            "--model", main_model, *ngl], json_out=True),
            Step("switching", 120, 360, py + ["-m", "codelsp", "bench", "--switching", "--json", "--model", second, *ngl],
                 json_out=True),
            Step("decode", 60, 180, py + ["-m", "codelsp.tools.gpumeasure", "decode", "--model", main_model,
                                          "--tokens", "512", *ngl], json_out=True),
            Step("first-suggestion", 60, 180, py + ["-m", "codelsp.tools.gpumeasure", "first-suggestion",
                                                    "--model", main_model, "--file-tokens", "5000", *ngl],
                 json_out=True),
        ]

    def measure(self) -> None:
        for step in self.steps():
            if self.a.only and step.name not in self.a.only:
                continue
            if (self.done / step.name).exists():
                self.log(f"{step.name}: done in an earlier pass")
                continue
            if self.left() < step.need_s:
                self.log(f"skip {step.name}: {self.left():.0f} s left, it needs {step.need_s}")
                continue
            rc = self.run(step.name, step.argv, min(step.limit_s, self.left() - 5))
            ok = rc == 0 or (step.name == "load-variants" and (self.res / "load-variants.json").exists())
            if ok:
                (self.done / step.name).touch()
            self.summary()

    def summary(self) -> dict[str, Any]:
        s = summarize(self.res, self.a, self.models, self.done)
        (self.res / "summary.json").write_text(json.dumps(s, indent=2), encoding="utf-8")
        self.save()
        return s


def unpack(archive: Path, dest: Path) -> None:
    """llama.cpp's source into `dest`: from a folder, or a tarball whose llama.cpp tree is its
    top folder (the kit's) or `<top>/vendor/llama.cpp` (llama-cpp-python's sdist)."""
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    if archive.is_dir():
        shutil.copytree(archive, dest)
        return
    tmp.mkdir(parents=True)
    with tarfile.open(archive) as tf:
        tf.extractall(tmp, filter="data")
    tops = [p for p in tmp.iterdir() if p.is_dir()]
    candidates = list(tmp.glob("*/vendor/llama.cpp")) + tops + [tmp]
    root = next((c for c in candidates if (c / "CMakeLists.txt").exists() and (c / "ggml").is_dir()), None)
    if root is None:
        raise SystemExit(f"gpusuite: {archive} holds no llama.cpp source tree")
    os.replace(root, dest)
    shutil.rmtree(tmp, ignore_errors=True)


def cmake_flags(a: argparse.Namespace) -> list[str]:
    return ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={a.cuda_arch}", "-DGGML_CUDA_NCCL=OFF",
            "-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
            "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
            f"-DCMAKE_BUILD_TYPE={a.build_type}"]


def _json_of(path: Path) -> Any:
    """The JSON object (or list) in a step's output, past any log lines before it."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for start in [i for i, ch in enumerate(text) if ch in "{[" and (i == 0 or text[i - 1] == "\n")]:
        try:
            return json.loads(text[start:])
        except ValueError:
            continue
    return None


def summarize(res: Path, a: argparse.Namespace, models: Path, done: Path) -> dict[str, Any]:
    """What was measured so far, with the machine, the model shapes and llama.cpp's build."""
    from codelsp.tools.shapes import SHAPES

    info = (res / "info.txt").read_text(encoding="utf-8", errors="replace") if (res / "info.txt").exists() else ""
    lines = info.splitlines()
    query = next((i for i, ln in enumerate(lines) if ln.startswith("$ nvidia-smi --query")), None)
    gpu = lines[query + 1].strip() if query is not None and query + 1 < len(lines) else None
    gpu = None if not gpu or gpu.startswith("(") else gpu
    cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("Model name")), platform.processor())
    out: dict[str, Any] = {"machine": {"gpu": gpu, "cpu": cpu, "python": platform.python_version()},
                           "models": {}, "llama_cpp": {}, "results": {}, "done": sorted(p.name for p in done.iterdir())}
    for s in a.shapes:
        f = models / f"{s}.gguf"
        out["models"][s] = {"about": SHAPES[s].about, "file": str(f),
                            "bytes": f.stat().st_size if f.exists() else None, "weights": "Q4_0 (random)"}
    if a.src:
        out["llama_cpp"]["source"] = {"file": str(a.src), "sha256": _sha256(Path(a.src)) if Path(a.src).is_file() else None}
    out["llama_cpp"]["build"] = "installed llama-cpp-python" if a.no_build else f"CUDA sm_{a.cuda_arch}, {a.build_type}"
    bench = _json_of(res / "bench-decode.txt")
    if isinstance(bench, list) and bench:
        out["llama_cpp"].update({k: bench[0].get(k) for k in ("build_commit", "build_number", "gpu_info", "cpu_info", "backends")})
        out["results"]["llama_bench"] = [{"model": Path(r.get("model_filename", "")).name, "type": r.get("model_type"),
                                          "test": f"pp{r['n_prompt']}" if r.get("n_prompt") else f"tg{r.get('n_gen')}",
                                          "t_per_s": round(r.get("avg_ts", 0), 1), "stddev": round(r.get("stddev_ts", 0), 1)}
                                         for r in bench]
    doctor = res / "doctor.txt"
    if doctor.exists():
        keep = ("llama.cpp build", "GPU", "  GPU", "result", "  test run", "  memory", "  total")
        out["results"]["doctor"] = [ln for ln in doctor.read_text(errors="replace").splitlines() if ln.startswith(keep)]
    lv = _json_of(res / "load-variants.json")
    if isinstance(lv, dict):
        out["results"]["load_variants"] = [f"{r['variant']} ngl={r['gpu_layers']}: {r['result']}" for r in lv.get("rows", [])]
    for name in ("editing", "switching", "decode", "first-suggestion"):
        data = _json_of(res / f"{name}.txt")
        if isinstance(data, dict):
            if name == "editing":
                for arm in data.get("arms", []):
                    arm.pop("rows", None)
            out["results"][name] = data
    _targets(out)
    return out


def _targets(out: dict[str, Any]) -> None:
    """Issue 21's targets, where both sides were measured."""
    r, t = out["results"], {}
    tg = {(x["model"], x["test"]): x["t_per_s"] for x in r.get("llama_bench", [])}
    dec = r.get("decode")
    if dec:
        ref = tg.get((Path(dec["model"]).name, "tg128"))
        for label in ("greedy", "sampler"):
            rate = (dec.get(label) or {}).get("tokens_per_s")
            if ref and rate:
                t[f"decode_{label}_vs_tg128"] = {"value": round(rate / ref, 3), "target": ">= 0.9"}
    ed = r.get("editing")
    if ed and ed.get("arms"):
        c = ed["arms"][0]
        t["editing_p50_x_floor"] = {"value": c.get("p50_x_floor"), "target": "<= 1.2"}
        t["editing_p95_x_floor"] = {"value": c.get("p95_x_floor"), "target": "<= 3"}
        for k in ("llama_server_vs_codelsp_p50", "llama_server_vs_codelsp_p95"):
            if k in ed:
                t[k] = {"value": ed[k], "target": ">= 2"}
    sw = r.get("switching")
    if sw:
        t["switching_five_vs_one_p50"] = {"value": sw.get("five_vs_one_p50"), "target": "<= 1.2"}
    out["targets"] = t


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m codelsp.tools.gpusuite", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpusuite-out", help="results folder (default $OUT)")
    ap.add_argument("--work", default=str(Path.home() / "gw"), help="build, models and done-markers (default ~/gw)")
    ap.add_argument("--budget", type=float, default=560, help="start no step after this many seconds (default 560)")
    ap.add_argument("--src", help="llama.cpp source: .tar.xz/.tar.gz (the kit's, or an sdist) or a folder")
    ap.add_argument("--vocab", help="tokenizer for the models: a GGUF file or a .json.gz dump of its keys")
    ap.add_argument("--shapes", default="qwen7b,codellama7b",
                    help="models to write; the first is measured, the second gets --switching (default qwen7b,codellama7b)")
    ap.add_argument("--no-build", action="store_true", help="use the installed llama-cpp-python (no CUDA build)")
    ap.add_argument("--only", help="comma-separated steps: bench-decode, doctor, load-variants, editing, switching, "
                                   "decode, first-suggestion")
    ap.add_argument("--n-gpu-layers", type=int, help="passed to codelsp's steps (default: its own, every layer)")
    ap.add_argument("--variant-timeout", type=float, default=90, help="seconds per load variant (default 90)")
    ap.add_argument("--variant-levels", default="all,0", help="GPU layers for the load variants (default all,0)")
    ap.add_argument("--cuda-arch", default="90", help="CMAKE_CUDA_ARCHITECTURES (default 90: H100/H200)")
    ap.add_argument("--build-type", default="Release", help="CMAKE_BUILD_TYPE (RelWithDebInfo: names in backtraces)")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    a = ap.parse_args(argv)
    a.shapes = [s.strip() for s in a.shapes.split(",") if s.strip()]
    a.only = {s.strip() for s in a.only.split(",")} if a.only else None
    for p in ("src", "vocab"):
        if getattr(a, p):
            setattr(a, p, str(Path(getattr(a, p)).resolve()))
    suite = Suite(a)
    suite.log(f"start; budget {a.budget:.0f} s; work {suite.work}; out {suite.out}")
    suite.info()
    writer = suite.start_models()
    built = suite.build()
    if writer is not None:
        writer.wait()
    suite.summary()
    if not built:
        suite.log("llama.cpp is not built (see build.txt / cmake-configure.txt); the next pass goes on")
        return 3
    missing = [s for s in a.shapes if not (suite.models / f"{s}.gguf").exists()]
    if missing:
        suite.log(f"models not written: {', '.join(missing)} (see models.txt)")
        return 1
    suite.measure()
    s = suite.summary()
    suite.log("end; " + json.dumps(s.get("targets", {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
