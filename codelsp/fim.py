"""Prompt layout for the model family: which FIM tokens a model has and how to arrange them.

Every family's facts live in FAMILIES. A layout is built as token ids (never as a string that is
re-tokenized), because special tokens must be exactly the model's control-token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass(frozen=True)
class Family:
    name: str
    pre: tuple[str, ...]  # token texts that mark "prefix follows" (first one found wins)
    suf: tuple[str, ...]
    mid: tuple[str, ...]  # empty: the family has no middle token (Codestral)
    stops: tuple[str, ...] = ()  # extra stop texts beyond the model's end-of-generation tokens
    orders: tuple[str, ...] = ("psm",)  # orders the family was trained on, preferred first


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # Code Llama was trained on both orders; SPM keeps the unchanged suffix inside the
        # reusable prompt prefix while the user types.
        Family("codellama", ("<PRE>", "▁<PRE>"), ("<SUF>", "▁<SUF>"), ("<MID>", "▁<MID>"),
               ("<EOT>", "▁<EOT>"), ("spm", "psm")),
        Family("starcoder", ("<fim_prefix>", "<fim-prefix>"), ("<fim_suffix>", "<fim-suffix>"),
               ("<fim_middle>", "<fim-middle>"), ("<|endoftext|>", "<file_sep>")),
        Family("deepseek", ("<｜fim▁begin｜>",), ("<｜fim▁hole｜>",), ("<｜fim▁end｜>",),
               ("<｜end▁of▁sentence｜>", "<|EOT|>")),
        Family("qwen", ("<|fim_prefix|>",), ("<|fim_suffix|>",), ("<|fim_middle|>",),
               ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>")),
        Family("codegemma", ("<|fim_prefix|>",), ("<|fim_suffix|>",), ("<|fim_middle|>",),
               ("<|file_separator|>",)),
        Family("codestral", ("[PREFIX]",), ("[SUFFIX]",), (), (), ("spm",)),
        Family("none", (), (), (), ()),
    )
}


@dataclass
class FimSpec:
    """What a loaded model offers for FIM."""

    family: str
    pre: int | None = None
    suf: int | None = None
    mid: int | None = None
    order: str = "psm"
    bos: int | None = None  # prepended when the model wants a BOS token
    stop_ids: frozenset[int] = field(default_factory=frozenset)
    detected_by: str = ""

    @property
    def has_fim(self) -> bool:
        return self.family != "none"

    def describe(self) -> str:
        if not self.has_fim:
            return "no FIM tokens: prefix-only continuation"
        ids = f"pre={self.pre} suf={self.suf}" + (f" mid={self.mid}" if self.mid is not None else "")
        return f"{self.family} ({self.order.upper()}, {ids}, detected by {self.detected_by})"


def detect_family(
    token_text: Callable[[int], str],
    lookup: Callable[[str], int | None],
    vocab_fim_pre: int,
    architecture: str = "",
) -> tuple[str, str]:
    """Name the FIM family of a model. Returns (family, how it was detected).

    `token_text(id)` gives a token's text, `lookup(text)` the id of a control token with exactly
    that text (or None), `vocab_fim_pre` the id llama.cpp recognised as FIM prefix (-1: none).
    """

    def by_text(text: str) -> str | None:
        for fam in FAMILIES.values():
            if text in fam.pre:
                if fam.name in ("qwen", "codegemma"):
                    gemma = architecture.startswith("gemma") or lookup("<|file_separator|>") is not None
                    return "codegemma" if gemma else "qwen"
                return fam.name
        return None

    if vocab_fim_pre is not None and vocab_fim_pre >= 0:
        fam = by_text(token_text(vocab_fim_pre))
        if fam:
            return fam, "llama.cpp vocab"
    for fam in FAMILIES.values():
        for text in fam.pre:
            if lookup(text) is not None:
                found = by_text(text)
                if found and all(any(lookup(t) is not None for t in group) for group in (fam.suf,) if group):
                    return found, "token text"
    return "none", "no FIM tokens found"


def resolve_ids(family: str, lookup: Callable[[str], int | None]) -> tuple[int | None, int | None, int | None, set[int]]:
    """Token ids of the family's pre/suf/mid tokens and extra stop tokens."""
    fam = FAMILIES[family]

    def first(texts: Sequence[str]) -> int | None:
        for t in texts:
            tid = lookup(t)
            if tid is not None:
                return tid
        return None

    stops = {tid for tid in (lookup(t) for t in fam.stops) if tid is not None}
    return first(fam.pre), first(fam.suf), first(fam.mid), stops


def choose_order(family: str, requested: str) -> str:
    orders = FAMILIES[family].orders or ("psm",)
    if requested != "auto" and requested in orders:
        return requested
    if requested != "auto" and family != "none":
        # the user knows best (e.g. a fine-tune); keep their order even if untypical
        return requested
    return orders[0]


def layout(spec: FimSpec, prefix: Sequence[int], suffix: Sequence[int]) -> list[int]:
    """Arrange prefix and suffix token ids in the family's FIM layout.

    Suffix-first layouts (SPM, Codestral) put the text that changes while the user types at the
    end of the prompt, so the cached prompt state covers everything before it.
    """
    head = [spec.bos] if spec.bos is not None else []
    if not spec.has_fim:
        return head + list(prefix)
    if spec.family == "codestral":
        # [SUFFIX] suffix [PREFIX] prefix  -- the model continues the prefix
        return head + [spec.suf] + list(suffix) + [spec.pre] + list(prefix)
    if spec.order == "spm":
        # Code Llama's suffix-first layout: <PRE> <SUF> suffix <MID> prefix
        return head + [spec.pre, spec.suf] + list(suffix) + [spec.mid] + list(prefix)
    return head + [spec.pre] + list(prefix) + [spec.suf] + list(suffix) + [spec.mid]
