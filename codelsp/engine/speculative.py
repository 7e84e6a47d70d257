"""Speculative decoding's drafting side: which tokens to guess next, and how many.

A guess (draft) of the next k tokens is checked by the model in ONE batch (engine/llama.py
`LoadedModel._verify`): the model's own pick at every drafted position is read from that batch,
the drafts up to the first one that differs from the pick are kept, and the KV is rolled back
over the rest. Every token is the model's own pick: under greedy sampling the argmax at every
position; with a sampler, the same sampler (same random stream) picks every token, and a draft
only survives where the sampled token equals it (for a draft that is one fixed token this is the
standard speculative-sampling rule: accepted with probability p(draft), otherwise a token from
the rest of p). The text is the one plain decoding writes as far as llama.cpp computes the same
logits for a token in a batch of several as alone: on the CPU build measured (README, Latency)
they differed by up to 0.5, and where two tokens nearly tie the text can differ.

Drafting here is *prompt lookup* (no second model): the last n generated tokens (n = 3, 2, 1,
longest first) are looked up in the prompt (prefix, suffix, other files' context) and in what
was generated so far; the tokens that followed their latest earlier occurrence are the draft.
Code repeats itself (names, parallel lines, the closing of a structure already in the suffix),
so such drafts are often right, and a wrong one costs only a slightly larger batch.

`Drafter` is the seam for other sources of drafts: `LoadedModel.generate` asks a drafter for
tokens and tells it how many were accepted; nothing in the loop knows where they came from. The
other source is a small draft model of the same vocabulary (`DraftSource`, engine/draft.py).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol, Sequence

import numpy as np

from codelsp.engine.generation import GenStats

N_GRAM = 3  # longest n-gram looked up (then shorter ones) ...
N_MIN = 2  # ... down to this one: drafts after a single matching token were right too rarely to pay
# (README, Latency: on 8 holes of the bench files, n = 3..1 drafted 421 tokens and 218 were
# accepted; n = 3..2 drafted 394 and 258 were; the batch that checks them is not free on a CPU)
K_START = 4  # drafted tokens per batch at first
K_MIN = 2
K_MAX = 16  # a verify batch is at most K_MAX + 1 tokens (llama.py's N_BATCH is far larger)
DECAY = 0.7  # weight of the earlier batches in the recent acceptance rate, per batch
GIVE_UP_DRAFTED = 8  # once the recent batches drafted this many tokens (decayed) ...
GIVE_UP_RATE = 0.2  # ... a recent acceptance below this turns drafting off for the rest of the generation
PAY_BATCHES = 2  # after this many verify batches, drafting that writes fewer tokens a second than
# plain decoding (measured in the same generation) is turned off: on a CPU a batch of 5 tokens
# costs about 2.7 single ones (README, Speculative decoding), so drafts must be mostly right to pay


def propose(history_tokens: Sequence[int], prompt_tokens: Sequence[int], n_gram: int = N_GRAM, k: int = K_START,
            n_min: int = 1) -> list[int]:
    """Up to `k` tokens that followed the latest earlier occurrence of the last n tokens of
    `prompt_tokens + history_tokens` (n = n_gram, ..., n_min: the longest n that occurs), looked up
    in the prompt and in what was generated so far (`history_tokens`). [] when nothing matches."""
    seq = np.fromiter((*prompt_tokens, *history_tokens), dtype=np.int64)
    size = len(seq)
    if k <= 0 or size < 2:
        return []
    for n in range(min(n_gram, size - 1), max(n_min, 1) - 1, -1):
        key = seq[size - n:]
        # start positions j of earlier occurrences: seq[j:j+n] == key with j + n < size
        cand = np.flatnonzero(seq[: size - n] == key[0])
        for i in range(1, n):
            if not len(cand):
                break
            cand = cand[seq[cand + i] == key[i]]
        if len(cand):
            j = int(cand[-1]) + n  # the latest occurrence: nearest code repeats best
            return [int(t) for t in seq[j:j + k]]
    return []


class Drafter(Protocol):
    """A source of drafts for one generation (the seam for a draft model)."""

    def draft(self, history: Sequence[int], k: int) -> list[int]:
        """Up to `k` guesses of the tokens after `history` (the tokens generated so far)."""
        ...

    def accepted(self, history: Sequence[int], n: int) -> None:
        """`n` of the last draft were accepted; `history` is now what was generated (a draft model
        rolls its own KV back to it)."""
        ...


class DraftSource(Protocol):
    """A draft model beside the base model (engine/draft.py `DraftModel`)."""

    def drafter(self, key: str, prompt: Sequence[int], stats: GenStats, cancel: threading.Event | None = None,
                pause: Callable[[], bool] | None = None) -> Drafter:
        """The drafter of one generation of document `key` from `prompt`, the draft model brought
        in step with `prompt` first (`cancel` and `pause` as in LoadedModel.generate); it adds the
        tokens the draft model evaluates to `stats.draft_evaluated`."""
        ...


def speculation(mode: str, key: str, prompt: Sequence[int], source: DraftSource | None, stats: GenStats,
                cancel: threading.Event | None = None, pause: Callable[[], bool] | None = None) -> "Speculation | None":
    """The speculation of one generation for setting `speculative` `mode`: "lookup" (prompt
    lookup), "draft" (the draft model `source`, which evaluates what it lacks of `prompt` now, so
    that a prompt-only request (warming) warms it too; None without one: plain decoding), else
    None. Raises Cancelled when `cancel` is set during the draft model's catch-up."""
    if mode == "lookup":
        return Speculation(LookupDrafter(prompt))
    if mode == "draft" and source is not None:
        return Speculation(source.drafter(key, prompt, stats, cancel, pause))
    return None


class LookupDrafter:
    """Prompt lookup over one generation's prompt (`propose`)."""

    def __init__(self, prompt: Sequence[int], n_gram: int = N_GRAM, n_min: int = N_MIN):
        self.prompt = list(prompt)
        self.n_gram = n_gram
        self.n_min = n_min

    def draft(self, history: Sequence[int], k: int) -> list[int]:
        return propose(history, self.prompt, self.n_gram, k, self.n_min)

    def accepted(self, history: Sequence[int], n: int) -> None:
        pass


class Speculation:
    """How many tokens to draft next, adapted to how many were accepted, and the counts.

    k doubles after a batch whose drafts were all accepted and drops to what was accepted (at
    least K_MIN) after a rejection. The recent acceptance rate (counts of the earlier batches
    weighed down by DECAY per batch) below GIVE_UP_RATE turns drafting off for the rest of the
    generation: there it would only make every batch larger.

    It also turns itself off where drafting does not pay in time: the loop calls `draft()` once
    per step (a plain decode or a verify batch), so the time between two calls is the cost of a
    step, drafting included, and the growth of `history` its tokens. The first step is always a
    plain one (its speed is the measure); once PAY_BATCHES verify steps ran, drafting stays on
    only while its steps write at least as many tokens a second as the plain ones did (decayed
    sums, so the recent steps count most). `clock`: seconds (time.perf_counter), for tests."""

    def __init__(self, drafter: Drafter, clock: Callable[[], float] | None = None):
        self.drafter = drafter
        self.k = K_START
        self.on = True
        self.drafted = 0
        self.accepted = 0
        self.batches = 0
        self._recent = (0.0, 0.0)  # (drafted, accepted), decayed
        self._clock = clock or time.perf_counter
        self._step: tuple[float, int, bool] | None = None  # (start, len(history), verified) of the running step
        self._plain = (0.0, 0.0)  # (seconds, tokens) of plain steps, decayed
        self._spec = (0.0, 0.0)  # (seconds, tokens) of verify steps, decayed
        self._spec_steps = 0

    def _timed(self, history: Sequence[int]) -> None:
        """Account the step that ends now (its time and tokens) to plain or verify steps."""
        now = self._clock()
        if self._step is not None:
            start, size, verified = self._step
            took, made = now - start, len(history) - size
            if verified:
                self._spec = (DECAY * self._spec[0] + took, DECAY * self._spec[1] + made)
                self._spec_steps += 1
                plain_s, plain_n = self._plain
                spec_s, spec_n = self._spec
                # tokens a second: spec_n / spec_s < plain_n / plain_s, without dividing by zero
                if self._spec_steps >= PAY_BATCHES and plain_n > 0 and spec_n * plain_s < plain_n * spec_s:
                    self.on = False
            else:
                self._plain = (DECAY * self._plain[0] + took, DECAY * self._plain[1] + made)
        self._step = (now, len(history), False)

    def draft(self, history: Sequence[int], room: int) -> list[int]:
        """Drafts for the next batch, at most `room` of them ([]: decode one token plainly)."""
        self._timed(history)
        if not self.on or room <= 0 or self._plain[1] == 0:
            return []  # (the first step is plain: the measure drafting must beat)
        return self.drafter.draft(history, min(self.k, room))

    def verified(self, history: Sequence[int], drafted: int, accepted: int) -> None:
        """The last draft's batch ran: `drafted` tokens, the first `accepted` of them kept."""
        if self._step is not None:
            self._step = (self._step[0], self._step[1], True)
        self.drafted += drafted
        self.accepted += accepted
        self.batches += 1
        self.drafter.accepted(history, accepted)
        if accepted == drafted:
            self.k = min(self.k * 2, K_MAX)
        else:
            self.k = max(K_MIN, accepted)
        d, a = (DECAY * x + y for x, y in zip(self._recent, (drafted, accepted)))
        self._recent = (d, a)
        if d >= GIVE_UP_DRAFTED and a < GIVE_UP_RATE * d:
            self.on = False


def greedy_pick(logits: np.ndarray, logprobs: list[float]) -> int:
    """The token of the largest of `logits` (one per vocabulary token: a greedy pick); its natural
    log-probability (log-softmax) is appended to `logprobs` (GenStats.logprobs: how sure the model
    was of each token, a confidence measure for next edits)."""
    best = int(np.argmax(logits))
    logprobs.append(-float(np.log(np.exp(logits - logits[best]).sum(dtype=np.float64))))
    return best
