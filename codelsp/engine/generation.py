"""What both backends share: the result of a generation, its costs, the sampler settings,
cancellation, and the `Model` interface the rest of codelsp programs against.

A `Model` is either a `LoadedModel` (engine/llama.py: llama.cpp in process) or a `RemoteModel`
(engine/remote.py: an inference server over HTTP). Nothing here imports llama_cpp or numpy, so the
remote backend runs without them.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from codelsp.settings import Settings


def complete_text(data: bytes) -> str:
    """UTF-8 `data` as text without an incomplete character at its end (generation stopped
    inside one: dropped, never U+FFFD); invalid bytes elsewhere become U+FFFD."""
    return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=False)


class Cancelled(Exception):
    """The request was cancelled or superseded; generation stopped between tokens."""


@dataclass
class GenStats:
    reused: int = 0  # prompt tokens whose state was reused
    restored: int = 0  # tokens whose state was copied back from system memory for this request
    shifted: int = 0  # of the reused tokens, those moved to an earlier position (KV shift, no evaluation)
    evaluated: int = 0  # prompt tokens evaluated now
    generated: int = 0
    prompt_ms: float = 0.0
    gen_ms: float = 0.0


@dataclass
class Generation:
    text: str
    tokens: list[int]
    stop_reason: str  # "stop" | "length" | "time" | "check" | "paused"
    stats: GenStats


@dataclass
class SamplerParams:
    temperature: float
    top_k: int
    top_p: float
    repeat_penalty: float
    seed: int

    @classmethod
    def from_settings(cls, s: Settings) -> "SamplerParams":
        return cls(s.temperature, s.top_k, s.top_p, s.repeat_penalty, s.seed)
