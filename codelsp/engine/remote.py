"""Remote backends: completion from an inference server instead of an in-process model.

A `RemoteModel` stands where the engine would hold a `LoadedModel`: the same server, context
building (context.py), result caching (suggestions.py) and post-processing (postprocess.py) run
on top of it; only the prompt is sent over HTTP instead of being evaluated in process.

- backend `openai`: `POST {url}/completions` with the FIM prompt written as *text* in the model
  family's layout (fim.TEXT_LAYOUTS), streamed; `POST {url}/chat/completions` for code actions
  (`chat()`). `url` is the server's base up to and including `/v1` (vLLM, TGI, ollama, llama.cpp's
  llama-server, llama-cpp-python's `llama_cpp.server`). The family comes from `fimTemplate`, else
  from the model name the server reports (`GET {url}/models`).
- backend `llama-server`: llama.cpp's own `POST {url}/infill` (`input_prefix`, `input_suffix`,
  `input_extra`, `cache_prompt: true`), the endpoint llama.vim uses; the server lays out the FIM
  prompt with the model's own tokens. `url` is the server's root; chat goes to `{url}/v1/...`.

No tokenizer is available here, so context budgets are approximate: `tokenize()` cuts text into
pieces of CHARS_PER_TOKEN characters (a conservative figure for code: real tokenizers average
3.5-4 characters per token on source code), and the prefix/suffix windows are cut on the same
line boundaries as locally. Set `contextSize` no larger than the server's context.

The HTTP transport (keep-alive connections, server-sent events, retries, cancellation, errors as
BackendError) is engine/http.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Sequence

from codelsp.engine.generation import Cancelled, ChatAnswer, GenStats, Generation, SamplerParams
from codelsp.engine.http import API_KEY_ENV, CONNECT_TIMEOUT_S, BackendError, _Http, _Stopped
from codelsp.models.errors import ModelError
from codelsp.models.families import FimSpec, family_from_name, layout_text, stop_texts, text_order
from codelsp.settings import Settings

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3
FIT_RESERVE = 16  # tokens for the FIM layout's own text when cutting a prompt to the server's context
CHAT_READ_TIMEOUT_S = 120.0  # longest silence between two chunks of a chat answer


class RemoteModel:
    """A completion (and chat) model behind an HTTP server, with what the completion pipeline needs."""

    remote = True

    def __init__(self, settings: Settings):
        if not settings.url:
            raise ModelError(f"backend {settings.backend} needs a url (--url or the `url` setting)")
        self.settings = settings
        self.backend = settings.backend
        self.path = settings.url.rstrip("/")  # shown in logs where a local model shows its file
        self.http = _Http(settings.url, settings.api_key or os.environ.get(API_KEY_ENV) or None)
        self.model_name: str | None = settings.model
        self.chat_model: str | None = settings.instruct_model or settings.model
        self.server_context: int | None = None
        self.fim = FimSpec(family="none", detected_by="not yet known")
        self._discovered = False
        self._warned_slow = False
        self._told_fit = False
        self.no_system_role = False  # the server refused a system message once (chat())
        self.told_shared = False  # as on a local model; code actions here use chat(), never shared
        self.planned_gpu_bytes = 0  # no GPU memory in this process
        self.pool: None = None  # no KV pool here: the server keeps its own prompt cache
        self.chat_template: str | None = None  # the server applies its own
        if settings.fim_template:
            self._set_family(settings.fim_template, "setting fimTemplate")

    # --- what the engine and the completion pipeline use ------------------------------------------
    def tokenize(self, text: str, first: bool = True) -> list[str]:
        """Approximate 'tokens' for the context budget: pieces of CHARS_PER_TOKEN characters."""
        return [text[i:i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]

    def cached_tokens(self, key: str) -> int:
        return 0  # the server's own prompt cache is not visible from here

    def forget(self, key: str) -> None:
        pass

    def close(self) -> None:
        self.http.close()

    @property
    def name(self) -> str:
        return self.chat_model or self.model_name or self.path

    @property
    def context_size(self) -> int:
        """contextSize: the server's own context is applied when the prompt is laid out (_fit)."""
        return self.settings.context_size

    # --- a local model's side of `Model`: never called on a remote backend (callers check `remote`)
    def next_tokens(self, key: str, prompt: Sequence[int], n: int) -> tuple[list[int], GenStats]:
        raise NotImplementedError("a remote backend exposes no logits")

    def piece(self, token: int) -> bytes:
        raise NotImplementedError("a remote backend has no token ids")

    def detokenize(self, tokens: Sequence[int]) -> str:
        raise NotImplementedError("a remote backend has no token ids")

    def special_text(self, which: str) -> str:
        raise NotImplementedError("a remote backend has no vocabulary here")

    def chat_tokens(self, prompt: Any) -> list[int]:
        raise NotImplementedError("a remote backend's chats go to the server as messages (chat())")

    def host_tokens(self, key: str) -> int:
        raise NotImplementedError("a remote backend has no system-memory tier")

    def state_bytes(self, key: str) -> int:
        raise NotImplementedError("a remote backend has no KV state here")

    def cache_stats(self) -> dict[str, int | str]:
        raise NotImplementedError("a remote backend has no KV pool here")

    def describe(self) -> str:
        name = self.model_name or "the server's default model"
        if self.backend == "llama-server":
            return f"llama-server /infill at {self.path} (the server lays out FIM)"
        if not self.fim.has_fim:
            fim = f"no FIM family: prefix-only continuation ({self.fim.detected_by})"
        else:
            fim = f"FIM {self.fim.family} ({self.fim.order.upper()} text layout, from {self.fim.detected_by})"
        return f"{name} at {self.path}, {fim}"

    # --- discovery ------------------------------------------------------------------------
    def _set_family(self, family: str, how: str) -> None:
        self.fim = FimSpec(family=family, order=text_order(family, self.settings.fim_order), detected_by=how)

    def connect(self, cancel: threading.Event | None = None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Ask the server which model it serves (name, family, context). BackendError if down."""
        deadline = time.monotonic() + timeout_s
        if self.backend == "llama-server":
            props = self._get("/props", cancel, deadline)
            if isinstance(props, dict):
                gen = props.get("default_generation_settings") or {}
                n_ctx = gen.get("n_ctx") or props.get("n_ctx")
                if isinstance(n_ctx, int):
                    self.server_context = n_ctx
                path = props.get("model_path")
                if isinstance(path, str) and not self.model_name:
                    self.model_name = os.path.basename(path)
            self._discovered = True
            return
        models = self._get("/models", cancel, deadline)
        data = models.get("data") if isinstance(models, dict) else None
        ids = [m.get("id") for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
        if not self.model_name and ids:
            self.model_name = ids[0]
        if not self.chat_model:
            self.chat_model = self.model_name
        entries = [m for m in data or [] if isinstance(m, dict)]
        mine = [m for m in entries if m.get("id") == self.model_name] or (entries if len(entries) == 1 else [])
        for m in mine[:1]:
            n_ctx = _context_of(m)
            if n_ctx:
                self.server_context = n_ctx
                log.info("remote backend: the server reports a context of %d tokens for %s", n_ctx, m.get("id"))
        if not self.settings.fim_template:
            family = family_from_name(self.model_name or "")
            if family:
                self._set_family(family, f"model name {self.model_name!r}")
            else:
                self._set_family("none", "model name (no FIM family recognised)")
                log.warning(
                    "cannot tell the FIM family of %s from its name: completing the prefix only; "
                    "set fimTemplate (--fim-family) to the family the model was trained with",
                    self.model_name or "the remote model",
                )
        self._discovered = True
        log.info("remote backend: %s", self.describe())

    def _get(self, path: str, cancel: threading.Event | None, deadline: float) -> Any:
        try:
            for answer in self.http.request("GET", path, None, cancel=cancel, deadline=deadline):
                return answer
        except _Stopped:
            raise BackendError(f"cannot reach the completion server at {self.path}: timed out") from None
        except BackendError as exc:
            if "(404)" in str(exc):
                return None  # not every server lists its models; go on without
            raise
        return None

    # --- completion -------------------------------------------------------------------------
    def ready(self, cancel: threading.Event | None = None, deadline: float | None = None) -> None:
        """Learn the served model and its FIM family once (before the first prompt is laid out)."""
        if not self._discovered and self.backend == "openai" and self.settings.model and self.settings.fim_template:
            self._discovered = True  # model and family given: nothing to ask the server
        if not self._discovered:
            left = CONNECT_TIMEOUT_S if deadline is None else deadline - time.monotonic()
            self.connect(cancel, timeout_s=max(min(left, CONNECT_TIMEOUT_S), 0.5))

    def prompt(self, prefix: Sequence[str], suffix: Sequence[str], near: Sequence[str] = ()) -> dict[str, Any]:
        """The request fields that carry the context (text, joined from tokenize() pieces).

        `near` is the end of the prefix (the current line's head and the lines typed just before
        it, context.py): llama-server's /infill gets it as `prompt`, which the server puts after
        the FIM middle token so that its cached prompt keeps the suffix while the user types;
        other servers get it at the end of the prefix.

        When the server reported its context size (`/v1/models`, `/props`), prefix and suffix
        are cut to fit it with the answer (maxTokens): the prefix keeps its end (the lines
        nearest the cursor), the suffix its start, the suffix at most a quarter of the room.
        """
        prefix, suffix = self._fit(list(prefix), list(suffix))
        pre, suf, tail = "".join(prefix), "".join(suffix), "".join(near)
        if self.backend == "llama-server":
            return {"input_prefix": pre, "input_suffix": suf, "input_extra": [], "prompt": tail}
        return {"prompt": layout_text(self.fim.family, self.fim.order, pre + tail, suf)}

    def _fit(self, prefix: list[str], suffix: list[str]) -> tuple[list[str], list[str]]:
        if not self.server_context:
            return prefix, suffix
        room = max(self.server_context - self.settings.max_tokens - FIT_RESERVE, 16)
        if len(prefix) + len(suffix) <= room:
            return prefix, suffix
        suf_room = min(len(suffix), max(room // 4, room - len(prefix)))
        pre_room = room - suf_room
        cut_pre, cut_suf = prefix[len(prefix) - pre_room:] if pre_room else [], suffix[:suf_room]
        # whole lines only: drop the partial first line of the prefix, the partial last of the suffix
        pre_text, suf_text = "".join(cut_pre), "".join(cut_suf)
        if len(cut_pre) < len(prefix) and "\n" in pre_text:
            pre_text = pre_text[pre_text.index("\n") + 1:]
        if len(cut_suf) < len(suffix) and "\n" in suf_text:
            suf_text = suf_text[: suf_text.rindex("\n") + 1]
        if not self._told_fit:
            self._told_fit = True
            log.info("remote backend: the prompt is cut to the server's context of %d tokens "
                     "(about %d characters of code)", self.server_context, room * CHARS_PER_TOKEN)
        return [pre_text], [suf_text]

    def generate(
        self,
        key: str,
        prompt: dict[str, Any],
        *,
        max_tokens: int,
        sampler: SamplerParams,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
        check: Callable[[str], bool] | None = None,
        reuse: bool = True,
    ) -> Generation:
        """Stream a completion of `prompt` (from prompt()); the same contract as LoadedModel's.

        `reuse` is the server's business: llama.cpp-based servers reuse the common prompt prefix
        of their slot (`cache_prompt`); it is sent as given.
        """
        body: dict[str, Any] = dict(prompt)
        body.update(self._sampling(sampler, max_tokens))
        body["stream"] = True
        if self.backend == "llama-server":
            path = "/infill"
            body["n_predict"] = body.pop("max_tokens")
            body["cache_prompt"] = bool(reuse)
            if "repetition_penalty" in body:
                body["repeat_penalty"] = body.pop("repetition_penalty")
            if deadline is not None and self.settings.timeout_ms > 0:
                # the server's own budget: it stops at a line end once this much generation time
                # has passed (the pipeline's rule, completion/pipeline.py, checked here too)
                body["t_max_predict_ms"] = self.settings.timeout_ms
        else:
            path = "/completions"
            body["stream_options"] = {"include_usage": True}
            stops = stop_texts(self.fim.family)[:4]
            if stops:
                body["stop"] = stops
        stats = GenStats()
        t0 = time.perf_counter()
        t_first: float | None = None
        text = ""
        reason = "length"
        try:
            for event in self.http.request("POST", path, body, cancel=cancel, deadline=deadline,
                                           read_timeout=CONNECT_TIMEOUT_S, sse=True):
                piece, finish, usage = self._completion_event(event)
                if piece:
                    if t_first is None:
                        t_first = time.perf_counter()
                    stats.generated += 1
                    text += piece
                if usage:
                    stats.evaluated = usage.get("evaluated", stats.evaluated)
                    stats.reused = usage.get("reused", stats.reused)
                    if "generated" in usage:
                        stats.generated = usage["generated"]
                if finish:
                    # read on to the end of the stream, so the connection can be reused
                    reason = "length" if finish == "length" else "stop"
                    continue
                if piece and check is not None and check(text):
                    reason = "check"
                    self.http.close()  # tells the server to stop generating
                    break
                if cancel is not None and cancel.is_set():
                    self.http.close()
                    raise Cancelled("cancelled during generation")
        except _Stopped:
            reason = "time"
            if not text and not self._warned_slow:
                self._warned_slow = True
                log.warning("the completion server at %s sent nothing within timeoutMs (%d ms)",
                            self.path, self.settings.timeout_ms)
        t1 = time.perf_counter()
        stats.prompt_ms = ((t_first or t1) - t0) * 1000
        stats.gen_ms = (t1 - (t_first or t1)) * 1000
        return Generation(text, [], reason, stats)

    def _sampling(self, p: SamplerParams, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": max_tokens, "temperature": p.temperature, "top_p": p.top_p, "seed": p.seed}
        if self.model_name and self.backend == "openai":
            body["model"] = self.model_name
        if p.top_k > 0:
            body["top_k"] = p.top_k  # not OpenAI's, but vLLM, llama.cpp, TGI and ollama take it
        if p.repeat_penalty != 1.0:
            body["repetition_penalty"] = p.repeat_penalty
            body["repeat_penalty"] = p.repeat_penalty
        return body

    @staticmethod
    def _completion_event(event: Any) -> tuple[str, str | None, dict[str, int] | None]:
        """(text piece, finish reason or None, token counts) of one streamed event, or of a whole
        answer from a server with streaming off (http.py reads it as a single event)."""
        if not isinstance(event, dict):
            return "", None, None
        usage: dict[str, int] | None = None
        if "content" in event and "choices" not in event:  # llama-server /infill
            if event.get("stop"):
                t = event.get("timings") or {}
                n_eval = t.get("prompt_n")
                total = event.get("tokens_evaluated")
                usage = {}
                if isinstance(n_eval, int):
                    usage["evaluated"] = n_eval
                    if isinstance(total, int):
                        usage["reused"] = max(total - n_eval, 0)
                if isinstance(t.get("predicted_n"), int):
                    usage["generated"] = t["predicted_n"]
                reason = event.get("stop_type") or ("length" if event.get("truncated") else "eos")
                return str(event.get("content") or ""), "length" if reason == "limit" else "stop", usage
            return str(event.get("content") or ""), None, None
        u = event.get("usage")
        if isinstance(u, dict) and isinstance(u.get("prompt_tokens"), int):
            usage = {"evaluated": u["prompt_tokens"]}
        choices = event.get("choices") or []
        if not choices:
            return "", None, usage
        c = choices[0] if isinstance(choices[0], dict) else {}
        piece = c.get("text")
        if piece is None:  # chat: a streamed `delta`, or the whole `message` of an answer not streamed
            said = c.get("delta") or c.get("message") or {}
            piece = said.get("content") if isinstance(said, dict) else None
        return str(piece or ""), c.get("finish_reason"), usage

    # --- chat (code actions) ------------------------------------------------------------------
    def chat(
        self,
        messages: list[dict],
        max_tokens: int,
        cancel: threading.Event | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> "ChatAnswer":
        """The assistant's answer to `messages` (OpenAI chat format), from {url}/chat/completions.

        Streams; `on_token(n)` is called with the number of tokens (streamed pieces) received so
        far, for progress reports. The answer is the `content` of the deltas only: reasoning that
        a server sends apart (`reasoning_content`, `reasoning`) is counted, never returned.
        `tokens` is the server's own count (`usage.completion_tokens`) where it sends one, else
        the number of streamed pieces. The first byte may take CHAT_READ_TIMEOUT_S (a model
        load); so may the silence between two chunks.

        Thread-safe with respect to generate() (each thread has its own connection): run it off
        the engine thread so completions keep flowing. Raises Cancelled when `cancel` is set (the
        connection is closed), BackendError when the server cannot be used or reports an error
        (status and detail say which; an error event mid-stream included).
        """
        self.ready(cancel)
        s = self.settings
        body: dict[str, Any] = {
            "messages": messages, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed,
        }
        if self.chat_model and self.backend == "openai":
            body["model"] = self.chat_model
        path = "/chat/completions" if self.backend == "openai" else "/v1/chat/completions"
        out: list[str] = []
        pieces = 0
        reasoning = 0
        usage_tokens: int | None = None
        prompt_tokens = 0
        try:
            for event in self.http.request("POST", path, body, cancel=cancel, read_timeout=CHAT_READ_TIMEOUT_S, sse=True):
                piece, finish, _ = self._completion_event(event)
                thought = _reasoning_piece(event)
                if piece:
                    out.append(piece)
                if piece or thought:
                    pieces += 1
                    reasoning += bool(thought)
                    if on_token is not None:
                        on_token(pieces)
                u = event.get("usage") if isinstance(event, dict) else None
                if isinstance(u, dict) and isinstance(u.get("completion_tokens"), int):
                    usage_tokens = u["completion_tokens"]
                if isinstance(u, dict) and isinstance(u.get("prompt_tokens"), int):
                    prompt_tokens = u["prompt_tokens"]
                if finish:
                    continue  # to the end of the stream: the connection stays reusable
                if cancel is not None and cancel.is_set():
                    self.http.close()
                    raise Cancelled("cancelled during the chat answer")
        except _Stopped:
            raise BackendError(f"the chat server at {self.path} stopped answering") from None
        return ChatAnswer("".join(out), usage_tokens if usage_tokens is not None else pieces, reasoning, prompt_tokens)




def _reasoning_piece(event: Any) -> str:
    """Reasoning text a server streams apart from the answer (DeepSeek's `reasoning_content`,
    vLLM's and OpenRouter's `reasoning`), or ""."""
    if not isinstance(event, dict):
        return ""
    choices = event.get("choices") or []
    c = choices[0] if choices and isinstance(choices[0], dict) else {}
    delta = c.get("delta") or c.get("message") or {}  # streamed, or the whole answer
    if not isinstance(delta, dict):
        return ""
    value = delta.get("reasoning_content") or delta.get("reasoning") or ""
    return value if isinstance(value, str) else ""


def _context_of(entry: dict) -> int | None:
    """The context size a `/v1/models` entry reports: vLLM `max_model_len`, LM Studio
    `max_context_length`, OpenRouter-style `context_length`, llama.cpp's `meta.n_ctx` (else
    `meta.n_ctx_train`, what the model was trained for)."""
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    for value in (entry.get("max_model_len"), entry.get("max_context_length"), entry.get("context_length"),
                  entry.get("context_window"), meta.get("n_ctx"), meta.get("n_ctx_train")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
