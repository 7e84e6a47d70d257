"""The user's recent edits, as hunks: plain values, no LSP, no model.

`EditHistory.update(uri, version, text)` is told every document's whole text after each change
(lsp/server.py, on didChange) and keeps:

- per document, the text it last saw (to diff the next change against);
- per document, one *open* hunk: the changes typed next to each other (each change touching the
  open hunk's lines, or the line just before or after them) are coalesced into it, so a word typed
  letter by letter is one hunk from the text before its first letter to the text now;
- across documents, the closed hunks, newest last, at most `max_hunks`, each cut to
  `max_chars` characters of old and of new text;
- at most `max_documents` documents (the least recently changed one is forgotten first).

A hunk is line-based: lines [start, start + old lines) of the text before it became lines
[start, start + new lines) of the text after it (0-based LSP lines, `\\n` line ends only are
assumed by the callers' texts: whatever the document uses, a line is split at `\\n`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Hunk:
    """Lines [start, start + len(old lines)) of `uri`'s text became `new` (texts of whole lines,
    each line with its `\\n`, the last one without where the document ends there). `version`: the
    document's version after it."""

    uri: str
    start: int
    old: str
    new: str
    version: int | None

    @property
    def old_lines(self) -> int:
        return len(split_lines(self.old))

    @property
    def new_lines(self) -> int:
        return len(split_lines(self.new))


def split_lines(text: str) -> list[str]:
    """Lines of `text` split at `\\n`, each with its `\\n` (a `\\r` before it stays in the line);
    none for an empty text."""
    out = text.split("\n")
    lines = [x + "\n" for x in out[:-1]]
    if out[-1]:
        lines.append(out[-1])
    return lines


def line_diff(old: str, new: str) -> tuple[int, list[str], list[str]] | None:
    """(first differing line, old lines, new lines) of the one hunk between `old` and `new` (the
    lines in common at both ends left out); None when the texts are equal."""
    if old == new:
        return None
    a, b = split_lines(old), split_lines(new)
    head, tail = common_ends(a, b)
    return head, a[head:len(a) - tail], b[head:len(b) - tail]


def common_ends(a: Sequence[Any], b: Sequence[Any]) -> tuple[int, int]:
    """(head, tail): how many items `a` and `b` share at their start, and then at their end (the
    two never overlap: head + tail <= the shorter length). Strings compare by character, lists of
    lines by line."""
    n = min(len(a), len(b))
    head = 0
    while head < n and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < n - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    return head, tail


@dataclass
class _Open:
    base: str  # the document's text before the open hunk's first change
    start: int  # its lines in the current text: [start, end)
    end: int
    version: int | None


class EditHistory:
    """Recent edits of the open documents (see the module's docstring). Not thread-safe: one
    owner (the event loop)."""

    def __init__(self, max_hunks: int = 16, max_chars: int = 2000, max_documents: int = 8) -> None:
        self.max_hunks = max_hunks
        self.max_chars = max_chars
        self.max_documents = max_documents
        self._texts: OrderedDict[str, str] = OrderedDict()  # uri -> text last seen
        self._open: dict[str, _Open] = {}
        self._closed: list[Hunk] = []

    def open(self, uri: str, text: str) -> None:
        """A document was opened (or its text replaced without edits to remember)."""
        self._texts[uri] = text
        self._texts.move_to_end(uri)
        self._open.pop(uri, None)
        self._bound_documents()

    def close(self, uri: str) -> None:
        """A document was closed: its open hunk is kept as a closed one, its text forgotten."""
        self._close_open(uri)
        self._texts.pop(uri, None)

    def update(self, uri: str, version: int | None, text: str) -> Hunk | None:
        """The document's text after a change; returns its open hunk now (None: no change, or a
        document never seen, whose text is only remembered)."""
        before = self._texts.get(uri)
        self._texts[uri] = text
        self._texts.move_to_end(uri)
        self._bound_documents()
        if before is None:
            return None
        diff = line_diff(before, text)
        if diff is None:
            return self.current(uri)
        head, old, new = diff
        opened = self._open.get(uri)
        if opened is not None and opened.start - 1 <= head and head + len(old) <= opened.end + 1:
            # touches the open hunk's lines or their neighbours: the same hunk, grown
            opened.end += len(new) - len(old)
            opened.start = min(opened.start, head)
            opened.end = max(opened.end, head + len(new))
            opened.version = version
        else:
            self._close_open(uri, before)
            self._open[uri] = _Open(before, head, head + len(new), version)
        found = self.current(uri)
        if found is None:  # typed and removed again: nothing changed since the base
            self._open.pop(uri, None)
        return found

    def current(self, uri: str) -> Hunk | None:
        """The open hunk of `uri` as of its last text (None: none, or it changed nothing)."""
        return self._hunk(uri, self._texts.get(uri))

    def _hunk(self, uri: str, text: str | None) -> Hunk | None:
        """The open hunk of `uri` from its base to `text`."""
        opened = self._open.get(uri)
        if opened is None or text is None:
            return None
        diff = line_diff(opened.base, text)
        if diff is None:
            return None
        head, old, new = diff
        return Hunk(uri, head, self._cut("".join(old)), self._cut("".join(new)), opened.version)

    def before_last(self, uri: str) -> str | None:
        """The text of `uri` before its open hunk (Sweep's `original/` block); None: no open hunk."""
        opened = self._open.get(uri)
        return None if opened is None else opened.base

    def hunks(self, limit: int | None = None) -> list[Hunk]:
        """The recent hunks of every document, oldest first, the open ones last (the document
        changed most recently at the very end); at most `limit` (default `max_hunks`)."""
        opened = [h for u in self._texts if (h := self.current(u)) is not None]
        out = self._closed + opened
        n = self.max_hunks if limit is None else limit
        return out[-n:] if n > 0 else []

    def _close_open(self, uri: str, text: str | None = None) -> None:
        """Close the open hunk of `uri` as of `text` (default: its last text)."""
        found = self._hunk(uri, self._texts.get(uri) if text is None else text)
        self._open.pop(uri, None)
        if found is not None:
            self._closed.append(found)
            del self._closed[:-self.max_hunks]

    def _bound_documents(self) -> None:
        while len(self._texts) > self.max_documents:
            uri = next(iter(self._texts))
            self.close(uri)

    def _cut(self, text: str) -> str:
        return text if len(text) <= self.max_chars else text[: self.max_chars]
