"""The completion pipeline, as one plain function:

document context -> prompt layout for the model family -> engine -> post-processing.

The LSP handlers and `codelsp complete` both call `complete()` on the engine thread, so the
server and the command line insert exactly the same text.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, MutableMapping

from codelsp.completion import postprocess
from codelsp.completion.context import build_context, unheal
from codelsp.completion.fim import layout
from codelsp.completion.repo import RepoContext, render_text, render_tokens
from codelsp.engine.generation import Generation, GenStats, Model, SamplerParams
from codelsp.models.families import REPO_TOKENS
from codelsp.settings import Settings

log = logging.getLogger(__name__)

# The time budget (timeoutMs) ends a suggestion at a line end, never inside a line: once it has
# passed, generation goes on to the next line end. The hard cap ends a runaway line: HARD_FACTOR
# times the budget, at least HARD_MIN_S past it (a budget of a few ms must still let the model
# write its line); a line the hard cap (or maxTokens, after the budget) cuts is dropped.
HARD_FACTOR = 4
HARD_MIN_S = 2.0


@dataclass
class Completion:
    text: str
    raw: str
    stop_reason: str
    stats: GenStats
    total_ms: float
    tokens: list[int] = field(default_factory=list)  # the generated token ids (raw)
    others: list[str] = field(default_factory=list)  # more candidates (setting `candidates`)


def repo_head(model: Model, repo: RepoContext | None, context_size: int) -> tuple[list[int], str]:
    """(tokens before the FIM prefix, text to put before the document) for repository context
    `repo`: the family's repository format as token ids where the vocabulary has its control
    tokens (qwen, starcoder), else `# file:` comments for the prefix. A context longer than half
    of `context_size` tokens loses its worst files (the first ones) until it fits."""
    if repo is None or repo.empty:
        return [], ""
    fim = model.fim
    tokens = not model.remote and fim.has_fim and fim.repo_name is not None and fim.file_sep is not None
    after = REPO_TOKENS[fim.family][2] if tokens and fim.family in REPO_TOKENS else "\n"
    while not repo.empty:
        if tokens:
            toks = render_tokens(repo, fim.repo_name, fim.file_sep, after, model.tokenize)
            if len(toks) <= context_size // 2:
                return toks, ""
        else:  # `# file:` comments, cut (by the caller) from their end: they must fit whole
            text = render_text(repo)
            if len(model.tokenize(text, True)) <= context_size // 2:
                return [], text
        repo = replace(repo, files=repo.files[1:])
    return [], ""


def _prepare(model: Model, key: str, text: str, offset: int, settings: Settings, cancel, extra: str,
             anchors: MutableMapping[str, tuple[int | None, int]] | None = None, repo: RepoContext | None = None):
    """(context, prompt, multiline, deadline, eol): what every generation at `offset` starts from.

    `repo`: repository context (completion/repo.py), before the FIM prefix token in the family's
    format, or before `extra` as `# file:` comments.

    `anchors`: document key -> (anchor line, prefix window start) of its previous prompt
    (context.py), read and updated here so that the near text after the middle token ("psm-tail")
    and the prefix window keep their starts; None: none kept.
    """
    # timeoutMs 0: no time limit (`codelsp complete` without --timeout-ms)
    deadline = time.monotonic() + settings.timeout_ms / 1000 if settings.timeout_ms > 0 else None
    # the model sees LF line breaks whatever the document uses; the editor gets the document's
    eol = postprocess.line_ending(text)
    text, offset = postprocess.to_lf(text, offset)
    extra, _ = postprocess.to_lf(extra, 0)
    # the context the model really runs with (a model trained for less caps contextSize)
    context_size = settings.context_size if model.remote else min(settings.context_size, model.context_size)
    remote = model.remote
    if remote:  # llama-server's /infill puts its `prompt` field after the middle token itself
        tail = model.backend == "llama-server"
    else:
        tail = model.fim.has_fim and model.fim.order == "psm-tail"
    anchor, start = anchors.get(key, (None, None)) if anchors is not None else (None, None)
    before, repo_text = repo_head(model, repo, context_size)
    if repo_text:
        extra = postprocess.to_lf(repo_text, 0)[0] + extra
    ctx = build_context(text, offset, model.tokenize, context_size - len(before), settings.max_tokens, extra,
                        anchor if tail else None, heal=tail, start=start)
    if anchors is not None:
        anchors[key] = (ctx.anchor if tail else None, ctx.start)
    if remote:
        # a RemoteModel (remote.py): the prompt goes out as text; its "tokens" are approximate
        model.ready(cancel, deadline)
        prompt = model.prompt(ctx.lead_tokens, ctx.suffix_tokens, ctx.near_tokens)
    else:
        prompt = layout(model.fim, ctx.lead_tokens, ctx.suffix_tokens, ctx.near_tokens, before)
    return ctx, prompt, postprocess.is_multiline(ctx, settings.ablate), deadline, eol


class _LineBudget:
    """The time budget, kept at line ends: wraps a generation's stop check.

    The engine gets `hard` as its deadline; `check(text)` asks the inner check, and once
    `deadline` has passed it stops at the first line end generated since (the text up to and
    including that line break is kept, `settle`). A generation that ends past the budget without
    reaching a line end (the hard cap, maxTokens) keeps only its whole lines."""

    def __init__(self, deadline: float | None, budget_ms: int, inner: Callable[[str], bool]):
        self.deadline = deadline
        self.hard = None if deadline is None else deadline + max((HARD_FACTOR - 1) * budget_ms / 1000, HARD_MIN_S)
        self.inner = inner
        self.mark: int | None = None  # text length when the budget was found passed
        self.cut: int | None = None  # end of the text kept: after the line break that ended it
        self._seen = 0

    def check(self, text: str) -> bool:
        if self.inner(text):
            return True
        if self.deadline is not None and self.mark is None and time.monotonic() > self.deadline:
            self.mark = self._seen  # the budget passed while this piece was generated
        self._seen = len(text)
        if self.mark is None:
            return False
        # a line break that ends the text before this piece counts too: that line was whole
        end = text.find("\n", max(self.mark - 1, 0))
        if end < 0:
            return False
        self.cut = end + 1
        return True

    def settle(self, text: str, reason: str) -> tuple[str, str]:
        """The text and stop reason with the budget's rule applied."""
        if self.cut is not None:
            return text[: self.cut], "time"
        if reason == "time":
            # past the budget and no line end before the hard cap: whole lines only. A maxTokens
            # stop is not the clock's: it gives what it gives without a budget, however slow the
            # machine, so the same request never answers differently by load alone
            return text[: text.rfind("\n") + 1], "time"
        return text, reason


def _finish(raw: str, stop_reason: str, ctx, multiline: bool, eol: str, ablate: frozenset[str]) -> str:
    """Post-processing (of the raw text with the healed token's text put back), then the
    document's line ending."""
    out = postprocess.clean(unheal(raw, ctx.healed), ctx, multiline, finished=stop_reason not in ("length", "time"),
                            ablate=ablate)
    return out.replace("\n", eol) if eol != "\n" else out


def complete(
    model: Model,
    key: str,
    text: str,
    offset: int,
    settings: Settings,
    cancel: threading.Event | None = None,
    extra: str = "",
    anchors: MutableMapping[str, tuple[int | None, int]] | None = None,
    progress: Callable[[str], None] | None = None,
    repo: RepoContext | None = None,
) -> Completion:
    """The text to insert at character `offset` of `text` (a document identified by `key`).

    `extra`: text of other files to put before this one (neighbors.py); "" for none.
    `anchors`: document key -> (anchor line, prefix window start) of its previous prompt (context.py),
    read and updated here so that the near text ("psm-tail") and the prefix window keep their
    starts; None: none kept.
    `progress(text)`: called with the text generated so far after each token (engine thread).
    `repo`: repository context (completion/repo.py) to put before the document; None: none.
    """
    t0 = time.perf_counter()
    ctx, prompt, multiline, deadline, eol = _prepare(model, key, text, offset, settings, cancel, extra, anchors, repo)
    stop_check = postprocess.early_stop(ctx, multiline, settings.ablate)
    if progress is not None or ctx.healed:
        inner = stop_check

        def stop_check(so_far: str) -> bool:
            so_far = unheal(so_far, ctx.healed)
            if progress is not None:
                progress(so_far)
            return inner(so_far)

    budget = _LineBudget(deadline, settings.timeout_ms, stop_check)
    gen = model.generate(
        key,
        prompt,
        max_tokens=settings.max_tokens,
        sampler=SamplerParams.from_settings(settings),
        cancel=cancel,
        deadline=budget.hard,
        check=budget.check,
        reuse=settings.prompt_cache,
    )
    gen.text, gen.stop_reason = budget.settle(gen.text, gen.stop_reason)
    out = _finish(gen.text, gen.stop_reason, ctx, multiline, eol, settings.ablate)
    total = (time.perf_counter() - t0) * 1000
    s = gen.stats
    log.debug(
        "completion %s: reused %d (restored %d from system memory), evaluated %d, generated %d tokens; "
        "prompt %.1f ms, generation %.1f ms, total %.1f ms; stop=%s (budget %s)",
        key, s.reused, s.restored, s.evaluated, s.generated, s.prompt_ms, s.gen_ms, total, gen.stop_reason,
        f"{settings.timeout_ms} ms" if deadline is not None else "none",
    )
    return Completion(out, gen.text, gen.stop_reason, s, total, list(gen.tokens))


def _same(text: str) -> str:
    """What two candidates that differ only in whitespace have in common."""
    return " ".join(text.split())


@dataclass
class Alternatives:
    texts: list[str]  # distinct from the first suggestion and from each other, best first
    stats: GenStats  # all the model work they took, summed
    tried: int  # first tokens tried


def alternatives(
    model: Model,
    key: str,
    text: str,
    offset: int,
    settings: Settings,
    first: Completion,
    n: int,
    cancel: threading.Event | None = None,
    extra: str = "",
    anchors: MutableMapping[str, tuple[int | None, int]] | None = None,
    repo: RepoContext | None = None,
) -> Alternatives:
    """Up to `n` more suggestions at `offset`, other than `first` (what `complete()` gave there).

    Each starts with one of the next-best first tokens after the prompt (the greedy one's first
    token is the best) and continues greedily: one forward pass to read the first-token logits
    (the prompt is still in the slot: 1 token), then per candidate 1 token plus what it generates.
    Sampling several continuations instead costs a whole generation each and often repeats the
    greedy text. A first token whose text (or that text without spaces around it) starts the
    first suggestion's raw output is skipped: it is the greedy one, or most likely leads to the
    same code (Qwen2.5-Coder at `return ` of fib.py: " fib" after "fib"). A candidate whose cleaned
    text is empty, or the same as one found before but for whitespace, is dropped; at most n + 2
    first tokens are tried. A remote backend gives none (it exposes no logits).
    """
    stats = GenStats()
    found: list[str] = []
    if n <= 0 or not first.text or model.remote:
        return Alternatives(found, stats, 0)
    ctx, prompt, multiline, deadline, eol = _prepare(model, key, text, offset, settings, cancel, extra, anchors, repo)
    early = postprocess.early_stop(ctx, multiline, settings.ablate)

    def check(so_far: str) -> bool:
        return early(unheal(so_far, ctx.healed))

    greedy = SamplerParams(0.0, settings.top_k, settings.top_p, settings.repeat_penalty, settings.seed)
    firsts, stats = model.next_tokens(key, prompt, n + 3)
    seen = {_same(first.text)}
    tried = 0
    for tok in firsts:
        if len(found) >= n or tried >= n + 2 or (deadline is not None and time.monotonic() > deadline):
            break
        head = model.piece(tok).decode("utf-8", errors="ignore")
        if first.raw.startswith(head) or (head.strip() and first.raw.lstrip().startswith(head.strip())):
            continue
        tried += 1
        budget = _LineBudget(deadline, settings.timeout_ms, lambda t, h=head: check(h + t))
        gen = model.generate(
            key, list(prompt) + [tok], max_tokens=max(settings.max_tokens - 1, 0), sampler=greedy,
            cancel=cancel, deadline=budget.hard, check=budget.check, reuse=True,
        )
        gen.text, gen.stop_reason = budget.settle(gen.text, gen.stop_reason)
        for k in ("evaluated", "generated"):  # evaluated: the forced first token
            setattr(stats, k, getattr(stats, k) + getattr(gen.stats, k))
        stats.prompt_ms += gen.stats.prompt_ms
        stats.gen_ms += gen.stats.gen_ms
        out = _finish(head + gen.text, gen.stop_reason, ctx, multiline, eol, settings.ablate)
        if out and _same(out) not in seen:
            seen.add(_same(out))
            found.append(out)
    log.debug("alternatives %s: %d of %d tried; evaluated %d, generated %d tokens",
              key, len(found), tried, stats.evaluated, stats.generated)
    return Alternatives(found, stats, tried)


def warm(
    model: Model,
    key: str,
    text: str,
    offset: int,
    settings: Settings,
    cancel: threading.Event | None = None,
    pause: Callable[[], bool] | None = None,
    extra: str = "",
    anchors: MutableMapping[str, tuple[int | None, int]] | None = None,
    evict: bool = False,
    repo: RepoContext | None = None,
) -> Generation | None:
    """Evaluate the prompt a completion at `offset` would use, and generate nothing.

    Leaves the document's KV slot holding that prompt, so the first real request nearby reuses
    it. `pause()` (the engine's "something more urgent is waiting") stops it between batches,
    keeping what was evaluated (stop reason "paused": calling again goes on from there). Without `evict` it does nothing when the KV pool has fewer free
    cells than the prompt (a guess never evicts another document's state); with it (the user came
    to this document) it makes room as a request does: least recently used documents go to the
    system-memory tier, and this document's own saved state comes back when that pays
    (engine/kvcache.py). Returns the generation (no tokens; its `stats` count what was evaluated);
    None for a remote backend (nothing to warm), without the prompt cache, or when it did not run.
    """
    if model.remote or not settings.prompt_cache:
        return None
    _ctx, prompt, _multiline, _deadline, _eol = _prepare(model, key, text, offset, settings, cancel, extra, anchors, repo)
    pool = model.pool
    if pool is not None and not evict and pool.free < len(prompt):
        # warming is a guess about the future: it never evicts a document's state (engine/kvcache.py)
        log.debug("not warming %s: %d free KV cells for a %d-token prompt", key, pool.free, len(prompt))
        return None
    gen = model.generate(key, prompt, max_tokens=0, sampler=SamplerParams.from_settings(settings),
                         cancel=cancel, pause=pause)
    if gen.stats.draft_paused:  # the draft model's catch-up paused: the warm is not done until it is
        gen.stop_reason = "paused"
    log.debug("warmed %s: reused %d, evaluated %d tokens (%s)", key, gen.stats.reused, gen.stats.evaluated,
              gen.stop_reason)
    return gen
