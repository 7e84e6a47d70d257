"""The language server: thin LSP handlers that delegate to plain modules.

Handlers translate between LSP and the completion session (completion/session.py): positions to
offsets here, completions to items in items.py. All model work runs on the engine thread
(engine/worker.py). Nothing here touches llama.cpp.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from codelsp import __version__
from codelsp.completion.placement import Edit
from codelsp.completion.session import Answer, CompletionSession, OpenDocument
from codelsp.lsp.capabilities import Client
from codelsp.lsp.documents import lsp_lines
from codelsp.lsp.documents import resolve as resolve_position
from codelsp.lsp.items import inline_list, menu_list
from codelsp.engine.worker import Engine
from codelsp.engine.generation import Cancelled
from codelsp.languages import comment_prefix, language_of
from codelsp.lsp.protocol import CodeLspProtocol
from codelsp.lsp.code_actions import register as register_actions
from codelsp.lsp.nextedit import copilot_opt_in
from codelsp.lsp.nextedit import register as register_next_edits
from codelsp.settings import Settings, SettingsLayers, reload_key

log = logging.getLogger(__name__)

FOCUS = "codelsp/didFocus"  # notification: the editor shows this document now (editors/ send it)
CONTEXT = "codelsp/context"  # notification: definitions/snippets the client knows for a document
MAX_SNIPPETS = 32
MAX_SNIPPET_CHARS = 8000


class LspLogHandler(logging.Handler):
    """Forwards log records to the client as window/logMessage (from any thread)."""

    LEVELS = {
        logging.ERROR: types.MessageType.Error,
        logging.WARNING: types.MessageType.Warning,
        logging.INFO: types.MessageType.Info,
        logging.DEBUG: types.MessageType.Log,
    }

    def __init__(self, server: "CodeLspServer"):
        super().__init__()
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        loop = self.server.loop
        if loop is None or loop.is_closed() or not self.server.initialized:
            return
        msg_type = self.LEVELS.get(record.levelno, types.MessageType.Log)
        try:
            message = self.format(record)
        except Exception:  # noqa: BLE001
            return
        params = types.LogMessageParams(type=msg_type, message=message)
        try:
            loop.call_soon_threadsafe(self.server.window_log_message, params)
        except RuntimeError:
            pass


class CodeLspServer(LanguageServer):
    def __init__(self, cli_options: dict[str, Any] | None = None, ablate: frozenset[str] = frozenset()):
        super().__init__("codelsp", __version__, protocol_cls=CodeLspProtocol)
        self.layers = SettingsLayers(cli=cli_options or {}, ablate=ablate)
        self.settings, problems = self.layers.effective()
        for p in problems:
            log.warning("%s", p)
        self.engine = Engine()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.initialized = False
        self.client = Client()  # what the client can do, read at initialize (capabilities.py)
        self._loaded_for: tuple | None = None
        self._draft_for: tuple | None = None
        self._progress_begun: set[str] = set()  # work-done tokens of model loads/downloads begun
        self._told_context_off = False  # codelsp/context snippets while repoContextTokens is 0: said once
        self.session = CompletionSession(
            self.engine, self.settings, loop=lambda: self.loop, document=self._document,
            open_texts=lambda: {u: d.source for u, d in self.workspace.text_documents.items()},
            show_error=self._show_error, roots=self._roots,
        )

    def _roots(self) -> list[str]:
        """The workspace folders' local paths (workspaceFolders, else rootUri/rootPath): the
        project the repository context reads; none before initialize."""
        from codelsp.completion.repo import uri_path

        try:
            ws = self.workspace
        except RuntimeError:  # pygls: no workspace before initialize
            return []
        paths = [p for p in (uri_path(f.uri) for f in ws.folders.values()) if p is not None]
        if not paths and ws.root_path:
            paths = [ws.root_path]
        return [str(p) for p in paths]

    def report_server_error(self, error: Exception, source: Any) -> None:
        """A frame that is not JSON gets a ParseError answer (protocol.py), not a message box."""
        if not self.protocol.report_error(error, source):
            super().report_server_error(error, source)

    # --- settings and models ----------------------------------------------------------
    def apply_settings(self) -> None:
        settings, problems = self.layers.effective()
        for p in problems:
            log.warning("%s", p)
        self.settings = settings
        self.session.apply(settings)
        logging.getLogger("codelsp").setLevel(settings.log_level.upper())
        model_key = reload_key(settings)  # the settings declared reload="model" (settings.py)
        draft_key = reload_key(settings, "draft")  # speculative, draftModel: the draft model alone
        if model_key != self._loaded_for:
            self._loaded_for, self._draft_for = model_key, draft_key
            self.load_models(settings)
        elif draft_key != self._draft_for:
            self._draft_for = draft_key
            self.engine.load_draft(settings)

    def load_models(self, settings: Settings) -> None:
        token = f"codelsp-load-{time.monotonic_ns()}"
        progress = self._progress_supported()

        def status(state: str, message: str, percentage: int | None = None) -> None:
            if self.loop is None:
                return
            self.loop.call_soon_threadsafe(self._on_model_status, token, progress, state, message, percentage)

        if progress and self.loop is not None:
            async def create() -> None:
                try:
                    await self.work_done_progress.create_async(token)
                except Exception:  # noqa: BLE001 - progress is optional
                    pass

            self.loop.create_task(create())
        job = self.engine.load(settings, status)
        job.future.add_done_callback(self._on_load_done)

    def _on_load_done(self, future) -> None:
        exc = future.exception()
        if exc is not None and not isinstance(exc, Cancelled):
            if self.engine.model is not None:
                log.error("%s; still serving with %s", exc, self.engine.model.path)
            else:
                log.error("%s", exc)

    def _progress_supported(self) -> bool:
        return self.client.progress

    def _on_model_status(
        self, token: str, progress: bool, state: str, message: str, percentage: int | None = None
    ) -> None:
        begun = self._progress_begun
        try:  # for status bars (the VS Code extension): loading | ready | error
            self.protocol.notify("codelsp/status", {"state": "loading" if state == "progress" else state, "message": message})
        except Exception:  # noqa: BLE001 - the stream may be closing
            pass
        if not progress:
            return
        try:
            if state in ("loading", "progress") and token in begun:  # download progress, then loading
                self.work_done_progress.report(token, types.WorkDoneProgressReport(message=message, percentage=percentage))
            elif state in ("loading", "progress"):
                begun.add(token)
                self.work_done_progress.begin(
                    token, types.WorkDoneProgressBegin(title="codelsp", message=message, cancellable=False,
                                                       percentage=percentage)
                )
            else:
                begun.discard(token)
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        except Exception:  # noqa: BLE001 - the client may not have accepted the token
            pass

    # --- completion -------------------------------------------------------------------
    async def completion_at(
        self, uri: str, position: types.Position, *, more: int = 0, now: bool = False,
        selected: types.SelectedCompletionInfo | None = None,
    ) -> tuple[Answer, Any] | None:
        """The completion at an LSP position, placed in the document as it is when the answer is
        ready, and that document (for positions: items.py); None when there is nothing to offer.
        `selected`: inline completion's `context.selectedCompletionInfo`; `more` and `now`:
        CompletionSession.completion_at."""
        doc = self.workspace.open_document(uri)  # any spelling of the URI (documents.py)
        if doc is None:
            log.warning("completion requested for a document that is not open: %s", uri)
            return None
        text = doc.source  # read before any await: the position is in this text
        lines = lsp_lines(text)
        offset, where, problem = resolve_position(lines, position, doc.encoding)
        if problem and where.line < position.line:
            log.warning("%s of %s: nothing to complete", problem, uri)
            return None
        if problem:  # LSP: past the end of the line means its end; inside a character, its start
            log.warning("%s of %s: completing at %d:%d", problem, uri, where.line, where.character)
        chosen = _selected_edit(text, lines, selected, offset, doc.encoding, uri) if selected is not None else None
        view = _open_document(doc)
        answer = await self.session.completion_at(uri, view, offset, more=more, now=now, selected=chosen)
        current = self.workspace.open_document(uri)
        if answer is None or current is None or current.source != answer.text:
            return None  # closed, or changed again after the answer was placed (not on the loop: never)
        return answer, current

    def _document(self, uri: str) -> OpenDocument | None:
        """The session's view of an open document (any spelling of its URI), or None."""
        doc = self.workspace.open_document(uri)
        return None if doc is None else _open_document(doc)

    def _focus_offset(self, uri: str, position: types.Position | None) -> int | None:
        """The offset of a `codelsp/didFocus` position in its document; None when it gives none."""
        doc = self.workspace.open_document(uri)
        if doc is None or position is None:
            return None
        offset, _where, problem = resolve_position(lsp_lines(doc.source), position, doc.encoding)
        if problem:
            log.debug("%s %s: %s", FOCUS, doc.uri, problem)
        return offset

    def _show_error(self, error: str) -> None:
        self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=f"codelsp: {error}"))

    def model_name(self) -> str:
        """The completion model as the menu shows it: the GGUF file's name without `.gguf`, or a
        remote backend's model."""
        model = self.engine.model
        if model is None:
            return ""
        if model.remote:
            return model.name or ""
        return os.path.basename(str(model.path)).removesuffix(".gguf")


def _field(obj: Any, name: str) -> Any:
    """`obj[name]` or `obj.name` (pygls hands custom methods' params over as either)."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _focus_params(params: Any) -> tuple[str | None, types.Position | None]:
    """(uri, position) of a `codelsp/didFocus`; (None, None) when it names no document. A
    position that is not two LSP unsigned integers is left out (the last known cursor is used)."""
    uri = _field(_field(params, "textDocument"), "uri")
    if not isinstance(uri, str):
        return None, None
    pos = _field(params, "position")
    line, character = _field(pos, "line"), _field(pos, "character")
    def valid(n: Any) -> bool:  # LSP's uinteger, not a bool
        return isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31

    if valid(line) and valid(character):
        return uri, types.Position(line=line, character=character)
    return uri, None


def _at(p: types.Position) -> str:
    return f"{p.line}:{p.character}"


def _span(r: types.Range) -> str:
    return f"{_at(r.start)}-{_at(r.end)}"


def _selected_edit(text: str, lines: list[str], selected: types.SelectedCompletionInfo, offset: int,
                   encoding: str, uri: str) -> Edit | None:
    """The completion menu's selected item as an edit of the document: it replaces its range
    with its text. None (and a log line) when its range does not hold the cursor's line up to
    the cursor (the item is then ignored)."""
    start, _, p1 = resolve_position(lines, selected.range.start, encoding)
    end, _, p2 = resolve_position(lines, selected.range.end, encoding)
    span = text[start:max(end, offset)]
    if p1 or p2 or start > end or start > offset or "\n" in span or "\r" in span:
        log.warning("selectedCompletionInfo of %s: range %s is not on the cursor's line, from before it: ignored",
                    uri, selected.range)
        return None
    return Edit(start, end, selected.text)


def _open_document(doc: Any) -> OpenDocument:
    """A pygls document as the completion session sees it."""
    return OpenDocument(doc.uri, doc.source, comment_prefix(language_of(doc.language_id, doc.uri)))


def create_server(cli_options: dict[str, Any] | None = None, ablate: frozenset[str] = frozenset()) -> CodeLspServer:
    server = CodeLspServer(cli_options, ablate)
    handler = LspLogHandler(server)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("codelsp").addHandler(handler)

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: CodeLspServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        ls.layers.init_options = params.initialization_options or {}
        ls.client = Client.from_initialize(params)
        if params.process_id:
            _watch_parent(params.process_id)

    @server.feature(types.INITIALIZED)
    def on_initialized(ls: CodeLspServer, params: types.InitializedParams) -> None:
        ls.initialized = True
        ls.apply_settings()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_config(ls: CodeLspServer, params: types.DidChangeConfigurationParams) -> None:
        settings = params.settings
        opt_in = copilot_opt_in(settings)  # copilot-lsp.nvim's nextEditSuggestions.enabled
        if opt_in is not None:
            ls.next_edits.opted_in = opt_in
        others_only = False
        if isinstance(settings, dict) and "codelsp" in settings:
            settings = settings["codelsp"]
            if settings == []:  # an empty Lua table arrives as a JSON array (Neovim)
                settings = {}
        elif isinstance(settings, dict) and settings and not set(settings) & set(Settings.keys()):
            # only other servers' sections (eglot sends every server's): nothing for codelsp in
            # it; ask for codelsp's own section where the client can answer, else keep ours
            others_only, settings = True, None
        if not settings and (others_only or not isinstance(settings, dict) or settings is params.settings):
            caps = ls.client_capabilities
            if caps and caps.workspace and caps.workspace.configuration:
                try:
                    result = await ls.workspace_configuration_async(
                        types.ConfigurationParams(items=[types.ConfigurationItem(section="codelsp")])
                    )
                    settings = result[0] if result else None
                except Exception as exc:  # noqa: BLE001
                    log.warning("workspace/configuration failed: %s", exc)
                    settings = None
        if others_only and settings is None:
            log.debug("configuration change without a codelsp section: settings kept")
            return
        if settings is not None and not isinstance(settings, dict):
            log.warning("configuration: expected an object for section 'codelsp', got %r", settings)
            return
        ls.layers.client_config = settings or {}
        ls.apply_settings()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def on_open(ls: CodeLspServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.next_edits.opened(params.text_document.uri, params.text_document.text)
        ls.session.warm(params.text_document.uri)

    @server.feature(FOCUS)
    def on_focus(ls: CodeLspServer, params: Any) -> None:
        """codelsp's own notification: the editor shows this document now (no LSP message says
        so). Params: {"textDocument": {"uri"}, "position"?: Position}."""
        uri, position = _focus_params(params)
        if uri is None:
            log.warning("%s without textDocument.uri: ignored", FOCUS)
            return
        ls.session.focus(uri, ls._focus_offset(uri, position))

    @server.feature(CONTEXT)
    def on_context(ls: CodeLspServer, params: Any) -> None:
        """codelsp's own notification: code the client knows is relevant to a document (the
        definitions its language servers find for the identifiers near the cursor, snippets).
        Params: {"textDocument": {"uri"}, "snippets": [{"path": string, "text": string}]}; they
        replace what was sent for that document before. At most MAX_SNIPPETS of at most
        MAX_SNIPPET_CHARS characters each are kept; malformed entries are left out."""
        uri = _field(_field(params, "textDocument"), "uri")
        raw = _field(params, "snippets")
        if not isinstance(uri, str) or not isinstance(raw, list):
            log.warning("%s needs textDocument.uri and a snippets list: ignored", CONTEXT)
            return
        snippets = []
        for item in raw[:MAX_SNIPPETS]:
            path, text = _field(item, "path"), _field(item, "text")
            if isinstance(path, str) and path.strip() and isinstance(text, str) and text.strip():
                snippets.append((path, text[:MAX_SNIPPET_CHARS]))
        if len(snippets) < min(len(raw), MAX_SNIPPETS):
            log.debug("%s for %s: %d of %d snippets without a path or text left out", CONTEXT, uri,
                      min(len(raw), MAX_SNIPPETS) - len(snippets), min(len(raw), MAX_SNIPPETS))
        if snippets and ls.session.settings.repo_context_tokens <= 0 and not ls._told_context_off:
            ls._told_context_off = True
            log.info("%s: snippets are kept but not used while repoContextTokens is 0 (off)", CONTEXT)
        ls.session.set_snippets(uri, snippets)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def on_change(ls: CodeLspServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.next_edits.changed(params.text_document.uri)
        ls.session.after_change(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def on_close(ls: CodeLspServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.next_edits.closed(params.text_document.uri)
        ls.session.close(params.text_document.uri)

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=[".", "(", " ", ":", "\n"], resolve_provider=False),
    )
    async def on_completion(ls: CodeLspServer, params: types.CompletionParams) -> types.CompletionList | None:
        where = _at(params.position)  # before the await: completion_at may clamp it
        found = await ls.completion_at(params.text_document.uri, params.position)
        menu = menu_list(found, ls.client, ls.model_name())
        if log.isEnabledFor(logging.DEBUG):
            log.debug("menu %s at %s: %s", params.text_document.uri, where,
                      [(_span(i.text_edit.range), i.text_edit.new_text) for i in menu.items if i.text_edit] or "nothing")
        return menu

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def on_inline(ls: CodeLspServer, params: types.InlineCompletionParams) -> types.InlineCompletionList | None:
        context = params.context
        invoked = context is not None and context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        selected = context.selected_completion_info if context is not None else None
        where = _at(params.position)
        found = await ls.completion_at(params.text_document.uri, params.position,
                                       more=ls.settings.candidates - 1, now=invoked, selected=selected)
        inline = inline_list(found)
        if log.isEnabledFor(logging.DEBUG):  # what the editor is told: the e2e test's record
            log.debug("inline %s at %s%s: %s", params.text_document.uri, where,
                      f" (menu item {_span(selected.range)} {selected.text!r} selected)" if selected else "",
                      [(_span(i.range), i.insert_text) for i in inline.items if i.range] or "nothing")
        return inline

    @server.feature("codelsp/stats")
    async def on_stats(ls: CodeLspServer, params: Any) -> dict[str, Any]:
        """Token counts and timings of the last completion per document, and totals. The document:
        `{"uri": ...}` or, as codelsp's notifications name it, `{"textDocument": {"uri": ...}}`."""
        uri = _field(params, "uri") or _field(_field(params, "textDocument"), "uri")
        return await ls.session.stats(uri if isinstance(uri, str) else None)

    @server.feature("codelsp/documentText")
    def on_document_text(ls: CodeLspServer, params: Any) -> dict[str, Any] | None:
        """The server's copy of a document (for tests: it must equal the client's); null if not open."""
        uri = params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)
        doc = ls.workspace.open_document(uri) if isinstance(uri, str) else None
        return None if doc is None else {"text": doc.source, "version": doc.version}

    @server.feature(types.SHUTDOWN)
    def on_shutdown(ls: CodeLspServer, params: Any) -> None:
        ls.engine.stop()

    register_actions(server)  # code actions and their commands (code_actions.py)
    register_next_edits(server)  # textDocument/copilotInlineEdit and its notifications (nextedit.py)
    return server


def _watch_parent(pid: int) -> None:
    """Exit when the editor that started us dies, so no orphan keeps the model in memory."""

    def watch() -> None:
        while True:
            time.sleep(3)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                log.info("parent process %d is gone: exiting", pid)
                os._exit(0)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="codelsp-parent-watch", daemon=True).start()
