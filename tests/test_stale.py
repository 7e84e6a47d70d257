"""Answers for text the user has changed since, and the completion menu's selected item (issue 29,
kinds 3 and 4).

Kind 3: inline completion carries no document version. The backend (fakeserver.py) holds its
answer until the test has changed the document (an auto-closed pair, text typed, a delete, lines
added or removed above; full and incremental didChange); each returned item is then applied to the
client's *current* text, as an editor does, and the resulting line asserted.
Kind 4: with `context.selectedCompletionInfo`, the prompt has the selected text over its range and
the item starts at the range's start with text that extends the selected text.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from lsprotocol import types

from support import lsp_server, open_doc
from rawlsp import RawLsp
from fakeserver import FakeOpenAI, Reply

URI = "file:///w/greet.py"
DOC = "def greet(name):\n    print"
ANSWER = '(f"Hello, {name}")'
MODELS = [{"id": "bigcode/starcoder2-3b", "object": "model"}]


def remote(url: str) -> tuple[str, ...]:
    return ("--backend", "openai", "--url", url)


def answer_events(text: str) -> list:
    return [{"choices": [{"index": 0, "text": text, "finish_reason": None}]},
            {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}]


def offset_of(text: str, pos: types.Position) -> int:
    lines = text.split("\n")
    return sum(len(x) + 1 for x in lines[:pos.line]) + pos.character


def apply(text: str, rng: types.Range | None, new: str) -> str:
    """`text` with `rng` replaced by `new`, as an editor applies an item (ASCII: UTF-16 = characters)."""
    assert rng is not None, "an item without a range: VS Code and Neovim read that differently"
    return text[:offset_of(text, rng.start)] + new + text[offset_of(text, rng.end):]


def position(line: int, character: int) -> types.Position:
    return types.Position(line=line, character=character)


class Held:
    """A backend whose answer waits until the test lets it go."""

    def __init__(self, answer: str = ANSWER) -> None:
        self.answer = answer
        self.gate = threading.Event()
        self.asked = threading.Event()

    def __call__(self, body: dict) -> Reply:
        self.asked.set()
        self.gate.wait(30)
        return Reply(answer_events(self.answer))

    def reset(self) -> None:
        self.gate.clear()
        self.asked.clear()


async def edit_while_the_model_works(client, held: Held, menu: bool, text: str, line: int, col: int,
                                     change: tuple[int, int, int, int, str], full: bool, version: int,
                                     whole: bool = False) -> str:
    """Ask at (line, col) of `text`; while the backend holds its answer, replace the range
    `change` (line, char, end line, end char, new text) as one didChange (the whole text when
    `full`); then let the answer go. The line of the item applied to the changed text (the
    changed line itself when there is no item); `whole`: all of that text."""
    held.reset()
    where = position(line, col)
    if menu:
        request = client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=where))
    else:
        request = client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=where,
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
    task = asyncio.ensure_future(request)
    assert await asyncio.to_thread(held.asked.wait, 30), "the backend was never asked"
    l1, c1, l2, c2, new = change
    rng = types.Range(start=position(l1, c1), end=position(l2, c2))
    changed = apply(text, rng, new)
    event = (types.TextDocumentContentChangeWholeDocument(text=changed) if full
             else types.TextDocumentContentChangePartial(range=rng, text=new))
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=version), content_changes=[event]))
    seen = await client.protocol.send_request_async("codelsp/documentText", {"uri": URI})
    assert seen.text == changed  # the server has the change before the answer comes
    held.gate.set()
    result = await asyncio.wait_for(task, 30)
    after = changed
    if result.items:
        item = result.items[0]
        after = apply(changed, item.text_edit.range, item.text_edit.new_text) if menu else \
            apply(changed, item.range, item.insert_text)
    return after if whole else after.split("\n")[line + changed.count("\n") - text.count("\n")]


GREETED = '    print(f"Hello, {name}")'
CHANGES = [
    # (what the user did, the change, the line after applying the item)
    ("auto-closed pair", (1, 9, 1, 9, "()"), GREETED),
    ("typed what the answer starts with", (1, 9, 1, 9, "(f"), GREETED),
    ("typed something else", (1, 9, 1, 9, "x"), "    printx"),
    ("a delete at the cursor", (1, 8, 1, 9, ""), "    prin"),
    ("a line added above", (0, 0, 0, 0, "import os\n"), GREETED),
    ("a line deleted above", (0, 0, 1, 0, ""), GREETED),
    # the new line repeats the cursor's line: the change is above it, not typed at the cursor
    ("a copy of the line added above", (1, 0, 1, 0, "    print\n"), GREETED),
]


@pytest.mark.parametrize("menu", [False, True], ids=["inline", "menu"])
async def test_an_answer_for_text_changed_since_is_carried_over_or_dropped(menu):
    held = Held()
    with FakeOpenAI(completions=held, models=MODELS) as srv:
        async with lsp_server(*remote(srv.url)) as (client, _):
            version = 1
            for full in (False, True):
                for what, change, expected in CHANGES:
                    # each case from the same text (a fresh document: nothing cached or in flight)
                    version += 1
                    text = "# greeting\n" + DOC if what == "a line deleted above" else DOC
                    line = text.count("\n")
                    client.text_document_did_close(types.DidCloseTextDocumentParams(
                        text_document=types.TextDocumentIdentifier(uri=URI)))
                    open_doc(client, URI, text, version=version)
                    if what == "a line deleted above":
                        change = (0, 0, 1, 0, "")
                    elif change[0] == 1:
                        change = (line, change[1], line, change[3], change[4])
                    version += 1
                    got = await edit_while_the_model_works(client, held, menu, text, line, len("    print"),
                                                           change, full, version)
                    assert got == expected, (what, "full" if full else "incremental")
            assert len(srv.posts("/v1/completions")) == 2 * len(CHANGES)


# The VS Code end-to-end step that types `def mul(a, b):`, Enter (VS Code indents the new line) and
# accepts `return a * b`: answers for the text before the Enter, still in flight when the Enter
# and its indentation arrive, must never land at column 0 or on the `def` line.
ENTERED = [
    # (the text, where the request was made, the change made while the model worked, the text after
    # the item is applied to the changed text: no item where the answer does not fit it)
    ("answer for the `:`, Enter and indentation typed", "def mul(a, b):", (0, 14), (0, 14, 0, 14, "\n    "),
     "def mul(a, b):\n    "),
    ("answer for the empty line, a def and its body's indentation typed", "import math\n\n", (2, 0),
     (2, 0, 2, 0, "def mul(a, b):\n    "), "import math\n\ndef mul(a, b):\n    "),
    ("answer for the indented line, a line added above", "def mul(a, b):\n    ", (1, 4),
     (0, 0, 0, 0, "import math\n"), "import math\ndef mul(a, b):\n    return a * b"),
]


@pytest.mark.parametrize("menu", [False, True], ids=["inline", "menu"])
async def test_an_answer_in_flight_across_an_enter_and_its_indentation(menu):
    held = Held("return a * b")
    with FakeOpenAI(completions=held, models=MODELS) as srv:
        async with lsp_server(*remote(srv.url)) as (client, _):
            version = 1
            for full in (False, True):
                for what, text, (line, col), change, expected in ENTERED:
                    version += 1
                    client.text_document_did_close(types.DidCloseTextDocumentParams(
                        text_document=types.TextDocumentIdentifier(uri=URI)))
                    open_doc(client, URI, text, version=version)
                    version += 1
                    got = await edit_while_the_model_works(client, held, menu, text, line, col, change, full, version,
                                                           whole=True)
                    assert got == expected, (what, "full" if full else "incremental")


# --- kind 4: the completion menu's selected item ---------------------------------------------------

JS_URI = "file:///w/root.js"
JS = "const root = document.gEBI"


async def test_the_selected_menu_item_is_in_the_prompt_and_the_item_extends_it():
    prompts: list[str] = []

    def completions(body: dict) -> Reply:
        prompts.append(body["prompt"])
        if "document.getElementById" not in body["prompt"]:
            return Reply(answer_events("WRONG"))
        return Reply(answer_events("('root');" if len(prompts) == 1 else ""))

    selected = types.SelectedCompletionInfo(range=types.Range(start=position(0, 22), end=position(0, 26)),
                                            text="getElementById")
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=JS_URI), position=position(0, 26),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic,
                                              selected_completion_info=selected))
    with FakeOpenAI(completions=completions, models=MODELS) as srv:
        async with lsp_server(*remote(srv.url)) as (client, _):
            open_doc(client, JS_URI, JS, language="javascript")
            items = (await client.text_document_inline_completion_async(params)).items
            assert [(i.range.start, i.range.end, i.insert_text) for i in items] == [
                (position(0, 22), position(0, 26), "getElementById('root');")]
            assert apply(JS, items[0].range, items[0].insert_text) == "const root = document.getElementById('root');"
            assert "document.getElementById" in prompts[0] and "gEBI" not in prompts[0]
            # the model writes nothing after the selected text: no item (the menu's item stands)
            open_doc(client, "file:///w/other.js", JS, language="javascript")
            params.text_document = types.TextDocumentIdentifier(uri="file:///w/other.js")
            assert list((await client.text_document_inline_completion_async(params)).items) == []



def test_the_selected_range_is_read_in_the_array_shape_too():
    """A client that passes VS Code's context through unconverted sends the selected item's range
    as VS Code writes a Range in JSON, `[start, end]`: read as the LSP `{start, end}`, not refused
    as invalid params (pytest-lsp cannot send that shape: rawlsp.py)."""
    with FakeOpenAI(completions=lambda body: Reply(answer_events("('root');")), models=MODELS) as srv:
        with RawLsp(*remote(srv.url), "--no-warm") as s:
            s.initialize()
            s.open(JS_URI, JS, language="javascript")
            result = s.result("textDocument/inlineCompletion", {
                "textDocument": {"uri": JS_URI}, "position": {"line": 0, "character": 26},
                "context": {"triggerKind": 2, "selectedCompletionInfo": {
                    "range": [{"line": 0, "character": 22}, {"line": 0, "character": 26}], "text": "getElementById"}},
            })
            assert result["items"] == [{"insertText": "getElementById('root');", "range": {
                "start": {"line": 0, "character": 22}, "end": {"line": 0, "character": 26}}}]
