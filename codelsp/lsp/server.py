"""The language server: thin LSP handlers that delegate to plain modules.

Handlers translate between LSP and the pipeline (completion.py) and hand all model work to the
engine thread (engine.py). Nothing here touches llama.cpp.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from typing import Any
from urllib.parse import unquote

from cachetools import LRUCache
from lsprotocol import types
from pygls.lsp.server import LanguageServer

from codelsp import __version__
from codelsp.completion.pipeline import Completion, alternatives, complete, warm
from codelsp.lsp.documents import lsp_lines
from codelsp.lsp.documents import resolve as resolve_position
from codelsp.engine.worker import PRIORITY_WARM, Engine, Job
from codelsp.engine.generation import Cancelled, GenStats
from codelsp.models.errors import ModelError
from codelsp.languages import comment_prefix, language_of
from codelsp.completion.neighbors import Neighbors, extra_text
from codelsp.lsp.protocol import CodeLspProtocol
from codelsp.lsp.code_actions import register as register_actions
from codelsp.settings import Settings, SettingsLayers, reload_key
from codelsp.completion.suggestions import SuggestionCache

log = logging.getLogger(__name__)

WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
LABEL_MAX = 60
FOCUS = "codelsp/didFocus"  # notification: the editor shows this document now (editors/ send it)


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
        self.client_info_name: str | None = None  # clientInfo.name of initialize ("helix", "Neovim", …)
        self._loaded_for: tuple | None = None
        self._reported_error: str | None = None
        self._progress_begun: set[str] = set()  # work-done tokens of model loads/downloads begun
        self.suggestions = SuggestionCache()
        self.neighbors = Neighbors()
        self.anchors: LRUCache[str, int] = LRUCache(maxsize=256)  # per document (context.py); engine thread only
        self.in_flight: dict[str, tuple[str, int, Job]] = {}  # uri -> (text, offset, job) of its latest completion
        self.offered: dict[str, tuple[str, int, str]] = {}  # uri -> (text, offset, suggestion) last shown
        self.submitted: dict[str, int] = {}  # uri -> completions submitted (a warm job started before one is stale)
        self.last_offset: dict[str, int] = {}  # uri -> offset of its latest completion (where the cursor was)
        self.focused: str | None = None  # the document the user was last seen in (didFocus, a request)
        self.last_stats: dict[str, dict[str, Any]] = {}
        self.last_alternatives: dict[str, dict[str, Any]] = {}
        self._pending_alternatives: dict[str, tuple[str, int, Job]] = {}
        self.totals = {"requests": 0, "model": 0, "typeThrough": 0, "cancelled": 0,
                       "reused": 0, "restored": 0, "evaluated": 0, "generated": 0,
                       "alternatives": 0, "alternativeTokens": 0, "inFlight": 0, "speculative": 0, "warmed": 0,
                       "warmRestored": 0, "focused": 0,
                       "orphaned": 0}

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
        self.suggestions.clear()  # they were made with other settings
        self.in_flight.clear()
        self.offered.clear()
        logging.getLogger("codelsp").setLevel(settings.log_level.upper())
        model_key = reload_key(settings)  # the settings declared reload="model" (settings.py)
        if model_key != self._loaded_for:
            self._loaded_for = model_key
            self.load_models(settings)

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
        caps = self.client_capabilities
        return bool(caps and caps.window and caps.window.work_done_progress)

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
        self, uri: str, position: types.Position, *, more: int = 0, now: bool = False
    ) -> tuple[Completion, str] | None:
        """Run the pipeline for a position; None when there is nothing to offer.

        `more`: how many other candidates inline completion wants (setting `candidates` - 1).
        They never delay the first: it is answered as soon as it is generated, and the others are
        generated after it, in the background (`_alternatives`), then come with a later request
        at the same place or typed through. `now` (an explicitly invoked request, the user is
        waiting for them) waits for them instead.
        """
        doc = self.workspace.open_document(uri)  # any spelling of the URI (documents.py)
        if doc is None:
            log.warning("completion requested for a document that is not open: %s", uri)
            return None
        text = doc.source
        encoding = doc.position_codec.encoding or types.PositionEncodingKind.Utf16
        offset, where, problem = resolve_position(lsp_lines(text), position, encoding)
        if problem and where.line < position.line:
            log.warning("%s of %s: nothing to complete", problem, uri)
            return None
        if problem:  # LSP: past the end of the line means its end; inside a character, its start
            log.warning("%s of %s: completing at %d:%d", problem, uri, where.line, where.character)
            position.character = where.character  # the answer's ranges use the position
        word = ""
        i = offset
        while i > 0 and text[i - 1] in WORD_CHARS:  # no line break is a word character
            i -= 1
        word = text[i:offset]
        settings = self.settings
        engine = self.engine
        self.totals["requests"] += 1
        if settings.prompt_cache:
            hits = self.suggestions.lookup_all(uri, text, offset)
            if hits:
                if more and len(hits) <= more:
                    hits = await self._more_here(uri, doc, text, offset, hits, more, now) or hits
                self._record(uri, "typeThrough", GenStats(), 0.0)
                self._offer(uri, text, offset, hits[0])
                return Completion(hits[0], hits[0], "typeThrough", GenStats(), 0.0, others=hits[1:]), word
            ridden = await self._ride_in_flight(uri, text, offset)
            if ridden is not None:
                self._offer(uri, text, offset, ridden.text)
                return ridden, word

        job = self._submit_completion(uri, doc, text, offset, settings)
        try:
            # shielded: cancelling this request must not cancel the job's future (a job still
            # queued has a cancellable one), which later requests may be riding
            result = await asyncio.shield(asyncio.wrap_future(job.future))
        except asyncio.CancelledError:  # $/cancelRequest
            # Editors cancel the previous request when the user types; the next request may type
            # into this generation (_ride_in_flight), so it runs on, orphaned, until another job
            # waits (at its next token) or a newer request for the document supersedes it.
            # A remote backend's generation is stopped at once: its connection is closed, so the
            # server stops generating (README, Remote backends).
            job.orphaned = True
            if not job.riders and (engine.has_waiting() or ((m := engine.model) is not None and m.remote)):
                engine.cancel(job)
            self._record_cancel(uri)
            raise
        except Cancelled:  # superseded by a newer request for this document
            self._record_cancel(uri)
            return None
        except ModelError as exc:  # a remote backend that is down (remote.BackendError)
            self._report_no_model(str(exc))
            return None
        if result is None:
            self._report_no_model()
            return None
        self._reported_error = None  # working again: a later failure is shown again
        self._record(uri, "model", result.stats, result.total_ms)  # its suggestion is stored (_submit_completion)
        if more and result.text and (now or settings.prompt_cache) and not ((m := engine.model) is not None and m.remote):
            alt = self._alternatives(uri, doc, text, offset, result, more)
            if now:
                result.others = await self._await_alternatives(alt)
        self._offer(uri, text, offset, result.text)
        return result, word

    def _extra_snapshot(self, doc: Any, touch: bool) -> tuple[Any, str] | None:
        """The other open files' snapshot for the prompt (neighbors.py), or None when off."""
        if self.settings.extra_context_tokens <= 0:
            return None
        key = unquote(doc.uri)  # the workspace's own spelling of the URI
        if touch:
            self.neighbors.touch(key)
        others = {u: d.source for u, d in self.workspace.text_documents.items() if unquote(u) != key}
        return self.neighbors.snapshot(key, others), comment_prefix(language_of(doc.language_id, doc.uri))

    def _alternatives(self, uri: str, doc: Any, text: str, offset: int, first: Completion, more: int) -> Job:
        """Queue the generation of `more` other candidates at `offset` (after `first`); their
        texts are added to the suggestion cache. A newer request for the document cancels it."""
        engine, settings = self.engine, self.settings
        snap = self._extra_snapshot(doc, touch=False)

        def work(job: Job) -> list[str]:
            if engine.model is None:
                return []
            extra = extra_text(snap[0], settings.extra_context_tokens, engine.model.tokenize, snap[1]) if snap else ""
            found = alternatives(engine.model, uri, text, offset, settings, first, more, job.cancel, extra, self.anchors)
            stats = found.stats
            self.totals["alternatives"] += 1
            self.totals["alternativeTokens"] += stats.evaluated + stats.generated
            self.last_alternatives[uri] = {
                "candidates": len(found.texts), "tried": found.tried, "evaluated": stats.evaluated,
                "generated": stats.generated, "promptMs": round(stats.prompt_ms, 3), "genMs": round(stats.gen_ms, 3),
            }
            return found.texts

        job = engine.submit(work, key=uri)
        self._pending_alternatives[uri] = (text, offset, job)

        def done(future) -> None:
            if future.cancelled() or future.exception() is not None or self.loop is None:
                return
            try:
                self.loop.call_soon_threadsafe(self.suggestions.add_others, uri, text, offset, future.result())
            except RuntimeError:  # the loop is closed: shutting down
                pass

        job.future.add_done_callback(done)
        return job

    def _submit_completion(self, uri: str, doc: Any, text: str, offset: int, settings: Settings) -> Job:
        """Queue the pipeline for (text, offset) on the engine; newer jobs of `uri` supersede it."""
        engine = self.engine
        snap = self._extra_snapshot(doc, touch=True)

        def work(job: Job) -> Completion | None:
            if engine.model is None:
                return None
            extra = extra_text(snap[0], settings.extra_context_tokens, engine.model.tokenize, snap[1]) if snap else ""
            return complete(engine.model, uri, text, offset, settings, job.cancel, extra, self.anchors,
                            lambda so_far: progress(job, so_far))

        def progress(job: Job, so_far: str) -> None:
            job.partial = so_far
            if job.orphaned and not job.riders and engine.has_waiting():
                job.cancel.set()  # cancelled by its client, nobody rides it, and others wait

        job = engine.submit(work, key=uri)
        job.riders = 0
        self.in_flight[uri] = (text, offset, job)
        self.submitted[uri] = self.submitted.get(uri, 0) + 1
        self.last_offset[uri] = offset
        self.focused = uri

        def store(result: Completion) -> None:  # on the event loop: the caches are not thread-safe
            if settings is self.settings and settings.prompt_cache:
                self.suggestions.store(uri, text, offset, result.text)
            if job.orphaned:  # its request was cancelled: count the work here
                self.totals["orphaned"] += 1
                self._add_tokens(result.stats)

        def done(future) -> None:  # on the engine thread; also for a generation its client cancelled
            if not future.cancelled() and future.exception() is None and future.result() is not None \
                    and self.loop is not None:
                self.loop.call_soon_threadsafe(store, future.result())

        job.future.add_done_callback(done)
        return job

    async def _await_alternatives(self, job: Job) -> list[str]:
        """The other candidates of `job` ([] when it was superseded or failed: the first one
        still stands). Cancelling the request does not cancel the job."""
        try:
            return await asyncio.shield(asyncio.wrap_future(job.future))
        except Cancelled:
            return []
        except Exception as exc:  # noqa: BLE001 - logged; the first candidate is answered anyway
            log.warning("other candidates failed: %s", exc)
            return []

    async def _more_here(self, uri: str, doc: Any, text: str, offset: int, hits: list[str], more: int,
                         now: bool) -> list[str] | None:
        """The candidates at a place answered before, with the others once they are computed:
        waits for the background job started there; an explicit request starts one if none ran."""
        pending = self._pending_alternatives.get(uri)
        if pending is not None and pending[0] == text and pending[1] == offset:
            await self._await_alternatives(pending[2])
            await asyncio.sleep(0)  # the cache is updated on the loop (done callback above)
            return self.suggestions.lookup_all(uri, text, offset)
        if now:
            first = Completion(hits[0], hits[0], "typeThrough", GenStats(), 0.0)
            self.suggestions.store(uri, text, offset, hits[0])
            others = await self._await_alternatives(self._alternatives(uri, doc, text, offset, first, more))
            await asyncio.sleep(0)
            return [hits[0], *others]
        return None

    async def _ride_in_flight(self, uri: str, text: str, offset: int) -> Completion | None:
        """Answer from the generation still running for this document when the user has only
        typed (into) what it is producing: wait for it instead of superseding it, and answer the
        rest of its suggestion after the typed characters. None when there is none to ride, it
        ends in another text, or it is cancelled."""
        found = self.in_flight.get(uri)
        if found is None:
            return None
        old_text, old_offset, job = found
        if job.future.done():  # finished: the suggestion cache has its answer (if still valid)
            return None
        typed = text[old_offset:offset] if offset >= old_offset else None
        if (typed is None or not text.startswith(old_text[:old_offset]) or text[offset:] != old_text[old_offset:]
                or len(text) - len(old_text) != len(typed)):
            return None
        partial = job.partial
        if not (partial.startswith(typed) or typed.startswith(partial)):
            return None  # it is already producing something else
        job.riders += 1
        try:
            result = await asyncio.shield(asyncio.wrap_future(job.future))
        except asyncio.CancelledError:  # this request's own $/cancelRequest while it waited
            self._record_cancel(uri)
            raise
        except (Cancelled, ModelError):
            return None
        finally:
            job.riders -= 1
        if result is None or not result.text.startswith(typed) or not result.text[len(typed):].strip():
            return None
        rest = result.text[len(typed):]
        self._record(uri, "inFlight", GenStats(), 0.0)
        if self.settings.prompt_cache:
            self.suggestions.store(uri, old_text, old_offset, result.text)
        return Completion(rest, result.raw, "inFlight", result.stats, result.total_ms)

    def _offer(self, uri: str, text: str, offset: int, suggestion: str) -> None:
        """Remember the suggestion shown, to recognise the change that accepts it."""
        if suggestion:
            self.offered[uri] = (text, offset, suggestion)

    def after_change(self, uri: str) -> None:
        """A document changed: when the change inserted the suggestion last offered for it (the
        user accepted it), compute the next one at the new cursor before the editor asks."""
        offered = self.offered.pop(uri, None)
        doc = self.workspace.open_document(uri)
        if offered is None or doc is None or not self.settings.prompt_cache or self.engine.model is None:
            return
        text, offset, suggestion = offered
        new = doc.source
        if len(new) != len(text) + len(suggestion) or not new.startswith(suggestion, offset) \
                or not new.startswith(text[:offset]) or not new.endswith(text[offset:]):
            return
        at = offset + len(suggestion)
        settings = self.settings
        job = self._submit_completion(uri, doc, new, at, settings)  # which stores its suggestion

        def count() -> None:  # on the event loop
            self.totals["speculative"] += 1

        def done(future) -> None:  # on the engine thread
            if not future.cancelled() and future.exception() is None and future.result() is not None \
                    and self.loop is not None:
                self.loop.call_soon_threadsafe(count)

        job.future.add_done_callback(done)

    def warm(self, uri: str, offset: int | None = None, *, focus: bool = False) -> None:
        """Evaluate a document's prompt at low priority (engine PRIORITY_WARM: any request
        pre-empts it at the next batch), so the first keystroke there finds its state ready.

        On open (`focus` False) the cursor is not known: the prompt at `offset` (default: the end
        of the document, whose prompt holds the whole prefix window) is warmed only when the
        document has no state yet and the KV pool has free cells (a guess never evicts). When the
        user comes to the document (`focus`, from `codelsp/didFocus`), it is warmed at `offset`
        (default: where its last completion was asked, else its end) even over its own state, restoring it from
        system memory and evicting the least recently used documents as a request would. A warm
        job of the same document still queued or running is superseded; one that finds a
        completion was asked in the document since it was queued does nothing."""
        doc = self.workspace.open_document(uri)
        settings = self.settings
        if doc is None or not settings.prompt_cache or not settings.warm_documents:
            return
        engine = self.engine
        snap = self._extra_snapshot(doc, touch=False)
        text = doc.source
        if offset is None:
            offset = min(self.last_offset.get(uri, len(text)), len(text)) if focus else len(text)
        asked = self.submitted.get(uri, 0)

        def work(job: Job) -> GenStats | None:
            model = engine.model
            if model is None or self.submitted.get(uri, 0) != asked:
                return None  # a request for this document came first: its state is worth more
            if not focus and model.cached_tokens(uri) > 0:
                return None
            extra = extra_text(snap[0], settings.extra_context_tokens, model.tokenize, snap[1]) if snap else ""
            return warm(model, uri, text, offset, settings, job.cancel,
                        lambda: engine.more_urgent(job), extra, self.anchors, evict=focus)

        def count(stats: GenStats) -> None:  # on the event loop
            self.totals["warmed"] += stats.evaluated
            self.totals["warmRestored"] += stats.restored

        def done(future) -> None:  # on the engine thread
            if not future.cancelled() and future.exception() is None and future.result() is not None \
                    and self.loop is not None:
                self.loop.call_soon_threadsafe(count, future.result())

        engine.submit(work, key=f"warm {uri}", priority=PRIORITY_WARM).future.add_done_callback(done)

    def focus(self, uri: str, position: types.Position | None = None) -> None:
        """The user is in `uri` now (`codelsp/didFocus`: the editor switched to it, at
        `position` when it says). Coming back to a document other than the last one warms it
        there (`warm(focus=True)`); the same document again does nothing."""
        doc = self.workspace.open_document(uri)
        settings = self.settings
        if doc is None or uri == self.focused or not settings.prompt_cache or not settings.warm_documents:
            return
        uri = doc.uri  # the spelling of didOpen, which requests use (a focus may spell it otherwise)
        if uri == self.focused:
            return
        self.focused = uri
        self.totals["focused"] += 1
        offset = None
        if position is not None:
            encoding = doc.position_codec.encoding or types.PositionEncodingKind.Utf16
            offset, _where, problem = resolve_position(lsp_lines(doc.source), position, encoding)
            if problem:
                log.debug("%s %s: %s", FOCUS, uri, problem)
        log.debug("%s %s: warming it at %s", FOCUS, uri, "the last cursor" if offset is None else f"offset {offset}")
        self.warm(uri, offset, focus=True)

    def _record_cancel(self, uri: str) -> None:
        self.totals["cancelled"] += 1
        self.last_stats[uri] = {"source": "cancelled"}

    def _add_tokens(self, stats: GenStats) -> None:
        for k in ("reused", "restored", "evaluated", "generated"):
            self.totals[k] += getattr(stats, k)

    def _record(self, uri: str, source: str, stats: GenStats, total_ms: float) -> None:
        self.totals[source] += 1
        self._add_tokens(stats)
        self.last_stats[uri] = {
            "source": source, "reused": stats.reused, "restored": stats.restored, "shifted": stats.shifted,
            "evaluated": stats.evaluated,
            "generated": stats.generated, "promptMs": round(stats.prompt_ms, 3),
            "genMs": round(stats.gen_ms, 3), "totalMs": round(total_ms, 3),
        }

    def snippets_supported(self) -> bool:
        caps = self.client_capabilities
        try:
            return bool(caps.text_document.completion.completion_item.snippet_support)
        except AttributeError:
            return False

    def item_documentation(self, text: str, language: str = "") -> types.MarkupContent | str:
        """The whole completion for the documentation pane: a fenced code block where the client
        renders markdown (it says so in `documentationFormat`; Helix renders every documentation
        string as markdown without saying so, helix-term ui/completion.rs), plain text otherwise."""
        caps = self.client_capabilities
        formats = []
        try:
            formats = caps.text_document.completion.completion_item.documentation_format or []
        except AttributeError:
            pass
        client = (self.client_info_name or "").lower()
        if types.MarkupKind.Markdown in formats or client == "helix":
            longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
            fence = "`" * max(3, longest + 1)
            return types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"{fence}{language}\n{text}\n{fence}")
        return text

    def model_name(self) -> str:
        """The completion model as the menu shows it: the GGUF file's name without `.gguf`, or a
        remote backend's model."""
        model = self.engine.model
        if model is None:
            return ""
        if model.remote:
            return model.name or ""
        return os.path.basename(str(model.path)).removesuffix(".gguf")

    def _report_no_model(self, error: str | None = None) -> None:
        err = error or self.engine.model_error or "model is not loaded"
        if err != self._reported_error:
            self._reported_error = err
            self.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Error, message=f"codelsp: {err}")
            )


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


def _position_minus(doc_codec, position: types.Position, text: str) -> types.Position:
    return types.Position(line=position.line, character=position.character - doc_codec.client_num_units(text))


def create_server(cli_options: dict[str, Any] | None = None, ablate: frozenset[str] = frozenset()) -> CodeLspServer:
    server = CodeLspServer(cli_options, ablate)
    handler = LspLogHandler(server)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("codelsp").addHandler(handler)

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: CodeLspServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        ls.layers.init_options = params.initialization_options or {}
        ls.client_info_name = params.client_info.name if params.client_info else None
        if params.process_id:
            _watch_parent(params.process_id)

    @server.feature(types.INITIALIZED)
    def on_initialized(ls: CodeLspServer, params: types.InitializedParams) -> None:
        ls.initialized = True
        ls.apply_settings()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_config(ls: CodeLspServer, params: types.DidChangeConfigurationParams) -> None:
        settings = params.settings
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
        ls.warm(params.text_document.uri)

    @server.feature(FOCUS)
    def on_focus(ls: CodeLspServer, params: Any) -> None:
        """codelsp's own notification: the editor shows this document now (no LSP message says
        so). Params: {"textDocument": {"uri"}, "position"?: Position}."""
        uri, position = _focus_params(params)
        if uri is None:
            log.warning("%s without textDocument.uri: ignored", FOCUS)
            return
        ls.focus(uri, position)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def on_change(ls: CodeLspServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.after_change(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def on_close(ls: CodeLspServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri

        ls.suggestions.forget(uri)
        ls.neighbors.forget(unquote(uri))
        ls._pending_alternatives.pop(uri, None)
        ls.in_flight.pop(uri, None)
        ls.offered.pop(uri, None)

        if ls.focused == uri:
            ls.focused = None
        ls.engine.drop(f"warm {uri}")  # a warm job queued or running would bring its state back

        def forget(job: Job) -> None:
            ls.anchors.pop(uri, None)
            if ls.engine.model is not None:
                ls.engine.model.forget(uri)

        ls.engine.submit(forget, key=uri)

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=[".", "(", " ", ":", "\n"], resolve_provider=False),
    )
    async def on_completion(ls: CodeLspServer, params: types.CompletionParams) -> types.CompletionList | None:
        found = await ls.completion_at(params.text_document.uri, params.position)
        if not found or not found[0].text:
            return types.CompletionList(is_incomplete=True, items=[])
        result, word = found
        start = _position_minus(ls.workspace.position_codec, params.position, word) if word else params.position
        full = word + result.text
        first, *more = full.split("\n")
        label = first.strip() or result.text.strip().split("\n", 1)[0]
        snippet = ls.snippets_supported()
        doc = ls.workspace.open_document(params.text_document.uri)
        line = doc.lines[params.position.line] if doc is not None and params.position.line < len(doc.lines) else ""
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
        name = ls.model_name()
        language = doc.language_id if doc is not None and doc.language_id else ""
        item = types.CompletionItem(
            label=label,
            label_details=details,
            kind=types.CompletionItemKind.Text,
            detail=f"codelsp · {name}" if name else "codelsp",
            documentation=ls.item_documentation(full, language),
            filter_text=full,
            sort_text="0",
            preselect=True,
            insert_text_format=types.InsertTextFormat.Snippet if snippet else types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(range=types.Range(start=start, end=params.position), new_text=new_text),
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def on_inline(ls: CodeLspServer, params: types.InlineCompletionParams) -> types.InlineCompletionList | None:
        invoked = params.context is not None and params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        found = await ls.completion_at(params.text_document.uri, params.position,
                                       more=ls.settings.candidates - 1, now=invoked)
        if not found or not found[0].text:
            return types.InlineCompletionList(items=[])
        result, _ = found
        here = types.Range(start=params.position, end=params.position)
        return types.InlineCompletionList(
            items=[types.InlineCompletionItem(insert_text=t, range=here) for t in [result.text, *result.others]]
        )

    @server.feature("codelsp/stats")
    async def on_stats(ls: CodeLspServer, params: Any) -> dict[str, Any]:
        """Token counts and timings of the last completion per document, and totals."""
        uri = params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)
        out: dict[str, Any] = {"totals": dict(ls.totals)}
        if uri:
            out["last"] = ls.last_stats.get(uri)
            out["lastAlternatives"] = ls.last_alternatives.get(uri)

            def cached(job: Job) -> tuple[int, int, int]:
                m = ls.engine.model
                if m is None or m.remote:  # no model, or a remote backend
                    return (m.cached_tokens(uri) if m is not None else 0), 0, 0
                return m.cached_tokens(uri), m.host_tokens(uri), m.state_bytes(uri)

            kv, host, state = await asyncio.wrap_future(ls.engine.submit(cached, light=True).future)
            out["cachedTokens"] = kv  # tokens of this document's prompt state in the KV pool
            out["hostTokens"] = host  # ... saved in system memory
            out["stateBytes"] = state  # llama.cpp's size of its state in the KV pool (0: not there)

        def cache(job: Job) -> dict[str, Any] | None:
            m = ls.engine.model
            return m.cache_stats() if m is not None and not m.remote else None

        out["cache"] = await asyncio.wrap_future(ls.engine.submit(cache, light=True).future)
        return out

    @server.feature("codelsp/documentText")
    def on_document_text(ls: CodeLspServer, params: Any) -> dict[str, Any] | None:
        """The server's copy of a document (for tests: it must equal the client's); null if not open."""
        uri = params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)
        doc = ls.workspace.open_document(uri) if isinstance(uri, str) else None
        return None if doc is None else {"text": doc.source, "version": doc.version}

    @server.feature(types.SHUTDOWN)
    def on_shutdown(ls: CodeLspServer, params: Any) -> None:
        ls.engine.stop()

    register_actions(server)  # code actions and their commands (server_actions.py)
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
