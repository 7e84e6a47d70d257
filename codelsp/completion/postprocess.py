"""Post-processing: from raw model output to the text inserted at the cursor.

Rules (each measured with `codelsp eval`, see README "Completion quality"):
- single line (code right of the cursor, or an indentation-only line before code indented at least
  as deep): the first line, without what already follows the cursor;
- multi-line: the block the cursor is in (a line indented less than the cursor's ends it), and
  of it the first paragraph: a blank line after code of the suggestion ends it (as Continue's
  noDoubleNewLine does; the next request suggests the next paragraph);
- no line that repeats the code after the cursor: cut where the suggestion starts to repeat the
  next line of the suffix (whitespace-normalised), and drop a tail that repeats its first lines;
- indentation: the first line does not restate the indentation the cursor's line already has,
  and leading whitespace follows the file's style (tabs or spaces of its unit);
- closing text: the line's text after the cursor is not written again: a tail of the suggestion
  that repeats its start is dropped, and the suggestion ends where it closes a bracket (or the
  cursor's string) the line after the cursor already closes (measured against keeping the whole
  answer with a range over the rest of the line: README, Completion quality);
- generation that did not finish by itself (maxTokens, timeoutMs): its unfinished last line of a
  multi-line suggestion is dropped.
Line breaks: the model sees and writes LF (`to_lf`); the pipeline puts the document's back.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Sequence

from codelsp.completion.context import DocContext

# The rules clean() applies. For measurement only, the rule functions take `ablate`: the rules
# turned off (setting `ablate`: `codelsp eval --ablate RULE,...` starts `codelsp serve --ablate
# RULE,...`), to show what each is worth.
RULES = ("oneline", "block", "blank", "suffix", "indent", "unfinished", "closecut")


# --- line endings -------------------------------------------------------------------------

def line_ending(text: str) -> str:
    """The document's line break: "\\r\\n" or "\\r" when it uses them, else "\\n"."""
    if "\r\n" in text:
        return "\r\n"
    return "\r" if "\r" in text else "\n"


def to_lf(text: str, offset: int) -> tuple[str, int]:
    """`text` with LF line breaks only, and character `offset` moved to the same place in it.

    An offset between the CR and LF of one line break stands before that break.
    """
    if "\r" not in text:
        return text, offset
    offset = max(0, min(offset, len(text)))
    if 0 < offset < len(text) and text[offset - 1] == "\r" and text[offset] == "\n":
        offset -= 1
    head = text[:offset].replace("\r\n", "\n").replace("\r", "\n")
    tail = text[offset:].replace("\r\n", "\n").replace("\r", "\n")
    return head + tail, len(head)


# --- helpers ------------------------------------------------------------------------------

def is_multiline(ctx: DocContext, ablate: frozenset[str] = frozenset()) -> bool:
    """May the suggestion be several lines?

    No when code follows the cursor on its line (finish the line), and no on a line that holds
    only indentation when the next line is code indented at least as deep: the user is inserting
    a line into existing code. Yes at the end of a line or before a blank line or a dedent.
    """
    if ctx.line_suffix.strip():
        return False
    if "oneline" not in ablate and not ctx.line_prefix.strip():
        below = ctx.suffix_text.split("\n")
        nxt = below[1] if len(below) > 1 else ""
        if nxt.strip() and _indent_width(nxt) >= _indent_width(ctx.line_prefix):
            return False
    return True


def _indent_width(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip(" "))


def _norm(line: str) -> str:
    return " ".join(line.split())


def _following(ctx: DocContext) -> list[str]:
    """The non-blank lines after the cursor's line, as they are (no line breaks)."""
    return [ln for ln in ctx.suffix_text.split("\n")[1:] if ln.strip()]


def _repeats(line: str, nxt: str) -> bool:
    """Does suggestion line `line` (a whole line) repeat the suffix line `nxt`?

    Whitespace-normalised; a short line such as `}` or `end` must also have the same indentation
    (a nested block's closing bracket is not the outer one)."""
    if _norm(line) != _norm(nxt):
        return False
    if sum(c.isalnum() for c in line) >= 4:
        return True
    return _indent_width(line) == _indent_width(nxt)


def indent_style(text: str) -> tuple[str, int]:
    """("\\t", 1) for a tab-indented text, else (" ", unit) with the unit of its space indentation
    (the most common step up: 2, 4 or 8; 4 when unknown)."""
    tabs = spaces = 0
    steps: Counter[int] = Counter()
    prev = 0
    for line in text.split("\n"):
        if not line.strip():
            continue
        if line[0] == "\t":
            tabs += 1
            continue
        width = len(line) - len(line.lstrip(" "))
        spaces += width > 0
        if width > prev:
            steps[width - prev] += 1
        prev = width
    if tabs > spaces:
        return "\t", 1
    for step, _ in steps.most_common():
        if step in (2, 4, 8):
            return " ", step
    return " ", 4


def _restyle(line: str, style: tuple[str, int]) -> str:
    """`line` with its leading whitespace in the file's style (tab = 4 columns in model output)."""
    ws = line[: len(line) - len(line.lstrip(" \t"))]
    if not ws:
        return line
    char, unit = style
    if char == "\t":
        if " " not in ws:
            return line
        width = len(ws.expandtabs(4))
        return "\t" * (width // 4) + " " * (width % 4) + line[len(ws):]
    if "\t" not in ws:
        return line
    return " " * len(ws.expandtabs(unit)) + line[len(ws):]


_OPENS_BLOCK = re.compile(r"[:{(\[]\s*(#.*|//.*)?$")


def _reindent(lines: list[str], ctx: DocContext) -> list[str]:
    """The first line does not restate the cursor line's indentation; whitespace in file style."""
    head = ctx.line_prefix
    style = indent_style(ctx.prefix_text + "\n" + ctx.suffix_text)
    out = list(lines)
    if head and not head.strip() and out[0][:1] in (" ", "\t"):
        above = [ln for ln in ctx.prefix_text.split("\n")[:-1] if ln.strip()]
        prev = above[-1] if above else ""
        deeper_needed = bool(_OPENS_BLOCK.search(prev)) and _indent_width(head) <= _indent_width(prev)
        if not deeper_needed:
            out[0] = out[0].lstrip(" \t")
    if not head.strip():
        out[0] = _restyle(out[0], style)
    return [out[0]] + [_restyle(ln, style) for ln in out[1:]]


# --- text after the cursor on its line -----------------------------------------------------

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")", "]", "}"}
_QUOTES = "'\"`"


def _open_quote(head: str) -> str | None:
    """The quote of the string the cursor is inside, after the line's text `head`, or None."""
    inside: str | None = None
    i = 0
    while i < len(head):
        ch = head[i]
        if inside:
            if ch == "\\":
                i += 1
            elif ch == inside:
                inside = None
        elif ch in _QUOTES:
            inside = ch
        elif head.startswith(("# ", "//"), i) or (ch == "#" and i == len(head) - 1):
            return None  # a comment: quotes in it open nothing
        i += 1
    return inside


def _outer_closers(text: str, quote: str | None) -> list[tuple[int, str]]:
    """(index, char) of the characters of `text` that close what was opened before it: brackets
    with no opener in `text`, and the closing quote of the string `quote` the text starts in."""
    out: list[tuple[int, str]] = []
    stack: list[str] = []
    inside = quote  # the string the scan is in; `quote` until its closing quote
    outer = quote is not None
    i = 0
    while i < len(text):
        ch = text[i]
        if inside:
            if ch == "\\":
                i += 1
            elif ch == inside:
                if outer:
                    out.append((i, ch))
                    outer = False
                inside = None
        elif ch in _QUOTES:
            inside = ch
        elif ch in _OPEN:
            stack.append(_OPEN[ch])
        elif ch in _CLOSE:
            if stack and stack[-1] == ch:
                stack.pop()
            elif not stack:
                out.append((i, ch))
        i += 1
    return out


def _cut_at_close(text: str, head: str, rest: str, ablate: frozenset[str] = frozenset()) -> str:
    """`text` up to where it closes what `rest` (the line after the cursor) already closes: the
    first bracket (or the cursor's string's quote) `text` closes without opening it, when `rest`
    closes the same one first (`#app').dataset.id;` before `');` is `#app`)."""
    if "closecut" in ablate:
        return text
    quote = _open_quote(head)
    want = _outer_closers(rest, quote)
    have = _outer_closers(text, quote)
    if want and have and have[0][1] == want[0][1]:
        return text[: have[0][0]]
    return text


# --- the rules ----------------------------------------------------------------------------

def _paragraph_end(first: str, lines: Sequence[str]) -> int | None:
    """The index (1 or more) in `lines` of the first blank line after code, `first` standing for
    lines[0] with the cursor's line before it; None when there is none (rule "blank")."""
    code = bool(first.strip())
    for i in range(1, len(lines)):
        if not lines[i].strip() and code:
            return i
        code = code or bool(lines[i].strip())
    return None


def early_stop(ctx: DocContext, multiline: bool, ablate: frozenset[str] = frozenset()) -> Callable[[str], bool]:
    """A check for the engine: True once the text so far is complete enough to stop generating."""
    base = _indent_width(ctx.indent)  # the block the cursor is in
    following = _following(ctx)

    def check(text: str) -> bool:
        if not multiline:
            return "\n" in text.lstrip("\n") if not ctx.line_prefix.strip() else "\n" in text
        lines = (ctx.line_prefix + text).split("\n")
        # a finished line (not the first) that is indented less than the cursor's line: the block
        # the user is writing has ended; a finished line that repeats the next line of the suffix:
        # the rest would be cut anyway
        if "blank" not in ablate and _paragraph_end(lines[0], lines[:-1]) is not None:
            return True  # a finished blank line after code: the first paragraph is complete
        for line in lines[1:-1]:
            if line.strip() and _indent_width(line) < base and "block" not in ablate:
                return True
            if following and line.strip() and _repeats(line, following[0]) and "suffix" not in ablate:
                return True
        return False

    return check


def clean(raw: str, ctx: DocContext, multiline: bool, finished: bool = True,
          ablate: frozenset[str] = frozenset()) -> str:
    """The text to insert: cut to the line or block, without what already follows the cursor.

    `finished`: generation ended by itself (end token or a stop rule), not by maxTokens or
    timeoutMs; when False the last line of a multi-line suggestion is unfinished and dropped.
    `ablate`: rules (RULES) turned off, for measurement.
    """
    text = raw.replace("\r\n", "\n")
    if not multiline:
        if not ctx.line_prefix.strip():
            text = text.lstrip("\n")
        text = text.split("\n", 1)[0]
        if "indent" not in ablate and not ctx.line_suffix.strip():
            text = _reindent([text], ctx)[0]
        text = text.rstrip()
        # do not repeat what already follows the cursor on this line (e.g. closing brackets)
        rest = ctx.line_suffix.rstrip()
        for k in range(min(len(rest), len(text)), 0, -1):
            if text.endswith(rest[:k]) and rest[:k].strip():
                text = text[: len(text) - k]
                break
        # nor close again what the line already closes
        return _cut_at_close(text, ctx.line_prefix, rest, ablate).rstrip()

    lines = text.split("\n")
    if not finished and len(lines) > 1 and "unfinished" not in ablate:
        lines = lines[:-1]
    if "indent" not in ablate:
        lines = _reindent(lines, ctx)

    base = _indent_width(ctx.indent)  # the block the cursor is in
    kept = [lines[0]]
    for line in lines[1:]:
        if line.strip() and _indent_width(line) < base and "block" not in ablate:
            break
        kept.append(line)
    end = _paragraph_end(ctx.line_prefix + kept[0], kept) if "blank" not in ablate else None
    if end is not None:  # the first paragraph: up to a blank line after code
        kept = kept[:end]

    following = _following(ctx)
    if following and "suffix" not in ablate:
        # cut where the suggestion starts to repeat the next line after the cursor
        for i, line in enumerate(kept):
            whole = ctx.line_prefix + line if i == 0 else line
            if whole.strip() and _repeats(whole, following[0]):
                kept = kept[:i] if i else [""]
                break
        # drop trailing lines that repeat the first lines after the cursor
        want = [_norm(ln) for ln in following]
        while kept:
            tail = [_norm(ln) for ln in kept if ln.strip()]
            n = next((n for n in range(min(len(tail), len(want)), 0, -1) if tail[-n:] == want[:n]), 0)
            if not n:
                break
            count = 0
            while kept and count < n:
                if kept[-1].strip():
                    count += 1
                kept.pop()
    return "\n".join(kept).rstrip()
