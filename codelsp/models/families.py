"""FIM families: which fill-in-the-middle tokens a model's vocabulary has, and what they mean.

Every family's facts live in FAMILIES (token texts, stop texts, trained orders), with the text
form of each layout for servers that take a prompt string (TEXT_LAYOUTS). Facts from the model
families' published prompt formats; see the table in the README. The token-level layout that the
completion pipeline builds is in codelsp/completion/fim.py.
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
        # PSM families: "psm-tail" (PSM with the text just before the cursor after the middle
        # token, as llama.cpp's /infill sends it) keeps the suffix inside the reusable prompt
        # prefix while the user types; "psm" is the plain order.
        Family("starcoder", ("<fim_prefix>", "<fim-prefix>"), ("<fim_suffix>", "<fim-suffix>"),
               ("<fim_middle>", "<fim-middle>"), ("<|endoftext|>", "<file_sep>"), ("psm-tail", "psm")),
        Family("deepseek", ("<｜fim▁begin｜>",), ("<｜fim▁hole｜>",), ("<｜fim▁end｜>",),
               ("<｜end▁of▁sentence｜>", "<|EOT|>"), ("psm-tail", "psm")),
        Family("qwen", ("<|fim_prefix|>",), ("<|fim_suffix|>",), ("<|fim_middle|>",),
               ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>"), ("psm-tail", "psm")),
        Family("codegemma", ("<|fim_prefix|>",), ("<|fim_suffix|>",), ("<|fim_middle|>",),
               ("<|file_separator|>",), ("psm-tail", "psm")),
        Family("codestral", ("[PREFIX]",), ("[SUFFIX]",), (), (), ("spm",)),
        Family("none", (), (), (), ()),
    )
}


# family -> (repository-name token, file-separator token, text after the repository name); the
# families' published repository formats (Qwen2.5-Coder technical report, arXiv 2409.12186, as
# llama.cpp's /infill renders input_extra; StarCoder2, arXiv 2402.19173)
REPO_TOKENS = {
    "qwen": ("<|repo_name|>", "<|file_sep|>", "\n"),
    "starcoder": ("<repo_name>", "<file_sep>", ""),
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
    # the repository format's control tokens (completion/repo.py REPO_TOKENS), None: no such format
    repo_name: int | None = None
    file_sep: int | None = None

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


# --- text layouts, for remote backends that take a prompt string --------------------------
# An OpenAI-compatible /v1/completions endpoint tokenizes the prompt itself (llama.cpp-based
# servers, vLLM, TGI and ollama parse control-token text in it), so the layout is written with the
# tokens' texts. Code Llama's spacing follows Meta's reference code: PSM "<PRE> {pre} <SUF>{suf} <MID>",
# SPM "<PRE> <SUF>{suf} <MID> {pre}".
TEXT_LAYOUTS: dict[tuple[str, str], str] = {
    ("codellama", "psm"): "<PRE> {pre} <SUF>{suf} <MID>",
    ("codellama", "spm"): "<PRE> <SUF>{suf} <MID> {pre}",
    ("starcoder", "psm"): "<fim_prefix>{pre}<fim_suffix>{suf}<fim_middle>",
    ("starcoder", "spm"): "<fim_prefix><fim_suffix>{suf}<fim_middle>{pre}",
    ("deepseek", "psm"): "<｜fim▁begin｜>{pre}<｜fim▁hole｜>{suf}<｜fim▁end｜>",
    ("qwen", "psm"): "<|fim_prefix|>{pre}<|fim_suffix|>{suf}<|fim_middle|>",
    ("codegemma", "psm"): "<|fim_prefix|>{pre}<|fim_suffix|>{suf}<|fim_middle|>",
    ("codestral", "spm"): "[SUFFIX]{suf}[PREFIX]{pre}",
    ("none", "psm"): "{pre}",
}

# Substrings of a model name (as a server reports it: a repository id, an ollama tag, a file
# name) -> FIM family. First match wins; names are compared lower-cased with '_' and ' ' as '-'.
NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("codellama", "codellama"), ("code-llama", "codellama"),
    ("starcoder", "starcoder"), ("santacoder", "starcoder"),
    ("deepseek-coder", "deepseek"), ("deepseekcoder", "deepseek"),
    ("qwen2.5-coder", "qwen"), ("qwen-coder", "qwen"), ("qwen2-coder", "qwen"), ("qwen3-coder", "qwen"),
    ("codegemma", "codegemma"),
    ("codestral", "codestral"),
)


def family_from_name(name: str) -> str | None:
    """The FIM family a model name suggests, or None when it says nothing."""
    n = name.lower().replace("_", "-").replace(" ", "-")
    for hint, family in NAME_HINTS:
        if hint in n:
            return family
    return None


def text_order(family: str, requested: str) -> str:
    """The order of a text layout: as choose_order, limited to the layouts that exist."""
    order = choose_order(family, requested)
    if (family, order) in TEXT_LAYOUTS:
        return order
    return next(o for f, o in TEXT_LAYOUTS if f == family)


def layout_text(family: str, order: str, prefix: str, suffix: str) -> str:
    """The FIM prompt as text for `family` in `order` (see TEXT_LAYOUTS)."""
    template = TEXT_LAYOUTS.get((family, order)) or TEXT_LAYOUTS[(family, text_order(family, order))]
    # str.replace, not format(): code is full of braces
    pre_at = template.find("{pre}")
    suf_at = template.find("{suf}")
    parts = sorted((p, key) for p, key in ((pre_at, "{pre}"), (suf_at, "{suf}")) if p >= 0)
    out, pos = [], 0
    for p, key in parts:
        out.append(template[pos:p])
        out.append(prefix if key == "{pre}" else suffix)
        pos = p + len(key)
    out.append(template[pos:])
    return "".join(out)


def stop_texts(family: str) -> list[str]:
    """Stop strings for a text backend: the family's end texts (the server stops at EOS itself)."""
    return [t for t in FAMILIES[family].stops if not t.startswith("▁")]
