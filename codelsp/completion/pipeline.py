"""The completion pipeline, as one plain function:

document context -> prompt layout for the model family -> engine -> post-processing.

The LSP handlers and `codelsp complete` both call `complete()` on the engine thread, so the
server and the command line insert exactly the same text.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, MutableMapping

from codelsp.completion import postprocess
from codelsp.completion.context import build_context, unheal
from codelsp.completion.fim import layout
from codelsp.engine.llama import GenStats, LoadedModel, SamplerParams
from codelsp.settings import Settings

if TYPE_CHECKING:
    from codelsp.engine.remote import RemoteModel

log = logging.getLogger(__name__)


@dataclass
class Completion:
    text: str
    raw: str
    stop_reason: str
    stats: GenStats
    total_ms: float


def complete(
    model: "LoadedModel | RemoteModel",
    key: str,
    text: str,
    offset: int,
    settings: Settings,
    cancel: threading.Event | None = None,
    extra: str = "",
    anchors: MutableMapping[str, int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Completion:
    """The text to insert at character `offset` of `text` (a document identified by `key`).

    `extra`: text of other files to put before this one (neighbors.py); "" for none.
    `anchors`: document key -> anchor line of its previous prompt (context.py), read and updated
    here so that the near text after the middle token ("psm-tail") keeps its start; None: none kept.
    `progress(text)`: called with the text generated so far after each token (engine thread).
    """
    t0 = time.perf_counter()
    deadline = time.monotonic() + settings.timeout_ms / 1000
    remote = getattr(model, "remote", False)
    if remote:  # llama-server's /infill puts its `prompt` field after the middle token itself
        tail = getattr(model, "backend", "") == "llama-server"
    else:
        tail = model.fim.has_fim and model.fim.order == "psm-tail"
    anchor = anchors.get(key) if (anchors is not None and tail) else None
    ctx = build_context(text, offset, model.tokenize, settings.context_size, settings.max_tokens, extra, anchor,
                        heal=tail)
    if anchors is not None and tail:
        anchors[key] = ctx.anchor
    if remote:
        # a RemoteModel (remote.py): the prompt goes out as text; its "tokens" are approximate
        model.ready(cancel, deadline)
        prompt = model.prompt(ctx.lead_tokens, ctx.suffix_tokens, ctx.near_tokens)
    else:
        prompt = layout(model.fim, ctx.lead_tokens, ctx.suffix_tokens, ctx.near_tokens)
    multiline = postprocess.is_multiline(ctx)
    stop_check = postprocess.early_stop(ctx, multiline)
    if progress is not None or ctx.healed:
        inner = stop_check

        def stop_check(so_far: str) -> bool:
            so_far = unheal(so_far, ctx.healed)
            if progress is not None:
                progress(so_far)
            return inner(so_far)

    gen = model.generate(
        key,
        prompt,
        max_tokens=settings.max_tokens,
        sampler=SamplerParams.from_settings(settings),
        cancel=cancel,
        deadline=deadline,
        check=stop_check,
        reuse=settings.prompt_cache,
    )
    out = postprocess.clean(unheal(gen.text, ctx.healed), ctx, multiline)
    total = (time.perf_counter() - t0) * 1000
    s = gen.stats
    log.debug(
        "completion %s: reused %d, evaluated %d, generated %d tokens; prompt %.1f ms, "
        "generation %.1f ms, total %.1f ms; stop=%s",
        key, s.reused, s.evaluated, s.generated, s.prompt_ms, s.gen_ms, total, gen.stop_reason,
    )
    return Completion(out, gen.text, gen.stop_reason, s, total)


def warm(
    model: "LoadedModel | RemoteModel",
    key: str,
    text: str,
    offset: int,
    settings: Settings,
    cancel: threading.Event | None = None,
    pause: Callable[[], bool] | None = None,
    extra: str = "",
    anchors: MutableMapping[str, int] | None = None,
) -> GenStats | None:
    """Evaluate the prompt a completion at `offset` would use, and generate nothing.

    Leaves the document's KV slot holding that prompt, so the first real request nearby reuses
    it. `pause()` (the engine's "something more urgent is waiting") stops it between batches,
    keeping what was evaluated. None for a remote backend (nothing to warm) or without the
    prompt cache.
    """
    if getattr(model, "remote", False) or not settings.prompt_cache:
        return None
    tail = model.fim.has_fim and model.fim.order == "psm-tail"
    anchor = anchors.get(key) if (anchors is not None and tail) else None
    ctx = build_context(text, offset, model.tokenize, settings.context_size, settings.max_tokens, extra, anchor,
                        heal=tail)
    if anchors is not None and tail:
        anchors[key] = ctx.anchor
    prompt = layout(model.fim, ctx.lead_tokens, ctx.suffix_tokens, ctx.near_tokens)
    gen = model.generate(key, prompt, max_tokens=0, sampler=SamplerParams.from_settings(settings),
                         cancel=cancel, pause=pause)
    log.debug("warmed %s: reused %d, evaluated %d tokens (%s)", key, gen.stats.reused, gen.stats.evaluated,
              gen.stop_reason)
    return gen.stats
