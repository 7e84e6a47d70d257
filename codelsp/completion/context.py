"""Document context: the prefix and suffix around the cursor, cut to a token budget.

Windows are anchored on line boundaries in steps of CHUNK_LINES, so that while the user types on
one line the window edges do not move and the evaluated prompt stays a prefix of the cached one.
The lines above the cursor and the current line up to the cursor are tokenized separately: a
keystroke re-tokenizes only the current line's head, and the tokens above it never change.

The prefix is cut in two at an *anchor* line: the lines above it (`lead_tokens`) and the text from
the anchor to the cursor (`near_tokens`: the few lines just typed plus the current line's head).
Layouts that put the near text after the FIM middle token (fim.py, order "psm-tail") keep
everything before it unchanged while the user types, presses Enter, deletes or moves down a few
lines; the anchor stays where it was (the caller passes the previous one back) until the near text
outgrows NEAR_LINES lines (or an eighth of the prefix budget, in tokens) or the cursor moves above
it. The prefix window's first line is kept the same way (`start`): a move inside the window, or a
switch back to the document at another place, keeps the cached prompt's beginning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

CHUNK_LINES = 32
NEAR_LINES = 32  # most lines between the anchor and the cursor before the anchor moves
SUFFIX_MAX_TOKENS = 256  # (llama.cpp's server takes n_batch/4 of suffix tokens; llama.vim 64 lines)
SPECIAL_RESERVE = 8  # room for BOS and FIM control tokens
# A prefix window whose start line is kept from the previous request (see build_context's
# `start`) must still fill this share of its budget; when a move down overflows it, the new start
# leaves the lines below it this share of the budget, so the next moves down keep it again.
KEEP_FILL = 0.5
REFILL = 0.75

# tokenize(text, first) -> ids; `first` says whether the text starts the prompt segment
# (SentencePiece vocabularies add a leading space only there).
Tokenize = Callable[[str, bool], list[int]]


@dataclass
class DocContext:
    lead_tokens: list[int]  # extra context + the prefix lines above the anchor line
    near_tokens: list[int]  # the anchor line up to the cursor (at least the current line's head)
    suffix_tokens: list[int]
    line_prefix: str  # current line up to the cursor
    line_suffix: str  # rest of the current line after the cursor (no line break)
    suffix_text: str  # everything after the cursor inside the window
    prefix_text: str  # everything before the cursor inside the window
    anchor: int = 0  # line index where near_tokens begin (the cursor's line or above)
    healed: str = ""  # trailing whitespace of the line head left out of near_tokens (see heal)
    start: int = 0  # first line of the prefix window (above the anchor), for the next request

    @property
    def prefix_tokens(self) -> list[int]:
        """Every prefix token, in document order: lead + near."""
        return self.lead_tokens + self.near_tokens

    @property
    def indent(self) -> str:
        stripped = self.line_prefix.lstrip(" \t")
        return self.line_prefix[: len(self.line_prefix) - len(stripped)]


def budgets(context_size: int, max_tokens: int) -> tuple[int, int]:
    """(prefix budget, suffix budget) in tokens for one prompt.

    The prefix gets three quarters of the room; the suffix a quarter, at most SUFFIX_MAX_TOKENS:
    what follows the cursor matters most near it, and in a PSM layout a move up (or a first visit)
    evaluates the whole suffix again, so its size bounds what such a keystroke costs."""
    room = max(context_size - max_tokens - SPECIAL_RESERVE, 16)
    suffix = room // 4
    return room - suffix, min(suffix, SUFFIX_MAX_TOKENS)


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def split_lines(text: str) -> list[str]:
    """Lines with their endings; LSP line breaks only (\n, \r\n, \r). Always ends with the last line."""
    lines = _LINE.findall(text)
    if not lines or lines[-1].endswith(("\n", "\r")):
        lines.append("")
    return lines


def split_at(text: str, offset: int) -> tuple[list[str], int, str, str]:
    """Lines (with their endings), the cursor's line index, and the line's text around it."""
    offset = max(0, min(offset, len(text)))
    lines = split_lines(text)
    pos = 0
    for i, line in enumerate(lines):
        body_end = pos + len(line.rstrip("\r\n"))
        if offset <= body_end or i == len(lines) - 1:
            col = min(offset - pos, len(line))
            return lines, i, line[:col], line[col:]
        pos += len(line)
    raise AssertionError("unreachable")


def _first_fitting(n: int, fits: Callable[[int], bool]) -> int:
    """The smallest i in [0, n] with fits(i), for fits monotone (False...True); n when none before.

    Gallops from n downwards and then bisects, so only texts about the size of the budget are
    tokenized: scanning from 0 tokenized the whole document once per chunk (minutes for 10 MB).
    """
    if n <= 0 or not fits(n - 1):
        return n
    good, step = n - 1, 1
    while good > 0:
        probe = max(good - step, 0)
        if not fits(probe):
            lo = probe  # not fitting: the answer is in (probe, good]
            break
        good, step = probe, step * 2
    else:
        return 0
    while good - lo > 1:
        mid = (lo + good) // 2
        if fits(mid):
            good = mid
        else:
            lo = mid
    return good


def _fit_head(lines: Sequence[str], budget: int, tokenize: Tokenize) -> tuple[int, str, list[int]]:
    """(start, text, tokens) of lines[start:] for the smallest chunk-aligned start that fits the budget."""
    end = len(lines)
    if end == 0:
        return 0, "", []
    starts = list(range(0, end, CHUNK_LINES))
    memo: dict[int, tuple[str, list[int]]] = {}

    def at(i: int) -> tuple[str, list[int]]:
        if i not in memo:
            text = "".join(lines[starts[i]:end])
            memo[i] = (text, tokenize(text, True) if text else [])
        return memo[i]

    i = _first_fitting(len(starts), lambda i: len(at(i)[1]) <= budget)
    if i == len(starts):
        # the last lines alone are too long (a minified file): keep the newest tokens
        text, toks = at(len(starts) - 1)
        return starts[-1], text, toks[len(toks) - budget:] if budget > 0 else []
    return (starts[i], *at(i))


def _keep_head(lines: Sequence[str], start: int | None, budget: int, tokenize: Tokenize) -> tuple[str, list[int]] | bool:
    """(text, tokens) of lines[start:] when the previous window start `start` still serves: it
    lies above the end, the lines fit the budget, and they fill at least KEEP_FILL of it (or begin
    the file). Otherwise True when they overflow the budget (a move down), False when the window
    must be placed again (no previous start, a move above it, or too little left above the end)."""
    if start is None or not 0 <= start < len(lines) or start % CHUNK_LINES:
        return False
    text = "".join(lines[start:])
    toks = tokenize(text, True)
    if len(toks) > budget:
        return True
    if start > 0 and len(toks) < budget * KEEP_FILL:
        return False
    return text, toks


def _fit_tail(first: str, lines: Sequence[str], budget: int, tokenize: Tokenize) -> tuple[str, list[int]]:
    """Tokens of first + lines[:end] for the largest chunk-aligned end that fits the budget."""
    ends = sorted({len(lines), *range(0, len(lines), CHUNK_LINES)}, reverse=True)
    memo: dict[int, tuple[str, list[int]]] = {}

    def at(i: int) -> tuple[str, list[int]]:
        if i not in memo:
            text = first + "".join(lines[:ends[i]])
            memo[i] = (text, tokenize(text, False) if text else [])
        return memo[i]

    i = _first_fitting(len(ends), lambda i: len(at(i)[1]) <= budget)
    if i == len(ends):
        text, toks = at(len(ends) - 1)
        return text, toks[:budget]
    return at(i)


def build_context(
    text: str,
    offset: int,
    tokenize: Tokenize,
    context_size: int,
    max_tokens: int,
    extra: str = "",
    anchor: int | None = None,
    heal: bool = False,
    start: int | None = None,
) -> DocContext:
    """Prefix/suffix token windows around character `offset` of `text`.

    `extra` (other files, see neighbors.py) goes before the prefix and takes its tokens from the
    budget first, up to half of the context.

    `anchor`: the line where the near text began in this document's previous request
    (`DocContext.anchor`); it is kept while it lies above the cursor, at most NEAR_LINES lines up,
    and the near text fits its budget. None (or not kept): the cursor's line, so the near text is
    the current line's head alone.

    `start`: the first line of this document's previous prefix window (`DocContext.start`). It is
    kept while the lines from it to the anchor fit the budget and fill at least KEEP_FILL of it,
    so that moves within the window, and a switch back to the document at another place, keep the
    cached prompt's start (a window that starts elsewhere shares nothing with it: every token is
    evaluated again). A move down past it takes whole chunks off its top (the rest of the cached
    prompt is shifted back, engine/reuse.py); a move up out of it places it again.

    `heal`: leave a trailing space of the line head (the last one of an indentation, the one after
    `=`) out of the tokens, in `healed`: BPE vocabularies join a space to the word after it
    (`"    f"` is `"   " + " f"`), so a prompt that ends in a space ends with a token the model
    rarely saw there, and it writes oddly (measured with Qwen2.5-Coder on HumanEval infilling).
    The rest of the indentation stays, so the model still knows the block it is in; it writes the
    space itself, and `unheal()` takes it off its answer.
    """
    lines, row, line_prefix, rest = split_at(text, offset)
    line_suffix = rest.rstrip("\r\n")
    extra_tokens = tokenize(extra, True)[: context_size // 2] if extra else []
    prefix_budget, suffix_budget = budgets(context_size - len(extra_tokens), max_tokens)

    # The near text (anchor line up to the cursor) gets at most an eighth of the prefix budget;
    # the lines above get the rest whatever the near text holds, so their window does not move.
    line_budget = max(prefix_budget // 8, 1)
    head_budget = prefix_budget - line_budget
    near_line_tokens: list[int] = []
    if anchor is not None and 0 <= anchor < row and row - anchor <= NEAR_LINES:
        near_line_tokens = tokenize("".join(lines[anchor:row]), False)
        # keep a quarter of the near budget for the current line's head
        if len(near_line_tokens) > line_budget * 3 // 4:
            anchor, near_line_tokens = row, []
    else:
        anchor = row
    kept = _keep_head(lines[:anchor], start, head_budget, tokenize)
    if isinstance(kept, tuple):
        head_start, (head_text, head_tokens) = start or 0, kept
    else:
        # place the window: the whole budget above a first request (or a move up out of it); a
        # move down that overflows it takes whole chunks off its top, down to REFILL of the budget
        fill = int(head_budget * REFILL) if kept else head_budget
        head_start, head_text, head_tokens = _fit_head(lines[:anchor], fill, tokenize)
    if near_line_tokens and not head_tokens and not extra_tokens:
        near_line_tokens = tokenize("".join(lines[anchor:row]), True)
    line_budget = max(line_budget - len(near_line_tokens), 1)
    head_line = line_prefix
    healed = ""
    if heal and line_prefix.endswith(" "):
        head_line, healed = line_prefix[:-1], " "
    if head_line:
        line_prefix_full, line_prefix = line_prefix, head_line
        # A very long line (minified code): tokenize only its tail, from a start that moves in
        # coarse steps so that typing keeps the tokens a prefix of the cached ones.
        # The tail is 1.5-2 characters per budget token: it fits the budget (no sliding cut) for
        # any text of two characters or more per token.
        window = line_budget * 3 // 2
        step = max(line_budget // 2, 1)
        part = line_prefix
        if len(line_prefix) > 2 * window + step:
            cut = (len(line_prefix) - window) // step * step
            part = line_prefix[cut:]
        line_tokens = tokenize(part, not head_tokens and not near_line_tokens and part is line_prefix)
        if len(line_tokens) > line_budget:
            line_tokens = line_tokens[len(line_tokens) - line_budget:]
        line_prefix = line_prefix_full
    else:
        line_tokens = []
    suffix_text, suffix_tokens = _fit_tail(rest, lines[row + 1:], suffix_budget, tokenize)
    return DocContext(
        lead_tokens=extra_tokens + head_tokens,
        near_tokens=near_line_tokens + line_tokens,
        suffix_tokens=suffix_tokens,
        line_prefix=line_prefix,
        line_suffix=line_suffix,
        suffix_text=suffix_text,
        prefix_text=head_text + "".join(lines[anchor:row]) + line_prefix,
        anchor=anchor,
        healed=healed,
        start=head_start,
    )


def unheal(text: str, healed: str) -> str:
    """The model's text for a prompt built with `heal`, less the space it wrote for the cursor's
    line head (`DocContext.healed`); text that does not start with it is kept as it is."""
    if healed and text.startswith(healed):
        return text[len(healed):]
    return text
