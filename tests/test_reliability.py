"""Bad input never takes the server down: each case is followed by a valid request answered exactly.

Everything goes through the real `codelsp serve` over stdio, byte for byte (tests/rawlsp.py: a
pytest-lsp client cannot even build a negative position), with generated models whose answer is
known. Most cases share one server on purpose: the abuse accumulates, and every test ends by
checking that the server still gives the exact answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from rawlsp import RawLsp

ADD = "def add(a, b):\n    \n"
CALL = "x = f(a, )\n"  # the model answers "1)"; before the ")" the ")" is trimmed: "1"

INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, PARSE_ERROR = -32600, -32601, -32602, -32700
REQUEST_CANCELLED = -32800
# One llama.cpp thread: on a busy 2-core machine its worker threads' synchronisation costs
# ~300 ms per completion, against ~15 ms with one thread (the tiny models need no more).
FAST = ("--threads", "1")


@pytest.fixture(scope="module")
def model(model_factory):
    return model_factory("codellama", answer="1)")


@pytest.fixture(scope="module")
def server(model):
    with RawLsp("--model", str(model.path), *FAST) as s:
        s.initialize()
        yield s


class Uris:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, name: str = "doc.py") -> str:
        self.n += 1
        return f"file:///work/r{self.n}/{name}"


new_uri = Uris()


def still_serving(s: RawLsp) -> None:
    """The next valid request is answered, exactly."""
    uri = new_uri()
    s.open(uri, CALL)
    assert s.completion_text(uri, 0, 9) == "1"
    assert s.completion_text(uri, 0, 10) == "1)"


def edit(line: int, char: int, end_line: int, end_char: int, text: str) -> dict:
    return {"range": {"start": {"line": line, "character": char}, "end": {"line": end_line, "character": end_char}}, "text": text}


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


# --- the storm and the soak -----------------------------------------------------------------

def _body(functions: int) -> str:
    return "".join(f"def f{i}(a, b):\n    return a * {i} + b\n\n" for i in range(functions))


def test_a_storm_of_cancelled_requests(model_factory):
    """1,000 keystrokes, each with a completion request, nine in ten cancelled as editors do.

    Every request gets exactly one answer; no answer to a superseded request arrives after the
    answer to a newer one, and every answer belongs to the text of its own request; the server
    answers normally afterwards, and its memory returns to where it was (tolerance 8 MiB, while
    keeping one 24 KB copy of the document per request would add 24 MB).
    """
    model = model_factory("codellama", answer="return a + b")
    uri = "file:///work/storm.py"
    body = _body(600)
    row = body.count("\n")
    with RawLsp("--model", str(model.path), *FAST) as s:
        s.initialize()
        s.open(uri, body + "    \n")
        assert s.completion_text(uri, row, 4) == "return a + b"
        version, typed = 1, 0

        def storm(n: int) -> list[tuple[int, int]]:
            nonlocal version, typed
            sent = []
            for i in range(n):
                version += 1
                s.change(uri, version, [edit(row, 4 + typed, row, 4 + typed, "x")])
                typed += 1
                rid = s.send("textDocument/completion", {"textDocument": {"uri": uri}, "position": {"line": row, "character": 4 + typed}})
                sent.append((rid, typed))
                if i % 10 != 9 and i != n - 1:
                    s.notify("$/cancelRequest", {"id": rid})
            s.wait(lambda: all(rid in s.responses for rid, _ in sent), 300, "all answers")
            return sent

        storm(100)  # warm-up: allocator arenas, caches
        before = s.rss_kib()
        sent = storm(1000)
        after = s.rss_kib()

        assert not s.duplicates
        position = {rid: n for rid, n in sent}
        newest_answered = 0
        for rid in s.order:
            if rid not in position:
                continue
            msg = s.responses[rid]
            if "error" in msg:
                assert msg["error"]["code"] == REQUEST_CANCELLED, msg
                continue
            items = msg["result"]["items"]
            if items:
                assert rid > newest_answered, f"answer to {rid} arrived after the answer to {newest_answered}"
                newest_answered = rid
                te = items[0]["textEdit"]
                assert te["range"]["end"] == {"line": row, "character": 4 + position[rid]}
                assert te["newText"] == "x" * position[rid] + "return a + b"
        last_id, last_typed = sent[-1]
        assert s.responses[last_id]["result"]["items"][0]["textEdit"]["newText"] == "x" * last_typed + "return a + b"

        stats = s.result("codelsp/stats", {"uri": uri})
        totals = stats["totals"]
        # every request is counted once: answered by the model, by type-through, by riding the
        # generation in flight, or cancelled (also while it waited for that generation)
        answered = totals["model"] + totals["typeThrough"] + totals["inFlight"] + totals["cancelled"]
        assert totals["requests"] == answered == 1101, totals
        # after the storm: answers as before it, and the next keystroke reuses the cached prompt
        s.change(uri, version + 1, [edit(row, 4 + typed, row, 4 + typed, "\n    ")])
        assert s.completion_text(uri, row + 1, 4) == "return a + b"
        s.change(uri, version + 2, [edit(row + 1, 4, row + 1, 4, "y")])
        assert s.completion_text(uri, row + 1, 5) == "yreturn a + b"
        last = s.result("codelsp/stats", {"uri": uri})["last"]
        assert last["source"] == "model" and last["reused"] > 1000 and last["evaluated"] < 20, last
        assert after - before < 8 * 1024, (before, after)
        assert s.shutdown_and_exit() == 0


def test_soak_memory_stays_flat(model_factory):
    """300 keystrokes across 3 documents of 40 KB, each answered before the next, as a user types.

    RSS after the last keystroke is within 4 MiB of RSS after the first 60 (a copy of one
    document kept per keystroke would add 9 MB).
    """
    model = model_factory("codellama", answer="return a + b")
    uris = [f"file:///work/soak{i}.py" for i in range(3)]
    body = _body(1000)
    typing = "return a + b  # soak\n    "
    with RawLsp("--model", str(model.path), "--max-tokens", "8", *FAST) as s:
        s.initialize()
        for uri in uris:
            s.open(uri, body + "    \n")
        typed = {uri: "" for uri in uris}
        baseline = None
        for k in range(300):
            uri = uris[(k // 10) % 3]
            ch = typing[len(typed[uri]) % len(typing)]
            lines = (body + "    " + typed[uri]).split("\n")
            row, col = len(lines) - 1, len(lines[-1])
            s.change(uri, k + 2, [edit(row, col, row, col, ch)])
            typed[uri] += ch
            row, col = (row + 1, 0) if ch == "\n" else (row, col + 1)
            answer = s.complete(uri, row, col)
            assert "result" in answer, answer
            if k == 59:
                baseline = s.rss_kib()
        final = s.rss_kib()
        for uri in uris:
            assert s.document_text(uri)["text"] == body + "    " + typed[uri] + "\n"
        totals = s.result("codelsp/stats", {})["totals"]
        assert totals["requests"] == 300 and totals["typeThrough"] > 0 and totals["model"] > 0
        assert final - baseline < 4 * 1024, (baseline, final)


# --- life cycle -----------------------------------------------------------------------------

def test_exit_without_shutdown_exits_with_code_1(model):
    with RawLsp("--model", str(model.path)) as s:
        s.initialize()
        s.notify("exit")  # stdin stays open: the server must exit on its own
        assert s.wait_exit() == 1
        assert "exit without shutdown" in s.log()


def test_shutdown_then_exit_exits_with_code_0_and_refuses_requests_between(model):
    with RawLsp("--model", str(model.path)) as s:
        s.initialize()
        uri = new_uri()
        s.open(uri, CALL)
        assert s.completion_text(uri, 0, 9) == "1"
        assert s.request("shutdown") == {"jsonrpc": "2.0", "id": s.order[-1], "result": None}
        answer = s.complete(uri, 0, 9)
        assert answer["error"]["code"] == INVALID_REQUEST
        assert s.request("shutdown")["error"]["code"] == INVALID_REQUEST
        s.notify("textDocument/didClose", {"textDocument": {"uri": uri}})  # ignored
        s.notify("exit")
        assert s.wait_exit() == 0


def test_the_server_exits_when_its_editor_dies(model):
    editor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with RawLsp("--model", str(model.path)) as s:
            s.initialize(process_id=editor.pid)
            still_serving(s)
            os.kill(editor.pid, signal.SIGKILL)
            editor.wait()
            assert s.wait_exit(timeout=30) == 0
            assert f"parent process {editor.pid} is gone" in s.log()
    finally:
        if editor.poll() is None:
            editor.kill()


# --- model trouble --------------------------------------------------------------------------

def _bad_models(tmp_path, good):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.path.read_bytes()[: good.path.stat().st_size // 2])
    corrupt = tmp_path / "corrupt.gguf"
    data = bytearray(good.path.read_bytes())
    data[8:24] = b"\xff" * 16  # tensor and metadata counts
    corrupt.write_bytes(bytes(data))
    notgguf = tmp_path / "notes.gguf"
    notgguf.write_text("just some text\n")
    return {
        "missing": (tmp_path / "missing.gguf", "model file not found"),
        "truncated": (truncated, "truncated"),
        "corrupt": (corrupt, str(corrupt)),
        "not-gguf": (notgguf, "not a GGUF file"),
        "directory": (tmp_path, "is a directory"),
    }


@pytest.mark.parametrize("kind", ["missing", "truncated", "corrupt", "not-gguf", "directory"])
def test_a_bad_model_at_start_is_reported_and_a_good_one_in_settings_then_serves(model, tmp_path, kind):
    bad, reason = _bad_models(tmp_path, model)[kind]
    with RawLsp() as s:
        s.initialize(init_options={"model": str(bad)})
        uri = new_uri()
        s.open(uri, CALL)
        assert s.completion_text(uri, 0, 9) is None
        shown = s.wait(lambda: [n for n in s.notifications if n["method"] == "window/showMessage"], 30, "showMessage")
        assert reason in shown[0]["params"]["message"] and str(bad) in shown[0]["params"]["message"]
        assert "Traceback" not in s.log()
        s.notify("workspace/didChangeConfiguration", {"settings": {"codelsp": {"model": str(model.path)}}})
        assert s.completion_text(uri, 0, 9) == "1"


def test_settings_changes_to_bad_models_keep_the_old_model_serving(model, model_factory, tmp_path):
    other = model_factory("codellama", answer="2)")
    with RawLsp() as s:
        s.initialize(init_options={"model": str(model.path)})
        uri = new_uri()
        s.open(uri, CALL)
        assert s.completion_text(uri, 0, 9) == "1"
        for bad, reason in _bad_models(tmp_path, model).values():
            def serving() -> list[str]:
                return [m for m in s.log_messages() if f"still serving with {model.path}" in m]

            reports = len(serving())
            s.notify("workspace/didChangeConfiguration", {"settings": {"codelsp": {"model": str(bad)}}})
            assert s.completion_text(uri, 0, 9) == "1"
            s.wait(lambda: len(serving()) > reports, 30, "the load error")
            assert reason in serving()[-1] and str(bad) in serving()[-1]
        s.notify("workspace/didChangeConfiguration", {"settings": {"codelsp": {"model": str(other.path)}}})
        assert s.completion_text(uri, 0, 9) == "2"
        assert "Traceback" not in s.log()


# --- security -------------------------------------------------------------------------------

def _inet_sockets(pid: int) -> list[tuple[str, str]]:
    """(table, local address) of each TCP/UDP socket the process holds (not its Unix sockets)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for row in list(f)[1:]:
                cols = row.split()
                if cols[9] in inodes:
                    found.append((table, cols[1]))
    return found


def test_the_local_engine_uses_no_network(model, tmp_path):
    with RawLsp("--model", str(model.path)) as s:
        s.initialize()
        still_serving(s)
        s.notify("workspace/didChangeConfiguration", {"settings": {"codelsp": {"maxTokens": 4}}})
        still_serving(s)
        assert _inet_sockets(s.proc.pid) == []


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tcp_exchange(port: int, messages: list[dict], answers: int) -> list[dict]:
    import json
    import socket
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn:
        for m in messages:
            body = json.dumps(m).encode()
            conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        reader = conn.makefile("rb")
        out: list[dict] = []
        while len(out) < answers:
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            msg = json.loads(reader.read(length))
            if "id" in msg and "method" not in msg:
                out.append(msg)
        return out


def test_tcp_mode_listens_on_localhost_only_by_default(model):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "codelsp", "serve", "--tcp", str(port), "--model", str(model.path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        uri = new_uri()
        answers = _tcp_exchange(port, [
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"processId": None, "rootUri": None, "capabilities": {}}},
            {"jsonrpc": "2.0", "method": "initialized", "params": {}},
            {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": CALL}}},
            {"jsonrpc": "2.0", "id": 2, "method": "textDocument/completion", "params": {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 9}}},
        ], answers=2)
        assert answers[1]["result"]["items"][0]["textEdit"]["newText"] == "1"
        listening = [addr for table, addr in _inet_sockets(proc.pid) if table.startswith("tcp")]
        assert f"0100007F:{port:04X}" in listening  # 127.0.0.1
        assert all(addr.startswith("0100007F:") for addr in listening), listening
    finally:
        proc.kill()
        proc.wait(10)
    assert b"anyone who can reach" not in proc.stderr.read()


def test_tcp_mode_on_another_address_warns(model):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "codelsp", "serve", "--tcp", str(port), "--host", "0.0.0.0", "--model", str(model.path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import threading

        timer = threading.Timer(60, proc.kill)  # a missing warning must not hang the test
        timer.start()
        for _ in range(20):
            line = proc.stderr.readline().decode()
            if not line or "anyone who can reach" in line:
                break
        timer.cancel()
        assert f"listening on 0.0.0.0:{port}: anyone who can reach this address can use the server" in line
    finally:
        proc.kill()
        proc.wait(10)
