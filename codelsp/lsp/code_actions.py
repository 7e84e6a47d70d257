"""LSP handlers for the code actions: list them instantly, run them as commands.

`textDocument/codeAction` only reads the text (targets.targets) and returns actions that carry a
command; nothing runs until the user picks one. The command (`workspace/executeCommand`) builds the
chat (prompts.messages), runs it on the engine (instruct.run_chat) with cancellable work-done
progress, turns the answer into an edit (edits.edit_for) and sends `workspace/applyEdit` — for
the document version it was computed on, re-anchored or refused if the user edited meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from typing import Any

from lsprotocol import types

from codelsp import languages
from codelsp.actions import edits, prompts, targets
from codelsp.actions.instruct import run_chat
from codelsp.engine.generation import Cancelled
from codelsp.models.errors import ModelError

log = logging.getLogger(__name__)

_tokens = itertools.count(1)


def _lsp_range(doc, edit: edits.LineEdit) -> tuple[types.Range, str]:
    """The LSP range and text that replace lines [start, end) of `doc` with the edit's lines."""
    lines = _lf(doc.source).split("\n")
    eol = "\r\n" if "\r\n" in doc.source else "\r" if "\r" in doc.source else "\n"
    new = eol.join(edit.new_lines)
    if edit.end < len(lines):
        rng = types.Range(start=types.Position(line=edit.start, character=0),
                          end=types.Position(line=edit.end, character=0))
        return rng, new + eol if edit.new_lines else ""
    # the edit reaches the last line, which has no newline after it
    last = len(lines) - 1
    end = types.Position(line=last, character=doc.position_codec.client_num_units(lines[last]))
    if edit.start > last:  # insert after the end of the document
        return types.Range(start=end, end=end), eol + new
    return types.Range(start=types.Position(line=edit.start, character=0), end=end), new


def _lf(text: str) -> str:
    """Actions work on \n lines; CRLF and CR documents keep the same line numbers that way."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _arg(args: tuple[Any, ...]) -> dict[str, Any]:
    if args and isinstance(args[0], dict):
        return args[0]
    raise ValueError("expected one argument: an object with 'uri' and 'position' or 'range'")


def _is_int(value: Any) -> bool:
    """A JSON integer: `true` is no line number, though Python's bool is an int."""
    return isinstance(value, int) and not isinstance(value, bool)


def _pos(value: Any) -> types.Position:
    if not isinstance(value, dict) or not _is_int(value.get("line")) or not _is_int(value.get("character")) \
            or value["line"] < 0 or value["character"] < 0:
        raise ValueError("a position must be an object with integer 'line' and 'character' (0 or more)")
    return types.Position(line=value["line"], character=value["character"])


APPLY_EDIT_TIMEOUT_S = 30.0  # how long an action waits for the editor to answer workspace/applyEdit


class ActionRunner:
    """Runs one code action's generation at a time for a server (a second one waits for the
    first); applying the edit happens outside that turn, with a bound on the editor's answer,
    so a client that never answers `workspace/applyEdit` holds up nothing else."""

    def __init__(self, server) -> None:
        self.server = server
        self.lock = asyncio.Lock()
        self._live: set[str] = set()  # progress tokens begun and not ended

    # --- listing --------------------------------------------------------------------------
    def list_actions(self, params: types.CodeActionParams) -> list[types.CodeAction]:
        uri = params.text_document.uri
        doc = self.server.workspace.open_document(uri)
        if doc is None:
            return []
        rng = params.range
        start, end = rng.start.line, rng.end.line
        if end > start and rng.end.character == 0:
            end -= 1  # a selection of whole lines ends at column 0 of the next one
        selected = (rng.start.line, rng.start.character) != (rng.end.line, rng.end.character)
        language = languages.language_of(doc.language_id, uri)
        diags = tuple(
            (d.range.start.line, d.range.end.line, d.message) for d in (params.context.diagnostics or [])
        )
        only = params.context.only
        found = targets.targets(_lf(doc.source), language, start, end if selected else None, diags)
        out = []
        for t in found:
            if only and not any(t.kind == k or t.kind.startswith(f"{k}.") for k in only):
                continue
            arg: dict[str, Any] = {"uri": uri, "position": {"line": start, "character": rng.start.character}}
            if selected:  # the client's own range: _target reads it the same way as here
                arg["range"] = {"start": {"line": rng.start.line, "character": rng.start.character},
                                "end": {"line": rng.end.line, "character": rng.end.character}}
            if t.command == targets.FIX:
                arg["diagnostics"] = [{"startLine": a, "endLine": b, "message": m} for a, b, m in diags]
            out.append(types.CodeAction(
                title=t.title, kind=types.CodeActionKind(t.kind) if t.kind in _KINDS else t.kind,
                command=types.Command(title=t.title, command=t.command, arguments=[arg]),
            ))
        return out

    # --- running --------------------------------------------------------------------------
    def _target(self, command: str, arg: dict[str, Any]):
        uri = arg.get("uri")
        if not isinstance(uri, str):
            raise ValueError("missing 'uri'")
        doc = self.server.workspace.open_document(uri)
        if doc is None:
            raise ValueError(f"document is not open: {uri}")
        language = languages.language_of(doc.language_id, uri)
        if isinstance(arg.get("range"), dict):
            a, b = _pos(arg["range"].get("start")), _pos(arg["range"].get("end"))
            end = b.line - 1 if b.line > a.line and b.character == 0 else b.line
            start_line, end_line = a.line, end if end > a.line else None
        else:
            start_line, end_line = _pos(arg.get("position")).line, None
        diags = tuple(
            (d["startLine"], d.get("endLine", d["startLine"]), str(d.get("message", "")))
            for d in arg.get("diagnostics") or []
            if isinstance(d, dict) and _is_int(d.get("startLine")) and _is_int(d.get("endLine", 0))
        )
        found = [t for t in targets.targets(_lf(doc.source), language, start_line, end_line, diags) if t.command == command]
        if not found:
            raise ValueError(f"{_NAMES[command]} does not apply at line {start_line + 1} of {uri}")
        return doc, language, found[0]

    async def run(self, command: str, args: tuple[Any, ...]) -> dict[str, Any]:
        name = _NAMES[command]
        async with self.lock:  # one at a time; the target is read when this one's turn comes
            try:
                arg = _arg(args)
                doc, language, target = self._target(command, arg)
            except ValueError as exc:
                log.warning("%s: %s", name, exc)
                return {"applied": False, "message": str(exc)}
            out = await self._run(command, name, arg, doc, language, target)
        if callable(out):  # an edit to apply: outside the lock, the editor may be slow to answer
            return await out()
        return out

    async def _run(self, command, name, arg, doc, language, target):
        """The command's result, or a coroutine function that applies its edit and returns it."""
        ls = self.server
        engine = ls.engine
        uri = doc.uri
        version, text = doc.version, _lf(doc.source)
        cancel = threading.Event()
        progress = await self._begin_progress(name, cancel)
        outcome = "failed"

        def on_tokens(n: int) -> None:
            if progress and ls.loop is not None:
                ls.loop.call_soon_threadsafe(self._report, progress, f"{n} tokens")

        try:
            msgs = prompts.messages(target, text, language, ls.settings.system_prompt)
            result = await run_chat(engine, msgs, ls.settings, cancel, on_tokens)
            if cancel.is_set():
                raise Cancelled("cancelled")
            outcome = f"{result.tokens} tokens" + (" (reasoning included)" if result.reasoning else "")
        except asyncio.CancelledError:  # $/cancelRequest
            outcome = "cancelled"
            log.info("%s cancelled: %s left untouched", name, uri)
            raise
        except Cancelled:  # window/workDoneProgress/cancel
            outcome = "cancelled"
            log.info("%s cancelled: %s left untouched", name, uri)
            return {"applied": False, "message": "cancelled"}
        except ModelError as exc:
            msg = f"codelsp: {name}: {exc}"
            ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=msg))
            return {"applied": False, "message": str(exc)}
        except Exception as exc:  # noqa: BLE001 - llama.cpp or a backend failed: say so, keep serving
            log.exception("%s failed", name)
            msg = f"codelsp: {name} failed: {exc}"
            ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=msg))
            return {"applied": False, "message": str(exc)}
        finally:
            self._end(progress, outcome)
        log.info("%s: %d tokens from %s (%s, %s prompt tokens, %d pause(s) for completions)",
                 name, result.tokens, result.model, result.template, result.prompt_tokens or "?", result.pauses)

        out: dict[str, Any] = {"applied": False}
        if command == targets.EXPLAIN:
            out["markdown"] = result.text.strip()
            if arg.get("insertComment") is False:
                return out
        edit = edits.edit_for(target, text, language, result.text)
        if edit is None:
            out["message"] = "the model's answer held no usable code"
            if result.reasoning and not result.text.strip():
                out["message"] = ("the model spent its answer reasoning and gave no answer "
                                  "(raise actionMaxTokens)")
            ls.window_show_message(types.ShowMessageParams(
                type=types.MessageType.Warning, message=f"codelsp: {name}: {out['message']}"))
            return out
        if language == "python" and command != targets.EXPLAIN:
            _warn_if_unparsable(text, edits.apply_edit(text, edit), name)

        async def apply() -> dict[str, Any]:
            return {**out, **await self._apply(name, uri, version, text, edit)}

        return apply

    async def _apply(self, name: str, uri: str, version, text: str, edit: edits.LineEdit) -> dict[str, Any]:
        ls = self.server
        doc = ls.workspace.open_document(uri)
        if doc is None:
            return {"applied": False, "message": "the document was closed"}
        if doc.version != version or _lf(doc.source) != text:
            moved = edits.reanchor(text, _lf(doc.source), edit)
            if moved is None:
                msg = (f"{name}: the code changed while the action ran; not applying its edit "
                       "over your changes (run it again)")
                ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=f"codelsp: {msg}"))
                log.warning("%s", msg)
                return {"applied": False, "message": msg}
            log.info("%s: the document changed meanwhile; the edit moved from line %d to %d",
                     name, edit.start + 1, moved.start + 1)
            edit = moved
        rng, new_text = _lsp_range(doc, edit)
        caps = ls.client_capabilities
        versioned = bool(caps and caps.workspace and caps.workspace.workspace_edit
                         and caps.workspace.workspace_edit.document_changes)
        if versioned:
            wsedit = types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=doc.version),
                edits=[types.TextEdit(range=rng, new_text=new_text)],
            )])
        else:
            wsedit = types.WorkspaceEdit(changes={uri: [types.TextEdit(range=rng, new_text=new_text)]})
        try:
            request = ls.protocol.send_request(
                types.WORKSPACE_APPLY_EDIT, types.ApplyWorkspaceEditParams(edit=wsedit, label=f"codelsp: {name}"))
            pending = asyncio.wrap_future(request)
            done, _ = await asyncio.wait({pending}, timeout=APPLY_EDIT_TIMEOUT_S)
            if not done:
                # not cancelled: a late answer still finds its request, and is dropped
                msg = (f"the editor did not answer workspace/applyEdit within {APPLY_EDIT_TIMEOUT_S:g} s; "
                       "the edit may or may not have been made")
                log.warning("%s: %s", name, msg)
                return {"applied": False, "message": msg}
            resp = pending.result()
        except Exception as exc:  # noqa: BLE001 - the client refused or does not support it
            log.warning("%s: workspace/applyEdit failed: %s", name, exc)
            return {"applied": False, "message": f"the editor did not apply the edit: {exc}"}
        applied, reason = _apply_result(resp)
        if not applied:
            msg = f"the editor did not apply the edit: {reason}" if reason else "the editor did not apply the edit"
            log.warning("%s: %s", name, msg)
            ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=f"codelsp: {name}: {msg}"))
            return {"applied": False, "message": msg}
        return {"applied": True}

    # --- progress -------------------------------------------------------------------------
    async def _begin_progress(self, name: str, cancel: threading.Event) -> str | None:
        ls = self.server
        if not ls._progress_supported():
            return None
        token = f"codelsp-action-{next(_tokens)}"
        try:
            await ls.work_done_progress.create_async(token)
            ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                title=f"codelsp: {name}", message="generating", cancellable=True, percentage=None))
        except Exception:  # noqa: BLE001 - progress is optional
            return None
        self._live.add(token)
        fut = ls.work_done_progress.tokens.get(token)
        if fut is not None:  # window/workDoneProgress/cancel cancels this future
            fut.add_done_callback(lambda f: cancel.set() if f.cancelled() else None)
        return token

    def _report(self, token: str, message: str) -> None:
        if token not in self._live:
            return  # a report queued from the engine thread after the end: drop it
        try:
            self.server.work_done_progress.report(token, types.WorkDoneProgressReport(message=message))
        except Exception:  # noqa: BLE001
            pass

    def _end(self, token: str | None, message: str) -> None:
        if token is None or token not in self._live:
            return
        self._live.discard(token)
        try:
            self.server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        except Exception:  # noqa: BLE001
            pass
        self.server.work_done_progress.tokens.pop(token, None)


def _apply_result(resp: Any) -> tuple[bool, str]:
    """(applied, the editor's reason) from an ApplyWorkspaceEditResult, whatever shape it came in:
    only an explicit `applied: true` is success (a null answer or a missing field is not)."""
    if isinstance(resp, dict):
        applied, reason = resp.get("applied"), resp.get("failureReason")
    else:
        applied, reason = getattr(resp, "applied", None), getattr(resp, "failure_reason", None)
    return applied is True, str(reason) if isinstance(reason, str) and reason.strip() else ""


_NAMES = {
    targets.WRITE_FUNCTION: "Write function",
    targets.EXPLAIN: "Explain",
    targets.DOCUMENT: "Document",
    targets.FIX: "Fix",
}
_KINDS = {k.value for k in types.CodeActionKind}


def _warn_if_unparsable(before: str, after: str, name: str) -> None:
    import ast

    try:
        ast.parse(before)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return  # it did not parse before either
    try:
        ast.parse(after)
    except (ValueError, MemoryError, RecursionError):
        return
    except SyntaxError as exc:
        log.warning("%s: the generated code does not parse (%s, line %s); check it", name, exc.msg, exc.lineno)


def register(server) -> None:
    runner = ActionRunner(server)
    server.actions = runner

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[types.CodeActionKind.RefactorRewrite, types.CodeActionKind.QuickFix,
                               "refactor.explain"],
            resolve_provider=False,
        ),
    )
    def on_code_action(ls, params: types.CodeActionParams) -> list[types.CodeAction]:
        return runner.list_actions(params)

    for command in targets.COMMANDS:
        def make(cmd: str):
            async def handler(ls, *args: Any) -> dict[str, Any]:
                return await runner.run(cmd, args)
            return handler

        server.command(command)(make(command))
