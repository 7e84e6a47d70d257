"""Extra context from the other open documents, kept stable so it does not break the cache.

The beginning of recently used other files (imports, definitions) and the lines where the user
last worked in them (a ring of recently edited and viewed chunks, as llama.vim's and Continue's
recently-edited ranges) help a model complete code that uses them. It goes at the very start of
the prompt, before the current file, and each document keeps a *snapshot* of it: editing another
file does not change the prompt of this one (which would re-evaluate everything after it on the
next keystroke). A snapshot is refreshed when the set of other open files changes, or when it is
older than REFRESH_S and the files (or where the user worked in them) changed.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from dataclasses import dataclass

from codelsp.completion.context import Tokenize, split_lines

REFRESH_S = 120.0
MAX_FILES = 3
HEAD_SHARE = 3  # a file with a focus line: its first lines get 1/HEAD_SHARE of its room, the focus the rest
ABOVE_SHARE = 2 / 3  # of the focus window, this share of lines lies above the focus line


@dataclass(frozen=True)
class Snapshot:
    files: tuple[tuple[str, str], ...]  # (uri, text) of the other documents, most recent first
    taken: float
    focus: tuple[tuple[str, int], ...] = ()  # (uri, 0-based line the user last worked at) of those files


class Neighbors:
    """Which documents were used most recently, and each document's snapshot of the others."""

    def __init__(self) -> None:
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._snapshots: dict[str, Snapshot] = {}
        self._focus: dict[str, int] = {}

    def touch(self, uri: str, line: int | None = None) -> None:
        """`uri` was just used; `line`: the 0-based line the user works at there (a request's cursor)."""
        self._recent[uri] = None
        self._recent.move_to_end(uri, last=False)
        if line is not None:
            self._focus[uri] = line

    def forget(self, uri: str) -> None:
        self._recent.pop(uri, None)
        self._snapshots.pop(uri, None)
        self._focus.pop(uri, None)

    def snapshot(self, uri: str, texts: dict[str, str], now: float | None = None) -> Snapshot:
        """The other files `uri`'s prompt starts with (`texts`: uri -> current text of open docs)."""
        now = time.monotonic() if now is None else now
        recent = [u for u in self._recent if u != uri and u in texts]
        others = tuple(recent + [u for u in texts if u != uri and u not in self._recent])[:MAX_FILES]
        focus = tuple((u, self._focus[u]) for u in others if u in self._focus)
        old = self._snapshots.get(uri)
        if old is not None and {u for u, _ in old.files} == set(others):  # same files, any order
            stale = now - old.taken > REFRESH_S
            if not stale or (all(texts[u] == t for u, t in old.files) and set(old.focus) == set(focus)):
                return old
        snap = Snapshot(tuple((u, texts[u]) for u in others), now, focus)
        self._snapshots[uri] = snap
        return snap


def extra_text(snapshot: Snapshot, budget: int, tokenize: Tokenize, comment: str = "#",
               taken: list[str] | None = None) -> str:
    """The other files' text that fits `budget` tokens, on line boundaries, each under a
    `{comment} file: name` line: a file's beginning, and where the snapshot has a focus line for it
    beyond that beginning, 1/HEAD_SHARE of its room for the beginning and the rest for the lines
    around the focus (ABOVE_SHARE of them above it), after a `{comment} ...` line. `taken`, when
    given, receives one "name lines A-B[, C-D]" entry (1-based, inclusive) per file that went in."""
    if budget <= 0 or not snapshot.files:
        return ""
    per_file = budget // len(snapshot.files)
    focus = dict(snapshot.focus)
    parts: list[str] = []
    for uri, text in snapshot.files:
        name = uri.rsplit("/", 1)[-1]
        header = f"{comment} file: {name}\n"
        room = per_file - len(tokenize(header, True))
        if room <= 8:
            continue
        body = _head_lines(text, room, tokenize)
        spans = [(1, body.count("\n"))]
        at = focus.get(uri)
        if at is not None and at >= body.count("\n"):  # the focus lies beyond the beginning that fits
            gap = f"{comment} ...\n"
            head = _head_lines(text, room // HEAD_SHARE, tokenize)
            start, near = _lines_around(text, at, room - room // HEAD_SHARE - len(tokenize(gap, False)), tokenize,
                                        start=head.count("\n"))
            if near.strip():
                body = head + gap + near
                spans = [(1, head.count("\n")), (start + 1, start + near.count("\n"))]
        if body.strip():
            parts.append(header + body.rstrip("\r\n") + "\n\n")
            if taken is not None:
                taken.append(f"{name} lines " + ", ".join(f"{a}-{b}" for a, b in spans if b >= a))
    return "".join(parts)


def _lines_around(text: str, at: int, budget: int, tokenize: Tokenize, start: int = 0) -> tuple[int, str]:
    """(first line, text) of the whole lines around line `at` (0-based) whose tokens (counted line
    by line) fit `budget`: ABOVE_SHARE of the budget for the lines above it (from `start` on),
    then the line and those below with the rest, then more above if the file ends first."""
    lines = split_lines(text)
    if not lines or budget <= 0:
        return start, ""
    at = min(max(at, start), len(lines) - 1)

    @functools.cache
    def cost(i: int) -> int:  # only the lines looked at are tokenized, not the whole file
        return len(tokenize(lines[i], False))

    lo, hi, used = at, at, 0
    while lo > start and used + cost(lo - 1) <= budget * ABOVE_SHARE:
        lo -= 1
        used += cost(lo)
    while hi < len(lines) and used + cost(hi) <= budget:
        used += cost(hi)
        hi += 1
    while lo > start and used + cost(lo - 1) <= budget:
        lo -= 1
        used += cost(lo)
    return lo, "".join(lines[lo:hi])


def _head_lines(text: str, budget: int, tokenize: Tokenize) -> str:
    """The first whole lines of `text` whose tokens (counted line by line) fit `budget`."""
    out: list[str] = []
    used = 0
    for line in split_lines(text):
        n = len(tokenize(line, False))
        if used + n > budget:
            break
        out.append(line)
        used += n
    return "".join(out)
