"""The keystroke replay of `codelsp bench`: type a line back into documents open in a real server.

`run_replays` starts `codelsp serve` over stdio, opens copies of a source file, deletes the text of
a line in the middle of each and types it back one character at a time, asking for an inline
completion after every keystroke: first in one document, then round-robin over all of them.
Latency is measured by the client, token counts come from the server (`codelsp/stats`), resident
memory from /proc. bench.py runs it with and without the prompt cache, and for `--switching`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types

from codelsp.tools.lspclient import as_dict, codelsp_client, inline_params


@dataclass
class Replay:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)
    restored: list[int] = field(default_factory=list)  # tokens copied back from system memory
    generated: list[int] = field(default_factory=list)
    floor_ms: list[float] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    model_latencies_ms: list[float] = field(default_factory=list)  # keystrokes the model answered
    rss_start_mib: float | None = None  # the server's resident memory before and after the replay
    rss_end_mib: float | None = None
    rss_max_mib: float | None = None  # the largest resident memory seen after a keystroke
    cache: dict[str, Any] | None = None  # the server's `cache` stats at the end (both tiers)

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
            "p50_model_ms": round(statistics.median(self.model_latencies_ms), 2) if self.model_latencies_ms else 0.0,
            "model_keystrokes": model_ks,
            "sources": self.sources,
            "evaluated_per_keystroke": round(ev, 2),
            "restored_per_keystroke": round(statistics.mean(self.restored), 2) if self.restored else 0.0,
            "restores": sum(1 for r in self.restored if r),
            "generated_per_keystroke": round(gen, 2),
            "tokens_per_keystroke": round(ev + gen, 2),
            "floor_tokens": round(floor_tokens, 2),
            "floor_ms_p50": round(statistics.median(self.floor_ms), 2) if self.floor_ms else 0.0,
            "server_rss_start_mib": self.rss_start_mib,
            "server_rss_end_mib": self.rss_end_mib,
            "server_rss_max_mib": self.rss_max_mib,
            "cache": self.cache,
        }


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of a process (Linux /proc), in MiB; None where it cannot be read."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def pick_line(text: str, avoid: set[int] = frozenset()) -> int:
    """A line near the middle with enough code on it to type."""
    lines = text.split("\n")
    mid = len(lines) // 2
    for dist in range(len(lines)):
        for row in (mid + dist, mid - dist):
            if 0 <= row < len(lines) and row not in avoid and len(lines[row].strip()) >= 20:
                return row
    raise SystemExit("codelsp bench: the file has no line with 20 characters of code to type")


DOC_NAMES = {3: "three documents", 5: "five documents"}


async def run_replays(server_args: list[str], text: str, keystrokes: int, env: dict[str, str] | None = None,
                      n_docs: int = 3) -> list[Replay]:
    """Type in one document, then round-robin over `n_docs` documents (copies of `text`, each
    typed at its own line); the round-robin types `keystrokes` characters in all when n_docs > 3."""
    async with codelsp_client(server_args, env=env) as client:
        uris = [f"file:///codelsp-bench/doc{i}.py" for i in range(n_docs)]
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
            last = as_dict(st.last)
            replay.sources[last["source"]] = replay.sources.get(last["source"], 0) + 1
            rss = rss_mib(pid)
            if rss is not None:
                replay.rss_max_mib = max(replay.rss_max_mib or 0.0, rss)
            if st.cache is not None:
                replay.cache = as_dict(st.cache)
            if last["source"] == "model":
                replay.model_latencies_ms.append(replay.latencies_ms[-1])
                replay.evaluated.append(last["evaluated"])
                replay.restored.append(last.get("restored", 0))
                replay.generated.append(last["generated"])
                per_token = last["promptMs"] / max(last["evaluated"], 1)
                replay.floor_ms.append(per_token + last["genMs"])

        server = getattr(client, "_server", None)
        pid = getattr(server, "pid", None)

        # warm-up: load the model and evaluate each document once (an editor does this on open)
        for uri in uris:
            d = docs[uri]
            await client.text_document_inline_completion_async(inline_params(uri, d["row"], d["col"]))

        one = Replay("one document", rss_start_mib=rss_mib(pid))
        first = uris[0]
        half = len(docs[first]["target"]) // 2
        for _ in range(half):
            await keystroke(first, one)
        one.rss_end_mib = rss_mib(pid)
        three = Replay(DOC_NAMES.get(n_docs, f"{n_docs} documents"), rss_start_mib=rss_mib(pid))
        n = min(len(docs[u]["target"]) - docs[u]["typed"] for u in uris)
        if len(uris) > 3:
            n = min(n, max(1, keystrokes // len(uris)))
        for _ in range(n):
            for uri in uris:
                await keystroke(uri, three)
        three.rss_end_mib = rss_mib(pid)
    return [one, three]
