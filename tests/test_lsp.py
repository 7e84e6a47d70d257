"""The real server over stdio: completion, inline completion, settings, encodings."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types

from support import complete_at, inline_at, lsp_server, open_doc

URI = "file:///work/add.py"
ADD = "def add(a, b):\n    \n"


async def test_advertises_completion_and_inline_completion(model_factory):
    model = model_factory("starcoder", default="answer")
    async with lsp_server("--model", str(model.path)) as (client, init):
        caps = init.capabilities
        assert caps.completion_provider is not None
        assert caps.inline_completion_provider
        assert caps.text_document_sync is not None
        assert init.server_info.name == "codelsp"


async def test_completion_and_inline_completion_give_the_same_exact_answer(model_factory):
    model = model_factory("starcoder", default="answer")
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, URI, ADD)
        result = await complete_at(client, URI, 1, 4)
        assert len(result.items) == 1
        item = result.items[0]
        edit = item.text_edit
        assert edit.new_text == "return a + b"
        assert edit.range == types.Range(start=types.Position(line=1, character=4), end=types.Position(line=1, character=4))
        assert item.insert_text_format == types.InsertTextFormat.PlainText
        assert item.label == "return a + b"

        inline = await inline_at(client, URI, 1, 4)
        assert [i.insert_text for i in inline.items] == ["return a + b"]


async def test_completion_item_replaces_the_word_before_the_cursor(model_factory):
    # Menus (Helix) filter by the word typed so far: the edit covers it.
    model = model_factory("codellama", answer="urn a + b")
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, URI, "def add(a, b):\n    ret\n")
        result = await complete_at(client, URI, 1, 7)
        item = result.items[0]
        assert item.text_edit.new_text == "return a + b"
        assert item.filter_text == "return a + b"
        assert item.text_edit.range.start == types.Position(line=1, character=4)
        assert item.text_edit.range.end == types.Position(line=1, character=7)
        inline = await inline_at(client, URI, 1, 7)
        assert inline.items[0].insert_text == "urn a + b"


async def test_snippet_clients_get_an_escaped_snippet_and_the_whole_first_line(model_factory):
    # Neovim 0.11 inserts a snippet item's label while it is selected and expands the snippet on
    # accept; a plain-text item would give only its first word.
    from support import client_capabilities

    caps = client_capabilities()
    caps.text_document.completion = types.CompletionClientCapabilities(
        completion_item=types.ClientCompletionItemOptions(snippet_support=True))
    answer = 'print(f"${x}") \\ 1'
    model = model_factory("starcoder", answer=answer, default="answer")
    async with lsp_server("--model", str(model.path), capabilities=caps) as (client, _):
        open_doc(client, URI, ADD)
        item = (await complete_at(client, URI, 1, 4)).items[0]
        assert model.completion == answer
        assert item.insert_text_format == types.InsertTextFormat.Snippet
        assert item.text_edit.new_text == 'print(f"\\${x\\}") \\\\ 1'
        assert item.label == answer and item.filter_text == answer
        inline = await inline_at(client, URI, 1, 4)
        assert [i.insert_text for i in inline.items] == [answer]  # inline items are plain text


@pytest.mark.parametrize("encoding, column", [("utf-16", 17), ("utf-8", 20), ("utf-32", 16)])
async def test_positions_follow_the_negotiated_encoding(model_factory, encoding, column):
    # 'é' is 1 UTF-16 unit / 2 UTF-8 bytes; '😀' is 2 UTF-16 units / 4 UTF-8 bytes.
    # Only the exact cursor (before the closing bracket) gives "1": one character off and the
    # text after the cursor differs, so the closing bracket would not be trimmed.
    model = model_factory("starcoder", answer="1)", default="answer")
    text = 'x = f("é😀", ...,)\n'
    line = 'x = f("é😀", ...,'
    async with lsp_server("--model", str(model.path), encodings=[encoding]) as (client, init):
        assert init.capabilities.position_encoding == encoding
        open_doc(client, URI, text)
        result = await complete_at(client, URI, 0, column)
        assert result.items[0].text_edit.new_text == "1", line


async def test_incremental_edits_are_applied(model_factory):
    model = model_factory("starcoder", answer="a, b)", default="answer")
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, URI, "x = 1\n")
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(line=0, character=4), end=types.Position(line=0, character=5)),
                        text="add()",
                    )
                ],
            )
        )
        result = await complete_at(client, URI, 0, 8)
        assert result.items[0].text_edit.new_text == "a, b"


async def test_settings_layers_cli_beats_configuration_beats_init_options(model_factory):
    model = model_factory("starcoder", default="answer")
    async with lsp_server("--model", str(model.path), init_options={"maxTokens": 1}) as (client, _):
        open_doc(client, URI, ADD)
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return"
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"codelsp": {"maxTokens": 3}})
        )
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a +"
    async with lsp_server("--model", str(model.path), "--max-tokens", "2", init_options={"maxTokens": 1}) as (client, _):
        open_doc(client, URI, ADD)
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"codelsp": {"maxTokens": 3}})
        )
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a"


async def test_a_configuration_change_for_other_servers_keeps_codelsps_settings(model_factory):
    # eglot sends every server's sections in one didChangeConfiguration; the client has no
    # codelsp section to give when asked (workspace/configuration answers null)
    model = model_factory("starcoder")
    async with lsp_server("--model", str(model.path), "--threads", "1") as (client, _):
        open_doc(client, URI, ADD)
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"codelsp": {"maxTokens": 3}}))
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a +"
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"pylsp": {"plugins": {"pycodestyle": {"enabled": False}}}, "rust-analyzer": {}}))
        await asyncio.sleep(0.5)
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a +"
        assert not any("unknown setting" in m.message for m in client.log_messages)
        # where the client does have a codelsp section, asking for it finds it
        client.set_configuration({"maxTokens": 1}, section="codelsp")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"pylsp": {}}))
        await asyncio.sleep(0.5)
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return"


async def test_changing_the_model_in_settings_reloads_it(model_factory):
    first = model_factory("starcoder", default="answer")
    second = model_factory("starcoder", answer="return a * b", default="answer")
    async with lsp_server(init_options={"model": str(first.path)}) as (client, _):
        open_doc(client, URI, ADD)
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a + b"
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"codelsp": {"model": str(second.path)}})
        )
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a * b"


async def test_a_bad_model_in_settings_keeps_the_old_one_and_says_why(model_factory, tmp_path):
    model = model_factory("starcoder", default="answer")
    bad = tmp_path / "broken.gguf"
    bad.write_text("not a model")
    async with lsp_server(init_options={"model": str(model.path)}) as (client, _):
        open_doc(client, URI, ADD)
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a + b"
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"codelsp": {"model": str(bad)}})
        )
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a + b"
        for _ in range(50):
            if any(str(bad) in m.message for m in client.log_messages):
                break
            await asyncio.sleep(0.05)
        assert any("not a GGUF file" in m.message and m.type == types.MessageType.Error for m in client.log_messages)


async def test_model_loading_reports_progress(model_factory):
    model = model_factory("starcoder", default="answer")
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, URI, ADD)
        await complete_at(client, URI, 1, 4)
        for _ in range(50):
            if any(len(v) >= 2 for v in client.progress_reports.values()):
                break
            await asyncio.sleep(0.05)
        reports = [r for v in client.progress_reports.values() for r in v]
        assert isinstance(reports[0], types.WorkDoneProgressBegin)
        assert isinstance(reports[-1], types.WorkDoneProgressEnd) and "ready" in reports[-1].message


async def test_a_missing_model_is_shown_to_the_user(tmp_path):
    async with lsp_server("--model", str(tmp_path / "missing.gguf")) as (client, _):
        open_doc(client, URI, ADD)
        result = await complete_at(client, URI, 1, 4)
        assert list(result.items) == []
        for _ in range(50):
            if client.messages:
                break
            await asyncio.sleep(0.05)
        assert any("model file not found" in m.message for m in client.messages)


async def test_unopened_document_gives_an_empty_answer(model_factory):
    model = model_factory("starcoder", default="answer")
    async with lsp_server("--model", str(model.path)) as (client, _):
        result = await complete_at(client, "file:///never/opened.py", 0, 0)
        assert list(result.items) == []
        open_doc(client, URI, ADD)
        assert (await complete_at(client, URI, 1, 4)).items[0].text_edit.new_text == "return a + b"
