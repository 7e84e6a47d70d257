"""`codelsp bench --speculative-compare`: generated tokens a second with and without speculative
decoding (prompt lookup, engine/speculative.py, or with `--speculative draft --draft-model PATH`
a draft model, engine/draft.py), on multi-line completions, texts compared.

Every function body of three or more lines (after its docstring) in the files is taken out in
turn, leaving the cursor on an empty indented line: a place where the model writes several lines.
Two servers run side by side on the same model, `--speculative off` and `--speculative lookup`
(or `draft`, that one server alone loading the draft model),
both greedy (`--temperature 0`, where the two must give the same text) and without the
wall-clock cut (`--timeout-ms 120000`); each hole is asked of one and then the other, so a change
of the machine's load falls on both. Generated tokens and generation time come from the servers
(`codelsp/stats`: `generated`, `genMs` of the document's last completion; `drafted`, `accepted`,
`verifies`, `draftEvaluated` of the totals), so the prompt's evaluation is not counted (nor the
draft model's catch-up with it, which a request counts as prompt time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types

from codelsp.tools.lspclient import as_dict, codelsp_client, inline_params, inline_texts
from codelsp.tools.ride import function_bodies

COUNTS = ("drafted", "accepted", "verifies", "draftEvaluated")


def function_holes(text: str) -> list[tuple[str, int, int]]:
    """Every function of `text` whose body has three or more lines after its docstring, taken out:
    (the text without that body, the cursor's zero-based line and column on the empty indented
    line left there), in file order."""
    lines = text.split("\n")
    out = []
    for _, body, end in function_bodies(lines):
        indent = lines[body][: len(lines[body]) - len(lines[body].lstrip())]
        out.append(("\n".join(lines[:body] + [indent] + lines[end:]), body, len(indent)))
    return out


async def _ask(client: Any, uri: str, doc: str, line: int, col: int) -> tuple[str, dict[str, Any]]:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=doc)))
    found = inline_texts(await client.text_document_inline_completion_async(inline_params(uri, line, col)))
    last = as_dict((await client.protocol.send_request_async("codelsp/stats", {"uri": uri})).last or {})
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))
    return (found[0] if found else ""), last


async def compare(server_args: list[str], holes: list[tuple[str, str, int, int]], env: dict[str, str] | None = None,
                  progress: bool = False, mode: str = "lookup", mode_args: list[str] | None = None) -> dict[str, Any]:
    """Ask every hole (name, text, line, column) of both servers, `off` and `mode` (its server also
    given `mode_args`); the report (JSON-ready), keyed by the two modes."""
    rows: list[dict[str, Any]] = []
    totals: dict[str, dict[str, Any]] = {}
    modes = ("off", mode)
    async with contextlib.AsyncExitStack() as stack:
        clients = {m: await stack.enter_async_context(codelsp_client(
            server_args + ["--speculative", m] + (list(mode_args or []) if m == mode else []), env=env)) for m in modes}
        for n, (name, doc, line, col) in enumerate(holes):
            row: dict[str, Any] = {"hole": f"{name}:{line + 1}"}
            for m in modes:
                text, last = await _ask(clients[m], f"file:///codelsp-bench/spec-{n}.py", doc, line, col)
                row[m] = {"text": text, "generated": last.get("generated", 0), "gen_ms": last.get("genMs", 0.0)}
            row["same"] = row["off"]["text"] == row[mode]["text"]
            rows.append(row)
            if progress:
                print(f"  {row['hole']:<28} {row['off']['generated']:>4} tokens  off {row['off']['gen_ms']:>8.1f} ms  "
                      f"{mode} {row[mode]['gen_ms']:>8.1f} ms  {'same' if row['same'] else 'DIFFERENT'}",
                      file=sys.stderr)
        for m in modes:
            totals[m] = as_dict((await clients[m].protocol.send_request_async("codelsp/stats", {})).totals)
    out: dict[str, Any] = {"mode": mode, "holes": len(rows), "same_text": sum(r["same"] for r in rows),
                           "different": [r["hole"] for r in rows if not r["same"]], "rows": rows}
    for m in modes:
        gen = sum(r[m]["generated"] for r in rows)
        ms = sum(r[m]["gen_ms"] for r in rows)
        out[m] = {"generated": gen, "gen_ms": round(ms, 1), "tokens_per_s": round(gen / ms * 1000, 1) if ms else None,
                  **{k: totals[m].get(k, 0) for k in COUNTS}}
    if out["off"]["tokens_per_s"] and out[mode]["tokens_per_s"]:
        out["speedup"] = round(out[mode]["tokens_per_s"] / out["off"]["tokens_per_s"], 2)
    return out


def run(files: list[Path], flags: list[str], env: dict[str, str], limit: int, as_json: bool, mode: str = "lookup",
        mode_args: list[str] | None = None) -> int:
    """`codelsp bench --speculative-compare [FILE...]`: print the table (or JSON) of `off` against
    `mode` (lookup or draft; `mode_args`: that server's own flags, e.g. `--draft-model PATH`); 0
    (the table: 1 when a text differed; the JSON says it in "different"), 2 when no file has a
    function body to take out."""
    import json
    import sys

    holes = [(p.name, *h) for p in files for h in function_holes(p.read_text(encoding="utf-8"))][:limit]
    if not holes:
        print("codelsp bench: --speculative-compare needs functions of three or more lines in the files", file=sys.stderr)
        return 2
    if not as_json:
        print(f"completing {len(holes)} function bodies with --speculative off and {mode} (greedy) ...", file=sys.stderr)
    report = asyncio.run(compare(flags + ["--temperature", "0"], holes, env, progress=not as_json, mode=mode,
                                 mode_args=mode_args))
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'speculative':<12} {'generated':>9} {'gen s':>8} {'tok/s':>7} {'drafted':>8} {'accepted':>9} {'verifies':>9}"
          f" {'draft eval':>10}")
    for m in ("off", mode):
        r = report[m]
        print(f"{m:<12} {r['generated']:>9} {r['gen_ms'] / 1000:>8.1f} {r['tokens_per_s'] or 0:>7.1f} "
              f"{r['drafted']:>8} {r['accepted']:>9} {r['verifies']:>9} {r['draftEvaluated']:>10}")
    print(f"same text on {report['same_text']} of {report['holes']} holes"
          + (f"; different: {', '.join(report['different'])}" if report["different"] else ""))
    if "speedup" in report:
        print(f"{mode} vs off: {report['speedup']}x generated tokens a second "
              f"(load average {', '.join(map(str, report['load_average']))})")
    return 0 if not report["different"] else 1
