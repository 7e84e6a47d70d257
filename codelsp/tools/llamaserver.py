"""Build and cache llama.cpp's own ``llama-server`` binary from llama-cpp-python's sdist.

The bench's llama.vim-style arm and the tests of the ``llama-server`` remote backend need the
server program of the same llama.cpp version as the installed Python binding. llama-cpp-python's
source distribution carries the whole llama.cpp tree (``vendor/llama.cpp``) with the server in it,
so we download that sdist (``pip download --no-deps --no-binary :all: llama-cpp-python==<v>``),
configure it with CMake (``-DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF``, tests/examples off, Release,
plus the AMX-safe flags of :mod:`codelsp.engine.buildflags`) and build only the ``llama-server``
target. About 10 minutes on 2 cores.

The binary is cached at ``$XDG_CACHE_HOME/codelsp/llama-server/<version>/llama-server`` (default
``~/.cache/...``); once it is there nothing is built again. A build is guarded by a lock file so
two callers (the bench and a test run) never build at once; the binary appears by atomic rename,
so a half-built file is never seen.

Run ``python -m codelsp.tools.llamaserver`` to build (if needed) and print the path;
``--path`` prints the path the binary has or would have without building; ``--version V``
builds another llama-cpp-python version.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any


class BuildError(RuntimeError):
    """The download or the build failed; the message says which step and why (one line)."""


def installed_version() -> str:
    """Version of the installed llama-cpp-python (``importlib.metadata``), e.g. ``"0.3.36"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError as e:
        raise BuildError("llama-cpp-python is not installed; pass --version") from e


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "codelsp" / "llama-server"


def binary_path(version: str | None = None) -> Path:
    """Where the cached binary of llama-cpp-python ``version`` (default: installed) lives."""
    return cache_root() / (version or installed_version()) / "llama-server"


def cached_binary(version: str | None = None) -> Path | None:
    """The cached binary if it is built already (also honours ``$CODELSP_LLAMA_SERVER``), else None."""
    env = os.environ.get("CODELSP_LLAMA_SERVER")
    if env and os.access(env, os.X_OK):
        return Path(env)
    try:
        p = binary_path(version)
    except BuildError:
        return None
    return p if os.access(p, os.X_OK) else None


N_BATCH = 512  # codelsp's batch and micro-batch (engine/llama.py N_BATCH): the anchor gets the same
ALL_LAYERS = 999  # llama-server's "every layer" (codelsp's nGpuLayers -1)


def llama_vim_command(binary: Path | str, model: str, port: int, opts: dict[str, Any]) -> list[str]:
    """`llama-server`'s command line as llama.vim's README starts it for infill: one slot,
    `--cache-reuse 256`, on 127.0.0.1:`port`, with the settings the codelsp arm of a comparison
    gets from the same `opts` (camelCase, defaults from codelsp.settings.Settings), so both run
    on the same device with the same memory layout:

    - `nGpuLayers`: -1 (the default) -> `-ngl 999` (every layer; a CPU-only build ignores it),
      N -> `-ngl N`, 0 -> `-ngl 0`;
    - `kvCacheType`: `-ctk`/`-ctv`, and `-fa on` for a quantized cache (llama.cpp quantizes the
      V cache only with flash attention; codelsp forces it there too, engine/llama.py);
    - `contextSize`, `nThreads` (default every core: `-t` and `-tb`), batch and micro-batch 512.
    """
    from codelsp.settings import Settings

    s, _problems = Settings().merged(opts, "llama-server")  # bad values: the defaults, as codelsp does
    threads = str(s.n_threads or os.cpu_count() or 1)
    ngl = ALL_LAYERS if s.n_gpu_layers < 0 else s.n_gpu_layers
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
           "-c", str(s.context_size), "-t", threads, "-tb", threads,
           "-b", str(N_BATCH), "-ub", str(N_BATCH), "-ngl", str(ngl),
           "-np", "1", "--cache-reuse", "256", "--no-warmup"]
    if s.kv_cache_type != "f16":
        cmd += ["-ctk", s.kv_cache_type, "-ctv", s.kv_cache_type, "-fa", "on"]
    return cmd


def _cmake_flags() -> list[str]:
    from codelsp.engine.buildflags import cmake_args

    return cmake_args().split()


def _run(cmd: list[str], cwd: Path | None, log, step: str) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    r = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise BuildError(f"{step} failed (exit {r.returncode}); see {log.name}")


def build(version: str | None = None, jobs: int = 2, quiet: bool = False) -> Path:
    """Return the path of an executable ``llama-server``, building it first if it is not cached.

    Errors: :class:`BuildError` with a one-line message (no network for the sdist, CMake or the
    compiler failing, with the log file's path). The build log stays next to the binary.
    """
    version = version or installed_version()
    target = binary_path(version)
    if os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / ".lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits for the first build
        if os.access(target, os.X_OK):
            return target
        log_path = target.parent / "build.log"
        with open(log_path, "w") as log, tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
            work = Path(tmp)
            if not quiet:
                print(f"building llama-server {version} (log: {log_path})", file=sys.stderr)
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                  "-d", str(work), f"llama-cpp-python=={version}"], None, log, "pip download")
            sdists = list(work.glob("llama_cpp_python-*.tar.gz"))
            if not sdists:
                raise BuildError(f"pip download gave no sdist; see {log_path}")
            with tarfile.open(sdists[0]) as tf:
                tf.extractall(work, filter="data")
            src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"), None)
            if src is None:
                raise BuildError("the sdist has no vendor/llama.cpp")
            _run(["cmake", "-B", "build", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF",
                  "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                  "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", *_cmake_flags()],
                 src, log, "cmake configure")
            _run(["cmake", "--build", "build", "--target", "llama-server", "-j", str(jobs)],
                 src, log, "cmake build")
            built = src / "build" / "bin" / "llama-server"
            if not built.exists():
                raise BuildError(f"the build made no build/bin/llama-server; see {log_path}")
            tmp_target = target.with_name(".llama-server.tmp")
            shutil.copy2(built, tmp_target)
            os.replace(tmp_target, target)
    return target


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m codelsp.tools.llamaserver",
                                 description="Build (once) and print the path of llama-server.")
    ap.add_argument("--version", help="llama-cpp-python version (default: the installed one)")
    ap.add_argument("--path", action="store_true", help="print the cache path; build nothing")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    try:
        if a.path:
            print(binary_path(a.version))
            return 0
        print(build(a.version, a.jobs))
    except BuildError as e:
        print(f"codelsp: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
