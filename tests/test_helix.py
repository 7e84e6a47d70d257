"""codelsp's completion-menu item as Helix gets it and inserts it.

Helix is not installable here, so the client side is Helix's own behaviour written down from its
source (helix-editor/helix): the capabilities `helix-lsp/src/client.rs` sends in `initialize`
(snippets on by default, `editor.lsp.snippets`; no documentationFormat; position encodings utf-8,
utf-32, utf-16; clientInfo "helix"), and how `helix-core/src/snippets/render.rs` inserts a snippet
item's text: at every line break it puts the line ending plus the cursor line's leading
whitespace, then the line's own text (with its leading whitespace kept, for spaces). A plain-text
item (snippets off) is inserted as it is. The model and the server are real.
"""

from __future__ import annotations

import pytest
from lsprotocol import types

from support import lsp_server, open_doc

DOC = "def add(a, b):\n    \n"
MULTI = "if a:\n        raise ValueError\n    return b"
EXPECTED = "def add(a, b):\n    if a:\n        raise ValueError\n    return b\n"
URI = "file:///w/add.py"

# Helix names no documentationFormat but renders every documentation string as markdown, so
# codelsp sends it markdown on purpose (pytest-lsp would warn about that on every request).
pytestmark = pytest.mark.filterwarnings("ignore:Client does not support documentation format")


def helix_capabilities(snippets: bool = True) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        workspace=types.WorkspaceClientCapabilities(
            configuration=True, apply_edit=True, workspace_folders=True,
            did_change_configuration=types.DidChangeConfigurationClientCapabilities(dynamic_registration=False),
        ),
        text_document=types.TextDocumentClientCapabilities(
            completion=types.CompletionClientCapabilities(
                completion_item=types.ClientCompletionItemOptions(
                    snippet_support=snippets,
                    resolve_support=types.ClientCompletionItemResolveOptions(
                        properties=["documentation", "detail", "additionalTextEdits"]
                    ),
                    insert_replace_support=True,
                    deprecated_support=True,
                    tag_support=types.CompletionItemTagOptions(value_set=[types.CompletionItemTag.Deprecated]),
                ),
                completion_item_kind=types.ClientCompletionItemOptionsKind(),
            ),
            hover=types.HoverClientCapabilities(content_format=[types.MarkupKind.Markdown]),
        ),
        window=types.WindowClientCapabilities(work_done_progress=True),
        general=types.GeneralClientCapabilities(
            position_encodings=[types.PositionEncodingKind.Utf8, types.PositionEncodingKind.Utf32,
                                types.PositionEncodingKind.Utf16]
        ),
    )


def snippet_text(snippet: str) -> str:
    """The text of a snippet without tabstops: LSP snippet escapes undone."""
    out, i = [], 0
    while i < len(snippet):
        if snippet[i] == "\\" and i + 1 < len(snippet) and snippet[i + 1] in "\\$}":
            out.append(snippet[i + 1])
            i += 2
            continue
        assert snippet[i] != "$", f"a tabstop or variable in {snippet!r}"
        out.append(snippet[i])
        i += 1
    return "".join(out)


def helix_insert(text: str, item: types.CompletionItem) -> str:
    """`text` after Helix accepts `item` (its textEdit, utf-8 positions, one cursor)."""
    lines = text.split("\n")
    edit = item.text_edit
    row = edit.range.start.line
    assert edit.range.end.line == row
    line = lines[row].encode()
    before = line[: edit.range.start.character].decode()
    after = line[edit.range.end.character:].decode()
    new = edit.new_text
    if item.insert_text_format == types.InsertTextFormat.Snippet:
        indent = before[: len(before) - len(before.lstrip(" \t"))]
        new = snippet_text(new).replace("\n", "\n" + indent)
    lines[row] = before + new + after
    return "\n".join(lines)


@pytest.fixture
def model(model_factory):
    info = model_factory("starcoder", MULTI, default="answer")
    assert info.completion == MULTI
    return info


async def complete_like_helix(client, line: int, character: int) -> types.CompletionList:
    return await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI),
            position=types.Position(line=line, character=character),
            context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked),
        )
    )


@pytest.mark.parametrize("snippets", [True, False], ids=["snippets", "plain"])
async def test_a_multi_line_item_lands_with_the_right_indentation(model, snippets):
    async with lsp_server("--model", str(model.path), capabilities=helix_capabilities(snippets),
                          client_name="helix") as (client, init):
        assert init.capabilities.position_encoding == types.PositionEncodingKind.Utf8
        open_doc(client, URI, DOC)
        result = await complete_like_helix(client, 1, 4)
        assert result.is_incomplete is True and len(result.items) == 1
        item = result.items[0]
        assert helix_insert(DOC, item) == EXPECTED


async def test_the_menu_entry(model):
    """What Helix's menu and documentation pane show."""
    async with lsp_server("--model", str(model.path), capabilities=helix_capabilities(),
                          client_name="helix") as (client, _):
        open_doc(client, URI, DOC)
        item = (await complete_like_helix(client, 1, 4)).items[0]
        assert item.label == "if a:"  # the first line, whole: Helix shows it in the menu
        assert item.label_details.description == "+2 lines"
        assert item.filter_text == MULTI  # Helix filters what is typed after the request by it
        assert item.kind == types.CompletionItemKind.Text
        assert item.detail == f"codelsp · {model.path.stem}"  # Helix: in a code block over the doc
        # Helix renders documentation as markdown: the whole suggestion in a fenced python block
        assert item.documentation == types.MarkupContent(
            kind=types.MarkupKind.Markdown, value=f"```python\n{MULTI}\n```"
        )
        assert item.text_edit.range == types.Range(start=types.Position(1, 4), end=types.Position(1, 4))
        assert item.sort_text and item.preselect


async def test_plain_text_documentation_for_other_clients(model):
    """A client that names no documentation format gets plain text (LSP's default)."""
    async with lsp_server("--model", str(model.path), capabilities=helix_capabilities()) as (client, _):
        open_doc(client, URI, DOC)
        item = (await complete_like_helix(client, 1, 4)).items[0]
        assert item.documentation == MULTI
