"""The `llama-server` remote backend against llama.cpp's own server program, built from the
llama.cpp sources inside llama-cpp-python's sdist (codelsp/tools/llamaserver.py caches it), on
generated models with a known answer. llama-server lays out the FIM prompt itself from /infill's
fields; the answers only come out when codelsp sends the right fields and reads the stream."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest
from lsprotocol import types

from support import complete_at, inline_at, lsp_server, open_doc, stats
from codelsp.tools.procs import free_port, serving
from codelsp.tools.llamaserver import build, cached_binary
from codelsp.tools.lspclient import as_dict

# CI (.ci/run) sets CODELSP_BUILD_LLAMA_SERVER=1: build it here once (about 10 minutes on 2 cores)
BINARY = cached_binary() or (build() if os.environ.get("CODELSP_BUILD_LLAMA_SERVER") == "1" else None)
pytestmark = pytest.mark.skipif(
    BINARY is None, reason="llama-server is not built: python -m codelsp.tools.llamaserver (about 10 minutes)")

URI = "file:///work/add.py"
ADD = "def add(a, b):\n    \n"


@contextlib.contextmanager
def llama_server(model: Path, *extra: str) -> Iterator[str]:
    """llama-server on 127.0.0.1, healthy; yields its root URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BINARY), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", "2048",
           "-t", "2", "-np", "1", "--no-warmup", *extra]
    with serving(cmd, "llama-server", url + "/health", timeout_s=60):
        yield url


def backend(url: str, *extra: str) -> tuple[str, ...]:
    return ("--backend", "llama-server", "--url", url, "--timeout-ms", "60000", *extra)


@pytest.mark.parametrize("family", ["starcoder", "qwen", "codellama"])
async def test_infill_gives_the_exact_answer(model_factory, family):
    # answers only right after the middle token, or anywhere for Code Llama ("auto" default):
    # an empty line head, so /infill's prompt ends with the middle token
    model = model_factory(family)
    with llama_server(model.path) as url:
        async with lsp_server(*backend(url)) as (client, _):
            open_doc(client, URI, ADD)
            item = (await complete_at(client, URI, 1, 4)).items[0]
            assert item.text_edit.new_text == "return a + b"
            assert (await inline_at(client, URI, 1, 4)).items[0].insert_text == "return a + b"


async def test_the_line_head_goes_in_the_prompt_field_and_typing_is_cheap(model_factory):
    """codelsp sends the text just before the cursor as /infill's `prompt`. The llama-server of
    llama-cpp-python 0.3.36's llama.cpp still evaluates the suffix again on each keystroke
    (measured: about 320 of 655 tokens here; the prompt field does not come after the suffix in
    its cached prompt), but keeps the prefix: a keystroke costs less than the first request, and
    the answer stays exact."""
    model = model_factory("qwen", default="answer")
    body = "".join(f"def helper_{i}(x):\n    return x * {i}\n\n" for i in range(20))
    doc = body + "def add(a, b):\n    \n" + body
    line = body.count("\n") + 1
    with llama_server(model.path) as url:
        async with lsp_server(*backend(url)) as (client, _):
            open_doc(client, URI, doc)
            assert (await inline_at(client, URI, line, 4)).items[0].insert_text == "return a + b"
            first = as_dict((await stats(client, URI))["last"])
            assert first["evaluated"] > 300
            for i, ch in enumerate("xq_z"):
                client.text_document_did_change(types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2 + i),
                    content_changes=[types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(line=line, character=4 + i),
                                          end=types.Position(line=line, character=4 + i)), text=ch)]))
                await inline_at(client, URI, line, 5 + i)
                last = as_dict((await stats(client, URI))["last"])
                assert last["source"] == "model" and last["reused"] > 300, last
                assert last["evaluated"] < first["evaluated"] * 0.6, (first, last)
