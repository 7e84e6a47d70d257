"""Speculative decoding with a draft model (`speculative` `draft`, setting `draftModel`): a small
model of the base model's vocabulary guesses the next tokens, the base model checks them in one
batch (engine/llama.py `LoadedModel._verify`; engine/speculative.py has the rest of the loop:
adaptive k, the off-switch, the counts).

The draft model is a second `LoadedModel` (engine/llama.py), loaded by the engine worker beside
the base model, with a llama.cpp context and KV pool of its own. Its KV is kept per document, one
sequence each, exactly as the base model keeps its own (engine/kvcache.py): a pool of as many
cells as the base model's, shared by the documents, the least recently used leaving first, no
system-memory tier. One sequence re-synced by longest common prefix would have been less code
but would cost the draft the whole prompt again at every switch between documents (or a code
action on another file between two keystrokes); the pool costs no new code.

The draft model is brought in step with a request's prompt right after the base model evaluated
it (counted in the request's prompt time; a prompt-only request, warming, warms it too), and
again before each draft, by the same prompt reuse as a request (`LoadedModel.generate`: the
longest common prefix with what its slot holds, moved runs): it evaluates only the tokens it has
not seen (a keystroke's new prompt tokens, then the tokens accepted or picked since its last
draft) and then writes up to k tokens greedily. The KV is rolled
back over rejected drafts at that same step (the first differing position on is dropped), not in
`accepted()`: the drafted tail it keeps is the draft's own picks after the accepted ones, which is
exactly what the next sync compares against, so nothing is rolled back twice or evaluated twice.
`GenStats.draft_evaluated` (`codelsp/stats` `draftEvaluated`) counts the tokens the draft model
evaluated to catch up: a second keystroke in a document costs it its new tokens, not the prompt.

The vocabularies must be the same (ids mean the same texts): checked at load (`DraftModel`), a
mismatch is a one-line ModelError and the base model goes on without drafting. As llama.cpp's
own speculative decoding allows, the sizes may differ by up to MAX_EXTRA_TOKENS (Qwen2.5-Coder-7B's
GGUF pads its vocabulary past the 0.5B's); only ids both have are exchanged, and a draft stops at
the first token the base model does not have.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Callable, Sequence

import llama_cpp

from codelsp.engine.generation import GenStats, SamplerParams
from codelsp.models.errors import ModelError
from codelsp.models.gguf import GGUFInfo
from codelsp.models.modelfile import kv_cache_type
from codelsp.settings import Settings

if TYPE_CHECKING:  # a type only (the worker loads the model: engine/worker.py)
    from codelsp.engine.llama import LoadedModel

log = logging.getLogger(__name__)

MAX_EXTRA_TOKENS = 128  # vocabulary sizes may differ by this much (llama.cpp's SPEC_VOCAB_MAX_SIZE_DIFFERENCE)
GREEDY = SamplerParams(0.0, 0, 1.0, 1.0, 0)  # drafts are the draft model's argmax, speculative off


def draft_settings(info: GGUFInfo, base: Settings, cells: int) -> Settings:
    """The settings the draft model is loaded with: the base model's (its contextSize as loaded,
    threads, GPU layers, KV cache type), a KV pool of as many cells as the base model's pool
    (`cells`: the same documents fit; bytes from the draft's own header `info`) and no
    system-memory tier. Outside the memory plan (memplan.py), as nextEditModel."""
    ctype, _ = kv_cache_type(info, base.kv_cache_type)
    return dataclasses.replace(base, prompt_cache_bytes=cells * info.kv_bytes_per_token(ctype), host_cache_bytes=0)


def _text(model: "LoadedModel", tok: int) -> bytes:
    return llama_cpp.llama_vocab_get_text(model.vocab, tok) or b""


def check_vocabulary(base: "LoadedModel", draft: "LoadedModel") -> None:
    """Raise ModelError (one line) unless token ids mean the same in both models: the same kind of
    tokenizer, sizes within MAX_EXTRA_TOKENS of each other, the same text for every id both have,
    and the base model's FIM tokens among those ids."""
    a, b = base.n_vocab, draft.n_vocab
    what = f"draftModel {draft.name} does not have the vocabulary of {base.name}"
    if llama_cpp.llama_vocab_type(base.vocab) != llama_cpp.llama_vocab_type(draft.vocab):
        raise ModelError(f"{what} (another kind of tokenizer)")
    if abs(a - b) > MAX_EXTRA_TOKENS:
        raise ModelError(f"{what} ({b} tokens against {a})")
    n = min(a, b)
    fim = [t for t in (base.fim.pre, base.fim.suf, base.fim.mid) if t is not None]
    if any(t >= n for t in fim):
        raise ModelError(f"{what} (the draft lacks its FIM tokens)")
    for tok in range(n):
        x, y = _text(base, tok), _text(draft, tok)
        if x != y:
            raise ModelError(f"{what} (token {tok} is {x.decode(errors='replace')!r} there, "
                             f"{y.decode(errors='replace')!r} in the draft)")


class DraftModel:
    """The draft model beside a base model: `drafter()` makes the `Drafter` of one generation.
    Raises ModelError when the vocabularies differ (`check_vocabulary`); owns `model` (close())."""

    def __init__(self, model: "LoadedModel", base: "LoadedModel"):
        check_vocabulary(base, model)
        self.model = model
        self.limit = min(base.n_vocab, model.n_vocab)  # ids both vocabularies have

    @property
    def name(self) -> str:
        return self.model.name

    def drafter(self, key: str, prompt: Sequence[int], stats: GenStats, cancel: threading.Event | None = None,
                pause: Callable[[], bool] | None = None) -> "ModelDrafter":
        """The drafter of one generation, the draft model's KV of `key` in step with `prompt`
        (speculative.py `DraftSource`). Raises Cancelled when `cancel` is set meanwhile."""
        drafter = ModelDrafter(self, key, prompt, stats)
        drafter.catch_up([], cancel, pause)
        return drafter

    def forget(self, key: str) -> None:
        """Drop document `key`'s KV (the document was closed)."""
        self.model.forget(key)

    def cache_stats(self) -> dict[str, int]:
        """Its KV pool now, for `codelsp/stats` `cache`: cells, cells used, documents."""
        pool = self.model.pool
        return {"draftPoolCells": pool.cells, "draftPoolUsed": pool.used, "draftPoolDocuments": len(pool)}

    def close(self) -> None:
        self.model.close()


class ModelDrafter:
    """Drafts of one generation by the draft model, in document `key`'s sequence of its KV pool.
    `stats.draft_evaluated` grows by the tokens it evaluates to catch up with `prompt + history`."""

    def __init__(self, source: DraftModel, key: str, prompt: Sequence[int], stats: GenStats):
        self.source = source
        self.key = key
        self.prompt = list(prompt)
        self.stats = stats
        self.on = max(self.prompt, default=0) < source.limit  # a token the draft lacks: no drafts

    def catch_up(self, history: Sequence[int], cancel: threading.Event | None = None,
                 pause: Callable[[], bool] | None = None, k: int = 0) -> list[int]:
        """Bring the draft model's KV of the document to `prompt + history` (evaluating what it
        lacks), then up to `k` greedy tokens of it. [] when drafting is off for this generation."""
        limit = self.source.limit
        if not self.on or (history and max(history) >= limit):
            return []
        try:
            gen = self.source.model.generate(self.key, self.prompt + list(history), max_tokens=k, sampler=GREEDY,
                                             cancel=cancel, pause=pause, stop_texts=())
        except (ModelError, RuntimeError) as exc:  # the prompt does not fit its context; llama_decode failed
            log.warning("draftModel %s: %s; no drafts for the rest of this completion", self.source.name, exc)
            self.on = False
            return []
        self.stats.draft_evaluated += gen.stats.evaluated
        if gen.stop_reason == "paused":  # the next catch-up goes on from here (a warm is run again)
            log.debug("draft model paused catching up with %s after %d tokens", self.key, gen.stats.evaluated)
            self.stats.draft_paused = True
        out: list[int] = []
        for tok in gen.tokens:
            if tok >= limit:
                break
            out.append(tok)
        return out

    def draft(self, history: Sequence[int], k: int) -> list[int]:
        """Up to `k` greedy tokens of the draft model after `prompt + history` (the tokens
        generated so far)."""
        return self.catch_up(history, k=k) if k > 0 else []

    def accepted(self, history: Sequence[int], n: int) -> None:
        """Nothing to do now: the next `draft` drops the rejected tail when it syncs (module doc)."""
