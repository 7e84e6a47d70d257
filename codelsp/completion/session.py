"""The completion session: everything between a request at an offset and the engine.

Type-through of stored suggestions (suggestions.py), riding a generation still in flight, the
other candidates (setting `candidates`) in the background, speculation after an accepted
suggestion, warming a document on open and focus, and the token totals of `codelsp/stats`.
It works on plain values (a URI, the document text, an offset) and answers `Completion`s; the
LSP side (lsp/server.py) turns positions into offsets and answers into items.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from cachetools import LRUCache

from codelsp.completion.neighbors import Neighbors, extra_text
from codelsp.completion.pipeline import Alternatives, Completion, alternatives, complete, warm
from codelsp.completion.placement import Edit, carry
from codelsp.completion.repo import RepoCache, RepoContext, uri_path
from codelsp.completion.suggestions import SuggestionCache
from codelsp.engine.generation import Cancelled, GenStats
from codelsp.engine.worker import PAUSED, PRIORITY_WARM, Engine, Job
from codelsp.models.errors import ModelError
from codelsp.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenDocument:
    """An open document as the session needs it (the LSP side fills it in)."""

    uri: str  # the spelling of its didOpen (requests may spell it otherwise)
    text: str  # its whole text, as the client has it
    comment: str  # the line-comment prefix of its language (for the other files' extra context)


@dataclass(frozen=True)
class Answer:
    """A completion placed in the document as it is now: `edits` (one per candidate, best first)
    are offsets of `text`, the document's text when the answer was ready (placement.py)."""

    completion: Completion
    text: str
    edits: list[Edit]


class CompletionSession:
    """The completion state of one server, and the requests that use it.

    Threads: every attribute here is read and written on the event loop only, except `anchors`
    (the prompt anchors of context.py), which belongs to the engine thread, and `submitted`, which
    a warm job reads on the engine thread (one dict lookup, to see whether a request came first).
    Jobs run on the engine thread and return their results; their done callbacks (also on the
    engine thread) hand those to the event loop with `loop.call_soon_threadsafe` (`_on_loop`)
    before the caches, `totals` or `last_alternatives` are touched.

    What the session needs from the server comes in at construction: `loop()` (the event loop,
    None before initialize), `document(uri)` (an open document, any spelling of its URI),
    `open_texts()` (URI -> text of every open document), `show_error(message)` (tell the user)
    and `roots()` (the workspace folders' paths: what the repository context may read).
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        loop: Callable[[], asyncio.AbstractEventLoop | None],
        document: Callable[[str], OpenDocument | None],
        open_texts: Callable[[], dict[str, str]],
        show_error: Callable[[str], None],
        roots: Callable[[], list[str]] = list,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.loop = loop
        self.document = document
        self.open_texts = open_texts
        self.show_error = show_error
        self.roots = roots  # the workspace folders' paths (workspaceFolders, else rootUri)
        self.repo = RepoCache()  # engine thread only
        self.snippets: dict[str, tuple[tuple[str, str], ...]] = {}  # uri -> the client's (path, text), codelsp/context
        self._reported_error: str | None = None
        self.suggestions = SuggestionCache()
        self.neighbors = Neighbors()
        self._capped: set[tuple[int, int]] = set()  # (repoContextTokens, its cap) already logged
        self.anchors: LRUCache[str, tuple[int | None, int]] = LRUCache(maxsize=256)  # per document: (anchor, window start), context.py; engine thread only
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

    def apply(self, settings: Settings) -> None:
        """New settings: the suggestions made with the old ones are dropped."""
        self.settings = settings
        self.suggestions.clear()  # they were made with other settings
        self.in_flight.clear()
        self.offered.clear()

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` on the event loop (called on the engine thread, by done callbacks)."""
        loop = self.loop()
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: shutting down
            pass

    # --- completion -------------------------------------------------------------------
    async def completion_at(
        self, uri: str, doc: OpenDocument, offset: int, *, more: int = 0, now: bool = False,
        selected: Edit | None = None,
    ) -> Answer | None:
        """The completion at `offset` of `doc.text`, placed in the document's text as it is when
        the answer is ready; None when there is nothing to offer.

        The user may have changed the document while the model worked: the answer's edits are
        carried through that change (placement.py: lines added or deleted above, text typed
        that agrees with it), or the answer is dropped; never an edit in the old text's offsets.
        `selected`: the completion menu's selected item (LSP `selectedCompletionInfo`), an edit
        of `doc.text`: the prompt is built with it applied, and each edit replaces its range
        (to the cursor at least) with its text and what the model writes after it; no answer
        when the model writes nothing more. `more`, `now`: `_complete`.
        """
        base = doc.text
        start = end = offset
        head = ""
        if selected is not None:
            start, end, head = selected.start, max(selected.end, offset), selected.text
            doc = dataclasses.replace(doc, text=base[:start] + head + base[end:])
            offset = start + len(head)
        result = await self._complete(uri, doc, offset, more=more, now=now)
        if result is None or not result.text:
            return None
        current = self.document(uri)
        if current is None:
            return None  # closed meanwhile
        edits = [e for t in [result.text, *result.others] if (e := carry(base, Edit(start, end, head + t), current.text))]
        if not edits:
            log.debug("completion for %s dropped: the document changed meanwhile and the answer does not fit it", uri)
            return None
        if current.text != base or selected is not None:  # what accepting it will look like (after_change)
            first = edits[0]
            self._offer(uri, current.text[:first.start] + current.text[first.end:], first.start, first.text)
        return Answer(result, current.text, edits)

    async def _complete(
        self, uri: str, doc: OpenDocument, offset: int, *, more: int = 0, now: bool = False
    ) -> Completion | None:
        """Run the pipeline for `offset` of `doc.text`; None when there is nothing to offer.

        `more`: how many other candidates inline completion wants (setting `candidates` - 1).
        They never delay the first: it is answered as soon as it is generated, and the others are
        generated after it, in the background (`_alternatives`), then come with a later request
        at the same place or typed through. `now` (an explicitly invoked request, the user is
        waiting for them) waits for them instead.
        """
        text = doc.text
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
                return Completion(hits[0], hits[0], "typeThrough", GenStats(), 0.0, others=hits[1:])
            ridden = await self._ride_in_flight(uri, text, offset)
            if ridden is not None:
                self._offer(uri, text, offset, ridden.text)
                return ridden

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
        return result

    def _extra_snapshot(self, doc: OpenDocument, touch: bool, line: int | None = None) -> tuple[Any, str] | None:
        """The other open files' snapshot for the prompt (neighbors.py), or None when off.
        `touch`: this document is being worked in, at 0-based `line` (the request's cursor)."""
        if self.settings.extra_context_tokens <= 0:
            return None
        key = unquote(doc.uri)  # the workspace's own spelling of the URI
        if touch:
            self.neighbors.touch(key, line)
        others = {u: t for u, t in self.open_texts().items() if unquote(u) != key}
        return self.neighbors.snapshot(key, others), doc.comment

    def _repo_job(self, uri: str) -> Callable[[Any, str], RepoContext | None]:
        """A function for the engine thread: (model, text) -> the document's repository
        context (completion/repo.py), None when off or outside the workspace."""
        settings = self.settings
        budget = settings.repo_context_tokens
        path = uri_path(uri)
        roots = [Path(r) for r in self.roots()] if budget > 0 and path is not None else []
        snippets = self.snippets.get(uri, ())
        # a document with no file (VS Code's `untitled:Untitled-1`) has the client's snippets only
        where = path if path is not None else Path(uri.split(":", 1)[-1].rsplit("/", 1)[-1] or "untitled")

        def get(model: Any, text: str) -> RepoContext | None:
            if not (roots or snippets):
                return None
            # the head may take half of the context the model runs with, less what
            # extraContextTokens takes: a larger budget is cut to that (said once), not dropped
            context_size = settings.context_size if model.remote else min(settings.context_size, model.context_size)
            cap = max(context_size // 2 - settings.extra_context_tokens, 0)
            if budget > cap and (budget, cap) not in self._capped:
                self._capped.add((budget, cap))
                log.info("repoContextTokens %d is more than half of the context (%d tokens%s): %d are used",
                         budget, context_size, ", less extraContextTokens" if settings.extra_context_tokens else "", cap)
            return self.repo.context(uri, where, roots, text, min(budget, cap), model.tokenize, snippets)

        return get

    def _alternatives(self, uri: str, doc: OpenDocument, text: str, offset: int, first: Completion,
                      more: int) -> Job:
        """Queue the generation of `more` other candidates at `offset` (after `first`); their
        texts are added to the suggestion cache. A newer request for the document cancels it.
        The job's result is the `Alternatives` found (None without a model)."""
        engine, settings = self.engine, self.settings
        snap = self._extra_snapshot(doc, touch=False)
        repo = self._repo_job(uri)

        def work(job: Job) -> Alternatives | None:
            if engine.model is None:
                return None
            extra = extra_text(snap[0], settings.extra_context_tokens, engine.model.tokenize, snap[1]) if snap else ""
            return alternatives(engine.model, uri, text, offset, settings, first, more, job.cancel, extra, self.anchors,
                                repo(engine.model, text))

        job = engine.submit(work, key=uri)
        self._pending_alternatives[uri] = (text, offset, job)

        def done(future) -> None:  # on the engine thread
            if future.cancelled() or future.exception() is not None:
                return
            self._on_loop(self._record_alternatives, uri, text, offset, future.result())

        job.future.add_done_callback(done)
        return job

    def _record_alternatives(self, uri: str, text: str, offset: int, found: Alternatives | None) -> None:
        """On the event loop: count the other candidates' work and add them to the suggestion."""
        if found is not None:
            stats = found.stats
            self.totals["alternatives"] += 1
            self.totals["alternativeTokens"] += stats.evaluated + stats.generated
            self.last_alternatives[uri] = {
                "candidates": len(found.texts), "tried": found.tried, "evaluated": stats.evaluated,
                "generated": stats.generated, "promptMs": round(stats.prompt_ms, 3), "genMs": round(stats.gen_ms, 3),
            }
        self.suggestions.add_others(uri, text, offset, found.texts if found is not None else [])

    def _submit_completion(self, uri: str, doc: OpenDocument, text: str, offset: int, settings: Settings) -> Job:
        """Queue the pipeline for (text, offset) on the engine; newer jobs of `uri` supersede it."""
        engine = self.engine
        snap = self._extra_snapshot(doc, touch=True, line=text.count("\n", 0, offset))
        repo = self._repo_job(uri)

        def work(job: Job) -> Completion | None:
            if engine.model is None:
                return None
            taken: list[str] = []
            extra = extra_text(snap[0], settings.extra_context_tokens, engine.model.tokenize, snap[1], taken) if snap else ""
            if taken:
                log.debug("other files before %s: %s", uri, "; ".join(taken))
            return complete(engine.model, uri, text, offset, settings, job.cancel, extra, self.anchors,
                            lambda so_far: progress(job, so_far), repo(engine.model, text))

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
            if not future.cancelled() and future.exception() is None and future.result() is not None:
                self._on_loop(store, future.result())

        job.future.add_done_callback(done)
        return job

    async def _await_alternatives(self, job: Job) -> list[str]:
        """The other candidates of `job` ([] when it was superseded or failed: the first one
        still stands). Cancelling the request does not cancel the job."""
        try:
            found = await asyncio.shield(asyncio.wrap_future(job.future))
        except Cancelled:
            return []
        except Exception as exc:  # noqa: BLE001 - logged; the first candidate is answered anyway
            log.warning("other candidates failed: %s", exc)
            return []
        return found.texts if found is not None else []

    async def _more_here(self, uri: str, doc: OpenDocument, text: str, offset: int, hits: list[str], more: int,
                         now: bool) -> list[str] | None:
        """The candidates at a place answered before, with the others once they are computed:
        waits for the background job started there; an explicit request starts one if none ran."""
        pending = self._pending_alternatives.get(uri)
        if pending is not None and pending[0] == text and pending[1] == offset:
            await self._await_alternatives(pending[2])
            await asyncio.sleep(0)  # the cache is updated on the loop (done callback in _alternatives)
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

    def _report_no_model(self, error: str | None = None) -> None:
        """Tell the user why there is no completion, once per distinct error."""
        err = error or self.engine.model_error or "model is not loaded"
        if err != self._reported_error:
            self._reported_error = err
            self.show_error(err)

    # --- documents --------------------------------------------------------------------
    def after_change(self, uri: str) -> None:
        """A document changed: when the change inserted the suggestion last offered for it (the
        user accepted it), compute the next one at the new cursor before the editor asks."""
        offered = self.offered.pop(uri, None)
        doc = self.document(uri)
        if offered is None or doc is None or not self.settings.prompt_cache or self.engine.model is None:
            return
        text, offset, suggestion = offered
        new = doc.text
        if len(new) != len(text) + len(suggestion) or not new.startswith(suggestion, offset) \
                or not new.startswith(text[:offset]) or not new.endswith(text[offset:]):
            return
        at = offset + len(suggestion)
        settings = self.settings
        job = self._submit_completion(uri, doc, new, at, settings)  # which stores its suggestion

        def count() -> None:  # on the event loop
            self.totals["speculative"] += 1

        def done(future) -> None:  # on the engine thread
            if not future.cancelled() and future.exception() is None and future.result() is not None:
                self._on_loop(count)

        job.future.add_done_callback(done)

    def warm(self, uri: str, offset: int | None = None, *, focus: bool = False) -> None:
        """Evaluate a document's prompt at low priority (engine PRIORITY_WARM: any request
        pre-empts it at the next batch, then it goes on where it stopped: engine PAUSED), so the
        first keystroke there finds its state ready.

        On open (`focus` False) the cursor is not known: the prompt at `offset` (default: the end
        of the document, whose prompt holds the whole prefix window) is warmed only when the
        document has no state yet and the KV pool has free cells (a guess never evicts). When the
        user comes to the document (`focus`, from `codelsp/didFocus`), it is warmed at `offset`
        (default: where its last completion was asked, else its end) even over its own state, restoring it from
        system memory and evicting the least recently used documents as a request would. A warm
        job of the same document still queued or running is superseded; one that finds a
        completion was asked in the document since it was queued does nothing."""
        doc = self.document(uri)
        settings = self.settings
        if doc is None or not settings.prompt_cache or not settings.warm_documents:
            return
        engine = self.engine
        snap = self._extra_snapshot(doc, touch=False)
        repo = self._repo_job(uri)
        text = doc.text
        if offset is None:
            offset = min(self.last_offset.get(uri, len(text)), len(text)) if focus else len(text)
        asked = self.submitted.get(uri, 0)
        resumed = False  # paused for a more urgent job and run again: its own state is this warm's

        def work(job: Job) -> Any:
            nonlocal resumed
            model = engine.model
            if model is None or self.submitted.get(uri, 0) != asked:
                return None  # a request for this document came first: its state is worth more
            if not focus and not resumed and model.cached_tokens(uri) > 0:
                return None
            extra = extra_text(snap[0], settings.extra_context_tokens, model.tokenize, snap[1]) if snap else ""
            gen = warm(model, uri, text, offset, settings, job.cancel,
                       lambda: engine.more_urgent(job), extra, self.anchors, evict=focus, repo=repo(model, text))
            if gen is not None and gen.stop_reason == "paused":  # counted now, the rest after the urgent job
                resumed = True
                self._on_loop(count, gen.stats)
                return PAUSED
            return gen.stats if gen is not None else None

        def count(stats: GenStats) -> None:  # on the event loop
            self.totals["warmed"] += stats.evaluated
            self.totals["warmRestored"] += stats.restored

        def done(future) -> None:  # on the engine thread
            if not future.cancelled() and future.exception() is None and future.result() is not None:
                self._on_loop(count, future.result())

        engine.submit(work, key=f"warm {uri}", priority=PRIORITY_WARM).future.add_done_callback(done)

    def focus(self, uri: str, offset: int | None = None) -> None:
        """The user is in `uri` now (`codelsp/didFocus`: the editor switched to it, at `offset`
        when it says). Coming back to a document other than the last one warms it there
        (`warm(focus=True)`); the same document again does nothing."""
        doc = self.document(uri)
        settings = self.settings
        if doc is None or uri == self.focused or not settings.prompt_cache or not settings.warm_documents:
            return
        uri = doc.uri  # the spelling of didOpen, which requests use (a focus may spell it otherwise)
        if uri == self.focused:
            return
        self.focused = uri
        self.totals["focused"] += 1
        log.debug("codelsp/didFocus %s: warming it at %s", uri, "the last cursor" if offset is None else f"offset {offset}")
        self.warm(uri, offset, focus=True)

    def set_snippets(self, uri: str, snippets: list[tuple[str, str]]) -> None:
        """`codelsp/context`: the client's definitions and snippets for `uri`'s prompt (replacing
        what it sent before; [] clears them). They join its repository context at the next
        request (completion/repo.py RepoCache)."""
        doc = self.document(uri)
        key = doc.uri if doc is not None else uri
        if self.snippets.get(key, ()) != tuple(snippets) and self.settings.repo_context_tokens > 0:
            self.suggestions.forget(key)  # made with the old context: the next request asks the model
        self.snippets[key] = tuple(snippets)

    def close(self, uri: str) -> None:
        """A document was closed: forget its suggestions, jobs and state (its KV state on the
        engine thread)."""
        self.suggestions.forget(uri)
        self.neighbors.forget(unquote(uri))
        self.repo.forget(uri)  # one dict pop: safe beside the engine thread's reads
        self.snippets.pop(uri, None)
        self._pending_alternatives.pop(uri, None)
        self.in_flight.pop(uri, None)
        self.offered.pop(uri, None)

        if self.focused == uri:
            self.focused = None
        self.engine.drop(f"warm {uri}")  # a warm job queued or running would bring its state back

        def forget(job: Job) -> None:
            self.anchors.pop(uri, None)
            if self.engine.model is not None:
                self.engine.model.forget(uri)
            if self.engine.draft is not None:  # draftModel's KV of the document (engine/draft.py)
                self.engine.draft.forget(uri)

        self.engine.submit(forget, key=uri)

    # --- counts -----------------------------------------------------------------------
    def _record_cancel(self, uri: str) -> None:
        self.totals["cancelled"] += 1
        self.last_stats[uri] = {"source": "cancelled"}

    def _add_tokens(self, stats: GenStats) -> None:
        for k in ("reused", "restored", "evaluated", "generated", "drafted", "accepted", "verifies"):
            self.totals[k] = self.totals.get(k, 0) + getattr(stats, k)
        self.totals["draftEvaluated"] = self.totals.get("draftEvaluated", 0) + stats.draft_evaluated

    def _record(self, uri: str, source: str, stats: GenStats, total_ms: float) -> None:
        self.totals[source] += 1
        self._add_tokens(stats)
        self.last_stats[uri] = {
            "source": source, "reused": stats.reused, "restored": stats.restored, "shifted": stats.shifted,
            "evaluated": stats.evaluated, "draftEvaluated": stats.draft_evaluated,
            "generated": stats.generated, "promptMs": round(stats.prompt_ms, 3),
            "genMs": round(stats.gen_ms, 3), "totalMs": round(total_ms, 3),
        }

    async def stats(self, uri: str | None) -> dict[str, Any]:
        """`codelsp/stats`: token counts and timings of the last completion of `uri`, and totals;
        the document's KV state and the cache's statistics, asked on the engine thread."""
        out: dict[str, Any] = {"totals": dict(self.totals)}
        if uri:
            out["last"] = self.last_stats.get(uri)
            out["lastAlternatives"] = self.last_alternatives.get(uri)

            def cached(job: Job) -> tuple[int, int, int, RepoContext | None]:
                m = self.engine.model
                repo = self.repo.kept(uri)
                if m is None or m.remote:  # no model, or a remote backend
                    return (m.cached_tokens(uri) if m is not None else 0), 0, 0, repo
                return m.cached_tokens(uri), m.host_tokens(uri), m.state_bytes(uri), repo

            kv, host, state, repo = await asyncio.wrap_future(self.engine.submit(cached, light=True).future)
            out["cachedTokens"] = kv  # tokens of this document's prompt state in the KV pool
            out["hostTokens"] = host  # ... saved in system memory
            out["stateBytes"] = state  # llama.cpp's size of its state in the KV pool (0: not there)
            # the repository context its prompt starts with: the files (workspace-relative paths,
            # snippets' as sent), best last; None when off or not built yet
            out["repoContext"] = None if repo is None else {"files": [p for p, _ in repo.files]}

        def cache(job: Job) -> dict[str, Any] | None:
            m, d = self.engine.model, self.engine.draft
            return {**m.cache_stats(), **(d.cache_stats() if d else {})} if m is not None and not m.remote else None

        out["cache"] = await asyncio.wrap_future(self.engine.submit(cache, light=True).future)
        return out
