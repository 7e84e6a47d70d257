"""The HTTP transport of the remote backends (remote.py): requests, server-sent events, errors.

HTTP is the standard library's http.client, streaming (server-sent events), one keep-alive
connection per thread. A watcher closes the socket as soon as the request is cancelled or its
deadline passes, so a superseded keystroke stops the transfer (and, with servers that notice a
closed connection, the generation) at once. Connection failures before an answer are retried
with backoff; a backend that stays down raises BackendError, a ModelError with a one-line
message the server shows the user once.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from typing import Any, Iterator

from codelsp.engine.generation import Cancelled
from codelsp.models.errors import ModelError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
RETRIES = 3  # further attempts after a connection failure, with backoff
BACKOFF_S = (0.05, 0.2, 0.5)
RETRY_STATUS = frozenset({502, 503, 504})
API_KEY_ENV = "CODELSP_API_KEY"
WATCH_INTERVAL_S = 0.01
MAX_BODY = 4 << 20  # the most read of an answer sent whole (not streamed)
SSE_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")  # the lines a stream can start with


class BackendError(ModelError):
    """The remote backend cannot be used right now; the message is one line for the user.

    `status`: the HTTP status the server answered with, None when it never answered;
    `detail`: the server's own error message (for deciding on a retry without a system role).
    """

    def __init__(self, message: str, status: int | None = None, detail: str = ""):
        super().__init__(message)
        self.status = status
        self.detail = detail


class _Stopped(Exception):
    """The watcher closed the connection: cancelled or out of time."""


class _Watch:
    """Shuts the socket down when `cancel` is set or `deadline` passes, waking a blocked read."""

    def __init__(self, conn: http.client.HTTPConnection, cancel: threading.Event | None, deadline: float | None):
        self.conn = conn
        self.cancel = cancel
        self.deadline = deadline
        self.fired: str | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "_Watch":
        if self.cancel is not None or self.deadline is not None:
            self._thread = threading.Thread(target=self._run, name="codelsp-http-watch", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.wait(WATCH_INTERVAL_S):
            if self.cancel is not None and self.cancel.is_set():
                self._fire("cancel")
                return
            if self.deadline is not None and time.monotonic() > self.deadline:
                self._fire("time")
                return

    def _fire(self, why: str) -> None:
        self.fired = why
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()


class _Http:
    """Requests to one server; a keep-alive connection per thread."""

    def __init__(self, base_url: str, api_key: str | None):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ModelError(f"url must be http(s)://host[:port]/path, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port
        self.path = u.path.rstrip("/")
        self.api_key = api_key
        self._local = threading.local()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _conn(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        reused = conn is not None and conn.sock is not None
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, reused

    def describe_failure(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            why = "connection refused (is the server running?)"
        elif isinstance(exc, socket.gaierror):
            why = f"unknown host {self.host}"
        elif isinstance(exc, (socket.timeout, TimeoutError)):
            why = "timed out"
        elif isinstance(exc, http.client.RemoteDisconnected):
            why = "the server closed the connection without answering"
        else:
            why = str(exc) or type(exc).__name__
        return f"cannot reach the completion server at {self.base_url}: {why}"

    def request(
        self,
        method: str,
        path: str,
        body: dict | None,
        *,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
        read_timeout: float = CONNECT_TIMEOUT_S,
        sse: bool = False,
    ) -> Iterator[dict]:
        """Yield the JSON answer (once) or each server-sent event's JSON (sse=True).

        Time limits: CONNECT_TIMEOUT_S to open the TCP connection; the wait for the first byte
        of the answer (a server such as ollama sends its headers only once the model is loaded)
        is bounded by the request's own budget, `deadline` when given (completions: timeoutMs),
        else `read_timeout` (code actions: remote.CHAT_READ_TIMEOUT_S); the same bound holds for the
        silence between two chunks (a completion's whole stream is bounded by its deadline). Only a server that did not take the request (refused, unknown host,
        a keep-alive connection it had closed, a connection it dropped without an answer) and
        502/503/504 answers are retried: a request the server is working on is never sent again
        (that would make it start over, and ollama aborts a model load when its client hangs up).

        The answer is read by its Content-Type (and shape): `text/event-stream` (or a body whose
        first line is an SSE field) is read event by event; any other answer is read whole
        (_whole): a JSON completion is yielded once, as a single event carrying the whole text
        (a server or proxy with streaming off); an error object, an HTML page or any other body
        raises BackendError naming what came back.

        Raises Cancelled (cancel set), _Stopped("time") (deadline passed), BackendError (down
        after retries, no answer in time, an HTTP error status, an error event in the stream, an
        answer that is neither a stream nor a completion).
        """
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "text/event-stream" if sse else "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempt = 0
        last_failure: BaseException | None = None
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled before the request was sent")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                if last_failure is not None:  # out of time while the server was unreachable
                    raise BackendError(self.describe_failure(last_failure))
                raise _Stopped("time")
            conn, reused = self._conn(min(CONNECT_TIMEOUT_S, remaining) if remaining else CONNECT_TIMEOUT_S)
            watch = _Watch(conn, cancel, deadline)
            # the wait for the answer: the request's own budget (past the deadline the watcher
            # closes the socket; this timeout is a backstop)
            wait_s = read_timeout if remaining is None else remaining + 1.0
            sent = False
            t_sent = time.monotonic()
            try:
                with watch:
                    conn.request(method, self.path + path, body=data, headers=headers)
                    sent, t_sent = True, time.monotonic()
                    if conn.sock is not None:
                        conn.sock.settimeout(wait_s)
                    resp = conn.getresponse()
                    if resp.status in RETRY_STATUS and attempt < RETRIES:
                        resp.read()
                        raise _RetryStatus(resp.status)
                    if resp.status >= 400:
                        message, detail = self._http_error(path, resp)
                        raise BackendError(message, resp.status, detail)
                    if not sse:
                        yield self._whole(path, resp, sse=False)
                        return
                    kind = _media_type(resp)
                    if kind == "text/event-stream":
                        yield from self._events(resp, watch)
                    else:  # not a stream: the answer itself, an error, a page (_whole)
                        first = _first_line(resp)
                        if first.lstrip().startswith(SSE_FIELDS):  # a stream under another type
                            yield from self._events(resp, watch, first)
                            if resp.will_close:
                                self.close()
                            return
                        yield self._whole(path, resp, sse=True, first=first)
                        if not resp.isclosed():
                            self.close()  # a body longer than MAX_BODY: this connection is spent
                    if resp.will_close:
                        self.close()
                    return
            except (BackendError, GeneratorExit):
                self.close()
                raise
            except (OSError, http.client.HTTPException, _RetryStatus, ValueError) as exc:
                self.close()
                if watch.fired == "cancel" or (cancel is not None and cancel.is_set()):
                    raise Cancelled("cancelled during the HTTP request") from None
                if watch.fired == "time":
                    raise _Stopped("time") from None
                if isinstance(exc, _Streaming):
                    raise BackendError(f"the completion server at {self.base_url} broke off its answer: {exc.__cause__ or exc}") from None
                if isinstance(exc, ValueError) and not isinstance(exc, _RetryStatus):
                    raise BackendError(f"the completion server at {self.base_url} sent an answer that is not JSON") from None
                if sent and isinstance(exc, (socket.timeout, TimeoutError)):
                    # the server has the request and is working on it (loading a model?): asking
                    # again would restart that work, so this is the end of this request
                    waited = time.monotonic() - t_sent
                    log.warning("remote backend: %s%s accepted the request but sent no answer within %.0f s "
                                "(loading a model?); not retrying, which would restart the load",
                                self.base_url, path, waited)
                    raise BackendError(f"the server at {self.base_url} took the request but sent no answer "
                                       f"within {waited:.0f} s (still loading the model?)") from None
                last_failure = exc
                if attempt >= RETRIES:
                    if isinstance(exc, _RetryStatus):
                        raise BackendError(f"the completion server at {self.base_url} answered {exc.status} (busy or loading?)") from None
                    raise BackendError(self.describe_failure(exc)) from None
                # a reused keep-alive connection the server had closed: retry at once
                delay = 0.0 if reused and attempt == 0 else BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                attempt += 1
                log.log(logging.DEBUG if reused and attempt == 1 else logging.INFO, "remote backend: %s; retry %d of %d in %.1f s",
                        self.describe_failure(exc), attempt, RETRIES, delay)
                if delay:
                    if deadline is not None:
                        delay = min(delay, max(deadline - time.monotonic(), 0))
                    if cancel is not None:
                        if cancel.wait(delay):
                            raise Cancelled("cancelled while waiting to retry") from None
                    else:
                        time.sleep(delay)

    def _whole(self, path: str, resp: http.client.HTTPResponse, *, sse: bool, first: bytes = b"") -> Any:
        """The JSON of an answer sent whole: a completion (or chat) answer from a server with
        streaming off (LM Studio, LiteLLM, a proxy), or the body of a GET. Anything else raises
        BackendError with one line saying what came back and what to check: an error object
        inside the 200, an HTML page (a proxy's or a sign-in page), another type, nothing."""
        raw = first + resp.read(MAX_BODY)
        where = f"{self.base_url}{path}"
        ctype = _media_type(resp) or "no Content-Type"
        text = raw.strip()
        obj: Any = None
        try:
            obj = json.loads(text) if text[:1] in (b"{", b"[") else None
        except ValueError:
            obj = None
        if obj is not None:
            if _is_error_event(obj):
                msg = " ".join(_error_text(obj).split())[:300] or "no reason given"
                log.info("remote backend: %s answered %d with an error: %s", where, resp.status, msg)
                raise BackendError(f"{where} answered with an error: {msg}", resp.status, msg)
            if not sse or _is_answer(obj):
                log.debug("remote backend: %s answered whole (%s), not as a stream", where, ctype)
                return obj
            what = f"JSON that is not a completion ({_snippet(text)})"
        elif not text:
            if not sse:
                return None
            what = f"an empty answer ({ctype})"
        elif ctype == "text/html" or text[:1] == b"<":
            title = _html_title(text)
            what = f"an HTML page ({ctype})" + (f" titled {title!r}" if title else "")
        else:
            what = f"{ctype} ({_snippet(text)})"
        hint = "a proxy or sign-in page in the way?" if what.startswith("an HTML") else "a proxy in the way?"
        log.info("remote backend: %s answered %d with %s", where, resp.status, what)
        expected = "a completion" if sse else "JSON"
        raise BackendError(f"{where} answered with {what} instead of {expected}: check url ({hint})",
                           resp.status, what)

    def _events(self, resp: http.client.HTTPResponse, watch: _Watch, first: bytes = b"") -> Iterator[dict]:
        """The JSON of each server-sent event (`first`: a line already read). An error event
        anywhere in the stream (llama.cpp's server and vLLM send `{"error": {...}}` when
        generation fails midway; some servers name the event `error`) raises BackendError:
        nothing of a broken answer is used."""
        started = bool(first)
        event = ""
        while True:
            try:
                line, first = (first or resp.readline()), b""
            except (OSError, http.client.HTTPException) as exc:
                if watch.fired or not started:
                    raise
                raise _Streaming() from exc
            if not line:
                if watch.fired:
                    raise OSError("closed by watcher")
                return  # end of stream
            started = True
            line = line.strip()
            if not line:
                event = ""  # a blank line ends an event
                continue
            if line.startswith(b"event:"):
                event = line[6:].strip().decode("utf-8", "replace")
                continue
            if not line.startswith(b"data:"):
                continue  # comments (pings), ids
            payload = line[5:].strip()
            if payload == b"[DONE]":
                resp.read()  # the end of the chunked body, so the connection can be reused
                return
            try:
                obj = json.loads(payload)
            except ValueError:
                if event == "error":
                    self._stream_error(payload.decode("utf-8", "replace"))
                log.debug("remote backend: ignoring a non-JSON event %r", payload[:200])
                continue
            if event == "error" or _is_error_event(obj):
                self._stream_error(_error_text(obj))
            yield obj

    def _stream_error(self, message: str) -> None:
        message = " ".join(str(message).split())[:300] or "no reason given"
        log.warning("remote backend: %s sent an error in the middle of its answer: %s", self.base_url, message)
        raise BackendError(f"the server at {self.base_url} failed while answering: {message}", None, message)

    def _http_error(self, path: str, resp: http.client.HTTPResponse) -> tuple[str, str]:
        """(one-line message for the user, the server's own error text)."""
        raw = resp.read(4096)
        try:
            msg = _error_text(json.loads(raw))
        except ValueError:
            msg = raw.decode("utf-8", "replace").strip()
        msg = " ".join(msg.split())[:300]
        where = f"{self.base_url}{path}"
        if resp.status in (401, 403):
            return f"{where} refused the request ({resp.status}): set apiKey or ${API_KEY_ENV}" + (f" ({msg})" if msg else ""), msg
        if resp.status == 404:
            return f"{where} does not exist (404): check url" + (f" ({msg})" if msg else ""), msg
        return f"{where} answered {resp.status}" + (f": {msg}" if msg else ""), msg


def _media_type(resp: http.client.HTTPResponse) -> str:
    """The answer's Content-Type without its parameters, lower case ("" when none)."""
    return (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()


def _first_line(resp: http.client.HTTPResponse) -> bytes:
    """The first line of the body that is not blank (b"" at its end)."""
    while True:
        line = resp.readline()
        if not line or line.strip():
            return line


def _is_answer(obj: Any) -> bool:
    """A completion answer sent whole: OpenAI's `choices` (text or a chat message), llama.cpp's
    `content` (/infill, /completion)."""
    return isinstance(obj, dict) and (isinstance(obj.get("choices"), list) or isinstance(obj.get("content"), str))


def _snippet(raw: bytes, n: int = 80) -> str:
    text = " ".join(raw.decode("utf-8", "replace").split())
    return text if len(text) <= n else text[:n] + "…"


def _html_title(raw: bytes) -> str:
    """The page's <title>, to tell a sign-in page from a proxy's error page ("" when none)."""
    m = re.search(rb"<title[^>]*>(.*?)</title", raw[:MAX_BODY], re.I | re.S)
    return " ".join(m.group(1).decode("utf-8", "replace").split())[:80] if m else ""


def _is_error_event(obj: Any) -> bool:
    """An event that reports a failure instead of carrying text (OpenAI, vLLM, llama.cpp, TGI)."""
    if not isinstance(obj, dict):
        return False
    if obj.get("error") or obj.get("object") == "error":
        return True
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0].get("finish_reason") == "error"
    return False


def _error_text(obj: Any) -> str:
    """The human-readable message of an error object, whatever shape the server uses."""
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, dict):
        msg = err.get("message") or err.get("detail") or err.get("msg") or ""
        if not msg and isinstance(obj, dict):
            msg = obj.get("message") or obj.get("detail") or ""
        return str(msg) if msg else (json.dumps(err)[:300] if err else "")
    return "" if err is None else str(err)


class _RetryStatus(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


class _Streaming(OSError):
    """The connection broke after the answer had started: not retried."""
