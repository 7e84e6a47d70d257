"""The engine worker: the one thread that owns the models.

Everything that touches llama.cpp runs here, one job at a time. A job submitted with a key
supersedes the pending and running jobs with the same key (a newer keystroke in the same document):
they are cancelled, and a running one stops at its next token. Completions run before code
actions; model loads run before both. A job that paused for a more urgent one (`more_urgent`)
and returns PAUSED goes back to its place in the queue and runs again after it (warming).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from codelsp.engine.draft import DraftModel, draft_settings
from codelsp.engine.generation import Cancelled, Model
from codelsp.engine.llama import LoadedModel, load_model
from codelsp.models.memplan import gpu_offload_supported, plan_load
from codelsp.models.errors import ModelError
from codelsp.models.modelfile import check_model, resolve_models
from codelsp.settings import Settings

log = logging.getLogger(__name__)

PRIORITY_LOAD = 0
PRIORITY_COMPLETION = 1
PRIORITY_ACTION = 2
PRIORITY_WARM = 3  # background prompt evaluation of opened documents; paused by anything else
PAUSED = object()  # a job's fn returns it when it stopped for a more urgent job: it runs again after


class Superseded(Cancelled):
    """A newer request for the same document replaced this one."""


@dataclass(order=True)
class Job:
    priority: int
    seq: int
    fn: Callable[["Job"], Any] = field(compare=False)
    key: str | None = field(default=None, compare=False)
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future, compare=False)
    superseded: bool = field(default=False, compare=False)
    light: bool = field(default=False, compare=False)  # a quick query: see Engine.has_waiting
    # Set by the server (lsp/server.py) on completion jobs:
    riders: int = field(default=0, compare=False)  # requests waiting on this job's answer besides its own
    orphaned: bool = field(default=False, compare=False)  # its own request was cancelled; it runs on
    partial: str = field(default="", compare=False)  # the text generated so far (a request may ride it)


class Engine:
    def __init__(self) -> None:
        self.model: Model | None = None  # a LoadedModel, or a RemoteModel (remote.py)
        self.instruct: LoadedModel | None = None
        self.next_edit: LoadedModel | None = None  # setting nextEditModel (nextedit/run.py); None: the base model
        self.draft: DraftModel | None = None  # setting draftModel (engine/draft.py), the base model's `draft`
        self._draft_key: tuple | None = None  # `_draft_key` of the settings self.draft was decided by
        self.model_error: str | None = None
        self._jobs: list[Job] = []
        self._running: Job | None = None
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="codelsp-engine", daemon=True)
        self._thread.start()

    # --- job queue --------------------------------------------------------------------
    def submit(self, fn: Callable[[Job], Any], *, key: str | None = None, priority: int = PRIORITY_COMPLETION,
               light: bool = False) -> Job:
        """Queue `fn(job)` for the engine thread. A `key` supersedes the jobs of the same key still
        queued (their futures raise Superseded) and asks the running one to stop. `light`: a quick
        query (stats, which model serves) that a generation nobody waits for need not give way to."""
        job = Job(priority, next(self._seq), fn, key, light=light)
        with self._cv:
            if self._stopped:
                job.future.set_exception(RuntimeError("engine stopped"))
                return job
            if key is not None:
                self._stop_key(key, superseded=True)
            self._jobs.append(job)
            self._cv.notify()
        return job

    def cancel(self, job: Job) -> None:
        with self._cv:
            job.cancel.set()
            if job in self._jobs:
                self._jobs.remove(job)
                if not job.future.done():
                    job.future.set_exception(Cancelled("cancelled"))

    def has_waiting(self) -> bool:
        """True when work a generation nobody waits for should give way to is queued: a job that
        is neither background warming (PRIORITY_WARM), a light query, nor already cancelled."""
        return any(j.priority < PRIORITY_WARM and not j.light and not j.future.done() for j in list(self._jobs))

    def drop(self, key: str) -> None:
        """Cancel every job of `key`: queued ones leave the queue, the running one is asked to stop."""
        with self._cv:
            self._stop_key(key, superseded=False)

    def _stop_key(self, key: str, superseded: bool) -> None:
        """With the lock held: queued jobs of `key` leave the queue (their futures raise Superseded
        or Cancelled), the running one is asked to stop at its next check."""
        for job in [j for j in self._jobs if j.key == key]:
            self._jobs.remove(job)
            job.superseded = superseded
            job.cancel.set()
            if not job.future.done():  # a request cancelled while queued cancels its future
                job.future.set_exception(Superseded("superseded by a newer request") if superseded
                                         else Cancelled("dropped"))
        if self._running is not None and self._running.key == key:
            self._running.superseded = self._running.superseded or superseded
            self._running.cancel.set()

    def more_urgent(self, job: Job) -> bool:
        """True when a job of higher priority is waiting (a running action should pause)."""
        return any(j.priority < job.priority for j in list(self._jobs))

    def _next(self) -> Job | None:
        with self._cv:
            while True:
                while not self._jobs and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    return None
                job = min(self._jobs)
                self._jobs.remove(job)
                # Running from here: cancelling the future no longer succeeds. asyncio.wrap_future
                # cancels the job's future when the awaiting request is cancelled ($/cancelRequest);
                # a running generation must run on (another request may ride it), so only the
                # server decides to stop it, through job.cancel. False: cancelled while queued.
                if job.future.running() or job.future.set_running_or_notify_cancel():  # running: PAUSED, back
                    self._running = job
                    return job

    def _run(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                if job.cancel.is_set():
                    raise Superseded("superseded") if job.superseded else Cancelled("cancelled")
                result = job.fn(job)
                if result is PAUSED and not self._requeue(job):  # superseded, dropped or stopping meanwhile
                    raise Superseded("superseded") if job.superseded else Cancelled("cancelled")
            except Cancelled as exc:
                if job.superseded and not isinstance(exc, Superseded):
                    exc = Superseded(str(exc))
                if not job.future.done():
                    job.future.set_exception(exc)
            except ModelError as exc:
                if not job.future.done():
                    job.future.set_exception(exc)
            except BaseException as exc:  # noqa: BLE001 - reported to the waiting request
                log.exception("engine job failed")
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if result is not PAUSED and not job.future.done():
                    job.future.set_result(result)
            finally:
                with self._cv:
                    self._running = None

    def _requeue(self, job: Job) -> bool:
        """Put a job that returned PAUSED back in the queue (its priority and sequence number keep
        its place; its future stays running). False when it was cancelled or the engine stops."""
        with self._cv:
            if self._stopped or job.cancel.is_set():
                return False
            self._jobs.append(job)
            return True

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            for job in self._jobs:
                job.cancel.set()
                if not job.future.done():
                    job.future.set_exception(Cancelled("server shutting down"))
            self._jobs.clear()
            if self._running is not None:
                self._running.cancel.set()
            self._cv.notify_all()

    def run_sync(self, fn: Callable[[Job], Any], **kw: Any) -> Any:
        return self.submit(fn, **kw).future.result()

    # --- models ------------------------------------------------------------------------
    def load(self, settings: Settings, on_status: Callable[[str, str], None] | None = None) -> Job:
        """Load (or reload) the models the settings name. On failure the previous models stay."""

        def work(job: Job) -> Model:
            status = on_status or (lambda state, msg, *pct: None)
            if settings.backend != "local":
                return self._use_remote(settings, status, job.cancel)
            try:  # files (Hugging Face downloads report progress) and the memory plan, before loading
                paths = resolve_models(settings, (lambda m, pct: on_status("progress", m, pct)) if on_status else None)
                infos = [(check_model(p), p is paths.instruct) for p in (paths.base, paths.instruct) if p is not None]
                held = sum(m.planned_gpu_bytes for m in (self.model, self.instruct) if m is not None)
                plan = plan_load(infos, settings, held_gpu=held)
                planned = plan.settings or settings  # promptCacheBytes/hostCacheBytes decided
            except ModelError as exc:
                self.model_error = str(exc)
                status("error", str(exc))
                raise
            if plan.release_first:  # the previous models would keep layers of the new ones off the GPU
                log.info("freeing the previous model(s) first to make room on the GPU")
                for m in (self.model, self.instruct, self.draft):
                    if m is not None:
                        m.close()
                self.model = self.instruct = self.draft = None
            path = paths.base
            if paths.is_demo:
                log.info("no model configured: using the embedded default model %s", path)
            status("loading", f"loading {path.name}")
            try:
                base = load_model(str(path), planned, gpu_layers=plan.models[0].gpu_layers)
                base.planned_gpu_bytes = plan.models[0].gpu_bytes
            except ModelError as exc:
                self.model_error = str(exc)
                status("error", str(exc))
                raise
            instruct = None
            if paths.instruct is not None:
                try:
                    instruct = load_model(str(paths.instruct), planned, instruct=True, gpu_layers=plan.models[1].gpu_layers)
                    instruct.planned_gpu_bytes = plan.models[1].gpu_bytes
                except ModelError as exc:
                    base.close()
                    self.model_error = str(exc)
                    status("error", str(exc))
                    raise
            next_edit = None
            if settings.next_edit_model:
                try:  # outside the memory plan: a small model on the CPU's share (README, Next edits)
                    next_edit = load_model(os.path.expanduser(settings.next_edit_model), planned, instruct=True,
                                           gpu_layers=None if gpu_offload_supported() else 0, role="next-edit model")
                except ModelError as exc:
                    log.error("nextEditModel: %s; next edits use the base model", exc)
            draft = base.draft = _new_draft(settings, base)
            old = (self.model, self.instruct, self.next_edit, self.draft)
            self.model, self.instruct, self.next_edit, self.draft = base, instruct, next_edit, draft
            self._draft_key = _draft_key(settings)
            self.model_error = None
            for m in old:
                if m is not None:
                    m.close()
            if instruct is None:
                log.debug("no instruct model configured: code actions use the base model")
            status("ready", f"{path.name} ready ({base.fim.describe()})")
            return base

        return self.submit(work, key="__load__", priority=PRIORITY_LOAD)

    def load_draft(self, settings: Settings) -> Job:
        """Load, swap or free the draft model after `speculative` or `draftModel` changed, beside
        the base model already loaded (it stays, with its documents' KV state): draftModel is
        loaded only while speculative is "draft" (`_new_draft`). Nothing to do without a local
        base model (a later `load` decides) or when neither the mode's "draft"-ness nor the file
        changed (off <-> lookup)."""

        def work(job: Job) -> DraftModel | None:
            base = self.model
            if not isinstance(base, LoadedModel) or _draft_key(settings) == self._draft_key:
                return self.draft
            old, self.draft = self.draft, None
            base.draft = None
            if old is not None:  # freed first: the new one may be the same file
                old.close()
            self.draft = base.draft = _new_draft(settings, base)
            self._draft_key = _draft_key(settings)
            return self.draft

        return self.submit(work, key="__draft__", priority=PRIORITY_LOAD)

    def _use_remote(self, settings: Settings, status: Callable[[str, str], None], cancel: threading.Event) -> Any:
        """Switch to a remote backend (remote.py). A server that is down now is tried again on
        each completion, so it is kept even when this first contact fails."""
        from codelsp.engine.http import BackendError
        from codelsp.engine.remote import RemoteModel

        status("loading", f"connecting to {settings.url}")
        try:
            remote = RemoteModel(settings)
        except ModelError as exc:
            self.model_error = str(exc)
            status("error", str(exc))
            raise
        try:
            remote.connect(cancel)
            status("ready", remote.describe())
        except BackendError as exc:
            log.warning("%s; trying again on the next completion", exc)
            status("error", str(exc))
        old = (self.model, self.instruct, self.next_edit, self.draft)
        self.model, self.instruct, self.next_edit, self.draft = remote, None, None, None  # code actions use remote.chat()
        self._draft_key = None
        self.model_error = None
        for m in old:
            if m is not None:
                m.close()
        return remote

    def shutdown(self) -> None:
        self.stop()
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            return  # still inside llama.cpp: freeing its memory now would crash; the process exits anyway
        for m in (self.model, self.instruct, self.next_edit, self.draft):
            if m is not None:
                m.close()
        self.model = self.instruct = self.next_edit = self.draft = None


def _draft_key(settings: Settings) -> tuple[bool, str | None]:
    """What decides the draft model: whether speculative is "draft", and draftModel."""
    return settings.speculative == "draft", settings.draft_model


def _new_draft(settings: Settings, base: LoadedModel) -> DraftModel | None:
    """The draft model `settings` ask for beside `base`: draftModel's file while speculative is
    "draft", else None (not loaded: memory and load time for nothing). speculative "draft"
    without draftModel, a file that does not load or has another vocabulary: one log line (the
    editor's log: window/logMessage) and None, completions go on without drafting."""
    if settings.speculative != "draft":
        return None
    if not settings.draft_model:
        log.warning("speculative is draft but no draftModel is set; decoding without drafting")
        return None
    try:  # outside the memory plan, as nextEditModel
        return _load_draft(settings.draft_model, base)
    except ModelError as exc:
        log.error("%s; completions go on without drafting", exc)
        return None


def _load_draft(path: str, base: LoadedModel) -> DraftModel:
    """Setting draftModel's file, loaded beside `base` (engine/draft.py: its settings, the
    vocabulary check; no GPU layers on a CPU-only build). Raises ModelError with a one-line
    reason naming the setting."""
    from pathlib import Path

    p = Path(os.path.expanduser(path))
    try:
        model = load_model(str(p), draft_settings(check_model(p), base.settings, base.pool.cells),
                           gpu_layers=None if gpu_offload_supported() else 0, role="draft model")
    except ModelError as exc:
        raise ModelError(f"draftModel: {exc}") from None
    try:
        return DraftModel(model, base)
    except ModelError:
        model.close()
        raise
