"""Background evaluation before the editor asks: on open, after an accepted suggestion
(speculative), on `codelsp/didFocus`, and dropped for a closed document.
"""

from __future__ import annotations

import asyncio

from lsprotocol import types

from codelsp.tools.lspclient import as_dict
from support import DOC, LINE, inline_at, lsp_server, open_doc, stats, type_at, wait_for_total


async def test_an_opened_document_is_warmed_in_the_background(model_factory):
    """On open, the document's prompt is evaluated at low priority: the first request in it
    reuses the prefix instead of evaluating the whole prompt."""
    model = model_factory("qwen", default="answer")
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path), warm=True) as (client, _):
        open_doc(client, uri, DOC)
        await wait_for_total(client, uri, "warmed", 800)
        result = await inline_at(client, uri, LINE, 4)
        assert result.items[0].insert_text == "return a + b"
        first = as_dict((await stats(client, uri))["last"])
        assert first["reused"] > 400, first


async def test_after_an_accepted_suggestion_the_next_state_is_ready(model_factory):
    """Accepting a suggestion (the change inserts it) starts the next completion at once: when
    the editor asks, the prompt is evaluated already."""
    model = model_factory("qwen", default="answer")
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, uri, DOC)
        text = (await inline_at(client, uri, LINE, 4)).items[0].insert_text
        type_at(client, uri, 2, LINE, 4, text)  # the editor inserts the suggestion
        await wait_for_total(client, uri, "speculative")
        await inline_at(client, uri, LINE, 4 + len(text))
        last = as_dict((await stats(client, uri))["last"])
        assert last["evaluated"] <= 1, last  # only the last token, for its logits


async def test_coming_back_to_a_document_warms_it_at_the_cursor(model_factory):
    """`codelsp/didFocus` (the editor switched to a document; editors/ send it): its state comes
    back from system memory (evicting the document left) and the prompt at the cursor is
    evaluated in the background, so the first keystroke there costs only its last token."""
    model = model_factory("codellama")
    a, b = "file:///w/a.py", "file:///w/b.py"
    # a pool of one 1,024-token context holds one of these ~670-token prompts at a time
    async with lsp_server("--model", str(model.path), "--ctx", "1024", "--prompt-cache-bytes", "1",
                          warm=True) as (client, _):
        open_doc(client, a, DOC)
        open_doc(client, b, DOC.replace("helper", "other"))
        await inline_at(client, a, LINE, 4)
        await inline_at(client, b, LINE, 4)  # a leaves the KV pool for system memory
        st = await stats(client, a)
        held = st["hostTokens"]
        assert st["cachedTokens"] == 0 and held > 500, st
        type_at(client, a, 2, LINE, 4, "x")
        client.protocol.notify("codelsp/didFocus", {"position": {"line": 0}})  # no document: ignored
        client.protocol.notify("codelsp/didFocus", {"textDocument": {"uri": a},
                                                    "position": {"line": LINE, "character": 5}})
        totals = await wait_for_total(client, a, "warmRestored")
        assert totals["warmed"] >= 1, totals
        assert (await inline_at(client, a, LINE, 5)).items[0].insert_text == "return a + b"
        last = as_dict((await stats(client, a))["last"])
        assert last["restored"] == 0 and last["reused"] > 500 and last["evaluated"] <= 1, last
        assert totals["warmRestored"] == held, totals
        # focus on the document already in front does nothing
        client.protocol.notify("codelsp/didFocus", {"textDocument": {"uri": a}})
        await inline_at(client, a, LINE, 5)
        after = as_dict((await stats(client, a))["totals"])
        assert (after["warmed"], after["warmRestored"]) == (totals["warmed"], totals["warmRestored"]), after
        # a position outside LSP's range is left out (the last cursor is used), never an error
        client.protocol.notify("codelsp/didFocus", {"textDocument": {"uri": b},
                                                    "position": {"line": 2**40, "character": 0}})
        await wait_for_total(client, b, "focused", totals["focused"] + 1)
        await inline_at(client, b, LINE, 4)
        assert not [m.message for m in client.messages if m.type == types.MessageType.Error]


async def test_closing_a_document_drops_its_warm_job(model_factory):
    """A document focused and closed at once (VS Code's preview tabs): the focus warm must not
    run after the close and bring its state back (evicting documents that are still open)."""
    model = model_factory("codellama")
    a, b = "file:///w/a.py", "file:///w/b.py"
    async with lsp_server("--model", str(model.path), warm=True) as (client, _):
        open_doc(client, a, DOC)
        open_doc(client, b, DOC.replace("helper", "other"))
        client.protocol.notify("codelsp/didFocus", {"textDocument": {"uri": a}})
        client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=a)))
        client.protocol.notify("codelsp/didFocus", {"textDocument": {"uri": b}})
        # warm jobs run in order: once b's has run, a's would have run before it
        await wait_for_total(client, b, "warmed", 500)
        st = await stats(client, a)
        assert st["cachedTokens"] == 0 and st["hostTokens"] == 0, st



async def test_a_stats_request_while_a_long_document_is_warmed_does_not_stop_the_warm(demo_model):
    """`codelsp/stats` is a light query the engine answers between two batches of a warm (it is
    more urgent); the warm then goes on where it stopped, so the whole prompt is evaluated, each
    token counted once. It used to stay paused after its first batch (and count the whole prompt
    as warmed). SmolLM2-135M (no FIM tokens: the prompt is the whole document, ~1,280 tokens, three
    512-token batches), one thread: each batch is long enough that the test's own polling of
    `codelsp/stats` lands inside the warm (the debug log shows the pause)."""
    uri = "file:///w/long.py"
    text = "".join(f"def helper_{i}(x):\n    return x * {i} + {i * 7}\n\n" for i in range(60))
    async with lsp_server("--model", str(demo_model), "--threads", "1", "--max-tokens", "4", "--log-level", "debug",
                          warm=True) as (client, _):
        open_doc(client, uri, text)
        # polls codelsp/stats every 0.1 s; a warm stops only at a multiple of 512 tokens: past 1,024 it is whole
        totals = await wait_for_total(client, uri, "warmed", 1100)
        held = (await stats(client, uri))["cachedTokens"]
        await inline_at(client, uri, text.count("\n"), 0)  # where it was warmed: the end of the document
        last = as_dict((await stats(client, uri))["last"])
        warms = [m.message for m in client.log_messages if m.message.startswith(f"warmed {uri}")]
    assert any(m.endswith("(paused)") for m in warms), warms  # the test did pause it
    assert held == totals["warmed"] > 1100, (held, totals)
    assert last["evaluated"] <= 1 and last["reused"] + last["evaluated"] == held, last


async def test_a_warm_paused_while_the_draft_model_catches_up_goes_on_until_the_draft_has_it(demo_model):
    """With `speculative: draft`, a warm evaluates the prompt in the model, then in the draft
    model. A light request (`codelsp/stats`) landing in the draft model's part paused it there
    for good: the base model reported a finished warm, and the first completion paid the draft
    model the rest of the prompt. It goes back in the queue now, like a pause in the base part,
    and the completion where it was warmed costs the draft model only a token or two.
    SmolLM2-135M as its own draft model, one thread, a ~1,280-token prompt (three batches each);
    the test's polling of `codelsp/stats` every 0.1 s lands in the draft's part (the debug log
    shows it)."""
    uri = "file:///w/long.py"
    text = "".join(f"def helper_{i}(x):\n    return x * {i} + {i * 7}\n\n" for i in range(60))
    async with lsp_server("--model", str(demo_model), "--threads", "1", "--max-tokens", "4", "--log-level", "debug",
                          "--speculative", "draft", "--draft-model", str(demo_model), warm=True) as (client, _):
        open_doc(client, uri, text)
        await wait_for_total(client, uri, "warmed", 1100)
        for _ in range(100):  # the warm is done when the draft model holds the prompt too
            cache = as_dict((await stats(client, uri))["cache"])
            if cache["draftPoolUsed"] >= 1100:
                break
            await asyncio.sleep(0.1)
        await inline_at(client, uri, text.count("\n"), 0)  # where it was warmed: the document's end
        last = as_dict((await stats(client, uri))["last"])
        paused = [m.message for m in client.log_messages if m.message.startswith("draft model paused catching up")]
    assert paused, "the test did not pause the draft model's catch-up"
    assert last["draftEvaluated"] <= 2 + 2 * last["generated"], last
