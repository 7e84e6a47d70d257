"""KV memory for many documents: a pool of cells in the model's KV, and a tier in system memory.

The KV cache of the context is one *unified* pool of cells (`kv_unified = True`, `n_ctx` = the
pool's cells) shared by up to `n_seq` llama.cpp sequences, one sequence per document. A document
takes the cells its prompt needs, not a whole `contextSize` slot: a 300-token file costs 300
cells. When a decode would not fit, the least recently used *other* documents leave the pool.

A document that leaves the pool is saved first with llama.cpp's per-sequence state API
(`llama_state_seq_get_data_ext`: its cells' positions and K/V rows, copied from the device to
system memory) into `HostTier`, a byte-bounded LRU (cachetools, size = bytes held). When that
document is asked for again, its state is copied back (`llama_state_seq_set_data_ext`) if that
is cheaper than evaluating the tokens it would save (`restore_pays`).

Neither class is thread-safe: only the engine's worker thread touches them (engine/worker.py).
"""

from __future__ import annotations

import array
import ctypes
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

from cachetools import LRUCache

import llama_cpp

log = logging.getLogger(__name__)

STATE_FLAGS = 0  # llama_state_seq_flags: whole sequence, copied to host memory (not ON_DEVICE)

# How many bytes of state copy cost as much as one floating-point operation of prompt
# evaluation, for `restore_pays`. Copying is bound by memory/PCIe bandwidth (10-50 GB/s),
# evaluation by compute (0.1-100 TFLOP/s): 10 FLOP per byte copied is pessimistic for copying on
# every machine we know of (CPU: ~10-100 FLOP/byte of bandwidth, GPU: ~50-300).
FLOP_PER_BYTE = 10


def restore_pays(useful_tokens: int, state_bytes: int, flops_per_token: float) -> bool:
    """True when copying `state_bytes` back is cheaper than evaluating the `useful_tokens` of the
    prompt it would save (each costs `flops_per_token`, about 2 x the model's parameters)."""
    return useful_tokens > 0 and useful_tokens * flops_per_token >= FLOP_PER_BYTE * state_bytes


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# --- llama.cpp's per-sequence state -----------------------------------------------------------
def save_seq(ctx, seq: int) -> bytearray | None:
    """The state of sequence `seq` (positions and K/V of its cells) as bytes in system memory,
    or None when llama.cpp could not write it."""
    n = llama_cpp.llama_state_seq_get_size_ext(ctx, seq, STATE_FLAGS)
    if n <= 0:
        return None
    buf = bytearray(n)
    arr = (ctypes.c_uint8 * n).from_buffer(buf)
    written = llama_cpp.llama_state_seq_get_data_ext(ctx, arr, n, seq, STATE_FLAGS)
    del arr  # release the export so the bytearray may be resized or freed
    if written != n:
        return None
    return buf


def restore_seq(ctx, seq: int, data: bytearray) -> bool:
    """Put a state written by `save_seq` into sequence `seq` (llama.cpp first empties it and
    finds free cells for it). False when llama.cpp refused (e.g. not enough free cells)."""
    arr = (ctypes.c_uint8 * len(data)).from_buffer(data)
    try:
        return llama_cpp.llama_state_seq_set_data_ext(ctx, arr, len(data), seq, STATE_FLAGS) > 0
    finally:
        del arr


# --- the system-memory tier -------------------------------------------------------------------
@dataclass
class Saved:
    """A document's state in system memory: the tokens its cells hold, and llama.cpp's bytes."""

    tokens: array.array  # 'i': the token ids, in position order
    data: bytearray

    @property
    def nbytes(self) -> int:
        return len(self.data) + self.tokens.itemsize * len(self.tokens)


class HostTier:
    """document key -> Saved, least recently used first out, holding at most `budget` bytes
    (llama.cpp's state bytes plus 4 bytes per token id). `budget` 0: off (nothing is kept)."""

    def __init__(self, budget: int):
        self.budget = max(int(budget), 0)
        self._lru: LRUCache = LRUCache(maxsize=max(self.budget, 1), getsizeof=lambda s: s.nbytes)
        self.saved = 0  # documents saved, restored, and dropped to stay within the budget
        self.restored = 0
        self.dropped = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now (never more than `budget`)."""
        return int(self._lru.currsize) if self.budget else 0

    def __len__(self) -> int:
        return len(self._lru) if self.budget else 0

    def __contains__(self, key: str) -> bool:
        return self.budget > 0 and key in self._lru

    def put(self, key: str, tokens: Sequence[int], data: bytearray) -> bool:
        """Keep a state; False when it alone is larger than the budget (then nothing is kept)."""
        self._lru.pop(key, None)
        if not self.budget:
            return False
        entry = Saved(array.array("i", tokens), data)
        if entry.nbytes > self.budget:
            self.dropped += 1
            return False
        before = len(self._lru)
        self._lru[key] = entry  # evicts least recently used states until it fits
        self.dropped += max(0, before + 1 - len(self._lru))
        self.saved += 1
        return True

    def take(self, key: str) -> Saved | None:
        """Remove and return `key`'s state (it is going back into the KV, where it will change)."""
        return self._lru.pop(key, None) if self.budget else None

    def peek_tokens(self, key: str) -> int:
        entry = self._lru.get(key) if self.budget else None
        return len(entry.tokens) if entry is not None else 0

    def discard(self, key: str) -> None:
        self._lru.pop(key, None)


# --- the pool of cells in the model's KV ----------------------------------------------------
@dataclass
class Slot:
    """A document in the pool: its llama.cpp sequence and the tokens its cells hold, in order."""

    seq: int
    tokens: list[int] = field(default_factory=list)


@dataclass
class Acquired:
    slot: Slot
    restored: int = 0  # tokens whose state was copied back from system memory now
    restore_ms: float = 0.0


class KVPool:
    """document key -> Slot in one unified KV pool of `cells` cells and `n_seq` sequences.

    Invariant: the cells in use are exactly the sum of `len(slot.tokens)` over the documents
    (every decode goes through `reserve`, every removal through llama_memory_seq_rm), so room
    is known without asking llama.cpp. `flops_per_token` prices evaluation for `restore_pays`.
    """

    def __init__(self, ctx, mem, cells: int, n_seq: int, host: HostTier, flops_per_token: float):
        self.ctx = ctx
        self.mem = mem
        self.cells = int(cells)
        self.host = host
        self.flops_per_token = flops_per_token
        self._docs: OrderedDict[str, Slot] = OrderedDict()  # least recently used first
        self._free_seqs = list(range(n_seq - 1, -1, -1))
        self.evictions = 0
        # cells of a document's cached tail parked in the spare sequence while a prompt is put
        # together from moved runs (engine/reuse.py): in use, though in no slot's tokens
        self.parked = 0

    # --- accounting ----------------------------------------------------------------------
    @property
    def used(self) -> int:
        return sum(len(s.tokens) for s in self._docs.values()) + self.parked

    @property
    def free(self) -> int:
        return self.cells - self.used

    def __contains__(self, key: str) -> bool:
        return key in self._docs

    def __len__(self) -> int:
        return len(self._docs)

    def slot_of(self, key: str) -> Slot | None:
        """`key`'s slot without touching the LRU order."""
        return self._docs.get(key)

    def cached_tokens(self, key: str) -> int:
        slot = self._docs.get(key)
        return len(slot.tokens) if slot else 0

    def host_tokens(self, key: str) -> int:
        return self.host.peek_tokens(key)

    # --- moving documents in and out ---------------------------------------------------
    def acquire(self, key: str, prompt: Sequence[int]) -> Acquired:
        """`key`'s slot, most recently used now. A document not in the pool gets a free
        sequence (evicting the least recently used document when all are taken) and, when its
        state is in system memory and restoring it pays for the tokens of `prompt` it shares,
        that state back."""
        slot = self._docs.get(key)
        if slot is not None:
            self._docs.move_to_end(key)
            return Acquired(slot)
        if not self._free_seqs:
            self._evict_lru(keep=None)
        slot = Slot(self._free_seqs.pop())
        self._docs[key] = slot
        out = Acquired(slot)
        saved = self.host.take(key)
        if saved is None:
            return out
        useful = common_prefix(saved.tokens, prompt)
        if not restore_pays(useful, len(saved.data), self.flops_per_token):
            log.debug("prompt cache: %s: not restoring %d tokens (%d in common with the prompt)", key, len(saved.tokens), useful)
            return out
        self.reserve(slot, len(saved.tokens))
        t0 = time.perf_counter()
        ok = restore_seq(self.ctx, slot.seq, saved.data)
        out.restore_ms = (time.perf_counter() - t0) * 1000
        if not ok:
            llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
            log.warning("prompt cache: llama.cpp could not restore the state of %s; evaluating it again", key)
            return out
        slot.tokens = list(saved.tokens)
        out.restored = len(slot.tokens)
        self.host.restored += 1
        log.debug(
            "prompt cache: %s: restored %d tokens (%.1f MiB) from system memory in %.1f ms (%d in common with the prompt)",
            key, out.restored, len(saved.data) / 2**20, out.restore_ms, useful,
        )
        return out

    def reserve(self, slot: Slot, n: int) -> None:
        """Make room for `n` more cells for `slot`: evict least recently used other documents
        to system memory until they fit. Raises RuntimeError if even the pool alone is too small
        (the caller keeps prompts within one context, and the pool holds at least one)."""
        while self.free < n:
            if not self._evict_lru(keep=slot):
                raise RuntimeError(f"KV pool of {self.cells} cells cannot hold {len(slot.tokens) + n} tokens")

    def clear(self, slot: Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
        slot.tokens.clear()

    def forget(self, key: str) -> None:
        """Drop a document everywhere (closed): no state kept in either tier."""
        self.host.discard(key)
        slot = self._docs.pop(key, None)
        if slot is not None:
            self._release(slot)

    def _evict_lru(self, keep: Slot | None) -> bool:
        for key, slot in self._docs.items():
            if slot is not keep:
                break
        else:
            return False
        del self._docs[key]
        self.evictions += 1
        if slot.tokens and self.host.budget:
            t0 = time.perf_counter()
            data = save_seq(self.ctx, slot.seq)
            kept = data is not None and self.host.put(key, slot.tokens, data)
            log.debug(
                "prompt cache: %s: %d tokens left the KV; %s (%.1f ms)", key, len(slot.tokens),
                f"saved {len(data) / 2**20:.1f} MiB to system memory" if kept else "not saved (larger than hostCacheBytes)",
                (time.perf_counter() - t0) * 1000,
            )
        else:
            log.debug("prompt cache: %s: %d tokens left the KV (no system-memory tier)", key, len(slot.tokens))
        self._release(slot)
        return True

    def _release(self, slot: Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
        slot.tokens.clear()
        self._free_seqs.append(slot.seq)
