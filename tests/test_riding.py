"""Requests while a generation runs or just ran: type-through of a finished suggestion, cancel,
supersession, a newer request riding the generation in flight (also when the editor cancels the
older one), and `codelsp bench --typing-rate`; checked by the totals `codelsp/stats` reports.
"""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from codelsp.tools.lspclient import as_dict
from support import DOC, LINE, complete_at, inline_at, inline_params, lsp_server, open_doc, stats, type_at, wait_for_total


async def test_type_through_answers_without_the_model(model_factory):
    model = model_factory("starcoder")
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, uri, DOC)
        assert (await inline_at(client, uri, LINE, 4)).items[0].insert_text == "return a + b"
        before = as_dict((await stats(client, uri))["totals"])
        type_at(client, uri, 2, LINE, 4, "ret")
        inline = await inline_at(client, uri, LINE, 7)
        assert inline.items[0].insert_text == "urn a + b"
        menu = await complete_at(client, uri, LINE, 7)
        assert menu.items[0].text_edit.new_text == "return a + b"
        after = as_dict((await stats(client, uri))["totals"])
        assert after["model"] == before["model"]
        assert after["typeThrough"] == before["typeThrough"] + 2
        # typing something else runs the model again
        type_at(client, uri, 3, LINE, 7, "X")
        await inline_at(client, uri, LINE, 8)
        assert as_dict((await stats(client, uri))["totals"])["model"] == before["model"] + 1


LONG = {"maxTokens": 4000, "timeoutMs": 120000, "fimTemplate": "none"}
COUNTING = "numbers = [" + ", ".join(str(i) for i in range(1, 40)) + ","


async def test_cancel_stops_a_long_generation_and_the_next_request_is_answered(demo_model):
    uri = "file:///w/count.py"
    async with lsp_server("--model", str(demo_model), init_options=LONG) as (client, _):
        open_doc(client, uri, COUNTING)
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=0, character=len(COUNTING)),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
        fut = client.protocol.send_request("textDocument/inlineCompletion", params, msg_id="long-1")
        await asyncio.sleep(1.5)  # the model is loaded and generating
        client.protocol.notify("$/cancelRequest", types.CancelParams(id="long-1"))
        with pytest.raises(JsonRpcRequestCancelled):
            await asyncio.wait_for(asyncio.wrap_future(fut), 30)
        # the cancelled generation runs on, orphaned, for a request that may type into it; a
        # request that waits stops it at its next token (before the 120 s budget): a short
        # request is answered in full. (`codelsp/stats` is a light query: it waits its turn, so it
        # is asked after.)
        open_doc(client, "file:///w/short.py", "def add(a, b):\n    return a")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"codelsp": {"maxTokens": 4}}))
        result = await asyncio.wait_for(inline_at(client, "file:///w/short.py", 1, 12), 30)
        assert isinstance(result, types.InlineCompletionList)
        totals = as_dict((await stats(client, uri))["totals"])
        assert totals["cancelled"] == 1
        last = as_dict((await stats(client, "file:///w/short.py"))["last"])
        assert last["source"] == "model" and last["generated"] <= 4


async def test_a_newer_request_supersedes_an_older_one(demo_model):
    uri = "file:///w/count.py"
    async with lsp_server("--model", str(demo_model), init_options=LONG) as (client, _):
        open_doc(client, uri, COUNTING)
        older = asyncio.ensure_future(inline_at(client, uri, 0, len(COUNTING)))
        await asyncio.sleep(1.5)
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"codelsp": {"maxTokens": 3}}))
        newer = await asyncio.wait_for(inline_at(client, uri, 0, len(COUNTING) - 1), 30)
        old_result = await asyncio.wait_for(older, 30)
        assert list(old_result.items) == []  # no stale answer for the superseded request
        assert isinstance(newer, types.InlineCompletionList)
        assert as_dict((await stats(client, uri))["totals"])["cancelled"] >= 1


async def test_a_request_riding_a_queued_job_outlives_the_request_that_started_it(demo_model):
    """The job of a document is still queued (the engine is busy with another document) when
    the user types into it: the newer request rides it, and cancelling the older request (an
    editor that sends the new request first) must not cancel the job the newer one waits for."""
    busy, uri = "file:///w/busy.py", "file:///w/count.py"
    async with lsp_server("--model", str(demo_model), init_options={**LONG, "maxTokens": 150}) as (client, _):
        open_doc(client, busy, COUNTING)
        open_doc(client, uri, COUNTING)
        await inline_at(client, busy, 0, 5)  # the model is loaded
        running = client.protocol.send_request("textDocument/inlineCompletion", inline_params(busy, 0, len(COUNTING)))
        await asyncio.sleep(0.3)  # busy.py is generating
        older = client.protocol.send_request("textDocument/inlineCompletion", inline_params(uri, 0, len(COUNTING)),
                                             msg_id="older")
        await asyncio.sleep(0.1)
        type_at(client, uri, 2, 0, len(COUNTING), " 40")
        newer = asyncio.ensure_future(inline_at(client, uri, 0, len(COUNTING) + 3))
        await asyncio.sleep(0.1)
        client.protocol.notify("$/cancelRequest", types.CancelParams(id="older"))
        answer = await asyncio.wait_for(newer, 600)
        assert answer.items[0].insert_text.startswith(", 41"), answer
        await asyncio.wait_for(asyncio.wrap_future(running), 600)
        with pytest.raises(Exception):
            await asyncio.wait_for(asyncio.wrap_future(older), 60)  # answered "cancelled"
        totals = as_dict((await stats(client, uri))["totals"])
        assert totals["inFlight"] + totals["typeThrough"] == 1 and totals["orphaned"] == 1, totals


@pytest.mark.parametrize("editor_cancels", [False, True])
async def test_typing_into_a_generation_in_flight_rides_it(demo_model, editor_cancels):
    """The user types the characters the running generation is producing: the new request
    waits for it and answers the rest, instead of superseding it and starting over -- also when
    the editor cancels the older request as it sends the newer one (VS Code does). That case
    failed while the engine left a running job's future cancellable: asyncio.wrap_future
    cancelled it with the request, and the newer request found nothing to ride."""
    uri = "file:///w/count.py"
    async with lsp_server("--model", str(demo_model), init_options={**LONG, "maxTokens": 150}) as (client, _):
        open_doc(client, "file:///w/short.py", "x = 1\n")
        await inline_at(client, "file:///w/short.py", 0, 5)  # the model is loaded
        open_doc(client, uri, COUNTING)
        params = inline_params(uri, 0, len(COUNTING))
        older = client.protocol.send_request("textDocument/inlineCompletion", params, msg_id="older")
        await asyncio.sleep(0.5)  # it is generating
        if editor_cancels:
            client.protocol.notify("$/cancelRequest", types.CancelParams(id="older"))
        type_at(client, uri, 2, 0, len(COUNTING), " 40")
        newer = await asyncio.wait_for(inline_at(client, uri, 0, len(COUNTING) + 3), 600)
        totals = as_dict((await stats(client, uri))["totals"])
        assert totals["model"] == 1 + (not editor_cancels), totals  # short.py (and the older one)
        # answered from the generation while it ran, or (it finished first) from its suggestion
        assert totals["inFlight"] + totals["typeThrough"] == 1, totals
        assert newer.items[0].insert_text.startswith(", 41"), newer
        if not editor_cancels:
            # answered after " 40" was typed: carried over to the text as it is now, at the
            # cursor (never the old position and " 40" again: issue 29, kind 3)
            old = await asyncio.wait_for(asyncio.wrap_future(older), 600)
            assert old.items[0].insert_text == newer.items[0].insert_text
            assert old.items[0].range.start == types.Position(line=0, character=len(COUNTING) + 3)


async def test_background_warming_does_not_stop_a_generation_being_typed_into(demo_model):
    """A generation whose request the editor cancelled runs on for the next keystroke; a
    document opened meanwhile (its warm job queued) must not make it give way."""
    uri, other = "file:///w/count.py", "file:///w/other.py"
    async with lsp_server("--model", str(demo_model), init_options={**LONG, "maxTokens": 150},
                          warm=True) as (client, _):
        open_doc(client, "file:///w/short.py", "x = 1\n")
        open_doc(client, uri, COUNTING)
        await inline_at(client, "file:///w/short.py", 0, 5)  # the model is loaded
        await wait_for_total(client, uri, "warmed", 100)  # count.py's own warm job is done
        client.protocol.send_request("textDocument/inlineCompletion", inline_params(uri, 0, len(COUNTING)),
                                     msg_id="older")
        await asyncio.sleep(0.5)  # it is generating
        client.protocol.notify("$/cancelRequest", types.CancelParams(id="older"))
        open_doc(client, other, DOC)  # queues a warm job
        type_at(client, uri, 2, 0, len(COUNTING), " 40")
        newer = await asyncio.wait_for(inline_at(client, uri, 0, len(COUNTING) + 3), 600)
        assert newer.items[0].insert_text.startswith(", 41"), newer
        totals = as_dict((await stats(client, uri))["totals"])
        assert totals["model"] == 1 and totals["orphaned"] == 1, totals  # short.py; count.py ran once


SHAPES = '''import math


def area(shape, size):
    """Area of a square or a circle."""
    if shape == "square":
        return size * size
    if shape == "circle":
        return math.pi * size * size
    raise ValueError(shape)
'''


def test_bench_typing_rate_types_into_a_multi_line_suggestion(model_factory, tmp_path):
    """`codelsp bench --typing-rate`: the body of area() is taken out, the model's suggestion
    there is learnt, and its first line typed at 20 characters a second with the editor
    cancelling each request at the next keystroke; one model run serves every keystroke."""
    import json

    from support import run_cli

    multi = "if a:\n        raise ValueError\n    return b"
    model = model_factory("qwen", multi, default="answer")
    src = tmp_path / "shapes.py"
    src.write_text(SHAPES)
    proc = run_cli("bench", str(src), "--typing-rate", "20", "--model", str(model.path), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["line"] == 6 and report["suggestion"] == multi and report["typed"] == "if a:"
    rows = report["rows"]
    assert len(rows) == report["keystrokes"] + 1 == 6
    assert rows[-1]["shown"] and rows[-1]["multiline"], rows  # after the last keystroke: the rest
    server = report["server"]
    assert server["requests"] == 6 and server["model"] + server["orphaned"] == 1, server
    assert server["model"] + server["inFlight"] + server["typeThrough"] + server["cancelled"] == 6, server


def test_bench_typing_rate_where_the_model_suggests_nothing_says_so(model_factory, tmp_path):
    """A clear error and exit 1 (the bench used to wait forever for its server to exit)."""
    from support import run_cli

    model = model_factory("qwen", "", default="answer")
    src = tmp_path / "shapes.py"
    src.write_text(SHAPES)
    proc = run_cli("bench", str(src), "--typing-rate", "20", "--model", str(model.path), timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        "codelsp bench: --typing-rate: the model suggests nothing at 6:5: pick another place", proc.stderr
