"""The first stage of a next-edit prediction, without the model: repeat the user's last edit.

The most common next edit is the last one again on a line nearby: a renamed name's other uses
(`elif` -> `if` down a chain, `Optional[bool]` -> `bool | None`), the same `;` or `, err=True`
added to the next line that ends the same way. `repeat_edit` turns the last hunk into token
rules and applies them to the nearest line below it where they change something:

- the hunk's old and new lines are split into tokens (a word, a run of white space, one other
  character) and diffed with difflib;
- each change is a rule: a replacement or deletion of tokens that hold a word applies wherever
  those tokens stand (at token boundaries); an insertion, or a replacement of symbols only,
  applies between the two tokens it stood between (its context);
- a change that spans a line break (lines added or removed, a statement restructured) is no rule,
  nor is a hunk of more than `MAX_RULES` distinct changes: the stage then proposes nothing.

The proposal is the first line below the hunk, within `REACH` lines, that every rule changes
(the whole edit again, not a part of it) and that is like the line the user edited (difflib ratio
>= `LIKE`), together with the lines right after it that every rule changes too (a block of `;`
added line by line). It is shown without asking the model (run.py): on the eval's cases
(`codelsp eval --next-edit`, README) it is right far more often than wrong, and it costs no model
time. Lines above the hunk are not searched: the eval's cases, made top to bottom, could not tell
whether that helps.
"""

from __future__ import annotations

import difflib
import re

from codelsp.nextedit.history import Hunk, common_ends, split_lines

TOKEN = re.compile(r"\w+|[^\S\n]+|\n|[^\w\s]")
REACH = 7  # lines below the last hunk searched for the next place to repeat it
MAX_RULES = 3  # distinct changes in the last hunk: more is a rewrite, not a pattern
LIKE = 0.5  # how alike (difflib's ratio) the line must be to the line the user edited
MAX_BLOCK = 4  # consecutive lines changed by the rules that make one proposal


def tokens(text: str) -> list[str]:
    """`text` as tokens: words, runs of spaces or tabs, line breaks, single other characters."""
    return TOKEN.findall(text)


def rules_of(old: str, new: str) -> list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] | None:
    """The last hunk's changes as rules (pattern, replacement pattern, context) — see the module's
    docstring: `(removed tokens, inserted tokens, (left, right))`, the context empty for a
    replacement or deletion; None when the hunk is no repeatable pattern."""
    a, b = tokens(old), tokens(new)
    out: list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        gone, put = tuple(a[i1:i2]), tuple(b[j1:j2])
        if "\n" in gone or "\n" in put:
            return None
        if gone and any(re.match(r"\w", t) for t in gone):
            rule = (gone, put, ())
        elif gone and "".join(gone).strip() and 0 < i1 and i2 < len(a):
            rule = (gone, put, (a[i1 - 1], a[i2]))  # symbols replaced: only between the same neighbours
        elif not gone and "".join(put).strip() and 0 < i1 < len(a):
            rule = ((), put, (a[i1 - 1], a[i1]))
        else:
            return None  # white space only, or an insertion at the hunk's very edge
        if rule not in out:
            out.append(rule)
    return out if 0 < len(out) <= MAX_RULES else None


def apply_rules(line: str, rules: list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]) -> tuple[str, set[int]]:
    """(`line` with every rule applied wherever it matches, left to right, never inside what a
    rule has just put in; the indexes of the rules that matched)."""
    toks = tokens(line)
    out: list[str] = []
    used: set[int] = set()
    i = 0
    while i < len(toks):
        for n, (gone, put, ctx) in enumerate(rules):
            if gone and tuple(toks[i:i + len(gone)]) == gone and \
                    (not ctx or (i > 0 and toks[i - 1] == ctx[0] and tuple(toks[i + len(gone):i + len(gone) + 1]) == ctx[1:])):
                out += put
                i += len(gone)
                used.add(n)
                break
        else:
            for n, (gone, put, ctx) in enumerate(rules):
                if not gone and i > 0 and (toks[i - 1], toks[i]) == ctx:  # an insertion between its context
                    out += put
                    used.add(n)
                    break
            out.append(toks[i])
            i += 1
    return "".join(out), used


def repeat_edit(text: str, last: Hunk | None, uri: str) -> tuple[int, int, str, str] | None:
    """(start, end, new text, old text) — characters [start, end) of `text` replaced — that
    repeats the document's last hunk `last` on the nearest lines it applies to; None when it
    applies to no line like the edited one within `REACH` lines, or the hunk is no pattern
    (`rules_of`)."""
    if last is None or last.uri != uri:
        return None
    rules = rules_of(last.old, last.new)
    if rules is None:
        return None
    lines = split_lines(text)
    end = min(last.start + last.new_lines, len(lines))
    below = range(end, min(len(lines), end + REACH))
    edited = [x.strip() for x in split_lines(last.old) if x.strip()]

    def whole(line: str) -> bool:  # every rule of the hunk applies to the line: the same edit, not a part of it
        return len(apply_rules(line, rules)[1]) == len(rules)
    for at in below:
        if not whole(lines[at]):
            continue
        if max((difflib.SequenceMatcher(None, x, lines[at].strip()).ratio() for x in edited), default=0.0) < LIKE:
            continue  # unlike the line the user edited: a different edit there
        stop = at + 1
        while stop < len(lines) and stop - at < MAX_BLOCK and whole(lines[stop]):
            stop += 1
        old = "".join(lines[at:stop])
        new = "".join(apply_rules(x, rules)[0] for x in lines[at:stop])
        head, tail = common_ends(old, new)
        base = sum(len(x) for x in lines[:at])
        return base + head, base + len(old) - tail, new[head:len(new) - tail], old[head:len(old) - tail]
    return None
