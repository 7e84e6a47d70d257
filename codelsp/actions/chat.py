"""Chat prompts for the instruct model: the model's own template, rendered safely.

A chat template is a Jinja program that ships inside the model file. Rendering it with an ordinary
Jinja environment lets a malicious file run code on the user's machine (CVE-2024-34359 in
llama-cpp-python), so templates render only in Jinja's immutable sandbox, with no access to
anything but the values passed in.

The rendered prompt is returned as *segments*: template text (where special tokens such as
`<|im_start|>` must be recognised) and message contents (plain text: a document that happens to
contain `<|im_end|>` must not be able to end the turn early).
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger(__name__)

# Code Llama Instruct (Llama 2) files often carry no template; this is the format it was tuned on.
LLAMA2_SYSTEM = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]"

_MARK = "\x00codelsp-content-{}\x00"


class TemplateError(Exception):
    """The model's chat template could not be rendered (broken or refused by the sandbox)."""


@dataclass(frozen=True)
class Segment:
    text: str
    special: bool  # True: template text, parse special-token text in it


@dataclass(frozen=True)
class ChatPrompt:
    segments: tuple[Segment, ...]
    source: str  # "model template" or "llama-2 fallback"

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)


def _raise(message: str) -> None:
    raise TemplateError(f"chat template raised: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


RENDER_SECONDS = 2.0  # a chat template renders in microseconds; a slow one is hostile or broken
MAX_OUTPUT = 4 << 20  # characters of template output, message text excluded


class _LimitedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus no giant strings from `'a' * 10**9`-style expressions."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_OUTPUT:
                    raise jinja2.exceptions.SecurityError("the template builds a value that is too large")
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise jinja2.exceptions.SecurityError("the template computes a power that is too large")
        return super().call_binop(context, operator, left, right)


def _render_bounded(compiled: jinja2.Template, **values: Any) -> str:
    """Render with a deadline (checked on every line the template code runs) and a size cap."""
    deadline = time.monotonic() + RENDER_SECONDS

    def tracer(frame, event, arg):
        if time.monotonic() > deadline:
            raise TemplateError(f"chat template took longer than {RENDER_SECONDS:g} s to render")
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        out: list[str] = []
        size = 0
        for chunk in compiled.generate(**values):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateError("chat template output is too large")
            out.append(chunk)
        return "".join(out)
    finally:
        sys.settrace(previous)


def _environment() -> ImmutableSandboxedEnvironment:
    env = _LimitedSandbox(trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    return env


def render_template(
    template: str, messages: list[dict[str, str]], *, bos: str = "", eos: str = ""
) -> ChatPrompt:
    """Render `template` in the sandbox; message contents come back as non-special segments."""
    marked = [{**m, "content": _MARK.format(i)} for i, m in enumerate(messages)]
    try:
        compiled = _environment().from_string(template)
        text = _render_bounded(
            compiled, messages=marked, add_generation_prompt=True, bos_token=bos, eos_token=eos,
        )
    except TemplateError:
        raise
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"chat template refused by the sandbox (unsafe): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any template bug is the model file's problem
        raise TemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from exc

    segments: list[Segment] = []
    rest = text
    for i, m in enumerate(messages):
        mark = _MARK.format(i)
        before, found, after = rest.partition(mark)
        if not found:
            # The template transformed or dropped the content (e.g. a filter on it); a system
            # message some templates ignore is fine, anything else is not what we asked for.
            if m.get("role") == "system":
                continue
            raise TemplateError("chat template does not include the message text verbatim")
        if before:
            segments.append(Segment(before, True))
        segments.append(Segment(m["content"], False))
        rest = after
    if rest:
        segments.append(Segment(rest, True))
    return ChatPrompt(tuple(segments), "model template")


def llama2_prompt(messages: list[dict[str, str]]) -> ChatPrompt:
    """The Llama-2 / Code Llama Instruct format: `[INST] <<SYS>>…<</SYS>>\\n\\n… [/INST]`."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    user = "\n\n".join(m["content"] for m in messages if m["role"] == "user")
    head, _, tail = LLAMA2_SYSTEM.partition("{system}")
    middle, _, end = tail.partition("{user}")
    segs = [Segment(head, True), Segment(system, False), Segment(middle, True), Segment(user, False), Segment(end, True)]
    if not system:
        segs = [Segment("[INST] ", True), Segment(user, False), Segment(end, True)]
    return ChatPrompt(tuple(s for s in segs if s.text), "llama-2 fallback")


def build_prompt(
    template: str | None, messages: list[dict[str, Any]], *, bos: str = "", eos: str = ""
) -> ChatPrompt:
    """The prompt for `messages`: the model's template, else the Llama-2 format.

    A template that fails or is refused by the sandbox is reported in the log and replaced by the
    fallback, so a broken model file degrades an action instead of breaking it.
    """
    if template:
        try:
            return render_template(template, messages, bos=bos, eos=eos)
        except TemplateError as exc:
            error = exc
        # Some templates (Gemma, Mistral Instruct) refuse a system message: merge it into the
        # user's turn and try once more, unless the sandbox said the template is unsafe.
        merged = without_system(messages)
        if merged is not None and "unsafe" not in str(error) and "took longer" not in str(error):
            try:
                return render_template(template, merged, bos=bos, eos=eos)
            except TemplateError:
                pass
        log.error("%s; using the Llama-2 [INST] format instead", error)
    return llama2_prompt(messages)


def without_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """`messages` with the system prompt moved to the start of the first user turn (for chat
    templates that refuse a system role); None when there is no system message to move."""
    system = [m["content"] for m in messages if m.get("role") == "system"]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not system or not rest or rest[0].get("role") != "user":
        return None
    rest[0]["content"] = "\n\n".join(system) + "\n\n" + rest[0]["content"]
    return rest
