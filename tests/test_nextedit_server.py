"""Next edits through the real server (textDocument/copilotInlineEdit), with a generated model
whose rewrite of the region is known exactly (tests/modelgen.py): the request and answer shapes
copilot.el (copilot-nes.el) and copilot-lsp.nvim use, ranges after further typing, opt-in."""

from __future__ import annotations

import pytest
from lsprotocol import types
from pygls.protocol.json_rpc import JsonRPCNotification

from support import edit, lsp_server, open_doc

URI = "file:///tmp/nextedit/calc.py"
DOC = "def scale(value, factor):\n    return value*factor"
REWRITE = "def scale(value, ratio):\n    return value*ratio"  # the model's rewrite of the region


@pytest.fixture(scope="module")
def model(model_factory):
    # default "answer": the prompt's last token (the line break after `updated/calc.py`) starts it
    return model_factory("qwen", REWRITE, default="answer")


def plain(value):
    """pygls' answer objects (named tuples, nested) as plain JSON values."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


async def ask(client, line: int, character: int, version: int) -> dict:
    """The request exactly as copilot.el sends it (copilot-nes.el): uri and version, position."""
    res = await client.protocol.send_request_async("textDocument/copilotInlineEdit", {
        "textDocument": {"uri": URI, "version": version},
        "position": {"line": line, "character": character},
    })
    return plain(res)


async def counts(client) -> dict:
    return plain(await client.protocol.send_request_async("codelsp/nextEditStats", {}))


def rename_parameter(client) -> None:
    """The user renames the parameter in the signature: version 0 -> 1. Its other use below is
    the same edit again: the repeat stage (nextedit/repeat.py) predicts it without the model."""
    edit(client, URI, 1, (0, 17), (0, 23), "ratio")


def add_parameter(client) -> None:
    """The user adds a parameter to `def scale(value):` (DOC0): version 0 -> 1, the text DOC with
    `ratio` in the signature. No pattern to repeat: the model predicts the next edit."""
    edit(client, URI, 1, (0, 15), (0, 15), ", ratio")


DOC0 = "def scale(value):\n    return value*factor"


def apply(text: str, e: dict) -> str:
    lines = text.split("\n")
    r = e["range"]
    start = sum(len(x) + 1 for x in lines[: r["start"]["line"]]) + r["start"]["character"]
    end = sum(len(x) + 1 for x in lines[: r["end"]["line"]]) + r["end"]["character"]
    return text[:start] + e["text"] + text[end:]


@pytest.mark.asyncio
async def test_the_next_edit_below_the_cursor_in_copilot_shape_and_after_further_typing(model):
    async with lsp_server("--model", str(model.path), init_options={"nextEdit": True}) as (client, _):
        open_doc(client, URI, DOC0, version=0)  # copilot.el opens at version 0
        add_parameter(client)
        got = await ask(client, 0, 22, 1)
        assert got == {"edits": [{
            "text": "ratio",
            "range": {"start": {"line": 1, "character": 17}, "end": {"line": 1, "character": 23}},
            "textDocument": {"uri": URI, "version": 1},
            "command": {"title": "Accept next edit", "command": "codelsp.nextEdit.accept", "arguments": [URI, 1]},
        }]}
        assert apply(DOC.replace("factor", "ratio", 1), got["edits"][0]) == REWRITE
        assert (await counts(client))["last"]["reason"] == "edit"  # the model's rewrite

        # the user types a line above: the same edit, in the new version's coordinates
        edit(client, URI, 2, (0, 0), (0, 0), "# scaling\n")
        moved = await ask(client, 0, 9, 2)
        e = moved["edits"][0]
        assert e["range"] == {"start": {"line": 2, "character": 17}, "end": {"line": 2, "character": 23}}
        assert e["textDocument"] == {"uri": URI, "version": 2}
        assert apply("# scaling\n" + DOC.replace("factor", "ratio", 1), e) == "# scaling\n" + REWRITE
        c = await counts(client)
        assert (c["predicted"], c["reused"]) == (1, 1)  # the model ran once

        # copilot.el: shown (with the edit's command), then accepted by executeCommand sent as a
        # notification (no id); the accepted edit is not offered again from the cache
        client.protocol.notify("textDocument/didShowInlineEdit", {"item": {"command": e["command"]}})
        # (pygls' client refuses executeCommand without an id: the frame is sent as it is)
        client.protocol._send_data(JsonRPCNotification(method="workspace/executeCommand", jsonrpc="2.0", params={
            "command": e["command"]["command"], "arguments": e["command"]["arguments"]}))
        c = await counts(client)
        assert (c["shown"], c["accepted"]) == (1, 1)


@pytest.mark.asyncio
async def test_typing_into_the_predicted_range_drops_the_prediction(model):
    async with lsp_server("--model", str(model.path), init_options={"nextEdit": True}) as (client, _):
        open_doc(client, URI, DOC0, version=0)
        add_parameter(client)
        assert (await ask(client, 0, 22, 1))["edits"]
        edit(client, URI, 2, (1, 23), (1, 23), "s")  # "factors": the old range is stale
        got = await ask(client, 1, 24, 2)
        # predicted again on the new text (never the old range): the model's rewrite differs there
        assert all(e["textDocument"]["version"] == 2 for e in got["edits"])
        c = await counts(client)
        assert c["predicted"] == 2 and c["reused"] == 0
        # the prompt's start (the file up to the change) kept its KV state from the first prediction
        last = c["last"]
        assert last["reused"] > 10 and last["evaluated"] < last["promptTokens"] - 10


@pytest.mark.asyncio
async def test_nothing_is_predicted_for_a_client_that_did_not_opt_in(model):
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, URI, DOC, version=0)
        rename_parameter(client)
        assert await ask(client, 0, 22, 1) == {"edits": []}  # copilot-lsp.nvim reads result.edits
        c = await counts(client)
        assert c["enabled"] is False and c["predicted"] == 0


@pytest.mark.asyncio
async def test_copilot_lsp_nvim_opts_in_with_next_edit_suggestions_enabled(model):
    async with lsp_server("--model", str(model.path)) as (client, _):
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"nextEditSuggestions": {"enabled": True}}))
        open_doc(client, URI, DOC0, version=0)
        add_parameter(client)
        got = await ask(client, 0, 22, 1)
        assert [e["text"] for e in got["edits"]] == ["ratio"]


@pytest.mark.asyncio
async def test_the_history_through_the_server_stays_bounded(model):
    text = "".join(f"v{i} = {i}\n" for i in range(80))
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, URI, text, version=0)
        for n, line in enumerate(range(0, 80, 3)):  # 27 edits far apart
            edit(client, URI, n + 1, (line, 0), (line, 1), "w")
        c = await counts(client)
        assert c["hunks"] == 16


@pytest.mark.asyncio
async def test_next_edit_model_predicts_instead_of_the_base_model(model, model_factory):
    base = model_factory("qwen", "return a + b", default="answer")  # rewrites every region as `return a + b`
    async with lsp_server("--model", str(base.path), init_options={"nextEdit": True}) as (client, _):
        open_doc(client, URI, DOC0, version=0)
        add_parameter(client)
        assert [e["text"] for e in (await ask(client, 0, 22, 1))["edits"]] != ["ratio"]
    async with lsp_server("--model", str(base.path), "--next-edit-model", str(model.path),
                          init_options={"nextEdit": True}) as (client, _):
        open_doc(client, URI, DOC0, version=0)
        add_parameter(client)
        assert [e["text"] for e in (await ask(client, 0, 22, 1))["edits"]] == ["ratio"]


@pytest.mark.asyncio
async def test_a_renamed_name_s_next_use_is_predicted_without_the_model(model_factory):
    wrong = model_factory("qwen", "return a + b", default="answer")  # rewrites every region as `return a + b`
    async with lsp_server("--model", str(wrong.path), init_options={"nextEdit": True}) as (client, _):
        open_doc(client, URI, DOC, version=0)
        rename_parameter(client)
        got = await ask(client, 0, 22, 1)
        assert [(e["text"], e["range"]) for e in got["edits"]] == [
            ("ratio", {"start": {"line": 1, "character": 17}, "end": {"line": 1, "character": 23}})]
        c = await counts(client)
        assert c["last"]["reason"] == "repeat" and c["generated"] == 0 and c["evaluated"] == 0
