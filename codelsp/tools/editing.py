"""`codelsp bench --editing`: replay an editing session, not only typing on one line.

The session (`session()`) is a fixed, deterministic script over three to five files: in each file
(in its middle; `visits=2`: at 35% and 70%) the user opens a new line above a line of code (a
move; the first in a file a switch), types a statement character by character, presses Enter,
types a little more, deletes three characters with backspace, pastes two lines, moves ten lines up
and types there; then goes to the next file, and at the end comes back to the first. After every event the editor asks for a suggestion at the cursor.

Two arms replay the same script: codelsp over stdio (`replay_codelsp`, token counts from
`codelsp/stats`) and llama.cpp's own `llama-server` driven the way llama.vim drives it
(`replay_llama_server`: `/infill` with `input_prefix` the 256 lines above the cursor's line,
`prompt` the line's text before the cursor, `input_suffix` the rest of the line and 64 lines below,
`cache_prompt: true`, the server started with `--cache-reuse 256 -np 1`; like llama.vim, a
suggestion the user is typing through is answered from the client's memory).

Per event the codelsp arm records, from `codelsp/stats`, where the document's state was before it
(tokens in the KV pool, in system memory) and what the request restored, reused (of which
shifted into place), evaluated and generated; the report gives p50/p95 per kind of event (latency
and prompt tokens evaluated), the tail (the events at or above p95, by kind, with the tokens they
evaluated: `tail_cause`) and the slowest 5 % of events with their cause (`cause`).

Latencies are measured by the client; the floor is what a keystroke costs at best on this machine
and model: the server's time for one prompt token plus the generated tokens (codelsp's own
per-keystroke timings, median).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCHDATA = Path(__file__).resolve().parent / "benchdata"  # frozen copies of project files, as text
DEFAULT_FILES = (BENCHDATA / "sample.py.txt", BENCHDATA / "worker.py.txt", BENCHDATA / "families.py.txt")
KINDS = ("switch", "move", "type", "enter", "delete", "paste")


@dataclass
class Event:
    kind: str  # one of KINDS: what the user did just before the editor asked for a suggestion
    doc: int  # index of the file
    start: tuple[int, int]  # edit range (line, character); start == end and text "" for a pure move
    end: tuple[int, int]
    text: str
    cursor: tuple[int, int]  # where the suggestion is asked for, after the edit


@dataclass
class Doc:
    lines: list[str]

    def apply(self, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        (l0, c0), (l1, c1) = start, end
        new = self.lines[l0][:c0] + text + self.lines[l1][c1:]
        self.lines[l0:l1 + 1] = new.split("\n")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def offset(self, pos: tuple[int, int]) -> int:
        return sum(len(l) + 1 for l in self.lines[:pos[0]]) + pos[1]


def _code_line(lines: list[str], near: int, avoid: set[int]) -> int:
    for dist in range(len(lines)):
        for row in (near + dist, near - dist):
            if 12 <= row < len(lines) - 4 and row not in avoid and len(lines[row].strip()) >= 24 \
                    and not lines[row].lstrip().startswith(("#", '"', "'")):
                return row
    raise SystemExit("codelsp bench: a file for --editing needs lines with 24 characters of code")


def session(texts: list[str], type_chars: int = 8, visits: int = 1) -> list[Event]:
    """The editing script over `texts` (the files' contents), as events; deterministic.

    `visits`: places visited per file (1: the middle; 2: at 35% and 70% of the file)."""
    docs = [Doc(t.split("\n")) for t in texts]
    events: list[Event] = []

    def ev(kind: str, d: int, start, end, text: str, cursor) -> None:
        docs[d].apply(start, end, text)
        events.append(Event(kind, d, start, end, text, cursor))

    def type_text(d: int, row: int, col: int, text: str) -> int:
        for ch in text:
            ev("type", d, (row, col), (row, col), ch, (row, col + 1))
            col += 1
        return col

    for d in list(range(len(docs))) + [0]:
        lines = docs[d].lines
        used: set[int] = set()
        first = True
        for frac in ((0.5,) if visits == 1 else (0.35, 0.7))[:max(visits, 1)]:
            lines = docs[d].lines
            row = _code_line(lines, int(len(lines) * frac), used)
            used.add(row)
            model_line = lines[row]
            indent = model_line[: len(model_line) - len(model_line.lstrip())]
            # open a new line above `row` (a move; the first in a file also a switch)
            ev("switch" if first else "move", d, (row, 0), (row, 0), indent + "\n", (row, len(indent)))
            first = False
            col = type_text(d, row, len(indent), model_line.strip()[:type_chars])
            ev("enter", d, (row, col), (row, col), "\n" + indent, (row + 1, len(indent)))
            row += 1
            col = type_text(d, row, len(indent), model_line.strip()[type_chars:type_chars + 4] or "x = 1")
            for _ in range(3):
                ev("delete", d, (row, col - 1), (row, col), "", (row, col - 1))
                col -= 1
            lines = docs[d].lines
            block = "\n".join(l for l in lines[row - 8:row - 6]) + "\n"
            ev("paste", d, (row, 0), (row, 0), block, (row + 2, 0))
            up = max(row - 10, 0)
            lines = docs[d].lines
            ev("move", d, (up, len(lines[up])), (up, len(lines[up])), "", (up, len(lines[up])))
            type_text(d, up, len(lines[up]), "  # x")
    return events


def cause(row: dict[str, Any]) -> str:
    """An event's cost in tokens, from `codelsp/stats`: where its document's state was before it
    (in the KV pool, in system memory, neither), and what the request restored, kept (of which
    shifted into place), evaluated and generated."""
    if row["source"] != "model":
        return row["source"]
    if row.get("inPool") is None:  # llama-server: only the prompt tokens it evaluated
        return f"evaluated {row.get('evaluated')}"
    where = (f"in pool {row['inPool']}" if row["inPool"] else
             f"evicted, {row['inHost']} in system memory" if row["inHost"] else "evicted, not saved")
    out = (f"{where}: restored {row.get('restored') or 0}, reused {row.get('reused')} "
           f"(shifted {row.get('shifted') or 0}), evaluated {row.get('evaluated')}, generated {row.get('generated')}")
    if row.get("evictions"):
        out += f"; evicted {row['evictions']} other document(s)"
    return out


def tail_cause(rows: list[dict[str, Any]], p95_ms: float) -> dict[str, Any]:
    """The tail, the events at or above the arm's p95 latency, by kind: how many, and the prompt
    tokens they evaluated (the model's work that made them slow); `cause` says it in one line,
    the kind with the most tail events first."""
    tail = [r for r in rows if r["ms"] >= p95_ms]
    kinds: dict[str, dict[str, int]] = {}
    for r in tail:
        k = kinds.setdefault(r["kind"], {"events": 0, "prompt_tokens": 0})
        k["events"] += 1
        k["prompt_tokens"] += int(r.get("evaluated") or 0) if r["source"] == "model" else 0
    order = sorted(kinds.items(), key=lambda kv: (-kv[1]["events"], -kv[1]["prompt_tokens"]))
    cause_ = ", ".join(f"{kind} {k['events']} ({k['prompt_tokens']} prompt tokens evaluated)" for kind, k in order)
    return {"events": len(tail), "by_kind": dict(order), "cause": cause_ or "none"}


@dataclass
class Arm:
    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # per event: kind, ms, source, evaluated

    def summary(self, floor_ms: float | None) -> dict[str, Any]:
        def pct(values: list[float], p: float) -> float:
            v = sorted(values)
            return round(v[min(len(v) - 1, int(round(p * (len(v) - 1))))], 1) if v else 0.0

        lat = [r["ms"] for r in self.rows]
        model_lat = [r["ms"] for r in self.rows if r["source"] == "model"]
        out: dict[str, Any] = {
            "arm": self.name, "events": len(lat), "p50_ms": pct(lat, 0.5), "p95_ms": pct(lat, 0.95),
            "max_ms": round(max(lat), 1) if lat else 0.0,
            # over the events the model answered (type-through and in-flight answers left out)
            "model_p50_ms": pct(model_lat, 0.5), "model_p95_ms": pct(model_lat, 0.95),
        }
        if floor_ms:
            for k in ("p50", "p95", "model_p50", "model_p95"):
                out[f"{k}_x_floor"] = round(out[f"{k}_ms"] / floor_ms, 2)
        kinds = {}
        for kind in KINDS:
            rs = [r for r in self.rows if r["kind"] == kind]
            if not rs:
                continue
            ev = [r["evaluated"] for r in rs if r["source"] == "model" and r.get("evaluated") is not None]
            kinds[kind] = {"events": len(rs), "p50_ms": pct([r["ms"] for r in rs], 0.5),
                           "p95_ms": pct([r["ms"] for r in rs], 0.95),
                           "model_events": len(ev),
                           "prompt_tokens_mean": round(statistics.mean(ev), 1) if ev else None,
                           "prompt_tokens_p50": pct(ev, 0.5) if ev else None,
                           "prompt_tokens_p95": pct(ev, 0.95) if ev else None,
                           "prompt_tokens_max": max(ev) if ev else None,
                           "prompt_tokens_total": sum(ev)}
            if floor_ms:
                kinds[kind]["p50_x_floor"] = round(kinds[kind]["p50_ms"] / floor_ms, 2)
                kinds[kind]["p95_x_floor"] = round(kinds[kind]["p95_ms"] / floor_ms, 2)
        out["by_kind"] = kinds
        out["tail"] = tail_cause(self.rows, out["p95_ms"])
        sources: dict[str, int] = {}
        for r in self.rows:
            sources[r["source"]] = sources.get(r["source"], 0) + 1
        out["sources"] = sources
        # the tail and its cause: the slowest 5 % of events, slowest first
        tail = sorted(self.rows, key=lambda r: -r["ms"])[:max(1, len(self.rows) // 20)]
        out["slowest"] = [{"kind": r["kind"], "ms": round(r["ms"], 1), "cause": cause(r)} for r in tail]
        out["rows"] = [{**r, "ms": round(r["ms"], 1)} for r in self.rows]
        return out


async def replay_codelsp(server_args: list[str], texts: list[str], events: list[Event],
                         env: dict[str, str] | None = None, progress: bool = False,
                         uris: list[str] | None = None, root_uri: str | None = None) -> tuple[Arm, float | None]:
    """Replay `events` against `codelsp serve`; returns the arm and the floor (ms). `progress`:
    a line per event on stderr. `uris`: the URIs of the first documents (the rest, and by
    default all, get made-up ones) and `root_uri` the workspace, so the repository context
    (completion/repo.py) can read the files the documents import."""
    from lsprotocol import types

    from codelsp.tools.lspclient import as_dict, codelsp_client, inline_params

    arm = Arm("codelsp")
    floors: list[float] = []
    async with codelsp_client(server_args, env=env, root_uri=root_uri) as client:
        uris = list(uris or []) + [f"file:///codelsp-bench/edit{i}.py" for i in range(len(uris or []), len(texts))]
        versions = [1] * len(texts)
        for uri, text in zip(uris, texts):
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        # warm-up: load the model and evaluate each file once where the session starts in it
        for i, uri in enumerate(uris):
            first = next((e for e in events if e.doc == i), None)
            if first is not None:
                await client.text_document_inline_completion_async(inline_params(uri, first.start[0], 0))
        for e in events:
            uri = uris[e.doc]
            # where this document's state is before the event (pool, system memory, evictions so far)
            pre = await client.protocol.send_request_async("codelsp/stats", {"uri": uri})
            cache = as_dict(pre.cache) if pre.cache is not None else {}
            before = (pre.cachedTokens, pre.hostTokens, cache.get("evictions", 0))
            t0 = time.perf_counter()
            if e.text or e.start != e.end:
                versions[e.doc] += 1
                rng = types.Range(start=types.Position(*e.start), end=types.Position(*e.end))
                client.text_document_did_change(types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=versions[e.doc]),
                    content_changes=[types.TextDocumentContentChangePartial(range=rng, text=e.text)]))
            await client.text_document_inline_completion_async(inline_params(uri, *e.cursor))
            ms = (time.perf_counter() - t0) * 1000
            st = await client.protocol.send_request_async("codelsp/stats", {"uri": uri})
            last = as_dict(st.last)
            row = {"kind": e.kind, "ms": ms, "source": last["source"], "evaluated": last.get("evaluated"),
                   "reused": last.get("reused"), "restored": last.get("restored"), "shifted": last.get("shifted"),
                   "generated": last.get("generated"), "inPool": before[0], "inHost": before[1],
                   "evictions": (as_dict(st.cache) or {}).get("evictions", 0) - before[2] if st.cache else None}
            if last["source"] == "model":
                floors.append(last["promptMs"] / max(last["evaluated"], 1) + last["genMs"])
            arm.rows.append(row)
            if progress:
                print(f"  {len(arm.rows):>4}/{len(events)} {e.kind:<7} {ms:>9.1f} ms  {last['source']:<12} "
                      f"{cause(row)}", file=sys.stderr, flush=True)
    return arm, (statistics.median(floors) if floors else None)


def replay_llama_server(binary: Path, model: str, texts: list[str], events: list[Event], opts: dict[str, Any],
                        progress: bool = False) -> Arm:
    """Replay `events` against llama.cpp's `llama-server`, driven as llama.vim drives it."""
    import http.client

    from codelsp.tools.llamaserver import llama_vim_command
    from codelsp.tools.procs import free_port, serving

    port = free_port()
    cmd = llama_vim_command(binary, model, port, opts)  # the codelsp arm's device and settings
    docs = [Doc(t.split("\n")) for t in texts]
    arm = Arm("llama-server")
    with serving(cmd, "llama-server", f"http://127.0.0.1:{port}/health"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

        def infill(doc: Doc, row: int, col: int) -> tuple[str, int]:
            lines = doc.lines
            body = {
                "input_prefix": "".join(l + "\n" for l in lines[max(0, row - 256):row]),
                "prompt": lines[row][:col],
                "input_suffix": lines[row][col:] + "\n" + "".join(l + "\n" for l in lines[row + 1:row + 65]),
                "input_extra": [],
                "n_predict": int(opts.get("maxTokens", 8)),
                "temperature": float(opts.get("temperature", 0.01)), "top_k": int(opts.get("topK", 40)),
                "top_p": float(opts.get("topP", 0.95)), "seed": int(opts.get("seed", 42)),
                "cache_prompt": True, "stream": False, "samplers": ["top_k", "top_p", "temperature"],
            }
            conn.request("POST", "/infill", body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = json.loads(resp.read())
            if resp.status != 200:
                raise RuntimeError(f"llama-server answered {resp.status}: {str(data)[:300]}")
            timings = data.get("timings") or {}
            return data.get("content", ""), int(timings.get("prompt_n", 0))

        for i, doc in enumerate(docs):  # warm-up, as for codelsp
            first = next((e for e in events if e.doc == i), None)
            if first is not None:
                infill(doc, first.start[0], 0)
        last: dict[int, tuple[str, int, str]] = {}  # doc -> (text before cursor, its length, suggestion)
        for e in events:
            doc = docs[e.doc]
            t0 = time.perf_counter()
            doc.apply(e.start, e.end, e.text)
            before = doc.text[: doc.offset(e.cursor)]
            hit = last.get(e.doc)
            source, evaluated = "model", None
            if hit and before.startswith(hit[0]) and hit[2].startswith(before[hit[1]:]) and len(before) - hit[1] < len(hit[2]):
                source = "typeThrough"  # llama.vim's cache: the user typed the start of the suggestion
            else:
                content, evaluated = infill(doc, *e.cursor)
                last[e.doc] = (before, len(before), content)
            arm.rows.append({"kind": e.kind, "ms": (time.perf_counter() - t0) * 1000, "source": source, "evaluated": evaluated})
            if progress:
                print(f"  {len(arm.rows):>4}/{len(events)} {e.kind:<7} {arm.rows[-1]['ms']:>9.1f} ms  {source:<12} "
                      f"evaluated {evaluated}", file=sys.stderr, flush=True)
        conn.close()
    return arm
