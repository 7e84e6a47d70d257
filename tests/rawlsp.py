"""A raw JSON-RPC client for `codelsp serve` over stdio, for what pytest-lsp cannot send.

pytest-lsp's client validates everything it sends (a negative position cannot even be built), so
malformed frames, wrong parameter types, ids on notifications, request storms and exit codes are
written here byte for byte. Synchronous (a reader thread collects the server's messages), so
hypothesis tests can drive it too.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


class ServerGone(Exception):
    pass


NO_ANSWER = object()  # RawLsp.answers: never answer this request of the server's

INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, PARSE_ERROR = -32600, -32601, -32602, -32700
REQUEST_CANCELLED = -32800
# One llama.cpp thread: on a busy 2-core machine its worker threads' synchronisation costs
# ~300 ms per completion, against ~15 ms with one thread (the tiny models need no more).
FAST = ("--threads", "1")

CALL = "x = f(a, )\n"  # the model answers "1)"; before the ")" the ")" is trimmed: "1"


class Uris:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, name: str = "doc.py") -> str:
        self.n += 1
        return f"file:///work/r{self.n}/{name}"


new_uri = Uris()


def still_serving(s: "RawLsp") -> None:
    """The next valid request is answered, exactly (a server on a model that answers CALL with "1)")."""
    uri = new_uri()
    s.open(uri, CALL)
    assert s.completion_text(uri, 0, 9) == "1"
    assert s.completion_text(uri, 0, 10) == "1)"


def edit(line: int, char: int, end_line: int, end_char: int, text: str) -> dict:
    """A didChange content change: the range replaced by `text`."""
    return {"range": {"start": {"line": line, "character": char}, "end": {"line": end_line, "character": end_char}}, "text": text}


class RawLsp:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "codelsp", "serve", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
        )
        self.responses: dict[Any, dict] = {}
        self.order: list[Any] = []  # ids in the order their responses arrived
        self.null_id_errors: list[dict] = []
        self.notifications: list[dict] = []
        self.stderr: list[str] = []
        self.duplicates: list[dict] = []
        # answers to the server's own requests, by method: a result, or NO_ANSWER (a client
        # that never answers, as ALE did for workspace/applyEdit); anything else gets null
        self.answers: dict[str, Any] = {}
        self._cv = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False
        threading.Thread(target=self._read, daemon=True).start()
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()

    # --- wire ---------------------------------------------------------------------------
    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    with self._cv:
                        self._closed = True
                        self._cv.notify_all()
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            assert length is not None, "frame without Content-Length"
            msg = json.loads(out.read(length))
            with self._cv:
                if "method" in msg:
                    self.notifications.append(msg)
                    if "id" in msg:  # a request from the server (progress, configuration, edits)
                        answer = self.answers.get(msg["method"])
                        if answer is not NO_ANSWER:
                            self._write({"jsonrpc": "2.0", "id": msg["id"], "result": answer})
                elif msg.get("id") is None:
                    self.null_id_errors.append(msg)
                else:
                    if msg["id"] in self.responses:
                        self.duplicates.append(msg)
                        continue
                    self.responses[msg["id"]] = msg
                    self.order.append(msg["id"])
                self._cv.notify_all()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.decode("utf-8", "replace"))

    def _write(self, obj: Any) -> None:
        self.send_body(json.dumps(obj).encode("utf-8"))

    def send_body(self, body: bytes) -> None:
        self.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def send_bytes(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise ServerGone(self.log()) from exc

    # --- messages -----------------------------------------------------------------------
    def send(self, method: str, params: Any = None, msg_id: Any = None) -> Any:
        """Send a request (returns its id) without waiting for the answer."""
        msg_id = next(self._ids) if msg_id is None else msg_id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            msg["params"] = params
        self._write(msg)
        return msg_id

    def notify(self, method: str, params: Any = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self._write(msg)

    def wait(self, pred: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                value = pred()
                if value:
                    return value
                if self._closed:
                    raise ServerGone(f"server closed its output while waiting for {what}\n{self.log()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s\n{self.log()}")
                self._cv.wait(left)

    def response(self, msg_id: Any, timeout: float = 60) -> dict:
        return self.wait(lambda: self.responses.get(msg_id), timeout, f"response to {msg_id!r}")

    def request(self, method: str, params: Any = None, timeout: float = 60) -> dict:
        return self.response(self.send(method, params), timeout)

    def result(self, method: str, params: Any = None, timeout: float = 60) -> Any:
        msg = self.request(method, params, timeout)
        assert "error" not in msg, msg
        return msg["result"]

    def log(self) -> str:
        return "".join(self.stderr[-40:])

    def log_messages(self) -> list[str]:
        with self._cv:
            return [n["params"]["message"] for n in self.notifications if n["method"] == "window/logMessage"]

    def wait_log(self, needle: str, timeout: float = 30) -> str:
        def find():
            return next((m for m in self.log_messages() if needle in m), None)

        return self.wait(find, timeout, f"a log message containing {needle!r}")

    # --- LSP ----------------------------------------------------------------------------
    def initialize(self, encodings: list[str] | None = None, init_options: Any = None, process_id: int | None = None) -> dict:
        caps: dict[str, Any] = {"window": {"workDoneProgress": False}, "textDocument": {"completion": {}}}
        if encodings:
            caps["general"] = {"positionEncodings": encodings}
        params: dict[str, Any] = {"processId": process_id, "rootUri": ROOT.as_uri(), "capabilities": caps}
        if init_options is not None:
            params["initializationOptions"] = init_options
        result = self.result("initialize", params)
        self.notify("initialized", {})
        return result

    def open(self, uri: str, text: str, version: int = 1, language: str = "python") -> None:
        self.notify("textDocument/didOpen", {
            "textDocument": {"uri": uri, "languageId": language, "version": version, "text": text},
        })

    def change(self, uri: str, version: int, changes: list[dict]) -> None:
        self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": changes})

    def complete(self, uri: str, line: Any, character: Any, timeout: float = 60) -> dict:
        return self.request("textDocument/completion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
        }, timeout)

    def completion_text(self, uri: str, line: int, character: int) -> str | None:
        """The inserted text of the one completion item, or None for an empty list."""
        result = self.complete(uri, line, character)
        assert "error" not in result, result
        items = result["result"]["items"]
        return items[0]["textEdit"]["newText"] if items else None

    def document_text(self, uri: str) -> dict:
        return self.result("codelsp/documentText", {"uri": uri})

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def shutdown_and_exit(self, timeout: float = 30) -> int:
        self.result("shutdown")
        self.notify("exit")
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._stderr_thread.join(10)  # all of the log, up to the end
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> "RawLsp":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
