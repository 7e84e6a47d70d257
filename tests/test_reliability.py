"""Bad input never takes the server down: each case is followed by a valid request answered exactly.

Everything goes through the real `codelsp serve` over stdio, byte for byte (tests/rawlsp.py: a
pytest-lsp client cannot even build a negative position), with generated models whose answer is
known. Most cases share one server on purpose: the abuse accumulates, and every test ends by
checking that the server still gives the exact answer. The cases that need a server of their own
(a storm, a soak, exits, bad model files, the network) are in tests/test_server_process.py.
"""

from __future__ import annotations

import pytest

from rawlsp import (CALL, FAST, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RawLsp, edit,
                    new_uri, still_serving)

ADD = "def add(a, b):\n    \n"


@pytest.fixture(scope="module")
def model(model_factory):
    return model_factory("codellama", answer="1)")


@pytest.fixture(scope="module")
def server(model):
    with RawLsp("--model", str(model.path), *FAST) as s:
        s.initialize()
        yield s


# --- wrong parameters, malformed frames, unknown methods -------------------------------------

@pytest.mark.parametrize(
    "position, reason",
    [
        ({"line": -1, "character": 4}, "Position.line"),
        ({"line": 0, "character": -3}, "Position.character"),
        ({"line": "zero", "character": 4}, "zero"),
        ({"line": 0, "character": 2**40}, "Position.character"),
        ({"line": 0}, "character"),
        (None, "position"),
    ],
    ids=["negative-line", "negative-character", "string", "too-big", "missing-character", "no-position"],
)
def test_invalid_params_get_an_invalid_params_error(server, position, reason):
    uri = new_uri()
    server.open(uri, CALL)
    params = {"textDocument": {"uri": uri}}
    if position is not None:
        params["position"] = position
    answer = server.request("textDocument/completion", params, timeout=30)
    assert answer["error"]["code"] == INVALID_PARAMS
    assert reason in answer["error"]["message"]
    assert "textDocument/completion" in server.wait_log(f"(id {answer['id']}) has invalid params")
    still_serving(server)


def test_a_notification_with_invalid_params_is_logged_and_dropped(server):
    uri = new_uri()
    server.open(uri, CALL)
    server.change(uri, 2, [edit(0, -1, 0, 2, "zz")])
    server.wait_log("notification textDocument/didChange has invalid params")
    assert server.document_text(uri)["text"] == CALL
    still_serving(server)


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"{not json", PARSE_ERROR),
        (b"\xff\xfe\x00garbage", PARSE_ERROR),
        (b"[1, 2, 3]", INVALID_REQUEST),
        (b'"hello"', INVALID_REQUEST),
        (b'{"id": "raw-5", "method": "textDocument/completion"}', INVALID_REQUEST),  # no "jsonrpc"
        (b'{"jsonrpc": "1.0", "id": "raw-6", "method": "shutdown"}', INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": {"x": 1}, "method": "shutdown"}', INVALID_REQUEST),
    ],
    ids=["not-json", "not-utf8", "array", "string", "no-jsonrpc", "jsonrpc-1.0", "object-id"],
)
def test_malformed_frames_get_an_error_answer(server, frame, code):
    before = len(server.null_id_errors) + len(server.responses)
    server.send_body(frame)
    server.wait(lambda: len(server.null_id_errors) + len(server.responses) > before, 30, "an error answer")
    errors = server.null_id_errors[-1:] + [server.responses[i] for i in server.order[-1:]]
    assert any(e.get("error", {}).get("code") == code for e in errors), errors
    still_serving(server)


def test_frames_without_content_length_and_truncated_headers_are_skipped(server):
    server.send_bytes(b"Content-Type: application/json\r\n\r\n")
    server.send_bytes(b"this is not a header\r\n")
    still_serving(server)


def test_unknown_methods(server):
    answer = server.request("codelsp/noSuchThing", {"x": 1})
    assert answer["error"]["code"] == METHOD_NOT_FOUND
    answer = server.request("textDocument/noSuchThing")  # and without params
    assert answer["error"]["code"] == METHOD_NOT_FOUND
    server.notify("codelsp/noSuchNotification", {})
    server.notify("$/noSuchNotification", {})  # $/ notifications may be ignored silently
    still_serving(server)


def test_a_notification_with_an_id_is_applied_and_gets_an_error_for_the_id(server):
    uri = new_uri()
    msg_id = server.send("textDocument/didOpen", {
        "textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": CALL},
    })
    answer = server.response(msg_id)
    assert answer["error"]["code"] == INVALID_REQUEST
    assert "notification" in answer["error"]["message"]
    assert server.completion_text(uri, 0, 9) == "1"  # the document was opened all the same
    still_serving(server)


# --- positions ------------------------------------------------------------------------------

def test_a_character_past_the_end_of_the_line_means_the_end_of_the_line(server):
    uri = new_uri()
    server.open(uri, CALL + "y = 2\n")
    answer = server.complete(uri, 0, 999)["result"]["items"][0]
    assert answer["textEdit"]["newText"] == "1)"  # as at the end of the line: no ")" follows
    assert answer["textEdit"]["range"]["end"] == {"line": 0, "character": 10}
    assert "character 999 is past the end of line 0" in server.wait_log("completing at 0:10")
    still_serving(server)


def test_the_last_line_without_a_line_break(server):
    uri = new_uri()
    server.open(uri, "x = f(a, )")
    assert server.completion_text(uri, 0, 9) == "1"
    assert server.complete(uri, 0, 50)["result"]["items"][0]["textEdit"]["range"]["end"]["character"] == 10
    assert server.completion_text(uri, 1, 0) is None  # past the end of the document
    server.wait_log("line 1 is past the end of the document")


def test_a_line_past_the_end_of_the_document_gives_an_empty_answer(server):
    uri = new_uri()
    server.open(uri, CALL)
    assert server.completion_text(uri, 1, 0) == "1)"  # the empty line after the final line break
    assert server.completion_text(uri, 2, 0) is None
    assert server.completion_text(uri, 10**6, 3) is None
    server.wait_log(f"line 1000000 is past the end of the document (1 lines) of {uri}")
    still_serving(server)


@pytest.mark.parametrize(
    "encoding, inside, start, before_paren",
    [("utf-16", 8, 7, 12), ("utf-8", 9, 7, 14)],
)
def test_an_offset_inside_a_character_means_its_start(model, encoding, inside, start, before_paren):
    with RawLsp("--model", str(model.path)) as s:
        assert s.initialize(encodings=[encoding])["capabilities"]["positionEncoding"] == encoding
        uri = new_uri()
        s.open(uri, 'x = f("😀", )\n')
        item = s.complete(uri, 0, inside)["result"]["items"][0]
        assert item["textEdit"]["range"]["start"] == {"line": 0, "character": start}  # never inside the pair
        s.wait_log(f"character {inside} of line 0 is inside a character")
        assert s.completion_text(uri, 0, before_paren) == "1"


@pytest.mark.parametrize(
    "text, line, character",
    [
        ("a = 1\r\nb = 2\r\nx = f(a, )\r\n", 2, 9),
        ("a = 1\rb = 2\rx = f(a, )\r", 2, 9),
        ("a = 1\r\nb = 2\rx = f(a, )\n", 2, 9),
        # form feed, vertical tab, U+0085, U+2028, U+2029 are not line breaks in LSP
        ("a\x0cb\x0bc\x85d\u2028e\u2029x = f(a, )\n", 0, 19),
        ("\tif a:\n\t\tx = f(a, )\n", 1, 11),
        ("x\u200b\u200d = f('e\u0301', )\n", 0, 14),  # zero-width and combining characters
        ("a\x00b = 1\nx = f(\x00, )\n", 1, 9),  # NUL bytes
    ],
    ids=["crlf", "cr", "mixed", "not-line-breaks", "tabs", "zero-width-combining", "nul"],
)
def test_line_endings_and_unusual_characters_keep_positions_exact(server, text, line, character):
    uri = new_uri()
    server.open(uri, text)
    assert server.document_text(uri)["text"] == text
    assert server.completion_text(uri, line, character) == "1"  # exactly before the ")"
    assert server.completion_text(uri, line, character + 1) == "1)"
    still_serving(server)


# --- document life cycle --------------------------------------------------------------------

def test_a_document_never_opened(server):
    uri = new_uri()
    assert server.completion_text(uri, 0, 0) is None
    server.wait_log(f"not open: {uri}")
    assert server.document_text(uri) is None
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    still_serving(server)


def test_did_change_before_did_open_is_ignored_with_a_log_line(server):
    uri = new_uri()
    server.change(uri, 1, [{"text": "junk"}])
    server.wait_log(f"change for a document that is not open (no didOpen before it): {uri}")
    server.open(uri, CALL, version=2)
    assert server.document_text(uri) == {"text": CALL, "version": 2}
    assert server.completion_text(uri, 0, 9) == "1"


def test_versions_out_of_order_are_applied_in_the_order_received(server):
    uri = new_uri()
    server.open(uri, "x = f()\n", version=5)
    server.change(uri, 7, [edit(0, 6, 0, 6, "a, ")])
    server.change(uri, 6, [edit(0, 9, 0, 9, "b, ")])  # older version, sent later
    server.wait_log("has version 6, not after 7")
    assert server.document_text(uri) == {"text": "x = f(a, b, )\n", "version": 6}
    assert server.completion_text(uri, 0, 12) == "1"


def test_several_changes_in_one_notification(server):
    warned = sum("not after" in m for m in server.log_messages())
    uri = new_uri()
    server.open(uri, "x = f()\n")
    server.change(uri, 2, [edit(0, 6, 0, 6, "a, "), edit(0, 0, 0, 0, "# c\n"), {"text": "y = f(b, )\n"}, edit(1, 0, 1, 0, "z = 1\n")])
    assert server.document_text(uri) == {"text": "y = f(b, )\nz = 1\n", "version": 2}
    still_serving(server)
    assert sum("not after" in m for m in server.log_messages()) == warned  # one version, several changes


@pytest.mark.parametrize(
    "change, expected",
    [
        (edit(0, 50, 0, 60, "Z"), "x = f(a, )Z\nend\n"),  # past the end of the line: its end
        (edit(9, 0, 12, 4, "Z"), "x = f(a, )\nend\nZ"),  # past the end of the document: its end
        (edit(1, 1, 0, 9, "Z"), "x = f(a, Znd\n"),  # reversed: read from its earlier end
        (edit(0, 4, 99, 0, ""), "x = "),  # from inside to past the end
    ],
    ids=["past-line-end", "past-document-end", "reversed", "to-past-end"],
)
def test_changes_with_ranges_outside_the_document_are_clamped(server, change, expected):
    uri = new_uri()
    server.open(uri, "x = f(a, )\nend\n")
    server.change(uri, 2, [change])
    assert server.document_text(uri)["text"] == expected
    server.wait_log(f"change to {uri}")
    still_serving(server)


def test_uris_with_escapes_find_their_document(server):
    uri = "file:///work/with%20space/caf%C3%A9.py"
    server.open(uri, CALL)
    assert server.completion_text(uri, 0, 9) == "1"
    assert server.completion_text("file:///work/with space/café.py", 0, 9) == "1"
    server.change("file:///work/with%20space/caf%c3%a9.py", 2, [edit(0, 7, 0, 7, "b, ")])
    assert server.document_text(uri)["text"] == "x = f(ab, , )\n"


# --- content --------------------------------------------------------------------------------

def test_an_empty_document(server):
    uri = new_uri()
    server.open(uri, "")
    assert server.completion_text(uri, 0, 0) == "1)"
    server.change(uri, 2, [edit(0, 0, 0, 0, CALL)])
    assert server.completion_text(uri, 0, 9) == "1"


def test_a_10_mb_document(server):
    line = "value = compute(alpha, beta, gamma)  # some filler text\n"
    big = line * (10_000_000 // len(line)) + CALL
    last = big.count("\n") - 1
    uri = new_uri("big.py")
    server.open(uri, big)
    assert server.completion_text(uri, last, 9) == "1"
    server.change(uri, 2, [edit(last, 6, last, 6, "b, ")])
    assert server.completion_text(uri, last, 12) == "1"
    assert server.completion_text(uri, 3, 0) == "1)"  # near the top: the suffix is cut to the budget
    text = server.document_text(uri)["text"]
    assert len(text) == len(big) + 3 and text.endswith("x = f(b, a, )\n")
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    still_serving(server)


def test_a_minified_one_line_file(server):
    mini = "var a=1;function g(b){return b+a}" * 20_000 + "f(a, )"
    uri = new_uri("app.min.js")
    server.open(uri, mini, language="javascript")
    assert server.completion_text(uri, 0, len(mini) - 1) == "1"
    middle = mini.index("var", 330_000)  # after a "}": no word before the cursor
    assert server.completion_text(uri, 0, middle) == "1)"
    assert server.completion_text(uri, 0, middle + 1) == "v1)"  # the item replaces the word "v"
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    still_serving(server)
