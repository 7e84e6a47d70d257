"""Prompt reuse beyond the common prefix: how much of a document's cached KV state a new prompt
can keep, moving runs of cached tokens into place (KV shift) instead of evaluating them again.

Used by LoadedModel.generate (engine/llama.py) on the slot of the request's document.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any

import llama_cpp

from codelsp.engine.kvcache import Slot

log = logging.getLogger(__name__)

# Prompt reuse beyond the common prefix (see reuse_cached): a run of cached tokens
# that reappears later in a new prompt is shifted into place when it is at least this long.
REUSE_MIN_CHUNK = 16
REUSE_KEY = 4  # tokens per lookup key when searching the cache for such runs


def reuse_cached(mem: Any, slot: Slot, prompt: list[int]) -> tuple[int, int]:
    """Make `slot` hold state for the longest start of `prompt` it can without evaluating.

    Returns (tokens reused, of which shifted). First the common prefix of the cached tokens
    and the prompt. Then, as llama.cpp's server does with `--cache-reuse`, runs of cached
    tokens (REUSE_MIN_CHUNK or more) that the new prompt needs next are moved to earlier
    positions: the cached cells between are removed (`llama_memory_seq_rm`) and the run is
    shifted (`llama_memory_seq_add`, which re-rotates the keys; only where
    `llama_memory_can_shift` says the model's positional encoding allows it). A run keeps
    the state computed after the text that preceded it in the cached prompt: an
    approximation the server makes too, used only for runs long enough to be worth it.
    Runs are only ever moved back (llama.cpp needs the positions of a sequence to grow
    one by one), so they serve deletions and moves, not insertions. The prompt's last token
    is never reused: its logits are needed. `mem`: the context's KV memory (llama_get_memory).
    """
    cache = slot.tokens
    limit = len(prompt) - 1
    common = 0
    for a, b in zip(cache, prompt):
        if a != b or common >= limit:
            break
        common += 1
    head_p = common
    shifted = 0
    if (limit - head_p >= REUSE_MIN_CHUNK and len(cache) - head_p >= REUSE_MIN_CHUNK
            and llama_cpp.llama_memory_can_shift(mem)):
        index: dict[tuple[int, ...], list[int]] = {}
        for j in range(head_p, len(cache) - REUSE_KEY + 1):
            index.setdefault(tuple(cache[j:j + REUSE_KEY]), []).append(j)
        head_c = head_p
        moved: list[int] = []
        while limit - head_p >= REUSE_MIN_CHUNK:
            best_j, best_n = -1, 0
            starts = index.get(tuple(prompt[head_p:head_p + REUSE_KEY]), [])
            for j in starts[bisect.bisect_left(starts, head_c):]:
                n = REUSE_KEY
                while j + n < len(cache) and head_p + n < limit and cache[j + n] == prompt[head_p + n]:
                    n += 1
                if n >= REUSE_MIN_CHUNK:
                    best_j, best_n = j, n
                    break  # the earliest long run: keeps the most cache for what follows
            if best_j < 0:
                break
            seq = slot.seq
            if best_j > head_p:
                llama_cpp.llama_memory_seq_rm(mem, seq, head_p, best_j)
                llama_cpp.llama_memory_seq_add(mem, seq, best_j, best_j + best_n, head_p - best_j)
                shifted += best_n
            moved.extend(cache[best_j:best_j + best_n])
            head_c = best_j + best_n
            head_p += best_n
        if moved:
            del cache[common:]
            cache.extend(moved)
            log.debug("prompt cache: shifted %d cached tokens into place, reusing %d", shifted, head_p)
    if head_p < len(cache) or shifted:
        llama_cpp.llama_memory_seq_rm(mem, slot.seq, head_p, -1)
    del cache[head_p:]
    return head_p, shifted
