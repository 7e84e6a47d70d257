"""What both backends share: the result of a generation, its costs, the sampler settings,
cancellation, and the `Model` interface the rest of codelsp programs against.

A `Model` is either a `LoadedModel` (engine/llama.py: llama.cpp in process) or a `RemoteModel`
(engine/remote.py: an inference server over HTTP). Nothing here imports llama_cpp or numpy, so the
remote backend runs without them.
"""

from __future__ import annotations

import codecs
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, Sequence

from codelsp.models.families import FimSpec
from codelsp.settings import Settings

if TYPE_CHECKING:  # types only: kvcache imports llama_cpp, remote imports this module
    from codelsp.actions.chat import ChatPrompt
    from codelsp.engine.kvcache import KVPool


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
    shifted: int = 0  # of the reused tokens, those moved to another position (KV shift, no evaluation)
    evaluated: int = 0  # prompt tokens evaluated now
    generated: int = 0
    drafted: int = 0  # speculative decoding: tokens guessed (engine/speculative.py) and checked by the model
    accepted: int = 0  # of the drafted tokens, those the model would have picked itself (kept)
    verifies: int = 0  # batches that checked drafts (each also gives one token of the model's own)
    draft_evaluated: int = 0  # speculative "draft": tokens the draft model evaluated to catch up (engine/draft.py)
    draft_paused: bool = False  # the draft model's catch-up stopped for a more urgent job (`pause`)
    prompt_ms: float = 0.0
    gen_ms: float = 0.0
    # greedy decoding on a local model: the natural log-probability of each token picked, in order
    # (the generated tokens, then the stop token where it stopped at one): a confidence measure
    logprobs: list[float] = field(default_factory=list)


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
    speculative: str = "off"  # "lookup": drafts by prompt lookup (engine/speculative.py); "draft": by draftModel (engine/draft.py)

    @classmethod
    def from_settings(cls, s: Settings) -> "SamplerParams":
        return cls(s.temperature, s.top_k, s.top_p, s.repeat_penalty, s.seed, s.speculative)


class Model(Protocol):
    """Everything codelsp uses from a model, local or remote. Both `LoadedModel` and `RemoteModel`
    define every member; what only one backend can do is guarded by `remote` at the call site,
    and the other backend's member raises NotImplementedError (or is None, for `pool` and
    `chat_template`)."""

    remote: ClassVar[bool]  # True: a server over HTTP (RemoteModel); False: llama.cpp in process
    backend: str  # settings.backend it was made for: "local", "openai" or "llama-server"
    path: str  # the GGUF file, or the server's url (shown in logs and the menu)
    settings: Settings  # as loaded (a local model caps contextSize at what it was trained for)
    fim: FimSpec
    pool: "KVPool | None"  # the KV pool (engine/kvcache.py); None on a remote backend
    chat_template: str | None  # the GGUF's chat template; None on a remote backend (the server applies its own)
    planned_gpu_bytes: int  # GPU memory the memory plan gave it (set by the engine); 0 remote
    told_shared: bool  # the log said once that code actions share the base model (actions/instruct.py)
    no_system_role: bool  # the chat server refused a system message once (actions/instruct.py)

    @property
    def context_size(self) -> int: ...

    @property
    def name(self) -> str: ...

    # --- both backends --------------------------------------------------------------------
    def tokenize(self, text: str, first: bool = True) -> list[Any]: ...

    def generate(self, key: str, prompt: Any, *, max_tokens: int, sampler: SamplerParams,
                 cancel: threading.Event | None = None, deadline: float | None = None,
                 check: Callable[[str], bool] | None = None, reuse: bool = True) -> Generation:
        """`prompt`: token ids (local) or prompt()'s request fields (remote). A local model also
        takes `pause` and `stop_texts` (LoadedModel.generate)."""
        ...

    def cached_tokens(self, key: str) -> int: ...

    def forget(self, key: str) -> None: ...

    def close(self) -> None: ...

    # --- a local model only (remote is False) ---------------------------------------------
    def next_tokens(self, key: str, prompt: Sequence[int], n: int) -> tuple[list[int], GenStats]: ...

    def piece(self, token: int) -> bytes: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def special_text(self, which: str) -> str: ...

    def chat_tokens(self, prompt: "ChatPrompt") -> list[int]: ...

    def host_tokens(self, key: str) -> int: ...

    def state_bytes(self, key: str) -> int: ...

    def cache_stats(self) -> dict[str, int | str]: ...

    # --- a remote backend only (remote is True) -------------------------------------------
    def ready(self, cancel: threading.Event | None = None, deadline: float | None = None) -> None: ...

    def prompt(self, prefix: Sequence[str], suffix: Sequence[str], near: Sequence[str] = ()) -> dict[str, Any]: ...

    def chat(self, messages: list[dict], max_tokens: int, cancel: threading.Event | None = None,
             on_token: Callable[[int], None] | None = None) -> ChatAnswer: ...


class ChatAnswer(str):
    """The text of a chat answer (a str), with `tokens` generated, `reasoning` pieces seen apart
    from the answer, and `prompt_tokens` as the server counted them (0: not reported)."""

    tokens: int
    reasoning: int
    prompt_tokens: int

    def __new__(cls, text: str, tokens: int, reasoning: int = 0, prompt_tokens: int = 0) -> "ChatAnswer":
        obj = super().__new__(cls, text)
        obj.tokens = tokens
        obj.reasoning = reasoning
        obj.prompt_tokens = prompt_tokens
        return obj


def cut_at(data: bytes, stops: Sequence[bytes]) -> bytes:
    """`data` up to the first of `stops` in it."""
    return data[: min(i for i in (data.find(st) for st in stops) if i >= 0)]
