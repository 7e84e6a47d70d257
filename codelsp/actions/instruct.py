"""Running a chat on the instruct model without holding up completions.

A code action may generate hundreds of tokens; the user keeps typing meanwhile. The engine has one
worker, so an action runs as a chain of engine jobs: each generates until a more urgent job (a
keystroke's completion, a model load) is waiting, then returns with its state left in the KV slot,
and the next job resumes from there at the cost of one token. A completion therefore waits at most
one token step behind an action.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from codelsp.actions.chat import build_prompt, without_system
from codelsp.actions.edits import strip_reasoning
from codelsp.engine.worker import PRIORITY_ACTION, Engine, Job
from codelsp.engine.generation import Cancelled, Model, SamplerParams
from codelsp.models.errors import ModelError
from codelsp.settings import Settings

log = logging.getLogger(__name__)

ACTION_KEY = "codelsp-action"


@dataclass
class ChatResult:
    text: str
    tokens: int
    stop_reason: str
    model: str
    template: str  # "model template" | "llama-2 fallback" | "server"
    pauses: int = 0
    prompt_tokens: int = 0  # tokens of the rendered chat (local models; 0 when not known)
    reasoning: bool = False  # the model reasoned first (a <think> block, reasoning_content): not in `text`


class _Either:
    """`is_set()` of two events: the action's own cancel and the engine's (shutdown)."""

    def __init__(self, a: threading.Event, b: threading.Event):
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()


@dataclass
class _State:
    prompt: list[int] | None = None
    out: list[int] = field(default_factory=list)
    model: Any = None
    template: str = ""
    pauses: int = 0
    text: str = ""


async def run_chat(
    engine: Engine,
    messages: list[dict[str, str]],
    settings: Settings,
    cancel: threading.Event,
    on_tokens: Callable[[int], None] | None = None,
) -> ChatResult:
    """Generate the assistant's answer to `messages` on the instruct model (else the base model).

    Raises Cancelled when `cancel` is set, ModelError when no model can answer.
    """
    state = _State()
    sampler = SamplerParams.from_settings(settings)
    limit = settings.action_max_tokens

    # which model serves: asked on the engine, so a load still in progress (the server's first
    # seconds) finishes first and a remote backend is not mistaken for a missing local model
    current = engine.submit(lambda job: engine.instruct or engine.model, priority=PRIORITY_ACTION, light=True)
    try:
        model: Model = await asyncio.wrap_future(current.future)
    except asyncio.CancelledError:
        engine.cancel(current)
        raise
    if model.remote:  # a remote backend answers chat() itself: it does its own scheduling
        answer = await _remote_chat(model, messages, limit, cancel, on_tokens)
        text, reasoning = strip_reasoning(str(answer))
        return ChatResult(text, getattr(answer, "tokens", 0), "stop", model.name,
                          "server", 0, getattr(answer, "prompt_tokens", 0),
                          reasoning or bool(getattr(answer, "reasoning", 0)))

    def step(job: Job) -> str:
        model = engine.instruct or engine.model
        if model is None:
            raise ModelError(
                f"{engine.model_error or 'no model is loaded'} (code actions need instructModel, or "
                "model, set to a GGUF file; see `codelsp doctor`)"
            )
        if model.remote:
            raise ModelError("the backend changed while the action ran; run it again")
        if state.prompt is None:
            if engine.instruct is None and not model.told_shared:
                model.told_shared = True
                log.info(
                    "no instructModel configured: code actions use the base model %s (an instruct "
                    "model such as codellama-7b-instruct follows instructions much better)",
                    os.path.basename(str(model.path)),
                )
            prompt = build_prompt(
                model.chat_template, messages, bos=model.special_text("bos"), eos=model.special_text("eos")
            )
            state.prompt = model.chat_tokens(prompt)
            state.model, state.template = model, prompt.source
            room = model.settings.context_size - limit
            if len(state.prompt) > room:
                raise ModelError(
                    f"the code for this action is {len(state.prompt)} tokens; with actionMaxTokens "
                    f"{limit} it does not fit in contextSize {model.settings.context_size} "
                    "(select less code or raise contextSize)"
                )
        elif state.model is not model:
            raise ModelError("the model was reloaded while the action ran; run it again")
        gen = model.generate(
            ACTION_KEY,
            state.prompt + state.out,
            max_tokens=limit - len(state.out),
            sampler=sampler,
            cancel=_Either(cancel, job.cancel),
            pause=lambda: engine.more_urgent(job),
            stop_texts=(),  # a chat ends at the model's end-of-turn token, as on a chat server
            check=_counter(on_tokens, len(state.out)) if on_tokens else None,
        )
        state.out += gen.tokens
        if gen.stop_reason != "paused" or len(state.out) >= limit:
            state.text = model.detokenize(state.out)  # here: the model belongs to this thread
        return gen.stop_reason

    while True:
        if cancel.is_set():
            raise Cancelled("cancelled")
        job = engine.submit(step, priority=PRIORITY_ACTION)
        try:
            reason = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            cancel.set()
            engine.cancel(job)
            raise
        if reason != "paused" or len(state.out) >= limit:
            break
        state.pauses += 1
    model = state.model
    text, reasoning = strip_reasoning(state.text)
    return ChatResult(text, len(state.out), reason, os.path.basename(str(model.path)), state.template, state.pauses,
                      len(state.prompt or ()), reasoning)


async def _remote_chat(model: Model, messages: list[dict[str, str]], limit: int, cancel: threading.Event,
                       on_tokens: Callable[[int], None] | None) -> Any:
    """`model.chat()` off the event loop. A server whose chat template refuses the system role
    (an HTTP error whose message names the system role or roles: Gemma's "System role not
    supported", Mistral Instruct's "Only user and assistant roles…") gets the system prompt merged into the
    first user turn, as the local engine does (chat.build_prompt); said once in the log, and
    later actions on that server skip the refused request."""
    merged = without_system(messages)
    if merged is not None and model.no_system_role:
        messages = merged
    try:
        try:
            return await asyncio.to_thread(model.chat, messages, limit, cancel, on_tokens)
        except ModelError as exc:
            status = getattr(exc, "status", None)
            # the server's own words: Gemma "System role not supported", Mistral "Only user and
            # assistant roles are supported!" / "Conversation roles must alternate …"
            detail = str(getattr(exc, "detail", "")).lower()
            if merged is None or messages is merged or status is None or status < 400 or \
                    not ("system" in detail or "role" in detail):
                raise
            model.no_system_role = True
            log.info("the chat server refused a system message (%s); sending the system prompt in the "
                     "user's turn instead, from now on", getattr(exc, "detail", "") or exc)
            return await asyncio.to_thread(model.chat, merged, limit, cancel, on_tokens)
    except asyncio.CancelledError:
        cancel.set()  # stops the HTTP stream in the worker thread
        raise


def _counter(on_tokens: Callable[[int], None], base: int) -> Callable[[str], bool]:
    """A generate() `check` that reports the token count every few tokens and never stops."""
    n = base

    def check(_text: str) -> bool:
        nonlocal n
        n += 1
        if n % 8 == 0:
            on_tokens(n)
        return False

    return check
