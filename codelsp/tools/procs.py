"""Processes the tools start (llama_cpp.server, llama-server) and must stop again."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a server we started; kill it if it has not gone after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
