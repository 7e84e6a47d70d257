"""Reliability cases that need a `codelsp serve` of their own, byte for byte (tests/rawlsp.py):
a storm of cancelled requests and a soak (memory stays flat), exits (with and without shutdown,
when the editor dies), bad model files, and the network (none for the local engine; TCP mode on
localhost only unless told). The cases on one shared server are in tests/test_reliability.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from codelsp.tools.procs import free_port
from rawlsp import CALL, FAST, INVALID_REQUEST, REQUEST_CANCELLED, RawLsp, edit, new_uri, still_serving
from support import serve_tcp


@pytest.fixture(scope="module")
def model(model_factory):
    return model_factory("codellama", answer="1)")


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
    port = free_port()
    proc = serve_tcp(port, "--model", str(model.path))
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
    port = free_port()
    proc = serve_tcp(port, "--host", "0.0.0.0", "--model", str(model.path))
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


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_tool_stopped_by_a_signal_stops_the_server_it_started(tmp_path, how):
    """`codelsp eval`/`bench` start llama-server through tools/procs.serving; stopping the tool
    with SIGTERM (or killing it) must not leave that server running."""
    port = free_port()
    pidfile = tmp_path / "child.pid"
    script = (
        "import os, sys, time\n"
        "from codelsp.tools.procs import serving\n"
        f"cmd = [sys.executable, '-m', 'http.server', '{port}', '--bind', '127.0.0.1']\n"
        f"with serving(cmd, 'http.server', 'http://127.0.0.1:{port}/'):\n"
        "    import subprocess\n"
        "    out = subprocess.run(['pgrep', '-P', str(os.getpid())], capture_output=True, text=True).stdout\n"
        f"    open({str(pidfile)!r}, 'w').write(out.split()[0])\n"
        "    time.sleep(120)\n"
    )
    tool = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        for _ in range(300):
            if pidfile.exists() and pidfile.read_text():
                break
            assert tool.poll() is None, "the tool exited early"
            time.sleep(0.1)
        child = int(pidfile.read_text())
        os.kill(tool.pid, how)
        tool.wait(30)
        for _ in range(100):
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{child}/stat") as f:
                if f.read().split()[2] == "Z":
                    break  # exited, not yet reaped
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError(f"the server {child} outlived the tool stopped by {how.name}")
    finally:
        if tool.poll() is None:
            tool.kill()
