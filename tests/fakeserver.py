"""A small OpenAI-compatible server on 127.0.0.1 that behaves the way a bug report describes.

Each test gives it a `chat` (and optionally `completions`) function: the request body in, a
`Reply` out — the HTTP status, the server-sent events to stream (dicts become `data: {json}`
lines, strings are written as they are), and how long to wait before sending the headers (ollama
sends them only once the model is loaded). It records every request and how many clients hung
up before their answer (ollama aborts the load when that happens).
"""

from __future__ import annotations

import json
import select
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    events: list[Any] = field(default_factory=list)  # dict -> `data: {json}`; str -> raw text; number -> pause (s)
    status: int = 200
    headers_after_s: float = 0.0
    body: Any = None  # a body instead of a stream: JSON (a dict), or a str sent as `content_type`
    content_type: str = "application/json"


def chat_chunk(content: str | None = None, *, reasoning: str | None = None, finish: str | None = None,
               usage: dict | None = None) -> dict:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    event: dict[str, Any] = {"object": "chat.completion.chunk",
                             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        event = {"object": "chat.completion.chunk", "choices": [], "usage": usage}
    return event


def stream_text(text: str, size: int = 5) -> list[dict]:
    """`text` as chat chunks of `size` characters, then a finish chunk."""
    return [chat_chunk(text[i:i + size]) for i in range(0, len(text), size)] + [chat_chunk(finish="stop")]


class FakeOpenAI:
    def __init__(self, chat: Callable[[dict], Reply] | None = None,
                 completions: Callable[[dict], Reply] | None = None,
                 models: list[dict] | None = None, models_after_s: float = 0.0):
        self.chat = chat
        self.completions = completions
        self.models = models if models is not None else [{"id": "fake-model", "object": "model"}]
        self.models_after_s = models_after_s  # a slow /models: the server's first seconds
        self.requests: list[tuple[str, Any]] = []
        self.hung_up = 0  # clients that closed the connection before their answer began
        self.stream_type = "text/event-stream"  # the Content-Type a stream is sent with
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with fake._lock:
                    fake.requests.append((self.path, None))
                if self.path.endswith("/models"):
                    time.sleep(fake.models_after_s)
                    self._json(200, {"object": "list", "data": fake.models})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                with fake._lock:
                    fake.requests.append((self.path, body))
                handler = fake.chat if self.path.endswith("/chat/completions") else fake.completions
                if handler is None:
                    self._json(404, {"error": {"message": "not found"}})
                    return
                reply = handler(body)
                if reply.headers_after_s and self._client_left_within(reply.headers_after_s):
                    with fake._lock:
                        fake.hung_up += 1
                    return
                if isinstance(reply.body, str):  # an HTML page, plain text: whatever a proxy sends
                    self._send(reply.status, reply.body.encode(), reply.content_type)
                    return
                if reply.body is not None or reply.status >= 400:
                    self._json(reply.status, reply.body if reply.body is not None else {}, reply.content_type)
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", fake.stream_type)
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for ev in reply.events:
                        if isinstance(ev, (int, float)):  # a pause in the middle of the stream
                            time.sleep(ev)
                            continue
                        raw = ev if isinstance(ev, str) else f"data: {json.dumps(ev)}\n\n"
                        self.wfile.write(raw.encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                except OSError:
                    pass

            def _client_left_within(self, seconds: float) -> bool:
                """Wait `seconds` before answering; True when the client hangs up meanwhile."""
                end = time.monotonic() + seconds
                while (left := end - time.monotonic()) > 0:
                    ready, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                    if ready:
                        try:
                            import socket

                            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                                return True
                        except OSError:
                            return True
                return False

            def _json(self, status: int, obj: Any, content_type: str = "application/json") -> None:
                self._send(status, json.dumps(obj).encode(), content_type)

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def posts(self, suffix: str) -> list[dict]:
        with self._lock:
            return [b for p, b in self.requests if p.endswith(suffix) and b is not None]

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
