"""Processes the tools start (llama_cpp.server, llama-server) and must stop again."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Iterator


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a server we started; kill it if it has not gone after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for the server started next."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the process that started it dies, even
    by SIGKILL (prctl PR_SET_PDEATHSIG); elsewhere nothing."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `serving`'s finally: the server is stopped


@contextlib.contextmanager
def serving(cmd: list[str], name: str, health_url: str, *, error: type[Exception] = RuntimeError,
            timeout_s: float = 120) -> Iterator[None]:
    """Run the server `cmd` (its output to a temporary file) for the block, once GET `health_url`
    answers 200; stop it afterwards whatever happens (stop_process).

    Raises `error` with one line when the server exits first ("<name> exited with code N: <its
    last line of output>") or does not answer within `timeout_s` seconds. A SIGTERM to this
    process (called from the main thread) exits it through the block (SystemExit 143), stopping
    the server; on Linux the server also gets SIGTERM when this process dies any other way.
    """
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
        previous = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    tail = log.read().decode("utf-8", "replace").strip().splitlines()[-1:] or ["(no output)"]
                    raise error(f"{name} exited with code {proc.returncode}: {tail[0]}")
                try:
                    with urllib.request.urlopen(health_url, timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, OSError):  # not listening yet; 503 while it loads
                    pass
                if time.monotonic() > deadline:
                    raise error(f"{name} did not start within {timeout_s:g} s")
                time.sleep(0.2)
            yield
        finally:
            stop_process(proc)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
