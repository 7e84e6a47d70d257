"""`codelsp bench --typing-rate CPS`: typing into a long suggestion while it is being generated.

A user at a place where the model writes several lines (64 tokens by default) types on at
`CPS` characters a second, and types exactly what the model is writing (they agree with it). The
editor works as VS Code does: at each keystroke it sends `$/cancelRequest` for the request still
open, the change, and a new `textDocument/inlineCompletion`; a suggestion is shown only if its
answer arrives before the next keystroke. Without riding the generation in flight (issue 13
item 4), every keystroke would start the model over and a slow model would never finish in time.

The text typed is learnt first: the same file, opened under another URI (its own prompt state
and suggestion cache), is completed once at the cursor. The replay then opens the file fresh and
types; what each keystroke showed, and the server's own counts (`codelsp/stats` totals: model
runs, requests answered by riding, cancelled requests, tokens evaluated and generated), make the
report.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from lsprotocol import types

from codelsp.tools.lspclient import as_dict, codelsp_client, inline_params, inline_texts


def function_bodies(lines: list[str], heads: tuple[str, ...] = ("def ", "async def ")) -> list[tuple[int, int, int]]:
    """(def line, first body line after its docstring, end) of every function in `lines` whose
    body has three or more lines after its docstring (zero-based; trailing blank lines are not
    in it), in file order. `heads`: what a `def` line starts with."""
    out = []
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if not (stripped.startswith(heads) and line.rstrip().endswith(":")):
            continue
        depth = len(line) - len(stripped)
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > depth):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():  # trailing blank lines stay
            end -= 1
        body = i + 1
        head = lines[body].lstrip() if body < end else ""
        if head[:3] in ('"""', "'''"):  # keep the docstring
            quote = head[:3]
            last = body if head.count(quote) >= 2 else next((k for k in range(body + 1, end) if quote in lines[k]), end - 1)
            body = last + 1
        if end - body >= 3:
            out.append((i, body, end))
    return out


def body_hole(text: str) -> tuple[str, int, int]:
    """`text` with the body of one function taken out (the one nearest the middle of the file
    whose body has at least three lines of code after its docstring), and the cursor (zero-based
    line, column) on the empty, indented line left there: a place where a model writes several
    lines. Raises ValueError (a one-line message) when the file has no such function."""
    lines = text.split("\n")
    candidates = [(abs(i - len(lines) // 2), i, body, end) for i, body, end in function_bodies(lines, ("def ",))]
    if not candidates:
        raise ValueError("--typing-rate needs a file with a function of three or more lines")
    _, _, body, end = min(candidates)
    indent = lines[body][: len(lines[body]) - len(lines[body].lstrip())]
    return "\n".join(lines[:body] + [indent] + lines[end:]), body, len(indent)


async def replay_typing_rate(server_args: list[str], text: str, line: int, col: int, rate: float,
                             max_keys: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Type, at `rate` characters a second, up to `max_keys` characters of the suggestion at
    (`line`, `col`) of `text`, cancelling each open request at the next keystroke.

    Returns the report (JSON-ready): the suggestion learnt, per keystroke whether a suggestion
    was shown in time (and whether it had more than one line), the first multi-line one's time
    since the first keystroke (ms), and the server's totals during the replay. Raises
    RuntimeError when the model suggests nothing there (with the server's error message when it
    showed one: no model, a backend that is down).
    """
    interval = 1.0 / rate
    ids = (f"typing-rate-{n}" for n in itertools.count())
    errors: list[str] = []

    def show(params: types.ShowMessageParams) -> None:  # the model did not load, the backend is down, ...
        if params.type == types.MessageType.Error:
            errors.append(params.message)

    async with codelsp_client(server_args, env=env, on_show=show) as client:
        learn = "file:///codelsp-bench/typing-rate-learn.py"
        uri = "file:///codelsp-bench/typing-rate.py"
        for u in (learn, uri):
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=u, language_id="python", version=1, text=text)))
        found = inline_texts(await client.text_document_inline_completion_async(inline_params(learn, line, col)))
        suggestion = found[0] if found else ""
        if not suggestion.strip():
            if errors:
                raise RuntimeError(errors[0])
            raise RuntimeError(f"the model suggests nothing at {line + 1}:{col + 1}: pick another place")
        client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=learn)))
        # type at most the suggestion's first line: the rest is what a multi-line suggestion shows
        typed = suggestion.split("\n", 1)[0][:max_keys]
        before = as_dict((await client.protocol.send_request_async("codelsp/stats", {"uri": uri})).totals)

        rows: list[dict[str, Any]] = []
        start = time.perf_counter()

        def send(character: int) -> tuple[str, asyncio.Future, float]:
            msg_id = next(ids)
            future = asyncio.wrap_future(client.protocol.send_request(
                "textDocument/inlineCompletion", inline_params(uri, line, character), msg_id=msg_id))
            return msg_id, future, time.perf_counter()

        pending = send(col)
        for k, ch in enumerate(typed + "\0"):  # "\0": after the last keystroke, wait for its answer
            msg_id, future, sent = pending
            last = ch == "\0"
            try:
                result = await asyncio.wait_for(asyncio.shield(future), None if last else interval)
            except asyncio.TimeoutError:
                result = None
                client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
                future.add_done_callback(lambda f: f.cancelled() or f.exception())  # answered "cancelled"
            else:
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - sent)))  # the user's pace
            shown = inline_texts(result)
            rows.append({"keystroke": k, "shown": bool(shown and shown[0]),
                         "multiline": bool(shown and "\n" in shown[0].strip()),
                         "at_ms": round((time.perf_counter() - start) * 1000, 1),
                         "latency_ms": round((time.perf_counter() - sent) * 1000, 1) if shown else None})
            if last:
                break
            pos = types.Position(line=line, character=col + k)
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=k + 2),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=ch)]))
            pending = send(col + k + 1)
        after = as_dict((await client.protocol.send_request_async("codelsp/stats", {"uri": uri})).totals)

    counts = {k: after.get(k, 0) - before.get(k, 0)
              for k in ("requests", "model", "orphaned", "inFlight", "typeThrough", "cancelled", "evaluated",
                        "generated")}
    multi = [r for r in rows if r["multiline"]]
    return {
        "suggestion": suggestion, "typed": typed, "rate_cps": rate, "keystrokes": len(typed),
        "shown": sum(r["shown"] for r in rows), "multiline_shown": len(multi),
        "first_multiline_ms": multi[0]["at_ms"] if multi else None, "server": counts, "rows": rows,
    }
