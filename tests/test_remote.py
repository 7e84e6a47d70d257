"""Remote backends: the real server against llama-cpp-python's own OpenAI-compatible server
(`python -m llama_cpp.server`, its `server` extra) on 127.0.0.1, serving generated models with a
known answer. The FIM prompt travels as text, so these answers only come out when codelsp writes
the family's layout with the right control-token texts and the server parses them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from lsprotocol import types

from support import complete_at, inline_at, lsp_server, open_doc, run_cli, stats
from codelsp.tools.procs import free_port, stop_process
from codelsp.tools.lspclient import as_dict

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python's server extra is not installed")

URI = "file:///work/add.py"
ADD = "def add(a, b):\n    \n"


class LlamaServer:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}/v1"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def llama_server(model: Path, *, alias: str | None = None, port: int | None = None, n_ctx: int = 2048,
                 api_key: str | None = None, log_dir: Path) -> Iterator[LlamaServer]:
    """`python -m llama_cpp.server` on 127.0.0.1, up and answering /v1/models."""
    port = port or free_port()
    log = log_dir / f"llama-server-{port}-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-u", "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "2"]
    if alias:
        cmd += ["--model_alias", alias]
    if api_key:
        cmd += ["--api_key", api_key]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LlamaServer(proc, port, log)
    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {server.output()[-2000:]}")
            try:
                urllib.request.urlopen(urllib.request.Request(server.url + "/models", headers=headers), timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("llama_cpp.server did not start")
        yield server
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def starcoder_server(model_factory, tmp_path_factory):
    """A StarCoder-layout model that answers only after <fim_middle> (anything else: ' WRONG'),
    served under a Hugging Face style name from which codelsp reads the family."""
    model = model_factory("starcoder")
    with llama_server(model.path, alias="bigcode/starcoder2-3b", log_dir=tmp_path_factory.mktemp("srv")) as srv:
        yield srv


@pytest.fixture(scope="module")
def codellama_server(model_factory, tmp_path_factory):
    """A Code Llama-layout model under a name that says nothing about its family."""
    model = model_factory("codellama", answer="urn a + b")
    with llama_server(model.path, alias="team-model", log_dir=tmp_path_factory.mktemp("srv")) as srv:
        yield srv


def remote(url: str, *extra: str) -> tuple[str, ...]:
    # a generous timeoutMs: on a busy machine the default 5 s could cut an answer short
    return ("--backend", "openai", "--url", url, "--timeout-ms", "60000", *extra)


async def wait_for(predicate, what: str, tries: int = 200) -> None:
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_completion_and_inline_completion_give_the_exact_answer_through_the_server(starcoder_server):
    async with lsp_server(*remote(starcoder_server.url)) as (client, _):
        open_doc(client, URI, ADD)
        result = await complete_at(client, URI, 1, 4)
        assert len(result.items) == 1
        edit = result.items[0].text_edit
        assert edit.new_text == "return a + b"
        assert edit.range == types.Range(start=types.Position(line=1, character=4), end=types.Position(line=1, character=4))
        inline = await inline_at(client, URI, 1, 4)
        assert [i.insert_text for i in inline.items] == ["return a + b"]
        # the family was read from the served model's name
        assert any("starcoder2-3b" in m.message and "FIM starcoder" in m.message for m in client.log_messages)


async def test_code_llama_spm_text_layout_and_the_word_before_the_cursor(codellama_server):
    async with lsp_server(*remote(codellama_server.url, "--fim-family", "codellama")) as (client, _):
        open_doc(client, URI, "def add(a, b):\n    ret\n")
        item = (await complete_at(client, URI, 1, 7)).items[0]
        assert item.text_edit.new_text == "return a + b"
        assert item.text_edit.range.start == types.Position(line=1, character=4)
        assert (await inline_at(client, URI, 1, 7)).items[0].insert_text == "urn a + b"


@pytest.mark.parametrize("encoding, column", [("utf-16", 17), ("utf-8", 20)])
async def test_positions_follow_the_negotiated_encoding(model_factory, tmp_path, encoding, column):
    model = model_factory("starcoder", answer="1)")
    with llama_server(model.path, alias="starcoder-test", log_dir=tmp_path) as srv:
        async with lsp_server(*remote(srv.url), encodings=[encoding]) as (client, init):
            assert init.capabilities.position_encoding == encoding
            open_doc(client, URI, 'x = f("é😀", ...,)\n')
            assert (await complete_at(client, URI, 0, column)).items[0].text_edit.new_text == "1"


async def test_settings_reach_the_server_and_results_are_cached(starcoder_server):
    async with lsp_server(*remote(starcoder_server.url), init_options={"maxTokens": 1}) as (client, _):
        open_doc(client, URI, ADD)
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return"
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"codelsp": {"maxTokens": 3}}))
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a +"
        # type-through is answered from codelsp's own suggestion cache, without the server
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=types.Position(line=1, character=4), end=types.Position(line=1, character=4)),
                text="re")]))
        assert (await inline_at(client, URI, 1, 6)).items[0].insert_text == "turn a +"
        assert as_dict((await stats(client, URI))["last"])["source"] == "typeThrough"


async def test_an_unknown_family_falls_back_to_the_prefix_and_says_how_to_fix_it(model_factory, tmp_path):
    model = model_factory("starcoder")  # answers only after <fim_middle>; otherwise " WRONG"
    with llama_server(model.path, alias="mystery-model", log_dir=tmp_path) as srv:
        async with lsp_server(*remote(srv.url)) as (client, _):
            open_doc(client, URI, ADD)
            # " WRONG" on an indentation-only line: the restated space is not inserted (issue 14, 5)
            assert (await inline_at(client, URI, 1, 4)).items[0].insert_text == "WRONG"
            assert any("mystery-model" in m.message and "fimTemplate" in m.message for m in client.log_messages)
        # the same server with the family named: the exact answer
        async with lsp_server(*remote(srv.url, "--fim-family", "starcoder")) as (client, _):
            open_doc(client, URI, ADD)
            assert (await inline_at(client, URI, 1, 4)).items[0].insert_text == "return a + b"


async def test_a_backend_that_is_down_is_reported_once_and_the_server_recovers(model_factory, tmp_path):
    model = model_factory("starcoder")
    port = free_port()  # nothing listens here yet
    url = f"http://127.0.0.1:{port}/v1"
    async with lsp_server(*remote(url)) as (client, _):
        open_doc(client, URI, ADD)
        assert list((await complete_at(client, URI, 1, 4)).items) == []
        assert list((await inline_at(client, URI, 1, 4)).items) == []
        await wait_for(lambda: client.messages, "a message to the user")
        down = [m for m in client.messages if "cannot reach" in m.message]
        assert len(down) == 1, [m.message for m in client.messages]
        assert url in down[0].message and "connection refused" in down[0].message
        assert down[0].type == types.MessageType.Error
        # the server keeps answering other requests
        assert (await stats(client))["totals"]
        # the backend comes up: the next completion works without restarting anything
        with llama_server(model.path, alias="starcoder-test", port=port, log_dir=tmp_path):
            assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a + b"


async def test_cancelling_a_request_closes_its_http_request_and_frees_the_engine(demo_model, tmp_path):
    # The demo model (real weights) writing a long list: the backend is still generating when
    # the client cancels. llama_cpp.server prints "Disconnected from client" when the
    # connection of a streaming request closes under it.
    counting = "numbers = [" + ", ".join(str(i) for i in range(1, 40)) + ","
    options = {"maxTokens": 1500, "timeoutMs": 120000, "fimTemplate": "none"}
    with llama_server(demo_model, alias="SmolLM2-135M", n_ctx=2048, log_dir=tmp_path) as srv:
        async with lsp_server(*remote(srv.url), init_options=options) as (client, _):
            uri = "file:///w/count.py"
            open_doc(client, uri, counting)
            params = types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=0, character=len(counting)),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
            )
            fut = client.protocol.send_request("textDocument/inlineCompletion", params, msg_id="long-1")
            await wait_for(lambda: "llama_perf" in srv.output() or "prompt eval" in srv.output() or
                           srv.output().count("POST /v1/completions") >= 1, "the backend to start", tries=600)
            await asyncio.sleep(1.0)  # generating by now
            client.protocol.notify("$/cancelRequest", types.CancelParams(id="long-1"))
            with pytest.raises(Exception):
                await asyncio.wait_for(asyncio.wrap_future(fut), 60)
            await wait_for(lambda: "Disconnected from client" in srv.output(), "the backend to see the connection close", tries=600)
            assert (await stats(client, uri))["totals"]
            assert as_dict((await stats(client, uri))["totals"])["cancelled"] == 1
            # the engine and the backend are free: a short request is answered in full
            client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"codelsp": {"maxTokens": 4}}))
            open_doc(client, "file:///w/short.py", "def add(a, b):\n    return a")
            result = await asyncio.wait_for(inline_at(client, "file:///w/short.py", 1, 12), 60)
            assert isinstance(result, types.InlineCompletionList)
            last = as_dict((await stats(client, "file:///w/short.py"))["last"])
            assert last["source"] == "model" and 0 < last["generated"] <= 4


def test_an_api_key_from_the_environment_is_sent(model_factory, tmp_path):
    model = model_factory("starcoder")
    src = tmp_path / "add.py"
    src.write_text(ADD)
    with llama_server(model.path, alias="starcoder-test", api_key="s3cret", log_dir=tmp_path) as srv:
        denied = run_cli("complete", f"{src}:2:5", *remote(srv.url))
        assert denied.returncode == 1 and "apiKey" in denied.stderr and "Traceback" not in denied.stderr
        ok = run_cli("complete", f"{src}:2:5", *remote(srv.url), env={"CODELSP_API_KEY": "s3cret"})
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == "return a + b\n"
        assert "s3cret" not in ok.stderr + denied.stderr


def test_complete_says_clearly_when_the_backend_is_down(tmp_path):
    src = tmp_path / "add.py"
    src.write_text(ADD)
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = run_cli("complete", f"{src}:2:5", *remote(url))
    assert proc.returncode == 1
    assert f"cannot reach the completion server at {url}: connection refused" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_bench_replays_against_a_remote_backend(model_factory, tmp_path):
    model = model_factory("codellama")
    with llama_server(model.path, alias="codellama-7b", n_ctx=4096, log_dir=tmp_path) as srv:
        proc = run_cli("bench", *remote(srv.url), "--keystrokes", "6", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    one = report["results"]["cached"][0]
    assert one["keystrokes"] == 3 and one["sources"].get("model", 0) + one["sources"].get("typeThrough", 0) == 3
    assert report["settings"]["backend"] == "openai"


def test_chat_for_code_actions_streams_from_chat_completions(starcoder_server):
    # The interface code actions use on a remote backend (instruct.py runs it off the engine
    # thread). The generated model answers a chat with " WRONG" (its default chain), token by token.
    import threading

    from codelsp.engine.generation import Cancelled
    from codelsp.engine.remote import RemoteModel
    from codelsp.settings import Settings

    model = RemoteModel(Settings(backend="openai", url=starcoder_server.url))
    counts: list[int] = []
    messages = [{"role": "system", "content": "You write code."}, {"role": "user", "content": "add two numbers"}]
    assert model.chat(messages, 16, threading.Event(), counts.append) == " WRONG"
    assert counts == list(range(1, len(counts) + 1)) and counts
    assert model.name == "bigcode/starcoder2-3b"  # discovered from /v1/models
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(Cancelled):
        model.chat(messages, 16, cancelled)
    model.close()


def test_bench_compare_server_replays_the_same_keystrokes_against_llama_cpp_server(model_factory):
    model = model_factory("codellama")
    proc = run_cli("bench", "--model", str(model.path), "--keystrokes", "4", "--compare-server", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    mine = dict(zip(("one document", "three documents"), report["results"]["cached"]))
    compare = report["compare_server"]
    assert compare["family"] == "codellama"
    assert [(r["order"], r["replay"]) for r in compare["rows"]] == [
        ("psm", "one document"), ("psm", "three documents"), ("spm", "one document"), ("spm", "three documents")]
    for row in compare["rows"]:
        ours = mine[row["replay"]]
        assert row["keystrokes"] == ours["keystrokes"] > 0  # the same keystrokes
        assert row["prompt_tokens_per_keystroke"] > 300  # the whole file, every keystroke
        assert row["codelsp_cached_speedup_p50"] == round(row["p50_ms"] / ours["p50_ms"], 2)


async def test_an_end_marker_written_as_plain_text_ends_the_completion_locally_as_remotely(model_factory, tmp_path):
    # The model writes StarCoder's `<file_sep>` as ordinary text tokens (`<`, `file`, `_`, `sep`,
    # `>`), not as its control token: the remote path stops there because it sends the family's
    # end texts as `stop`; the local engine must stop at the same texts.
    model = model_factory("starcoder", answer="return True<file_sep>")
    assert "<file_sep>" in model.completion and model.fim_ids.get("sep") is None
    async with lsp_server("--model", str(model.path), "--threads", "1") as (client, _):
        open_doc(client, URI, ADD)
        local = (await complete_at(client, URI, 1, 4)).items
    with llama_server(model.path, alias="bigcode/starcoder2-3b", log_dir=tmp_path) as srv:
        async with lsp_server(*remote(srv.url)) as (client, _):
            open_doc(client, URI, ADD)
            served = (await complete_at(client, URI, 1, 4)).items
    assert [i.text_edit.new_text for i in served] == ["return True"]
    assert [i.text_edit.new_text for i in local] == ["return True"]
