"""`codelsp eval --compare-server`: the same tasks through llama.cpp's `llama-server` `/infill`,
asked the way llama.vim asks (see tools/eval.py)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

SERVER_CACHE = Path.home() / ".cache" / "codelsp" / "llama-server"


# --- llama-server, asked the llama.vim way ------------------------------------------------------

def find_server_bin(given: str | None) -> str | None:
    if given:
        return given if Path(given).is_file() else None
    found = sorted(glob.glob(str(SERVER_CACHE / "*" / "llama-server")), key=os.path.getmtime, reverse=True)
    found = [f for f in found if os.access(f, os.X_OK)]
    return found[0] if found else shutil.which("llama-server")


def llama_vim_request(task: Any, n_predict: int) -> dict[str, Any]:
    """llama.vim's /infill request for the cursor of `task` (n_prefix 256, n_suffix 64 lines)."""
    above = task.prompt.split("\n")[:-1]
    below = task.suffix.split("\n")
    if below and below[-1] == "":
        below = below[:-1]
    return {
        "input_prefix": "".join(ln + "\n" for ln in above[-256:]),
        "prompt": task.indent,
        "input_suffix": "" + "\n" + "\n".join(below[:64]) + "\n",
        "input_extra": [],
        "n_predict": n_predict,
        "n_indent": len(task.indent),
        "top_k": 40,
        "top_p": 0.90,
        "samplers": ["top_k", "top_p", "infill"],
        "stream": False,
        "cache_prompt": True,
        "seed": 42,
    }


def llama_vim_text(content: str) -> str:
    """What llama.vim inserts: the content without trailing blank lines; nothing if blank."""
    lines = content.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) if any(ln.strip() for ln in lines) else ""


def server_answers(binary: str, model: str, tasks: list[Any], options: dict[str, Any],
                   error: type[Exception]) -> Iterable[tuple[Any, str]]:
    """(task, what llama.vim inserts) for each task; `error` is raised with a one-line reason."""
    from codelsp.tools.llamaserver import llama_vim_command
    from codelsp.tools.procs import free_port, serving

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(llama_vim_command(binary, model, port, options), "llama-server", base + "/health", error=error):
        n_predict = 128  # llama.vim's default
        for task in tasks:
            body = json.dumps(llama_vim_request(task, n_predict)).encode()
            req = urllib.request.Request(base + "/infill", data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    content = json.loads(r.read()).get("content", "")
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise error(f"llama-server /infill failed: {exc}") from None
            yield task, llama_vim_text(content)
