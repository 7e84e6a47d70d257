"""Next-edit suggestions over Copilot's protocol: thin handlers around nextedit/.

What copilot.el (copilot-nes.el) and copilot-lsp.nvim send and expect (read from their sources;
/work/shared/README.md, "Next edits over Copilot's protocol"):

- request `textDocument/copilotInlineEdit` `{textDocument: {uri, version}, position}`; the answer
  `{edits: [{text, range, textDocument: {uri, version}, command?}]}` (`text`, not `newText`),
  the request's uri and version echoed (copilot.el drops an edit whose version or uri differs);
  nothing is `{edits: []}` (copilot-lsp.nvim reads `result.edits` without a nil check);
- `textDocument/didShowInlineEdit {item: {command}}` when an edit with a command is shown;
- accepting sends `workspace/executeCommand {command, arguments}` as a notification (copilot.el;
  protocol.py routes it here) or nothing (copilot-lsp.nvim); dismissing sends nothing.

Opt-in: the `nextEdit` setting, or copilot-lsp.nvim's `nextEditSuggestions.enabled` in
`workspace/didChangeConfiguration`; otherwise every request answers `{edits: []}` and nothing is
predicted. Ranges are always in the coordinates of the version the answer names: the prediction
is made on the text of the request's version; a prediction made earlier is answered again only
when the edits since then did not touch it (`predict.rebase`), moved to the new text.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Any

from lsprotocol import types

from codelsp.engine.generation import Cancelled
from codelsp.engine.worker import Job
from codelsp.lsp.documents import position_at
from codelsp.nextedit.history import EditHistory
from codelsp.nextedit.predict import Edit, rebase
from codelsp.nextedit.run import Prediction, repeated, rewrite

log = logging.getLogger(__name__)

REQUEST = "textDocument/copilotInlineEdit"
SHOWN = "textDocument/didShowInlineEdit"
ACCEPT = "codelsp.nextEdit.accept"  # the command each edit carries; copilot.el runs it on accept
COMMAND_NOTIFICATION = "codelsp/executeCommandNotification"  # protocol.py: executeCommand without an id


@dataclass
class _Cached:
    text: str
    edit: Edit


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def copilot_opt_in(settings: Any) -> bool | None:
    """copilot-lsp.nvim's `nextEditSuggestions.enabled` in a didChangeConfiguration's settings
    (None: not there)."""
    nes = _field(settings, "nextEditSuggestions") if settings is not None else None
    enabled = _field(nes, "enabled") if nes is not None else None
    return enabled if isinstance(enabled, bool) else None


class NextEdits:
    """The next-edit state of one server: the edit history, the last prediction per document,
    and the counts shown in `codelsp/stats` (`nextEdit`)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.history = EditHistory()
        self.opted_in = False  # copilot-lsp.nvim's nextEditSuggestions.enabled
        self.cached: dict[str, _Cached] = {}
        self._ids = itertools.count(1)
        self.totals = {"requests": 0, "predicted": 0, "edits": 0, "reused": 0, "shown": 0, "accepted": 0,
                       "evaluated": 0, "generated": 0}
        self.last: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.server.settings.next_edit or self.opted_in

    # --- documents ------------------------------------------------------------------------
    def opened(self, uri: str, text: str) -> None:
        self.history.open(uri, text)

    def changed(self, uri: str) -> None:
        doc = self.server.workspace.open_document(uri)
        if doc is not None:
            self.history.update(doc.uri, doc.version, doc.source)

    def closed(self, uri: str) -> None:
        doc_uri = uri
        self.history.close(doc_uri)
        self.cached.pop(doc_uri, None)

    # --- the request ----------------------------------------------------------------------
    async def request(self, params: Any) -> dict[str, Any]:
        self.totals["requests"] += 1
        none: dict[str, Any] = {"edits": []}
        if not self.enabled:
            return none
        ident = _field(params, "textDocument")
        uri = _field(ident, "uri")
        pos = _field(params, "position")
        doc = self.server.workspace.open_document(uri) if isinstance(uri, str) else None
        if doc is None or pos is None:
            return none
        line = _field(pos, "line")
        if not isinstance(line, int):
            return none
        version = _field(ident, "version")
        version = doc.version if not isinstance(version, int) else version
        text, key = doc.source, doc.uri
        found = self.cached.get(key)
        edit = rebase(found.text, text, found.edit) if found is not None else None
        if edit is not None and text[edit.start:edit.end] == edit.old:
            self.totals["reused"] += 1
        else:
            edit = await self._predict(key, text, line)
            if edit is None:
                self.cached.pop(key, None)
                return none
        self.cached[key] = _Cached(text, edit)
        self.totals["edits"] += 1
        enc = doc.encoding
        rng = types.Range(start=position_at(text, edit.start, enc), end=position_at(text, edit.end, enc))
        return {"edits": [{
            "text": edit.text,
            "range": {"start": {"line": rng.start.line, "character": rng.start.character},
                      "end": {"line": rng.end.line, "character": rng.end.character}},
            "textDocument": {"uri": uri, "version": version},
            "command": {"title": "Accept next edit", "command": ACCEPT, "arguments": [key, next(self._ids)]},
        }]}

    async def _predict(self, key: str, text: str, line: int) -> Edit | None:
        engine = self.server.engine
        hunks = self.history.hunks()
        last = self.history.current(key)
        path = key.rsplit("/", 1)[-1]
        seed = self.server.settings.seed

        def work(job: Job) -> Prediction | None:
            model = engine.next_edit or engine.model
            if model is None:
                return None
            return rewrite(model, f"next-edit {key}", path, key, text, line, hunks, last, seed, job.cancel)

        found = repeated(text, last, key)  # the last edit again below: no need to wait for the engine
        if found is None:
            job = engine.submit(work, key=f"next-edit {key}")
            try:
                found = await asyncio.shield(asyncio.wrap_future(job.future))
            except asyncio.CancelledError:
                engine.cancel(job)
                raise
            except Cancelled:
                return None
            if found is None:
                return None
        self.totals["predicted"] += 1
        self.totals["evaluated"] += found.stats.evaluated
        self.totals["generated"] += found.stats.generated
        self.last = {"reason": found.reason, "evaluated": found.stats.evaluated, "reused": found.stats.reused,
                     "generated": found.stats.generated, "promptTokens": found.prompt_tokens,
                     "totalMs": round(found.total_ms, 3)}
        return found.edit

    # --- shown, accepted ------------------------------------------------------------------
    def shown(self, params: Any) -> None:
        self.totals["shown"] += 1

    def command(self, command: Any, arguments: Any) -> None:
        if command != ACCEPT:
            log.debug("executeCommand notification %r: not a next-edit command", command)
            return
        self.totals["accepted"] += 1
        if isinstance(arguments, (list, tuple)) and arguments and isinstance(arguments[0], str):
            self.cached.pop(arguments[0], None)

    def stats(self) -> dict[str, Any]:
        return {"enabled": self.enabled, **self.totals, "last": self.last, "hunks": len(self.history.hunks())}


def register(server: Any) -> None:
    """The next-edit handlers on `server` (lsp/server.py); documents are fed from its didOpen,
    didChange and didClose handlers."""
    ne = NextEdits(server)
    server.next_edits = ne

    @server.feature(REQUEST)
    async def on_request(ls: Any, params: Any) -> dict[str, Any]:
        return await ne.request(params)

    @server.feature(SHOWN)
    def on_shown(ls: Any, params: Any) -> None:
        ne.shown(params)

    @server.feature(COMMAND_NOTIFICATION)
    def on_command(ls: Any, params: Any) -> None:
        ne.command(_field(params, "command"), _field(params, "arguments"))

    @server.command(ACCEPT)
    def on_accept(ls: Any, *args: Any) -> None:  # a client that sends the command as a request
        ne.command(ACCEPT, list(args[0]) if args and isinstance(args[0], (list, tuple)) else list(args))

    @server.feature("codelsp/nextEditStats")
    def on_stats(ls: Any, params: Any) -> dict[str, Any]:
        return ne.stats()
