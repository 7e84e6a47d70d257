"""Extra context from the other open documents, kept stable so it does not break the cache.

The beginning of recently used other files (imports, definitions) helps a model complete code that
uses them. It goes at the very start of the prompt, before the current file, and each document
keeps a *snapshot* of it: editing another file does not change the prompt of this one (which would
re-evaluate everything after it on the next keystroke). A snapshot is refreshed when the set of
other open files changes, or when it is older than REFRESH_S and the files changed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from codelsp.completion.context import Tokenize, split_lines

REFRESH_S = 120.0
MAX_FILES = 3


@dataclass(frozen=True)
class Snapshot:
    files: tuple[tuple[str, str], ...]  # (uri, text) of the other documents, most recent first
    taken: float


class Neighbors:
    """Which documents were used most recently, and each document's snapshot of the others."""

    def __init__(self) -> None:
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._snapshots: dict[str, Snapshot] = {}

    def touch(self, uri: str) -> None:
        self._recent[uri] = None
        self._recent.move_to_end(uri, last=False)

    def forget(self, uri: str) -> None:
        self._recent.pop(uri, None)
        self._snapshots.pop(uri, None)

    def snapshot(self, uri: str, texts: dict[str, str], now: float | None = None) -> Snapshot:
        """The other files `uri`'s prompt starts with (`texts`: uri -> current text of open docs)."""
        now = time.monotonic() if now is None else now
        recent = [u for u in self._recent if u != uri and u in texts]
        others = tuple(recent + [u for u in texts if u != uri and u not in self._recent])[:MAX_FILES]
        old = self._snapshots.get(uri)
        if old is not None and {u for u, _ in old.files} == set(others):  # same files, any order
            stale = now - old.taken > REFRESH_S
            if not stale or all(texts[u] == t for u, t in old.files):
                return old
        snap = Snapshot(tuple((u, texts[u]) for u in others), now)
        self._snapshots[uri] = snap
        return snap


def extra_text(snapshot: Snapshot, budget: int, tokenize: Tokenize, comment: str = "#") -> str:
    """The text of the other files' beginnings that fits `budget` tokens, on line boundaries."""
    if budget <= 0 or not snapshot.files:
        return ""
    per_file = budget // len(snapshot.files)
    parts: list[str] = []
    for uri, text in snapshot.files:
        name = uri.rsplit("/", 1)[-1]
        header = f"{comment} file: {name}\n"
        room = per_file - len(tokenize(header, True))
        if room <= 8:
            continue
        body = _head_lines(text, room, tokenize)
        if body.strip():
            parts.append(header + body.rstrip("\r\n") + "\n\n")
    return "".join(parts)


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
