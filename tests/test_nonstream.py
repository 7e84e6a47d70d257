"""A 200 answer that is not a stream (issue 29, kind 1), through the real server.

Proxies, LM Studio or LiteLLM with streaming off, sign-in pages and servers that put their error
inside a 200 answer a `"stream": true` request with a body that is not server-sent events. A
JSON completion body is the answer; an error object, an HTML page or any other body inserts
nothing and is said once, in one line naming what came back and the URL. Both backends
(`openai`: /v1/completions, `llama-server`: /infill), both request kinds (inline, menu), and code
actions (chat). The fake backend is tests/fakeserver.py on 127.0.0.1.
"""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types

from support import complete_at, inline_at, lsp_server, open_doc
from fakeserver import FakeOpenAI, Reply, chat_chunk
from test_code_actions import STUB, by_command, code_actions, run_action

URI = "file:///w/even.py"
TEXT = "def is_even(n):\n    return \n"
LINE, COL = 1, 11  # after `return `
EXPECTED = "    return n % 2 == 0"
MODELS = [{"id": "bigcode/starcoder2-3b", "object": "model"}]
MUL_LINE = 9  # `return a * b` in STUB
SIGN_IN = ("<!DOCTYPE html>\n<html><head><title>Sign in - Corporate Proxy</title></head>\n"
           "<body><form action=\"/login\"><input name=\"user\"></form></body></html>\n")


def whole_answer(backend: str, text: str) -> dict:
    """The answer of a server with streaming off, as each backend sends it."""
    if backend == "llama-server":
        return {"content": text, "stop": True, "stop_type": "eos", "tokens_predicted": 7}
    return {"id": "cmpl-1", "object": "text_completion", "model": "bigcode/starcoder2-3b",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}


def args(srv: FakeOpenAI, backend: str) -> tuple[str, ...]:
    url = srv.url if backend == "openai" else srv.url.removesuffix("/v1")
    return ("--backend", backend, "--url", url)


def endpoint(srv: FakeOpenAI, backend: str) -> str:
    return srv.url + "/completions" if backend == "openai" else srv.url.removesuffix("/v1") + "/infill"


def apply(text: str, rng: types.Range, new: str) -> str:
    lines = text.split("\n")
    assert rng is not None and rng.start.line == rng.end.line
    line = lines[rng.start.line]
    lines[rng.start.line] = line[: rng.start.character] + new + line[rng.end.character:]
    return "\n".join(lines)


async def both_kinds(client, uri: str = URI) -> tuple[list, list]:
    inline = list((await inline_at(client, uri, LINE, COL)).items)
    menu = list((await complete_at(client, uri, LINE, COL)).items)
    return inline, menu


def shown(client, needle: str) -> list[str]:
    return [m.message for m in client.messages if needle in m.message]


BACKENDS = ["openai", "llama-server"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_json_body_instead_of_a_stream_is_the_answer(backend):
    with FakeOpenAI(completions=lambda body: Reply(body=whole_answer(backend, "n % 2 == 0")), models=MODELS) as srv:
        async with lsp_server(*args(srv, backend)) as (client, _):
            open_doc(client, URI, TEXT)
            inline, menu = await both_kinds(client)
            assert inline and menu, (inline, menu)
            assert apply(TEXT, inline[0].range, inline[0].insert_text).split("\n")[LINE] == EXPECTED
            edit = menu[0].text_edit
            assert apply(TEXT, edit.range, edit.new_text).split("\n")[LINE] == EXPECTED
            assert [m.message for m in client.messages] == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_html_page_in_a_200_inserts_nothing_and_is_said_once(backend):
    replies = {"now": Reply(body=SIGN_IN, content_type="text/html; charset=utf-8")}
    with FakeOpenAI(completions=lambda body: replies["now"], models=MODELS) as srv:
        async with lsp_server(*args(srv, backend)) as (client, _):
            open_doc(client, URI, TEXT)
            assert await both_kinds(client) == ([], [])
            assert await both_kinds(client) == ([], [])  # the next keystrokes: no second message
            await asyncio.sleep(0.2)
            messages = shown(client, "HTML")
            assert len(messages) == 1, client.messages
            assert "an HTML page (text/html)" in messages[0] and endpoint(srv, backend) in messages[0]
            assert "Sign in - Corporate Proxy" in messages[0] and "\n" not in messages[0]
            # working again, then the page again: said again
            replies["now"] = Reply(body=whole_answer(backend, "n % 2 == 0"))
            inline, _ = await both_kinds(client)
            assert apply(TEXT, inline[0].range, inline[0].insert_text).split("\n")[LINE] == EXPECTED
            replies["now"] = Reply(body=SIGN_IN, content_type="text/html")
            open_doc(client, "file:///w/other.py", TEXT)
            assert await both_kinds(client, "file:///w/other.py") == ([], [])
            await asyncio.sleep(0.2)
            assert len(shown(client, "HTML")) == 2


def error_in_json(body: dict) -> Reply:
    return Reply(body={"error": {"message": "model 'qwen-coder' is not loaded", "type": "invalid_request_error"}})


def error_in_sse(body: dict) -> Reply:
    return Reply([{"error": {"code": 500, "message": "model 'qwen-coder' is not loaded", "type": "server_error"}}])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("answer", [error_in_json, error_in_sse], ids=["json", "sse"])
async def test_an_error_object_inside_a_200_inserts_nothing_and_says_the_servers_words_once(backend, answer):
    with FakeOpenAI(completions=answer, models=MODELS) as srv:
        async with lsp_server(*args(srv, backend)) as (client, _):
            open_doc(client, URI, TEXT)
            assert await both_kinds(client) == ([], [])
            assert await both_kinds(client) == ([], [])
            await asyncio.sleep(0.2)
            messages = shown(client, "model 'qwen-coder' is not loaded")
            assert len(messages) == 1, client.messages


def plain_text(body: dict) -> Reply:
    return Reply(body="upstream connect error or disconnect/reset before headers\n", content_type="text/plain")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_any_other_body_in_a_200_names_its_type(backend):
    with FakeOpenAI(completions=plain_text, models=MODELS) as srv:
        async with lsp_server(*args(srv, backend)) as (client, _):
            open_doc(client, URI, TEXT)
            assert await both_kinds(client) == ([], [])
            await asyncio.sleep(0.2)
            messages = shown(client, "text/plain (upstream connect error")
            assert len(messages) == 1 and endpoint(srv, backend) in messages[0], client.messages


def chat_whole(body: dict) -> Reply:
    return Reply(body={"id": "chat-1", "object": "chat.completion",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "It multiplies a by b."}}],
                       "usage": {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}})


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_code_action_reads_a_whole_chat_answer_and_reports_an_html_one(backend):
    replies = {"now": chat_whole}
    with FakeOpenAI(chat=lambda body: replies["now"](body), models=MODELS) as srv:
        async with lsp_server(*args(srv, backend)) as (client, _):
            uri = "file:///w/stub.py"
            open_doc(client, uri, STUB)
            explain = by_command(await code_actions(client, uri, MUL_LINE, 4), "codelsp.explain")
            assert (await run_action(client, explain, insertComment=False)).markdown == "It multiplies a by b."
            replies["now"] = lambda body: Reply(body=SIGN_IN, content_type="text/html")
            result = await run_action(client, explain, insertComment=False)
            assert result.applied is False and result.markdown is None
            assert "an HTML page (text/html)" in result.message
            messages = shown(client, "HTML")
            assert len(messages) == 1 and messages[0].startswith("codelsp: Explain"), client.messages
            assert "/v1/chat/completions" in messages[0]


async def test_a_stream_sent_under_another_type_is_still_read_as_a_stream():
    # some proxies relabel the stream (text/plain): its `data:` lines are the answer
    def relabelled(body: dict) -> Reply:
        return Reply(["data: " + '{"choices": [{"index": 0, "text": "n % 2", "finish_reason": null}]}\n\n',
                      chat_chunk(), "data: " + '{"choices": [{"index": 0, "text": " == 0", "finish_reason": "stop"}]}\n\n'])

    with FakeOpenAI(completions=relabelled, models=MODELS) as srv:
        srv.stream_type = "text/plain"
        async with lsp_server(*args(srv, "openai")) as (client, _):
            open_doc(client, URI, TEXT)
            inline, _ = await both_kinds(client)
            assert inline and apply(TEXT, inline[0].range, inline[0].insert_text).split("\n")[LINE] == EXPECTED
