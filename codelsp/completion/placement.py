"""Where an answer lands in the document's current text (issue 29, kind 3).

An answer is made for the text a request saw; the user may have changed the document while the
model worked (inline completion carries no document version, and the menu's ranges are read in
the current text). `carry()` moves the answer's edit through that change, or gives it up:

- a change wholly above the edit's line moves it by the change's length; one wholly below the
  line leaves it where it is;
- text typed at the cursor that the answer starts with is typed through: the rest of the answer
  is inserted after it;
- text typed at the cursor that starts like the answer and goes on with punctuation the answer
  writes later, in order (an auto-closed pair: `(` typed, `()` inserted), is written over: the
  edit runs from the end of the agreeing part over the rest (`print(|)` + `(f"Hi")` ->
  `f"Hi")` over the `)`), so nothing is written twice;
- anything else (a delete at the cursor, other text typed, a change on the edit's line or
  several changes apart): None, the answer is dropped; never an edit in the old coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass(frozen=True)
class Edit:
    """Replace [start, end) of a text (character offsets) with `text`."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Change:
    """One edit between two texts: old[start:old_end] became `inserted`."""

    start: int
    old_end: int
    inserted: str

    @property
    def delta(self) -> int:
        return len(self.inserted) - (self.old_end - self.start)


def changes(old: str, new: str) -> list[Change]:
    """The single edits that turn `old` into `new`: the common prefix taken first, and the common
    suffix first (an inserted line that repeats its neighbour can sit either side of it); both
    when they differ."""
    n = min(len(old), len(new))
    p = _common_prefix(old, new, n)
    s = _common_suffix(old, new, n - p)
    first = Change(p, len(old) - s, new[p:len(new) - s])
    s2 = _common_suffix(old, new, n)
    p2 = _common_prefix(old, new, n - s2)
    second = Change(p2, len(old) - s2, new[p2:len(new) - s2])
    return [first] if second == first else [first, second]


def _common_prefix(a: str, b: str, limit: int) -> int:
    lo, hi = 0, limit
    while lo < hi:  # binary search on slices: fast for megabyte documents
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _line_start(text: str, offset: int) -> int:
    return max(text.rfind("\n", 0, offset), text.rfind("\r", 0, offset)) + 1


def _line_end(text: str, offset: int) -> int:
    ends = [i for i in (text.find("\n", offset), text.find("\r", offset)) if i >= 0]
    return min(ends) if ends else len(text)


def carry(old: str, edit: Edit, new: str) -> Edit | None:
    """`edit` (made for `old`) moved into `new`, or None when the change does not let it stand."""
    if old == new:
        return edit
    for change in changes(old, new):
        moved = _through(old, new, edit, change)
        if moved is not None:
            return moved if moved.text.strip() else None
    return None


def _through(old: str, new: str, edit: Edit, change: Change) -> Edit | None:
    a, b = edit.start, edit.end
    if a == b and change.start == change.old_end == a:  # text inserted at the cursor
        typed = _typed(edit, change.inserted)
        if typed is not None:
            return typed
    line = _line_start(old, a)
    if change.old_end <= line:  # on the lines above (or lines added above)
        moved = Edit(a + change.delta, b + change.delta, edit.text)
        if new[_line_start(new, moved.start):moved.start] == old[line:a]:
            return moved
        return None
    if change.start > _line_end(old, b):  # on the lines below
        return edit
    return None  # on its line: a delete, a replacement or other text typed


def _typed(edit: Edit, typed: str) -> Edit | None:
    """The edit after `typed` was inserted at it (an empty edit), or None when they disagree."""
    if edit.text.startswith(typed):  # typed through
        return Edit(edit.start + len(typed), edit.start + len(typed), edit.text[len(typed):])
    agree = 0
    while agree < len(typed) and agree < len(edit.text) and typed[agree] == edit.text[agree]:
        agree += 1
    rest = typed[agree:]
    if any(c in WORD or c.isspace() for c in rest):
        return None  # other text typed: the answer was for something else
    i = agree
    for c in rest:  # the auto-inserted closers come later in the answer, in order
        i = edit.text.find(c, i) + 1
        if i == 0:
            return None
    return Edit(edit.start + agree, edit.start + len(typed), edit.text[agree:])
