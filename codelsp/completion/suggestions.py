"""Recent suggestions per document: answers without model work.

Type-through: when the user types exactly the next characters of a suggestion, the rest of that
suggestion is still right, so it is answered from here. The same lookup answers a repeated
identical request (nothing typed). A few suggestions are kept per document, so backspacing over a
typed character finds the longer suggestion again.
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

    def lookup(self, uri: str, text: str, offset: int) -> str | None:
        """The rest of a suggestion the user has typed (part of) since it was made, if any."""
        entries = self._docs.get(uri)
        if not entries:
            return None
        suffix = text[offset:]
        for s in entries:
            if s.suffix != suffix or offset < len(s.prefix):
                continue
            typed = text[len(s.prefix):offset]
            if text.startswith(s.prefix) and s.text.startswith(typed) and len(typed) < len(s.text):
                rest = s.text[len(typed):]
                if rest.strip():
                    return rest
        return None
