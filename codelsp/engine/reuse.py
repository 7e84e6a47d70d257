"""Prompt reuse beyond the common prefix: how much of a document's cached KV state a new prompt
can keep, moving runs of cached tokens into place (KV shift) instead of evaluating them again.

Used by LoadedModel.generate (engine/llama.py) on the slot of the request's document.

`plan_reuse` is a plain function of two token lists: the common prefix, then *runs*, stretches of
the new prompt (REUSE_MIN_CHUNK tokens or more) that the cached tokens hold further on, in order.
`reuse_cached` carries a plan out in llama.cpp's KV memory. A run right after the part already in
place is shifted back (a deletion: the cells between are removed), as llama.cpp's server does with
`--cache-reuse N`. A run that comes after new text (an insertion: a move up or a paste puts lines
in front of the suffix window of the PSM-tail layout; a switch back after an edit) cannot be
shifted there first, because llama.cpp decodes a sequence's positions only one after the other:
the cached tail is *parked* in a spare sequence of the unified pool (`llama_memory_seq_cp`, which
shares the cells, no copy), the new text is evaluated, and each run is shifted to its place
(`llama_memory_seq_add`, which re-rotates the keys) and handed back (`seq_cp`, then `seq_rm` of
the spare sequence). So a move costs the lines that are new where they now stand, not the window
behind them.

A run keeps the state computed after the text that preceded it in the cached prompt: an
approximation llama.cpp's server makes too, used only for runs long enough to be worth it, and
only where the text keeps its *role* in the FIM layout: `controls` (the family's FIM control
token ids) split a prompt into sections (prefix, suffix, the near text after the middle token),
and a run is taken only between places of the same section. State computed for text as prefix is
never moved behind the suffix token: the background warm-up evaluates a document as one long
prefix, and its state of what later becomes the suffix window, moved there, cost HumanEval
single-line pass@1 70 % -> 52 % (issue 22) where moving suffix runs within the suffix did not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Collection, Sequence

import llama_cpp

from codelsp.engine.kvcache import KVPool, Slot

log = logging.getLogger(__name__)

# A run of cached tokens is moved into place when it is at least this long (llama.cpp's server:
# `--cache-reuse N`, llama.vim's recommended 256; ours is smaller: a move in a file of short lines
# leaves runs of a line or two between the changed places).
REUSE_MIN_CHUNK = 16
CANDIDATES = 8  # places in the cache tried for a run (the longest wins): repeated code has several


@dataclass(frozen=True)
class Run:
    """prompt[at:at + n] == cached[src:src + n]: tokens whose state is moved, not evaluated."""

    at: int
    src: int
    n: int


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y or n >= limit:
            break
        n += 1
    return n


def roles(tokens: Sequence[int], controls: Collection[int]) -> list[int]:
    """For each token, the last of `controls` at or before it (-1 before the first): the section
    of the FIM layout a token stands in (the control token that opened it)."""
    out, role = [], -1
    for t in tokens:
        if t in controls:
            role = t
        out.append(role)
    return out


def plan_reuse(cached: Sequence[int], prompt: Sequence[int], min_chunk: int = REUSE_MIN_CHUNK,
               controls: Collection[int] = ()) -> tuple[int, list[Run]]:
    """(common prefix length, runs) for evaluating `prompt` over a slot that holds `cached`.

    Runs are in prompt order and never overlap in either list; they may come from the cache in
    any order (a move down puts lines of the cached suffix window into the near text, after the
    suffix's own later lines). The tokens of the prompt outside the common prefix and the runs are
    evaluated. The prompt's last token is never reused (its logits are needed). Greedy from the
    front: at each prompt position the longest run of at least `min_chunk` tokens among the first
    CANDIDATES unused places in the cache is taken, otherwise the position is evaluated. Cost: one
    dict lookup per prompt token after the common prefix, and an index of the cached tokens after
    it (only when both sides have `min_chunk` tokens more: a keystroke on one line builds none).

    `controls`: the FIM control token ids; each token of a run stands in the same section (see
    `roles`) in the cache as in the prompt, so no text changes its role by being moved."""
    limit = len(prompt) - 1
    common = common_prefix(cached, prompt, max(limit, 0))
    runs: list[Run] = []
    if limit - common < min_chunk or len(cached) - common < min_chunk:
        return common, runs
    index: dict[tuple[int, ...], list[int]] = {}
    for j in range(common, len(cached) - min_chunk + 1):
        index.setdefault(tuple(cached[j:j + min_chunk]), []).append(j)
    used = bytearray(len(cached))
    controls = frozenset(controls)
    role_c, role_p = roles(cached, controls), roles(prompt, controls)
    q = common
    while q + min_chunk <= limit:
        best_j, best_n = -1, 0
        tried = 0
        for j in index.get(tuple(prompt[q:q + min_chunk]), ()):
            if used[j] or used[j + min_chunk - 1]:
                continue
            n = 0
            while (j + n < len(cached) and q + n < limit and not used[j + n] and cached[j + n] == prompt[q + n]
                   and role_c[j + n] == role_p[q + n]):
                n += 1
            if n >= min_chunk and n > best_n:
                best_j, best_n = j, n
            tried += 1
            if tried >= CANDIDATES:
                break
        if best_j < 0:
            q += 1
            continue
        runs.append(Run(q, best_j, best_n))
        used[best_j:best_j + best_n] = b"\1" * best_n
        q += best_n
    return common, runs


@dataclass
class Reused:
    kept: int = 0  # prompt tokens whose state is in the slot now (common prefix + runs + gaps)
    shifted: int = 0  # of them, tokens moved to another position (no evaluation)
    evaluated: int = 0  # of them, new tokens evaluated between runs (an insertion)


def reuse_cached(
    mem: Any, pool: KVPool, slot: Slot, prompt: Sequence[int], *,
    spare: tuple[int, int] | None = None, decode: Callable[[Sequence[int]], None] | None = None,
    controls: Collection[int] = (),
) -> Reused:
    """Make `slot` hold state for the longest start of `prompt` it can, evaluating only the text
    that runs of cached tokens leave between them (see the module doc). Afterwards
    `slot.tokens == prompt[:kept]`; the caller evaluates `prompt[kept:]` (at least its last token).

    `mem`: the context's KV memory (llama_get_memory). `spare`: two sequence ids of the same
    unified pool that no document uses (parking, and moving one run); `decode(tokens)`: evaluates
    tokens at the end of the slot (LoadedModel._decode; it may evict other documents). Without
    them (or where `llama_memory_can_shift` says the positional encoding cannot move) only runs
    that follow the kept part directly, in cache order, are used. Shifts never make a position
    negative; every decode continues the slot's positions one by one, as llama.cpp requires.
    `controls`: the FIM control token ids (runs keep their section, see `plan_reuse`).
    """
    cache = slot.tokens
    out = Reused()
    if not llama_cpp.llama_memory_can_shift(mem):
        common, runs = common_prefix(cache, prompt, len(prompt) - 1), []
    else:
        common, runs = plan_reuse(cache, prompt, controls=controls)
    # runs right after the kept part, in cache order: shifted back in place (llama.cpp's server)
    lead: list[Run] = []
    head = floor = common
    for r in runs:
        if r.at != head or r.src < floor:
            break
        lead.append(r)
        head, floor = head + r.n, r.src + r.n
    gapped = runs[len(lead):] if spare is not None and decode is not None else []
    old = list(cache)
    seq = slot.seq
    for r in gapped:  # park their cells first: the lead shifts below remove cells between runs
        llama_cpp.llama_memory_seq_cp(mem, seq, spare[0], r.src, r.src + r.n)
    pool.parked = sum(r.n for r in gapped)
    kept = common
    for r in lead:
        if r.src > kept:
            llama_cpp.llama_memory_seq_rm(mem, seq, kept, r.src)
            llama_cpp.llama_memory_seq_add(mem, seq, r.src, r.src + r.n, kept - r.src)
            out.shifted += r.n
        kept += r.n
    if kept < len(cache) or out.shifted:
        llama_cpp.llama_memory_seq_rm(mem, seq, kept, -1)
    del cache[common:]
    for r in lead:
        cache.extend(old[r.src:r.src + r.n])
    try:
        for r in gapped:
            gap = list(prompt[len(cache):r.at])
            if gap:
                decode(gap)  # extends slot.tokens
                out.evaluated += len(gap)
            # the run alone into the second spare sequence, shifted to its place, then the slot's
            a, b = spare
            llama_cpp.llama_memory_seq_cp(mem, a, b, r.src, r.src + r.n)
            llama_cpp.llama_memory_seq_rm(mem, a, r.src, r.src + r.n)
            if r.at != r.src:
                llama_cpp.llama_memory_seq_add(mem, b, r.src, r.src + r.n, r.at - r.src)
                out.shifted += r.n
            llama_cpp.llama_memory_seq_cp(mem, b, seq, r.at, r.at + r.n)
            llama_cpp.llama_memory_seq_rm(mem, b, -1, -1)
            pool.parked -= r.n
            cache.extend(old[r.src:r.src + r.n])
    finally:
        if gapped:
            llama_cpp.llama_memory_seq_rm(mem, spare[0], -1, -1)
            llama_cpp.llama_memory_seq_rm(mem, spare[1], -1, -1)
        pool.parked = 0
    out.kept = len(cache)
    if out.shifted and log.isEnabledFor(logging.DEBUG):
        log.debug("prompt cache: reusing %d tokens (%d shifted into place, runs %s), %d evaluated between them",
                  out.kept - out.evaluated, out.shifted, [(r.at, r.src, r.n) for r in runs], out.evaluated)
    return out
