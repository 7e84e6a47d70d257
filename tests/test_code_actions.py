"""Code actions through the real server: listing, Write function, Explain, Document, Fix,
progress, cancel, stale edits and completions that do not wait behind an action."""

from __future__ import annotations

import ast
import asyncio
from types import SimpleNamespace
from typing import Any, Union

import pytest
from lsprotocol import types

from support import inline_at, lsp_server, open_doc

STUB = '''import math


def add(a, b):
    """Return the sum of a and b."""
    pass


def mul(a, b):
    return a * b
'''
STUB_LINE = 5  # the `pass` line


def apply_text_edits(text: str, edits: list[types.TextEdit]) -> str:
    """Apply LSP edits (utf-16 positions; these tests use ASCII) to `text`, last first."""
    lines = text.split("\n")

    def offset(p: types.Position) -> int:
        return sum(len(line) + 1 for line in lines[: p.line]) + p.character

    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        a, b = offset(e.range.start), offset(e.range.end)
        text = text[:a] + e.new_text + text[b:]
    return text


class Editor:
    """The client side of workspace/applyEdit: records edits and applies them to its copy."""

    def __init__(self, client, uri: str, text: str, accept: bool = True):
        self.uri, self.text, self.accept = uri, text, accept
        self.edits: list[list[types.TextEdit]] = []

        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def apply(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
            changes = params.edit.changes or {}
            edits = list(changes.get(self.uri, []))
            for dc in params.edit.document_changes or []:
                if dc.text_document.uri == self.uri:
                    edits += list(dc.edits)
            self.edits.append(edits)
            if self.accept:
                self.text = apply_text_edits(self.text, edits)
            return types.ApplyWorkspaceEditResult(applied=self.accept)


def _command_or_action(obj: Any, _type: Any, converter) -> types.Command | types.CodeAction:
    # lsprotocol 2025.0.0 structures every code action that carries a command as a Command (it
    # only checks that a "command" key exists); a Command's "command" is a string.
    if isinstance(obj.get("command"), str):
        return converter.structure(obj, types.Command)
    return converter.structure(obj, types.CodeAction)


async def code_actions(client, uri: str, line: int, character: int = 0, end: tuple[int, int] | None = None,
                       diagnostics: list[types.Diagnostic] | None = None) -> list[types.CodeAction]:
    converter = client.protocol._converter
    converter.register_structure_hook(
        Union[types.Command, types.CodeAction], lambda o, t: _command_or_action(o, t, converter))
    end_pos = types.Position(line=end[0], character=end[1]) if end else types.Position(line=line, character=character)
    result = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(line=line, character=character), end=end_pos),
        context=types.CodeActionContext(diagnostics=diagnostics or []),
    ))
    return list(result or [])


async def run_action(client, action: types.CodeAction, **extra: Any) -> Any:
    args = list(action.command.arguments)
    args[0] = {**args[0], **extra}
    return ns(await asyncio.wait_for(client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=action.command.command, arguments=args)), 120))


def ns(result: Any) -> SimpleNamespace:
    """The command's JSON result, with attribute access."""
    return SimpleNamespace(**{"applied": None, "message": None, "markdown": None, **(result or {})})


def by_command(actions: list[types.CodeAction], command: str) -> types.CodeAction:
    found = [a for a in actions if a.command and a.command.command == command]
    assert found, f"no {command} in {[a.title for a in actions]}"
    return found[0]


async def open_and_pick(client, uri: str, text: str, line: int, character: int, command: str,
                        language: str = "python", diagnostics=None) -> tuple[Editor, types.CodeAction]:
    """Open `text`, list the actions at a position, and return the editor and the one named."""
    editor = Editor(client, uri, text)
    open_doc(client, uri, text, language=language)
    found = await code_actions(client, uri, line, character, diagnostics=diagnostics)
    return editor, by_command(found, command)


def logs(client) -> str:
    return "\n".join(m.message for m in client.log_messages)


async def test_actions_listed_at_a_stub_and_only_where_they_apply(model_factory):
    model = model_factory("codellama")
    uri = "file:///w/stub.py"
    async with lsp_server("--model", str(model.path)) as (client, result):
        assert result.capabilities.code_action_provider
        assert set(result.capabilities.execute_command_provider.commands) >= {
            "codelsp.writeFunction", "codelsp.explain", "codelsp.document", "codelsp.fix"}
        open_doc(client, uri, STUB)
        at_stub = await code_actions(client, uri, STUB_LINE, 4)
        commands = [a.command.command for a in at_stub]
        assert commands[:3] == ["codelsp.writeFunction", "codelsp.explain", "codelsp.document"]
        assert "add" in at_stub[0].title
        at_mul = [a.command.command for a in await code_actions(client, uri, 9, 4)]
        assert "codelsp.writeFunction" not in at_mul and "codelsp.explain" in at_mul
        # a diagnostic brings Fix; listing never ran the model
        diag = types.Diagnostic(range=types.Range(start=types.Position(line=9, character=11),
                                                  end=types.Position(line=9, character=12)),
                                message="undefined name 'c'")
        with_diag = await code_actions(client, uri, 9, 11, diagnostics=[diag])
        fix = by_command(with_diag, "codelsp.fix")
        assert fix.kind == types.CodeActionKind.QuickFix and "undefined name" in fix.title
        stats = await client.protocol.send_request_async("codelsp/stats", {})
        assert stats.totals.model == 0


async def test_write_function_replaces_exactly_the_stub_body(model_factory):
    # A generated model whose answer to any chat is exactly "return a + b".
    model = model_factory("codellama", answer="return a + b", default="answer")
    uri = "file:///w/stub.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        editor, action = await open_and_pick(client, uri, STUB, STUB_LINE, 4, "codelsp.writeFunction")
        result = await run_action(client, action)
        assert result.applied is True
        assert editor.text == STUB.replace("    pass\n", "    return a + b\n")
        ast.parse(editor.text)
        [edits] = editor.edits
        assert [(e.range.start.line, e.range.end.line) for e in edits] == [(STUB_LINE, STUB_LINE + 1)]
        # one model only: the log says the base model serves the actions too
        assert "no instructModel configured" in logs(client)


async def test_write_function_keeps_crlf_line_endings(model_factory):
    model = model_factory("codellama", answer="return a + b", default="answer")
    uri = "file:///w/with%20space.py"
    text = STUB.replace("\n", "\r\n")
    async with lsp_server("--model", str(model.path)) as (client, _):
        editor, action = await open_and_pick(client, uri, text, STUB_LINE, 4, "codelsp.writeFunction")
        assert (await run_action(client, action)).applied is True
        assert editor.text == text.replace("    pass\r\n", "    return a + b\r\n")


async def test_write_function_with_the_demo_instruct_model_edits_only_the_stub(model_factory, demo_model):
    model = model_factory("codellama")
    uri = "file:///w/stub.py"
    async with lsp_server("--model", str(model.path), "--instruct-model", str(demo_model),
                          init_options={"actionMaxTokens": 96}) as (client, _):
        editor, action = await open_and_pick(client, uri, STUB, STUB_LINE, 4, "codelsp.writeFunction")
        result = await run_action(client, action)
        assert result.applied is True, result
        [edits] = editor.edits
        assert [(e.range.start.line, e.range.end.line) for e in edits] == [(STUB_LINE, STUB_LINE + 1)]
        before, after = STUB.split("\n"), editor.text.split("\n")
        assert after[:STUB_LINE] == before[:STUB_LINE]
        tail = len(before) - STUB_LINE - 1
        assert after[-tail:] == before[-tail:]
        new_body = after[STUB_LINE: len(after) - tail]
        assert new_body and all(line.startswith("    ") or not line for line in new_body)
        try:  # the file stays valid Python whenever the model's code is
            ast.parse("\n".join(new_body).replace("    ", "", 1))
        except SyntaxError:
            return
        ast.parse(editor.text)


async def test_explain_inserts_a_comment_block_and_returns_markdown(model_factory):
    model = model_factory("codellama", answer="It multiplies two numbers.", default="answer")
    uri = "file:///w/stub.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        editor, action = await open_and_pick(client, uri, STUB, 9, 4, "codelsp.explain")
        result = await run_action(client, action)
        assert result.markdown == "It multiplies two numbers."
        assert result.applied is True
        assert editor.text == STUB.replace("def mul", "# It multiplies two numbers.\ndef mul")
        # the panel flavour only returns the markdown
        again = await run_action(client, action, insertComment=False)
        assert again.markdown == "It multiplies two numbers." and again.applied is False
        assert len(editor.edits) == 1


async def test_a_local_model_that_reasons_in_plain_text_gets_only_its_answer_used(model_factory):
    # The model writes `<think>…</think>` as ordinary tokens before its answer (a reasoning
    # model served without a reasoning parser, or in process)
    model = model_factory("codellama", answer="<think>print(1)</think>It multiplies.", default="answer",
                          plain_tokens=("<think>", "</think>"))
    assert model.completion.startswith("<think>print(1)</think>")
    uri = "file:///w/stub.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        editor, action = await open_and_pick(client, uri, STUB, 9, 4, "codelsp.explain")
        result = await run_action(client, action)
        assert result.markdown == "It multiplies." and result.applied is True
        assert editor.text == STUB.replace("def mul", "# It multiplies.\ndef mul")


async def test_explain_uses_the_language_comment_syntax(model_factory):
    model = model_factory("codellama", answer="It adds.", default="answer")
    uri = "file:///w/add.ts"
    text = "function add(a: number, b: number): number {\n  return a + b;\n}\n"
    async with lsp_server("--model", str(model.path)) as (client, _):
        editor, action = await open_and_pick(client, uri, text, 1, 2, "codelsp.explain", language="typescript")
        assert (await run_action(client, action)).applied is True
        assert editor.text == "// It adds.\n" + text


async def test_document_adds_a_docstring(model_factory):
    model = model_factory("codellama", answer="Multiply a by b.", default="answer")
    uri = "file:///w/stub.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        editor, action = await open_and_pick(client, uri, STUB, 9, 4, "codelsp.document")
        assert (await run_action(client, action)).applied is True
        assert editor.text == STUB.replace("def mul(a, b):\n", 'def mul(a, b):\n    """Multiply a by b."""\n')
        ast.parse(editor.text)


async def test_fix_replaces_the_code_with_the_answer(model_factory):
    model = model_factory("codellama", answer="return a * b", default="answer")
    uri = "file:///w/bug.py"
    text = "def mul(a, b):\n    return a * c\n"
    async with lsp_server("--model", str(model.path)) as (client, _):
        editor = Editor(client, uri, text)
        open_doc(client, uri, text)
        diag = types.Diagnostic(range=types.Range(start=types.Position(line=1, character=15),
                                                  end=types.Position(line=1, character=16)),
                                message="undefined name 'c'")
        action = by_command(await code_actions(client, uri, 1, 15, diagnostics=[diag]), "codelsp.fix")
        assert (await run_action(client, action)).applied is True
        # the answer had no signature: it replaces the body and keeps the signature
        assert editor.text == "def mul(a, b):\n    return a * b\n"


SLOW = {"actionMaxTokens": 96, "temperature": 0.8, "seed": 7}


async def start_slow_action(client, uri: str, text: str) -> tuple[asyncio.Future, str]:
    """Start Explain on the demo model; return its future once generation is under way."""
    open_doc(client, uri, text)
    action = by_command(await code_actions(client, uri, 0, 0, end=(len(text.split("\n")) - 1, 0)), "codelsp.explain")
    before = set(client.progress_reports)
    fut = client.protocol.send_request("workspace/executeCommand", types.ExecuteCommandParams(
        command=action.command.command, arguments=action.command.arguments), msg_id=f"action-{uri}")
    for _ in range(2400):  # up to 2 minutes on a busy machine
        new = [t for t in client.progress_reports if t not in before and str(t).startswith("codelsp-action")]
        if new and any(isinstance(v, types.WorkDoneProgressReport) for v in client.progress_reports[new[0]]):
            return fut, new[0]
        if fut.done():
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"the action never reported progress: {fut.done() and fut.result()}")


LONG_CODE = "".join(f"def helper_{i}(x):\n    return x * {i} + {i * i}\n\n" for i in range(12))


async def test_progress_and_cancel_by_the_client_leave_the_document_untouched(demo_model):
    uri = "file:///w/long.py"
    async with lsp_server("--model", str(demo_model), init_options=SLOW) as (client, _):
        editor = Editor(client, uri, LONG_CODE)
        fut, token = await start_slow_action(client, uri, LONG_CODE)
        reports = client.progress_reports[token]
        assert isinstance(reports[0], types.WorkDoneProgressBegin) and reports[0].cancellable
        assert any(isinstance(v, types.WorkDoneProgressReport) and "tokens" in (v.message or "") for v in reports)
        client.protocol.notify(types.WINDOW_WORK_DONE_PROGRESS_CANCEL, types.WorkDoneProgressCancelParams(token=token))
        result = ns(await asyncio.wait_for(asyncio.wrap_future(fut), 300))
        assert result.applied is False and result.message == "cancelled"
        assert isinstance(client.progress_reports[token][-1], types.WorkDoneProgressEnd)
        assert editor.edits == [] and editor.text == LONG_CODE

        # $/cancelRequest does the same
        fut, token = await start_slow_action(client, "file:///w/long2.py", LONG_CODE)
        client.protocol.notify("$/cancelRequest", types.CancelParams(id="action-file:///w/long2.py"))
        with pytest.raises(Exception):
            await asyncio.wait_for(asyncio.wrap_future(fut), 300)
        assert editor.edits == []


async def test_a_completion_does_not_wait_for_a_running_action(model_factory, demo_model):
    fim = model_factory("codellama")
    uri = "file:///w/long.py"
    async with lsp_server("--model", str(fim.path), "--instruct-model", str(demo_model), init_options=SLOW) as (client, _):
        Editor(client, uri, LONG_CODE)
        fut, _token = await start_slow_action(client, uri, LONG_CODE)
        open_doc(client, "file:///w/add.py", "def add(a, b):\n    ")
        result = await asyncio.wait_for(inline_at(client, "file:///w/add.py", 1, 4), 60)
        assert [i.insert_text for i in result.items] == [fim.completion]
        await asyncio.wait_for(asyncio.wrap_future(fut), 300)
        # the action stepped aside for the completion, then went on where it stopped
        assert "1 pause(s) for completions" in logs(client) or "2 pause(s)" in logs(client), logs(client)


async def test_an_edit_made_while_the_action_ran_is_not_overwritten(demo_model):
    uri = "file:///w/long.py"
    async with lsp_server("--model", str(demo_model), init_options=SLOW) as (client, _):
        editor = Editor(client, uri, LONG_CODE)
        fut, _ = await start_slow_action(client, uri, LONG_CODE)
        # the user rewrites the first function while Explain is generating
        changed = LONG_CODE.replace("return x * 0 + 0", "return x - 1")
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=changed)]))
        result = ns(await asyncio.wait_for(asyncio.wrap_future(fut), 300))
        assert result.applied is False and "changed while the action ran" in result.message
        assert editor.edits == []
        assert any("changed while the action ran" in m.message for m in client.messages)


async def test_a_hostile_chat_template_in_the_model_file_cannot_run_code(model_factory, tmp_path):
    marker = tmp_path / "pwned"
    hostile = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
               "{{ lipsum.__globals__['os'].popen('touch " + str(marker) + "').read() }}")
    model = model_factory("codellama", answer="return a + b", default="answer", chat_template=hostile)
    uri = "file:///w/stub.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        editor, action = await open_and_pick(client, uri, STUB, STUB_LINE, 4, "codelsp.writeFunction")
        result = await run_action(client, action)
        assert not marker.exists()
        assert "unsafe" in logs(client) and "Llama-2" in logs(client)
        # the action still ran, on the fallback prompt format
        assert result.applied is True
        assert editor.text == STUB.replace("    pass\n", "    return a + b\n")
