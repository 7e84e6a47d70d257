"""Text after the cursor is never written twice (issue 29, kind 2).

The model re-writes the closing text the line already has (`#app').dataset.id;` between the
quotes of `querySelector('');`). Each item, inline and the menu's textEdit, is applied the way an
editor applies it (its range, always sent, replaced by its text) and the resulting line is
asserted: the answer is cut where it closes what the line already closes (the variant that won
`codelsp eval --mid-line` over a range running over the rest of the line, README).
"""

from __future__ import annotations

import pytest
from lsprotocol import types

from support import complete_at, inline_at, lsp_server, open_doc

URI = "file:///work/closing.js"


def apply(text: str, rng: types.Range, new: str) -> str:
    """`text` with `rng` (one line, UTF-16 = characters here) replaced by `new`, as an editor does."""
    assert rng is not None, "an item without a range: VS Code and Neovim read that differently"
    lines = text.split("\n")
    assert rng.start.line == rng.end.line
    line = lines[rng.start.line]
    lines[rng.start.line] = line[: rng.start.character] + new + line[rng.end.character:]
    return "\n".join(lines)


CASES = [
    # (answer, line with | at the cursor, the line after accepting): quotes and parentheses
    ("#app').dataset.id;", "const id = document.querySelector('|');", "const id = document.querySelector('#app');"),
    # a multi-line answer in the middle of a line: its first line, then the same rule
    ("#app').dataset.id;\nrender()", "const id = document.querySelector('|');",
     "const id = document.querySelector('#app');"),
    # double quotes and square brackets
    ('name"].strip())', 'print(d["|"])', 'print(d["name"])'),
    # square brackets, the answer goes on after the closer
    ("alpha, beta] + extra", "values = [|]", "values = [alpha, beta]"),
    # braces
    ("key: value }, other = next;", "const o = {|};", "const o = {key: value};"),
    # the answer closes `g(` and goes on differently from the line: the line's text is kept
    ("x), 2)", "f(g(|), 1)", "f(g(x), 1)"),
]


@pytest.mark.parametrize("answer,line,expected", CASES)
async def test_closing_text_after_the_cursor_is_not_written_twice(model_factory, answer, line, expected):
    model = model_factory("starcoder", answer=answer, default="answer")
    col = line.index("|")
    text = "let x = 1;\n" + line.replace("|", "") + "\n"
    async with lsp_server("--model", str(model.path), "--threads", "1") as (client, _):
        open_doc(client, URI, text, language="javascript")
        inline = (await inline_at(client, URI, 1, col)).items
        assert inline, "no inline item"
        assert apply(text, inline[0].range, inline[0].insert_text).split("\n")[1] == expected
        menu = (await complete_at(client, URI, 1, col)).items
        assert menu, "no menu item"
        edit = menu[0].text_edit
        assert apply(text, edit.range, edit.new_text).split("\n")[1] == expected
