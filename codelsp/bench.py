"""`codelsp bench`: replay typing against the real server and measure keystroke latency.

It starts `codelsp serve` over stdio (as an editor does), opens a source file, deletes the text of
a line in the middle and types it back one character at a time, asking for an inline completion
after every keystroke. Then it does the same while alternating between three open documents. Each
replay runs once with the prompt cache and once with `--no-prompt-cache`, in the same run, and the
table compares them. Token counts come from the server (`codelsp/stats`), latency from the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lsprotocol import types

SAMPLE = Path(__file__).parent / "examples" / "bench_sample.py"


def add_bench_parser(sub: Any, model_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    b = sub.add_parser("bench", help="measure keystroke-to-suggestion latency with and without the prompt cache")
    b.add_argument("file", nargs="?", help=f"source file to type in (default: {SAMPLE.name}, about 1,500 tokens)")
    b.add_argument("--keystrokes", type=int, default=40, help="characters to type per replay (default 40)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    model_flags(b)


@dataclass
class Replay:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    floor_ms: list[float] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        model_ks = len(self.evaluated)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))] if lat else 0.0

        ev = statistics.mean(self.evaluated) if self.evaluated else 0.0
        gen = statistics.mean(self.generated) if self.generated else 0.0
        floor_tokens = 1 + gen  # one new token per keystroke plus what is generated
        return {
            "replay": self.name,
            "keystrokes": len(lat),
            "p50_ms": round(pct(0.5), 2),
            "p95_ms": round(pct(0.95), 2),
            "model_keystrokes": model_ks,
            "sources": self.sources,
            "evaluated_per_keystroke": round(ev, 2),
            "generated_per_keystroke": round(gen, 2),
            "tokens_per_keystroke": round(ev + gen, 2),
            "floor_tokens": round(floor_tokens, 2),
            "floor_ms_p50": round(statistics.median(self.floor_ms), 2) if self.floor_ms else 0.0,
        }


def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )


def pick_line(text: str, avoid: set[int] = frozenset()) -> int:
    """A line near the middle with enough code on it to type."""
    lines = text.split("\n")
    mid = len(lines) // 2
    for dist in range(len(lines)):
        for row in (mid + dist, mid - dist):
            if 0 <= row < len(lines) and row not in avoid and len(lines[row].strip()) >= 20:
                return row
    raise SystemExit("codelsp bench: the file has no line with 20 characters of code to type")


async def run_replays(server_args: list[str], text: str, keystrokes: int) -> list[Replay]:
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("codelsp-bench", "1")

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def _log(params: types.LogMessageParams) -> None:  # the server's own stderr has them too
        pass

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def _show(params: types.ShowMessageParams) -> None:
        print(f"codelsp bench: server says: {params.message}", file=sys.stderr)

    await client.start_io(sys.executable, "-m", "codelsp", "serve", *server_args)
    try:
        await client.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities(), process_id=os.getpid()))
        client.initialized(types.InitializedParams())
        uris = [f"file:///codelsp-bench/doc{i}.py" for i in range(3)]
        rows: list[int] = []
        for _ in uris:
            rows.append(pick_line(text, set(rows)))
        docs = {}
        for uri, row in zip(uris, rows):
            lines = text.split("\n")
            line = lines[row]
            indent = len(line) - len(line.lstrip())
            target = line[indent:][:keystrokes]
            lines[row] = line[:indent]
            body = "\n".join(lines)
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=body)))
            docs[uri] = {"row": row, "col": indent, "target": target, "typed": 0, "version": 1}

        async def keystroke(uri: str, replay: Replay) -> None:
            d = docs[uri]
            ch = d["target"][d["typed"]]
            pos = types.Position(line=d["row"], character=d["col"] + d["typed"])
            d["version"] += 1
            t0 = time.perf_counter()
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=d["version"]),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=ch)]))
            d["typed"] += 1
            await client.text_document_inline_completion_async(inline_params(uri, d["row"], d["col"] + d["typed"]))
            replay.latencies_ms.append((time.perf_counter() - t0) * 1000)
            st = await client.protocol.send_request_async("codelsp/stats", {"uri": uri})
            last = st.last._asdict() if hasattr(st.last, "_asdict") else dict(st.last)
            replay.sources[last["source"]] = replay.sources.get(last["source"], 0) + 1
            if last["source"] == "model":
                replay.evaluated.append(last["evaluated"])
                replay.generated.append(last["generated"])
                per_token = last["promptMs"] / max(last["evaluated"], 1)
                replay.floor_ms.append(per_token + last["genMs"])

        # warm-up: load the model and evaluate each document once (an editor does this on open)
        for uri in uris:
            d = docs[uri]
            await client.text_document_inline_completion_async(inline_params(uri, d["row"], d["col"]))

        one = Replay("one document")
        first = uris[0]
        half = len(docs[first]["target"]) // 2
        for _ in range(half):
            await keystroke(first, one)
        three = Replay("three documents")
        n = min(len(docs[u]["target"]) - docs[u]["typed"] for u in uris)
        for _ in range(n):
            for uri in uris:
                await keystroke(uri, three)
        await client.shutdown_async(None)
        client.exit(None)
        return [one, three]
    finally:
        await client.stop()


def run_bench(args: argparse.Namespace, options: dict[str, Any]) -> int:
    path = Path(args.file) if args.file else SAMPLE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"codelsp bench: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    flags: list[str] = []
    opts = dict(options)
    opts.setdefault("maxTokens", 8)
    opts.pop("promptCache", None)
    for key, value in opts.items():
        name = {"contextSize": "ctx", "nThreads": "threads"}.get(key, None)
        flag = "--" + (name or "".join("-" + c.lower() if c.isupper() else c for c in key))
        flags += [flag, str(value)]
    results = {}
    for mode, extra in (("cached", []), ("no-prompt-cache", ["--no-prompt-cache"])):
        if not args.json:
            print(f"replaying {args.keystrokes} keystrokes in {path.name} ({mode}) ...", file=sys.stderr)
        replays = asyncio.run(run_replays(flags + extra, text, args.keystrokes))
        results[mode] = [r.summary() for r in replays]
    cached, base = results["cached"], results["no-prompt-cache"]
    report = {
        "file": str(path),
        "settings": opts,
        "results": results,
        "speedup_p50_one_document": round(base[0]["p50_ms"] / cached[0]["p50_ms"], 2) if cached[0]["p50_ms"] else None,
        "speedup_p50_three_documents": round(base[1]["p50_ms"] / cached[1]["p50_ms"], 2) if cached[1]["p50_ms"] else None,
        "three_vs_one_document_p50": round(cached[1]["p50_ms"] / cached[0]["p50_ms"], 2) if cached[0]["p50_ms"] else None,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    header = (f"{'mode':<16} {'replay':<16} {'keys':>5} {'p50 ms':>8} {'p95 ms':>8} {'prompt tok':>10} "
              f"{'tok/key':>8} {'floor tok':>9} {'floor ms':>9}  answered by")
    print(header)
    print("-" * len(header))
    for mode, rows in results.items():
        for r in rows:
            src = ", ".join(f"{k} {v}" for k, v in sorted(r["sources"].items()))
            print(f"{mode:<16} {r['replay']:<16} {r['keystrokes']:>5} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
                  f"{r['evaluated_per_keystroke']:>10.1f} {r['tokens_per_keystroke']:>8.1f} {r['floor_tokens']:>9.1f} "
                  f"{r['floor_ms_p50']:>9.1f}  {src}")
    print()
    print("prompt tok: prompt tokens evaluated per model keystroke; tok/key: evaluated + generated;")
    print("floor: one new token + the generated ones (tokens), and the server's time for exactly that (ms)")
    print(f"speed-up of the prompt cache (p50): {report['speedup_p50_one_document']}x on one document, "
          f"{report['speedup_p50_three_documents']}x alternating between three")
    print(f"three documents vs one (cached p50): {report['three_vs_one_document_p50']}x")
    return 0
