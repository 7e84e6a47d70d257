"""Recent suggestions per document: answers without model work.

Type-through: when the user types exactly the next characters of a suggestion, the rest of that
suggestion is still right, so it is answered from here. The same lookup answers a repeated
identical request (nothing typed). A few suggestions are kept per document, so backspacing over a
typed character finds the longer suggestion again. A suggestion may carry other candidates
(setting `candidates`), added when they are computed; they are typed through the same way.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from cachetools import LRUCache

PER_DOCUMENT = 8
DOCUMENTS = 64


@dataclass(frozen=True)
class Suggestion:
    prefix: str  # document text before the cursor when it was made
    suffix: str  # document text after the cursor
    text: str  # what was suggested
    others: tuple[str, ...] = ()  # the other candidates at the same place, best first


class SuggestionCache:
    def __init__(self) -> None:
        self._docs: LRUCache[str, deque[Suggestion]] = LRUCache(maxsize=DOCUMENTS)

    def clear(self) -> None:
        self._docs.clear()

    def forget(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def store(self, uri: str, text: str, offset: int, suggestion: str) -> None:
        if not suggestion:
            return
        entries = self._docs.get(uri)
        if entries is None:
            entries = deque(maxlen=PER_DOCUMENT)
            self._docs[uri] = entries
        entries.appendleft(Suggestion(text[:offset], text[offset:], suggestion))

    def add_others(self, uri: str, text: str, offset: int, others: list[str]) -> bool:
        """Attach other candidates to the suggestion made at `offset` of `text`; False if gone."""
        entries = self._docs.get(uri)
        prefix, suffix = text[:offset], text[offset:]
        for i, s in enumerate(entries or ()):
            if s.prefix == prefix and s.suffix == suffix:
                entries[i] = Suggestion(s.prefix, s.suffix, s.text, tuple(others))
                return True
        return False

    def lookup(self, uri: str, text: str, offset: int) -> str | None:
        """The rest of a suggestion the user has typed (part of) since it was made, if any."""
        found = self.lookup_all(uri, text, offset)
        return found[0] if found else None

    def lookup_all(self, uri: str, text: str, offset: int) -> list[str]:
        """The rests of the candidates of the newest suggestion that matches what was typed since
        it was made: the first suggestion's rest first (when it still matches), then the others
        that start with the typed text."""
        entries = self._docs.get(uri)
        if not entries:
            return []
        suffix = text[offset:]
        for s in entries:
            if s.suffix != suffix or offset < len(s.prefix):
                continue
            if not text.startswith(s.prefix):
                continue
            typed = text[len(s.prefix):offset]
            rests = [c[len(typed):] for c in (s.text, *s.others) if c.startswith(typed) and len(typed) < len(c)]
            rests = [r for r in rests if r.strip()]
            if rests:
                return rests
        return []
