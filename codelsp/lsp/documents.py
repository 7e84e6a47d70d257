"""Open documents, kept exactly as the client has them.

pygls' own document model splits lines with `str.splitlines`, which also breaks at form feeds,
vertical tabs, U+0085, U+2028 and U+2029 (LSP breaks lines only at \\n, \\r\\n and \\r), drops
text inserted at a range past the end of the document, and turns a character offset past the end
of the last line into one before its last character. A client and the server then disagree about
the text, silently. The classes here fix that:

- lines are LSP lines;
- a position is resolved to a character offset as the specification says: a character past the
  end of its line means the end of the line, a line past the end of the document means the end of
  the document, and an offset inside a character (a UTF-16 surrogate pair, a UTF-8 sequence)
  means the start of that character; each of these is logged;
- incremental changes use that resolution (a reversed range is read from its earlier end);
- a change for a document that is not open is logged and ignored; versions that do not increase
  are logged and the change is applied anyway (the changes arrive in order: applying them keeps
  the client's text).
"""

from __future__ import annotations

import logging
import re
from typing import Sequence
from urllib.parse import unquote

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

log = logging.getLogger(__name__)

# Characters str.splitlines breaks at that LSP does not treat as line breaks.
_EXTRA_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_LSP_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def lsp_lines(text: str) -> list[str]:
    """Lines with their endings, broken at \\n, \\r\\n and \\r only (no trailing empty line)."""
    if _EXTRA_BREAKS.search(text) is None:
        return text.splitlines(True)  # same result, much faster on large documents
    return _LSP_LINE.findall(text)


def _line_body(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith(("\n", "\r")):
        return line[:-1]
    return line


def _units(ch: str, encoding: str) -> int:
    cp = ord(ch)
    if encoding == types.PositionEncodingKind.Utf8:
        return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
    if encoding == types.PositionEncodingKind.Utf32:
        return 1
    return 2 if cp > 0xFFFF else 1


def resolve(lines: Sequence[str], position: types.Position, encoding: str) -> tuple[int, types.Position, str | None]:
    """(character offset, the position it really is, what was wrong with it or None)."""
    problem = None
    if position.line >= len(lines):
        # The empty line after a final line break (or of an empty document) is a real position.
        at_end = position.line == len(lines) and (not lines or lines[-1].endswith(("\n", "\r")))
        if not at_end:
            problem = f"line {position.line} is past the end of the document ({len(lines)} lines)"
        elif position.character > 0:
            problem = f"character {position.character} is past the end of the empty last line {position.line}"
        total = sum(len(x) for x in lines)
        if lines and not lines[-1].endswith(("\n", "\r")):
            last = lines[-1]
            units = sum(_units(c, encoding) for c in last)
            return total, types.Position(line=len(lines) - 1, character=units), problem
        return total, types.Position(line=len(lines), character=0), problem
    start = sum(len(x) for x in lines[: position.line])
    body = _line_body(lines[position.line])
    units = 0
    for i, ch in enumerate(body):
        if units == position.character:
            return start + i, position, None
        n = _units(ch, encoding)
        if units + n > position.character:
            problem = f"character {position.character} of line {position.line} is inside a character"
            return start + i, types.Position(line=position.line, character=units), problem
        units += n
    if position.character > units:
        problem = f"character {position.character} is past the end of line {position.line} ({units} units)"
    return start + len(body), types.Position(line=position.line, character=units), problem


def position_at(text: str, offset: int, encoding: str) -> types.Position:
    """The LSP position of character `offset` of `text` (the inverse of `resolve`)."""
    lines = lsp_lines(text[:offset])
    if not lines:
        return types.Position(line=0, character=0)
    if lines[-1].endswith(("\n", "\r")):
        if lines[-1].endswith("\r") and text.startswith("\n", offset):  # inside a \r\n: its line's end
            return types.Position(line=len(lines) - 1, character=sum(_units(c, encoding) for c in lines[-1][:-1]))
        return types.Position(line=len(lines), character=0)
    return types.Position(line=len(lines) - 1, character=sum(_units(c, encoding) for c in lines[-1]))


class Document(TextDocument):
    """A pygls TextDocument with LSP line semantics and safe position handling."""

    @property
    def encoding(self) -> str:
        return self.position_codec.encoding or types.PositionEncodingKind.Utf16

    @property
    def lines(self) -> Sequence[str]:
        return tuple(lsp_lines(self.source))

    def resolve(self, position: types.Position) -> tuple[int, types.Position, str | None]:
        return resolve(lsp_lines(self.source), position, self.encoding)

    def offset_at_position(self, client_position: types.Position) -> int:
        return self.resolve(client_position)[0]

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        text = self.source
        lines = lsp_lines(text)
        start, _, p1 = resolve(lines, change.range.start, self.encoding)
        end, _, p2 = resolve(lines, change.range.end, self.encoding)
        for p in (p1, p2):
            if p:
                log.warning("change to %s (version %s): %s; using the nearest position", self.uri, self.version, p)
        if end < start:
            log.warning("change to %s: the range ends before it starts; using it reversed", self.uri)
            start, end = end, start
        self._source = text[:start] + change.text + text[end:]


class DocumentWorkspace(Workspace):
    """A pygls Workspace whose documents are `Document`s; bad change notifications are logged."""

    _last_identifier: types.VersionedTextDocumentIdentifier | None = None

    def _create_text_document(self, doc_uri, source=None, version=None, language_id=None) -> Document:
        return Document(
            doc_uri, source=source, version=version, language_id=language_id,
            sync_kind=self._sync_kind, position_codec=self._position_codec,
        )

    def update_text_document(self, text_doc: types.VersionedTextDocumentIdentifier, change) -> None:
        doc = self._text_documents.get(unquote(text_doc.uri))
        if doc is None:
            log.warning("change for a document that is not open (no didOpen before it): %s; ignored", text_doc.uri)
            return
        same_notification = text_doc is self._last_identifier  # one didChange, several changes
        self._last_identifier = text_doc
        if (not same_notification and text_doc.version is not None and doc.version is not None
                and text_doc.version <= doc.version):
            log.warning(
                "change to %s has version %d, not after %d; applied in the order received",
                text_doc.uri, text_doc.version, doc.version,
            )
        doc.apply_change(change)
        doc.version = text_doc.version

    def open_document(self, uri: str) -> Document | None:
        """The open document for `uri` (any spelling of it), or None."""
        return self._text_documents.get(unquote(uri))  # type: ignore[return-value]


def position_at(text: str, offset: int, encoding: str) -> types.Position:
    """The LSP position of character `offset` of `text` (lines broken as `lsp_lines` does,
    characters counted in `encoding`'s units)."""
    line = 0
    start = 0
    for piece in lsp_lines(text):
        body = len(_line_body(piece))
        if offset <= start + body or start + len(piece) > offset:
            break
        start += len(piece)
        line += 1
    return types.Position(line=line, character=sum(_units(c, encoding) for c in text[start:offset]))
