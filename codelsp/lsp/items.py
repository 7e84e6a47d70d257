"""Completions as LSP items: the menu's CompletionItem and inline completion's items, their
ranges, labels, snippets and documentation."""

from __future__ import annotations

import re
from typing import Any

from lsprotocol import types

from codelsp.completion.session import Answer
from codelsp.lsp.capabilities import Client
from codelsp.lsp.documents import position_at

WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
LABEL_MAX = 60


def word_before(text: str, offset: int) -> str:
    """The identifier characters just before `offset`: the menu item's range starts before them."""
    i = offset
    while i > 0 and text[i - 1] in WORD_CHARS:  # no line break is a word character
        i -= 1
    return text[i:offset]


def menu_list(found: tuple[Answer, Any] | None, client: Client, model: str) -> types.CompletionList:
    """The completion menu's answer: one item that replaces the word before its edit, and the
    edit's range, with the word and the edit's text (`found`: the answer, placed in the document
    as it is now, and that document; None: no item). `model`: the model's name for the detail."""
    if not found:
        return types.CompletionList(is_incomplete=True, items=[])
    answer, doc = found
    edit = answer.edits[0]
    word = word_before(answer.text, edit.start)
    start = position_at(answer.text, edit.start - len(word), doc.encoding)
    end = position_at(answer.text, edit.end, doc.encoding)
    full = word + edit.text
    first, *more = full.split("\n")
    label = first.strip() or edit.text.strip().split("\n", 1)[0]
    snippet = client.snippets
    line = doc.lines[start.line] if start.line < len(doc.lines) else ""
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    if snippet:
        # Clients that insert the label while an item is selected (Neovim 0.11) show the whole
        # first line, and accepting expands the full text: no ellipsis in the label.
        new_text = _snippet_escape(relative_indent(full, indent))
        details = types.CompletionItemLabelDetails(description=f"+{len(more)} lines") if more else None
    else:
        new_text = full
        details = None
        if len(label) > LABEL_MAX:
            label = label[: LABEL_MAX - 1] + "…"
        elif more:
            label += " …"
    language = doc.language_id or ""
    item = types.CompletionItem(
        label=label,
        label_details=details,
        kind=types.CompletionItemKind.Text,
        detail=f"codelsp · {model}" if model else "codelsp",
        documentation=item_documentation(full, language, client),
        filter_text=full,
        sort_text="0",
        preselect=True,
        insert_text_format=types.InsertTextFormat.Snippet if snippet else types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=types.Range(start=start, end=end), new_text=new_text),
    )
    return types.CompletionList(is_incomplete=True, items=[item])


def inline_list(found: tuple[Answer, Any] | None) -> types.InlineCompletionList:
    """Inline completion's answer: the completion and its other candidates, each replacing its
    edit's range (`found` as for `menu_list`)."""
    if not found:
        return types.InlineCompletionList(items=[])
    answer, doc = found
    return types.InlineCompletionList(items=[
        types.InlineCompletionItem(insert_text=e.text, range=types.Range(
            start=position_at(answer.text, e.start, doc.encoding), end=position_at(answer.text, e.end, doc.encoding)))
        for e in answer.edits
    ])


def item_documentation(text: str, language: str, client: Client) -> types.MarkupContent | str:
    """The whole completion for the documentation pane: a fenced code block where the client
    renders markdown (it says so in `documentationFormat`; Helix renders every documentation
    string as markdown without saying so, helix-term ui/completion.rs), plain text otherwise."""
    if client.markdown or client.name == "helix":
        longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
        fence = "`" * max(3, longest + 1)
        return types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"{fence}{language}\n{text}\n{fence}")
    return text


def relative_indent(text: str, indent: str) -> str:
    """`text` with `indent` (the cursor line's leading whitespace) taken off the start of every
    line after the first: clients that expand snippets (Helix, Neovim's vim.snippet) put the
    cursor line's indentation in front of each new line themselves, and the model writes the
    lines with their whole indentation. Lines that do not start with it stay as they are."""
    if not indent or "\n" not in text:
        return text
    first, *rest = text.split("\n")
    return "\n".join([first] + [line[len(indent):] if line.startswith(indent) else line for line in rest])


def _snippet_escape(text: str) -> str:
    """Plain text as an LSP snippet: `\\`, `$` and `}` are escaped, nothing is a placeholder."""
    return text.replace("\\", "\\\\").replace("$", "\\$").replace("}", "\\}")

