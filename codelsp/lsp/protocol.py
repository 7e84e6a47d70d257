"""The JSON-RPC layer: every request gets an answer, whatever the client sends.

pygls 2.1 logs and drops a request whose params do not deserialize (a negative position, a
string where a number belongs), so the client waits forever for the answer; it drops requests
that arrive after `shutdown` without an answer too, and a frame that is not JSON shows the user
an "Error in server" message box. JSON-RPC 2.0 and LSP require an error response instead:

| what arrives | answer |
|---|---|
| a body that is not JSON | ParseError (-32700), id null |
| not a JSON-RPC 2.0 object (an array, a number, no/wrong `jsonrpc`, a bad id) | InvalidRequest (-32600) |
| a request whose params do not fit the method | InvalidParams (-32602) |
| a request for a method the server does not have | MethodNotFound (-32601) |
| a notification method sent with an id | handled as the notification, and InvalidRequest for the id |
| a request after `shutdown` | InvalidRequest |

Notifications that cannot be handled get a log line (a notification has no answer). `exit`
ends the process with the exit code the specification asks for (0 after `shutdown`, 1 without),
even while the client keeps stdin open.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import attrs
from lsprotocol import types
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import (
    JsonRPCNotification,
    JsonRPCProtocol,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
)
from pygls.protocol.language_server import lsp_method

from codelsp.lsp.documents import DocumentWorkspace

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
EXECUTE_COMMAND_NOTIFICATION = "codelsp/executeCommandNotification"  # lsp/nextedit.py handles it


_NOT_JSON = (json.JSONDecodeError, UnicodeDecodeError)  # what json.loads raises for a bad frame


class _QuietParseErrors(logging.Filter):
    """pygls logs a traceback for a frame that is not JSON; report_error logs one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == "Unable to handle message" and isinstance(exc, _NOT_JSON))


logging.getLogger("pygls.server").addFilter(_QuietParseErrors())


class _Answered:
    """What structure_message returns for a message it already answered or logged."""

    jsonrpc = "handled"


ANSWERED = _Answered()


def _valid_id(msg_id: Any) -> bool:
    return isinstance(msg_id, (str, int)) and not isinstance(msg_id, bool)


def _brief(exc: BaseException) -> str:
    """The reason a message did not deserialize, in one line."""
    causes = getattr(exc, "exceptions", None)
    if causes:
        return "; ".join(_brief(e) for e in causes)
    notes = getattr(exc, "__notes__", None) or []
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{text} ({notes[-1]})" if notes else text


def _logged(handler):
    """`handler`, with any exception it raises logged instead of becoming the answer."""

    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shutdown must answer null
            log.warning("shutdown: %s: %s", type(exc).__name__, exc)
            return None

    return run


def _selected_range_as_object(data: dict[str, Any]) -> None:
    """An inline completion request's `context.selectedCompletionInfo.range` sent as
    `[start, end]` (VS Code's own JSON of a Range: clients that pass the editor's context
    through unconverted) made the LSP `{start, end}`, in place; any other shape is left to fail
    as invalid params."""
    params = data.get("params")
    context = params.get("context") if isinstance(params, dict) else None
    info = context.get("selectedCompletionInfo") if isinstance(context, dict) else None
    rng = info.get("range") if isinstance(info, dict) else None
    if isinstance(rng, list) and len(rng) == 2:
        info["range"] = {"start": rng[0], "end": rng[1]}


class CodeLspProtocol(LanguageServerProtocol):
    exit_code: int = 0

    # --- answers that pygls does not send ---------------------------------------------------
    def send_error(self, msg_id: Any, code: int, message: str) -> None:
        """An error response; the id is null where the request's id could not be read."""
        self._send_data({
            "jsonrpc": JsonRPCProtocol.VERSION,
            "id": msg_id if _valid_id(msg_id) else None,
            "error": {"code": code, "message": message},
        })

    def _known_method(self, method: str) -> bool:
        return (
            method in types.METHOD_TO_TYPES
            or method in self.fm.features
            or method in self.fm.builtin_features
        )

    def structure_message(self, data: dict[str, Any]):
        if "jsonrpc" not in data:
            return data  # a nested object (or a message without `jsonrpc`: see handle_message)
        method = data.get("method")
        has_id = "id" in data
        if has_id and not _valid_id(data["id"]):
            log.warning("message %s has an invalid id %r", method, data["id"])
            if isinstance(method, str):
                self.send_error(None, INVALID_REQUEST, f"invalid request id {data['id']!r}")
            return ANSWERED
        if not has_id and method == types.WORKSPACE_EXECUTE_COMMAND:
            # copilot.el accepts a next edit with executeCommand sent as a notification (no id):
            # handled by lsp/nextedit.py's notification, never dropped as invalid
            data = {**data, "method": EXECUTE_COMMAND_NOTIFICATION}
        if has_id and isinstance(method, str) and self._is_notification(method):
            log.warning("%s is a notification but was sent with id %r: handled as a notification", method, data["id"])
            self.send_error(data["id"], INVALID_REQUEST, f"{method} is a notification: it takes no id")
            data = {k: v for k, v in data.items() if k != "id"}
        if method == types.TEXT_DOCUMENT_INLINE_COMPLETION:
            _selected_range_as_object(data)
        try:
            return self._structure(data)
        except Exception as exc:  # noqa: BLE001 - answered below, in one log line
            reason = _brief(exc)
        if not isinstance(method, str):
            if has_id and "result" in data and self._deliver_raw(data):
                return ANSWERED
            if has_id and "result" not in data and "error" not in data:  # never answer a response
                log.warning("invalid JSON-RPC message (id %r): %s", data.get("id"), reason)
                self.send_error(data.get("id"), INVALID_REQUEST, f"invalid message: {reason}")
            else:
                log.warning("invalid JSON-RPC message: %s", reason)
            return ANSWERED
        if not has_id:
            log.warning("notification %s has invalid params, ignored: %s", method, reason)
            return ANSWERED
        if not self._known_method(method):
            log.warning("unknown method %s (request %r)", method, data["id"])
            self.send_error(data["id"], METHOD_NOT_FOUND, f"unknown method {method}")
        else:
            log.warning("request %s (id %r) has invalid params: %s", method, data["id"], reason)
            self.send_error(data["id"], INVALID_PARAMS, f"invalid params for {method}: {reason}")
        return ANSWERED

    def _deliver_raw(self, data: dict[str, Any]) -> bool:
        """A client's answer to our request that does not fit the answer's type (`null` for
        workspace/applyEdit): the waiting request gets the raw JSON value instead of waiting
        forever. True when a request was waiting for it."""
        future = self._request_futures.pop(data["id"], None) if _valid_id(data["id"]) else None
        if future is None or future.done():
            return False
        log.warning("the client's answer to request %r has an unexpected shape: %.200s",
                    data["id"], json.dumps(data.get("result"), default=str))
        future.set_result(data.get("result"))
        return True

    def _structure(self, data: dict[str, Any]) -> Any:
        """pygls' JsonRPCProtocol.structure_message without its traceback in the log."""
        if "id" in data:
            if "error" in data:
                return self._converter.structure(data, types.ResponseErrorMessage)
            if "method" in data:
                return self._converter.structure(data, self.get_message_type(data["method"]) or JsonRPCRequestMessage)
            response_type = self._result_types.pop(data["id"], None) or JsonRPCResponseMessage
            return self._converter.structure(data, response_type)
        notification_type = self.get_message_type(data.get("method", "")) or JsonRPCNotification
        return self._converter.structure(data, notification_type)

    def _is_notification(self, method: str) -> bool:
        entry = types.METHOD_TO_TYPES.get(method)
        if entry is None or entry[0] is None:
            return False
        return "id" not in attrs.fields_dict(entry[0])

    def handle_message(self, message: Any):
        if message is ANSWERED:
            return
        if isinstance(message, dict) or not hasattr(message, "jsonrpc"):
            msg_id = message.get("id") if isinstance(message, dict) else None
            log.warning("not a JSON-RPC 2.0 message: %.200s", json.dumps(message, default=str))
            if not isinstance(message, dict) or "method" not in message or "id" in message:
                self.send_error(msg_id, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
            return
        if message.jsonrpc != JsonRPCProtocol.VERSION:
            log.warning("unsupported JSON-RPC version %r", message.jsonrpc)
            if getattr(message, "id", None) is not None:
                self.send_error(message.id, INVALID_REQUEST, f"unsupported jsonrpc version {message.jsonrpc!r}")
            return
        method = getattr(message, "method", None)
        if self._shutdown and method is not None and method != types.EXIT:
            if getattr(message, "id", None) is not None:
                log.warning("request %s after shutdown: refused", method)
                self.send_error(message.id, INVALID_REQUEST, "the server is shutting down")
            else:
                log.info("notification %s after shutdown: ignored", method)
            return
        super().handle_message(message)

    def report_error(self, error: Exception, source: Any) -> bool:
        """Handles a frame that is not JSON (from pygls' read loop); True when handled."""
        if isinstance(error, _NOT_JSON):
            log.warning("a message is not valid JSON: %s", error)
            self.send_error(None, PARSE_ERROR, f"parse error: {error}")
            return True
        return False

    # --- lifecycle --------------------------------------------------------------------------
    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        inner = super().lsp_initialize(params)
        value = None
        while True:
            try:
                step = inner.send(value)
            except StopIteration as done:
                self._use_document_workspace()
                return done.value
            self._use_document_workspace()  # pygls made the workspace before the first step
            value = yield step

    def _use_document_workspace(self) -> None:
        ws = self._workspace
        if ws is not None and not isinstance(ws, DocumentWorkspace):
            ws.__class__ = DocumentWorkspace  # the same state, LSP-exact documents (documents.py)

    @lsp_method(types.SHUTDOWN)
    def lsp_shutdown(self, *args):
        """Answers null whatever is running, and refuses every request after it.

        pygls 2.1 cancels the pending requests while iterating its futures dict, and a cancelled
        request's callback removes itself from that dict: with a code action running, shutdown
        answered "dictionary changed size during iteration" and `exit` then ended with 1. Here
        the futures are cancelled from a copy, and a failing shutdown handler (ours stops the
        engine) is logged, never the answer.
        """
        self._shutdown = True  # from now on requests are refused (handle_message)
        if (user_handler := self.fm.features.get(types.SHUTDOWN)) is not None:
            yield _logged(user_handler), args, None
        current_id = self.msg_id
        for msg_id, future in list(self._request_futures.items()):
            if msg_id != current_id and not future.done():
                try:
                    future.cancel()
                except Exception as exc:  # noqa: BLE001 - a callback failed; shutting down anyway
                    log.debug("cancelling request %r at shutdown: %s", msg_id, exc)
        log.info("shutdown")
        return None

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args):
        """Ends the process now, with 0 after `shutdown` and 1 without.

        pygls raises SystemExit here, and then waits for its reader thread, which is blocked
        reading stdin for as long as the client keeps it open: the process would never end.
        """
        self.exit_code = 0 if self._shutdown else 1
        if (user_handler := self.fm.features.get(types.EXIT)) is not None:
            yield user_handler, args, None
        if self.exit_code:
            log.warning("exit without shutdown: exit code 1")
        else:
            log.info("exit")
        try:
            if self.writer is not None:
                self.writer.close()
        except Exception:  # noqa: BLE001 - the client may have closed it already
            pass
        for handler in logging.getLogger().handlers + logging.getLogger("codelsp").handlers:
            try:
                handler.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(self.exit_code)

