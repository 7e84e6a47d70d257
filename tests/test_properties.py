"""Property: whatever edits a client sends, the server's text is the client's text.

Hypothesis drives the real `codelsp serve` (one server per position encoding, a fresh document
per example) with random documents and incremental edits: CRLF / CR / LF line endings, characters
outside the BMP (two UTF-16 units, four UTF-8 bytes), combining and zero-width characters, NUL,
and characters that str.splitlines treats as line breaks but LSP does not. The client side here
is an independent implementation of LSP positions (encode the line, count the units); the server
answers `codelsp/documentText` with its copy.

A second property covers sloppy clients: positions past the end of a line or of the document, and
offsets inside a character, which the server resolves as documented (the end of the line, the end
of the document, the start of the character).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawlsp import RawLsp

ENCODINGS = ["utf-16", "utf-8", "utf-32"]
PIECES = [
    "a", "b", "x", "_", " ", "(", ")", "\t", "\n", "\r", "\r\n", "é", "e\u0301", "😀", "𝒳", "中",
    "\u200b", "\x00", "\x0c", "\x0b", "\x85", "\u2028", "\u2029", "def f(a, b):\n    return a\n",
]
texts = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)
LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")

SETTINGS = settings(
    max_examples=40, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module", params=ENCODINGS)
def server(request, model_factory):
    model = model_factory("codellama", answer="1)")
    with RawLsp("--model", str(model.path), "--threads", "1") as s:
        init = s.initialize(encodings=[request.param])
        assert init["capabilities"]["positionEncoding"] == request.param
        s.encoding = request.param
        s.examples = 0
        yield s


def units(s: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(s.encode("utf-8"))
    if encoding == "utf-16":
        return len(s.encode("utf-16-le")) // 2
    return len(s)


def lines_of(text: str) -> list[str]:
    lines = LINE.findall(text)
    if not lines or lines[-1].endswith(("\n", "\r")):
        lines.append("")
    return lines


def body(line: str) -> str:
    return line[:-2] if line.endswith("\r\n") else line.rstrip("\r\n") if line.endswith(("\r", "\n")) else line


def position_of(text: str, offset: int, encoding: str) -> dict:
    """The LSP position of a character offset (not between \\r and \\n)."""
    start = 0
    for n, line in enumerate(lines_of(text)):
        if offset <= start + len(body(line)):
            return {"line": n, "character": units(line[: offset - start], encoding)}
        start += len(line)
    raise AssertionError("offset past the end")


def offset_of(text: str, pos: dict, encoding: str) -> int:
    """A sloppy position, resolved as documented: the nearest real position at or before it."""
    lines = lines_of(text)
    if pos["line"] >= len(lines):
        return len(text)
    start = sum(len(x) for x in lines[: pos["line"]])
    done = 0
    for i, ch in enumerate(body(lines[pos["line"]])):
        done += units(ch, encoding)
        if done > pos["character"]:
            return start + i
    return start + len(body(lines[pos["line"]]))


def valid_offsets(text: str) -> list[int]:
    """Offsets a client can name: not between \\r and \\n."""
    return [i for i in range(len(text) + 1) if not (0 < i < len(text) and text[i - 1] == "\r" and text[i] == "\n")]


def new_uri(s: RawLsp) -> str:
    s.examples += 1
    return f"file:///work/prop/{s.encoding}/{s.examples}.py"


@SETTINGS
@given(data=st.data(), initial=texts)
def test_the_servers_text_is_the_clients_text(server, data, initial):
    s, enc = server, server.encoding
    uri = new_uri(s)
    s.open(uri, initial)
    text, version = initial, 1
    for _ in range(data.draw(st.integers(1, 4), label="notifications")):
        changes = []
        for _ in range(data.draw(st.integers(1, 3), label="changes")):
            if data.draw(st.integers(0, 9), label="kind") == 0:
                text = data.draw(texts, label="full text")
                changes.append({"text": text})
                continue
            offsets = valid_offsets(text)
            a = data.draw(st.sampled_from(offsets), label="start")
            b = data.draw(st.sampled_from([o for o in offsets if o >= a]), label="end")
            new = data.draw(texts, label="inserted")
            changes.append({"range": {"start": position_of(text, a, enc), "end": position_of(text, b, enc)}, "text": new})
            text = text[:a] + new + text[b:]
        version += 1
        s.change(uri, version, changes)
    assert s.document_text(uri) == {"text": text, "version": version}
    if data.draw(st.integers(0, 3), label="complete") == 0:  # a completion at a random position
        cursor = position_of(text, data.draw(st.sampled_from(valid_offsets(text)), label="cursor"), enc)
        answer = s.complete(uri, cursor["line"], cursor["character"])
        assert "result" in answer, answer
        for item in answer["result"]["items"]:
            assert item["textEdit"]["range"]["end"] == cursor
    s.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


@SETTINGS
@given(data=st.data(), initial=texts)
def test_sloppy_positions_resolve_as_documented(server, data, initial):
    s, enc = server, server.encoding
    uri = new_uri(s)
    s.open(uri, initial)
    text = initial
    for version in range(2, 2 + data.draw(st.integers(1, 4), label="changes")):
        n_lines = len(lines_of(text))

        def sloppy(label: str) -> dict:
            line = data.draw(st.integers(0, n_lines + 1), label=f"{label} line")
            width = units(body(lines_of(text)[line]), enc) if line < n_lines else 0
            return {"line": line, "character": data.draw(st.integers(0, width + 3), label=f"{label} character")}

        start, end = sloppy("start"), sloppy("end")
        a, b = sorted((offset_of(text, start, enc), offset_of(text, end, enc)))
        new = data.draw(texts, label="inserted")
        s.change(uri, version, [{"range": {"start": start, "end": end}, "text": new}])
        text = text[:a] + new + text[b:]
    assert s.document_text(uri)["text"] == text
    s.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
