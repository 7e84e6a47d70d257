"""Remote backends that misbehave the way public bug reports describe, through the real server:
a small OpenAI-compatible server on 127.0.0.1 (fakeserver.py) sends late headers, error events
mid-stream, HTTP 400 for a system role, reasoning blocks and its own token counts."""

from __future__ import annotations

import asyncio

from lsprotocol import types

from support import complete_at, lsp_server, open_doc
from fakeserver import FakeOpenAI, Reply, chat_chunk, stream_text
from test_code_actions import STUB, STUB_LINE, by_command, code_actions, logs, open_and_pick, run_action

MUL_LINE = 9  # `return a * b` in STUB


def remote(url: str, *extra: str) -> tuple[str, ...]:
    return ("--backend", "openai", "--url", url, *extra)


def user_text(body: dict) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")


async def explain_markdown(client, uri: str = "file:///w/stub.py") -> str | None:
    """Explain `mul` of STUB with the panel flavour (no edit); the markdown it returns."""
    open_doc(client, uri, STUB)
    action = by_command(await code_actions(client, uri, MUL_LINE, 4), "codelsp.explain")
    return (await run_action(client, action, insertComment=False)).markdown


# --- 1: reasoning never reaches the document --------------------------------------------------

DRAFT = "```python\ndef add(a, b):\n    print('debug', a, b)\n    total = a + b\n    return total\n```"


def reasoning_chat(body: dict) -> Reply:
    if "Write the body" in user_text(body):
        # a server without a reasoning parser: the draft (the longest block) inside <think>
        text = f"<think>\nLet me draft it first.\n{DRAFT}\nThat works.\n</think>\n\n```python\nreturn a + b\n```"
        return Reply([chat_chunk(reasoning="Separate reasoning: ```python\nprint('x')\n```")] + stream_text(text))
    text = "<think>\nThe user wants an explanation. Draft: it prints.\n</think>\n\nIt multiplies a by b."
    return Reply(stream_text(text))


async def test_reasoning_blocks_never_reach_the_document_or_the_explanation():
    with FakeOpenAI(chat=reasoning_chat) as srv:
        async with lsp_server(*remote(srv.url)) as (client, _):
            uri = "file:///w/stub.py"
            editor, action = await open_and_pick(client, uri, STUB, STUB_LINE, 4, "codelsp.writeFunction")
            result = await run_action(client, action)
            assert result.applied is True, result
            assert editor.text == STUB.replace("    pass\n", "    return a + b\n")
            explain = by_command(await code_actions(client, uri, MUL_LINE, 4), "codelsp.explain")
            assert (await run_action(client, explain, insertComment=False)).markdown == "It multiplies a by b."
            again = await run_action(client, explain)
            assert again.applied is True
            assert "# It multiplies a by b." in editor.text and "think" not in editor.text


def all_reasoning(body: dict) -> Reply:
    return Reply(stream_text("<think>\nStill thinking when the tokens ran out"))


async def test_an_answer_that_is_all_reasoning_says_so():
    with FakeOpenAI(chat=all_reasoning) as srv:
        async with lsp_server(*remote(srv.url)) as (client, _):
            editor, action = await open_and_pick(client, "file:///w/stub.py", STUB, STUB_LINE, 4,
                                                 "codelsp.writeFunction")
            result = await run_action(client, action)
            assert result.applied is False and "actionMaxTokens" in result.message
            assert editor.edits == []


async def test_an_action_right_after_start_waits_for_the_backend_to_be_known():
    # The remote backend is still being set up (its /models answers after a second) when the
    # editor runs an action: the action must go to the server, not to a local model that is not there
    with FakeOpenAI(chat=lambda body: Reply(stream_text("It multiplies a by b.")), models_after_s=1.0) as srv:
        async with lsp_server(*remote(srv.url)) as (client, _):
            assert await explain_markdown(client) == "It multiplies a by b."


# --- 2: a server that sends its headers late ---------------------------------------------------

LATE_S = 6.0  # more than the 5 s a connection may take to open


async def test_a_server_that_sends_its_headers_late_is_waited_for_once():
    def slow_chat(body: dict) -> Reply:
        return Reply(stream_text("It multiplies a by b."), headers_after_s=LATE_S)

    def slow_completions(body: dict) -> Reply:
        # headers at once (llama_cpp.server's way), then silence while the model loads
        return Reply([LATE_S, {"choices": [{"index": 0, "text": "return a + b", "finish_reason": None}]},
                      {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}])

    models = [{"id": "bigcode/starcoder2-3b", "object": "model"}]
    with FakeOpenAI(chat=slow_chat, completions=slow_completions, models=models) as srv:
        async with lsp_server(*remote(srv.url), init_options={"timeoutMs": 20000}) as (client, _):
            assert await explain_markdown(client) == "It multiplies a by b."
            # the completion's budget is its timeoutMs: the model "loads" within it
            open_doc(client, "file:///w/add.py", "def add(a, b):\n    \n")
            items = (await complete_at(client, "file:///w/add.py", 1, 4)).items
            assert [i.text_edit.new_text for i in items] == ["return a + b"]
            # one request each: no retry restarted the load, no client hung up on it
            assert len(srv.posts("/chat/completions")) == 1 and len(srv.posts("/v1/completions")) == 1
            assert srv.hung_up == 0


async def test_a_server_that_never_answers_within_the_budget_is_reported_as_such():
    def never(body: dict) -> Reply:
        return Reply([{"choices": [{"index": 0, "text": "late", "finish_reason": "stop"}]}], headers_after_s=30)

    models = [{"id": "bigcode/starcoder2-3b", "object": "model"}]
    with FakeOpenAI(completions=never, models=models) as srv:
        async with lsp_server(*remote(srv.url), init_options={"timeoutMs": 1500}) as (client, _):
            open_doc(client, "file:///w/add.py", "def add(a, b):\n    \n")
            assert list((await complete_at(client, "file:///w/add.py", 1, 4)).items) == []
            assert len(srv.posts("/v1/completions")) == 1  # not retried
            assert "sent nothing within timeoutMs (1500 ms)" in logs(client)


# --- 4: an error after the stream started -------------------------------------------------------

def failing_midway(body: dict) -> Reply:
    return Reply([chat_chunk("# This f"), {"error": {"code": 500, "message": "generation failed: out of memory",
                                                     "type": "server_error"}}])


async def test_an_error_event_mid_stream_means_no_edit_and_one_clear_message():
    def completions(body: dict) -> Reply:
        return Reply(["data: " + '{"choices": [{"index": 0, "text": "return a", "finish_reason": null}]}\n\n',
                      "event: error\ndata: {\"message\": \"slot 0 failed\"}\n\n"])

    models = [{"id": "bigcode/starcoder2-3b", "object": "model"}]
    with FakeOpenAI(chat=failing_midway, completions=completions, models=models) as srv:
        async with lsp_server(*remote(srv.url), init_options={"timeoutMs": 20000}) as (client, _):
            editor, action = await open_and_pick(client, "file:///w/stub.py", STUB, MUL_LINE, 4, "codelsp.explain")
            result = await run_action(client, action)
            assert result.applied is False and "generation failed: out of memory" in result.message
            assert editor.edits == [] and result.markdown is None
            shown = [m.message for m in client.messages if "out of memory" in m.message]
            assert len(shown) == 1 and shown[0].startswith("codelsp: Explain")
            # a completion: no suggestion from a stream that failed
            open_doc(client, "file:///w/add.py", "def add(a, b):\n    \n")
            assert list((await complete_at(client, "file:///w/add.py", 1, 4)).items) == []
            await asyncio.sleep(0.2)
            assert any("slot 0 failed" in m.message for m in client.messages)


# --- 8: a server whose template refuses the system role -----------------------------------------

async def test_a_server_that_refuses_the_system_role_gets_it_in_the_user_turn():
    def gemma(body: dict) -> Reply:
        if any(m["role"] == "system" for m in body["messages"]):
            return Reply(status=400, body={"error": {"code": 400, "type": "invalid_request_error",
                                                     "message": "System role not supported"}})
        assert user_text(body).startswith("You are an expert programmer.")
        return Reply(stream_text("It multiplies a by b."))

    with FakeOpenAI(chat=gemma) as srv:
        async with lsp_server(*remote(srv.url)) as (client, _):
            assert await explain_markdown(client) == "It multiplies a by b."
            assert await explain_markdown(client, "file:///w/two.py") == "It multiplies a by b."
            # refused once; the second action went straight to the merged form
            roles = [[m["role"] for m in b["messages"]] for b in srv.posts("/chat/completions")]
            assert roles == [["system", "user"], ["user"], ["user"]]
            assert logs(client).count("refused a system message") == 1


# --- also: real token counts, the server's context size ------------------------------------------

async def test_remote_actions_report_the_servers_token_count():
    def counted(body: dict) -> Reply:
        return Reply(stream_text("It multiplies a by b.", size=100)
                     + [chat_chunk(usage={"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57})])

    with FakeOpenAI(chat=counted) as srv:
        async with lsp_server(*remote(srv.url)) as (client, _):
            assert await explain_markdown(client) == "It multiplies a by b."
            ends = [v for reports in client.progress_reports.values() for v in reports
                    if isinstance(v, types.WorkDoneProgressEnd) and v.message and "tokens" in v.message]
            assert [e.message for e in ends] == ["7 tokens"]
            assert "Explain: 7 tokens from fake-model" in logs(client)


async def test_the_context_size_the_server_reports_bounds_the_prompt():
    prompts: list[str] = []

    def completions(body: dict) -> Reply:
        prompts.append(body["prompt"])
        return Reply([{"choices": [{"index": 0, "text": "return a + b", "finish_reason": "stop"}]}])

    models = [{"id": "bigcode/starcoder2-3b", "object": "model", "max_model_len": 400}]
    text = "".join(f"value_{i} = {i} * {i}\n" for i in range(2000)) + "def add(a, b):\n    \n"
    with FakeOpenAI(completions=completions, models=models) as srv:
        async with lsp_server(*remote(srv.url), init_options={"timeoutMs": 20000}) as (client, _):
            open_doc(client, "file:///w/big.py", text)
            items = (await complete_at(client, "file:///w/big.py", 2001, 4)).items
            assert [i.text_edit.new_text for i in items] == ["return a + b"]
    [prompt] = prompts
    # 400 tokens of context, 64 of them for the answer: at most 3 characters a token for the rest
    assert len(prompt) <= (400 - 64) * 3
    assert prompt.startswith("<fim_prefix>") and "def add(a, b):\n    <fim_suffix>" in prompt
    assert prompt.split("<fim_prefix>")[1].startswith("value_")  # cut at a line start
