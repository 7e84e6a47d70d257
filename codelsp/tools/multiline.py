"""`codelsp eval --multi-line`: multi-line completion quality on real code nobody here wrote.

Cases are the bodies of functions and blocks (2 to 8 lines, at most MAX_CHARS characters of code:
what a suggestion of maxTokens 64 can hold) removed from the Python standard library files of the
running interpreter (`sysconfig.get_paths()["stdlib"]`: real code present on every machine; no
data is kept). Files are taken in sorted order, leaving out tests, site-packages and files over
MAX_FILE_BYTES; at most PER_FILE blocks a file, picked by a CRC of the file's path and the
block's line (the same every run). Only bodies whose next code line is indented less are taken:
the cursor stands where a block is expected, at the start of the removed body's first line after
its indentation (an editor's auto-indent after `:` and Enter); the rest of the file stays.

Scored (nothing is executed): exact match of the whole block (each line whitespace-normalised,
blank lines left out) and edit similarity (CrossCodeEval's: 1 - Levenshtein / longer length, of
the inserted block against the removed one, each line's trailing whitespace and blank lines left
out). `--oracle`: the best line-end cut of the model's raw output (as written and without its first
line's restated indentation), the ceiling post-processing could reach.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import dataclasses
import json
import os
import sys
import sysconfig
import time
import zlib
from pathlib import Path
from typing import Any

MIN_LINES, MAX_LINES = 2, 8
MAX_CHARS = 200  # characters of code in the block (indentation left out)
MAX_FILE_BYTES = 150_000
PER_FILE = 2
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3",
             "pydoc_data", "encodings", "turtledemo"}


@dataclasses.dataclass
class Block:
    """One case: `prompt` (lines before the hole), the hole's lines, `suffix` (lines after it)."""
    task_id: str
    prompt: str
    hole: str  # the removed lines, with their indentation, no final line break
    suffix: str

    @property
    def indent(self) -> str:
        first = self.hole.split("\n", 1)[0]
        return first[: len(first) - len(first.lstrip(" \t"))]

    @property
    def document(self) -> str:
        return self.prompt + self.indent + "\n" + self.suffix

    @property
    def cursor(self) -> tuple[int, int]:
        return self.prompt.count("\n"), len(self.indent)

    def block(self, answer: str) -> str:
        """The hole's lines once `answer` is inserted at the cursor."""
        return self.indent + answer

    def exact(self, answer: str) -> bool:
        return _lines(self.block(answer)) == _lines(self.hole)

    def similarity(self, answer: str) -> float:
        return edit_similarity(_plain(self.block(answer)), _plain(self.hole))

    def in_block(self, answer: str) -> bool:
        """Does `answer` stay in the block the cursor is in (no line indented less than the
        cursor's)? A removed body always does; a cut that leaves the block cannot be exact."""
        return all(_width(ln) >= len(self.indent) for ln in self.block(answer).split("\n") if ln.strip())


def _lines(text: str) -> list[str]:
    return [" ".join(ln.split()) for ln in text.split("\n") if ln.strip()]


def _plain(text: str) -> str:
    return "\n".join(ln.rstrip() for ln in text.split("\n") if ln.strip())


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(a: str, b: str) -> float:
    """CrossCodeEval's edit similarity: 1 - Levenshtein(a, b) / max(len(a), len(b))."""
    if not a and not b:
        return 1.0
    return 1.0 - levenshtein(a, b) / max(len(a), len(b))


# --- the cases ------------------------------------------------------------------------------

def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's Python files, sorted, without tests and huge or generated files."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if (name.endswith(".py") and not name.startswith(("test_", "_pydecimal", "_pyio"))
                    and 2_000 <= path.stat().st_size <= MAX_FILE_BYTES):
                out.append(path)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _width(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


def blocks_of(source: str, name: str) -> list[Block]:
    """The bodies in `source` that make a case (see the module's docstring), at most PER_FILE."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.split("\n")
    found: list[tuple[int, int]] = []  # (first line, last line) of the body, 0-based
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            if isinstance(node, ast.Module) or (field == "orelse" and lines[body[0].lineno - 1].lstrip().startswith("elif")):
                continue
            first, last = body[0].lineno - 1, (body[-1].end_lineno or body[-1].lineno) - 1
            if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                continue  # a docstring starts it
            if not MIN_LINES <= last - first + 1 <= MAX_LINES or first <= node.lineno - 1:
                continue  # too short or long, or on the header's line
            hole = lines[first:last + 1]
            head = lines[first]
            if (head[: _width(head)].strip() or "\t" in "".join(hole)
                    or sum(len(ln.strip()) for ln in hole) > MAX_CHARS
                    or any(not ln.strip() for ln in hole)):
                continue
            nxt = next((ln for ln in lines[last + 1:] if ln.strip() and not ln.lstrip().startswith("#")), "")
            if nxt and _width(nxt) >= _width(head):
                continue  # the block goes on: not where a block is expected
            found.append((first, last))
    found = sorted(set(found), key=lambda fl: zlib.crc32(f"{name}:{fl[0]}".encode()))
    picked: list[tuple[int, int]] = []
    for first, last in found:
        if all(last < a or first > b for a, b in picked):  # never one inside another
            picked.append((first, last))
        if len(picked) == PER_FILE:
            break
    return [Block(f"{name}:{first + 1}", "".join(ln + "\n" for ln in lines[:first]),
                  "\n".join(lines[first:last + 1]), "\n".join(lines[last + 1:]))
            for first, last in sorted(picked)]


def stdlib_blocks(root: Path | None = None) -> list[Block]:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    out: list[Block] = []
    for path in stdlib_files(root):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "\r" in source:
            continue
        out.extend(blocks_of(source, path.relative_to(root).as_posix()))
    return out


def logged_raw(path: Path, error: type[Exception]) -> dict[str, Any]:
    """{case id: eval.Raw} from the "oracle" lines of a `--log` file of an `--oracle` run (the raw
    text, the text after each token, why it stopped and the pipeline's DocContext): what replaying
    post-processing needs, without the model. The last line of a case wins."""
    from codelsp.completion.context import DocContext
    from codelsp.tools.eval import Raw

    out: dict[str, Any] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    d = json.loads(line)
                    if d.get("stage") == "oracle" and "prefixes" in d:
                        out[d["task"]] = Raw(d["raw"], d["prefixes"], d["reason"], DocContext(**d["ctx"]))
                except (ValueError, KeyError, TypeError) as exc:
                    raise error(f"{path}:{n}: not an --oracle log line ({exc.__class__.__name__}: {exc})") from None
    except OSError as exc:
        raise error(f"--replay-log: cannot read {path}: {exc}") from None
    return out


# --- the run --------------------------------------------------------------------------------

def run_multiline(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """`codelsp eval --multi-line`: codelsp through its server, and `--oracle`, on stdlib blocks."""
    from codelsp.completion.postprocess import RULES
    from codelsp.models.errors import ModelError
    from codelsp.models.modelfile import resolve_model
    from codelsp.tools.eval import (EvalError, Progress, ablate_rules, _codelsp_answers, _server_args, oracle_candidates,
                                    oracle_raw, replay_generation, select)
    from codelsp.tools.evalserver import find_server_bin, server_answers

    root = Path(args.file or args.path or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise EvalError(f"--multi-line takes a folder of Python files (default the standard library), not {root}")
    tasks = select(stdlib_blocks(root), args.task, args.every, args.limit)
    logged: dict[str, Any] = {}
    if args.replay_log:
        logged = logged_raw(Path(args.replay_log), EvalError)
        tasks = [t for t in tasks if t.task_id in logged]  # the cases the recorded run got to
        if not tasks:
            raise EvalError(f"--replay-log: {args.replay_log} holds no oracle generation of the selected cases")
        args.oracle_only = True
    options = dict(options)
    options.setdefault("temperature", 0.0)
    options.setdefault("timeoutMs", 600_000)
    ablate = ablate_rules(args.ablate)
    try:
        model_path, _ = resolve_model(options.get("model"))
    except ModelError as exc:
        raise EvalError(str(exc)) from None
    log_file = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    per_task: dict[str, dict[str, Any]] = {t.task_id: {"task": t.task_id, "hole": t.hole} for t in tasks}
    n = len(tasks)
    report: dict[str, Any] = {"source": str(root), "tasks": n, "model": str(model_path), "ablate": ablate,
                              "fim_order": options.get("fimOrder", "auto"), "replay_log": args.replay_log}

    def record(stage: str, task: Block, **fields: Any) -> None:
        if log_file is not None:
            log_file.write(json.dumps({"stage": stage, "task": task.task_id, **fields}) + "\n")
            log_file.flush()

    bar = Progress("oracle" if args.oracle_only else "codelsp", n, False)
    sums = {"exact": 0, "es": 0.0}

    def on_answer(task: Block, answer: str, replace: int = 0) -> None:
        exact, es = task.exact(answer), task.similarity(answer)
        sums["exact"] += exact
        sums["es"] += es
        per_task[task.task_id].update(answer=answer, exact=exact, es=round(es, 3))
        record("codelsp", task, answer=answer, exact=exact, es=round(es, 3))
        bar.step(exact)

    t0 = time.monotonic()
    if not args.oracle_only:
        server_args = _server_args(options) + (["--ablate", ",".join(ablate)] if ablate else [])
        asyncio.run(_codelsp_answers(server_args, tasks, dict(os.environ), on_answer))  # type: ignore[arg-type]
    seconds = round(time.monotonic() - t0, 1)

    if args.oracle or args.oracle_only:
        if not args.oracle_only:
            bar = Progress("oracle", n, False)
        max_tokens = int(options.get("maxTokens") or 64)
        variants = {"all rules": (), **{f"without {r}": (r,) for r in RULES}, "no rules": RULES}
        rule_exact = dict.fromkeys(variants, 0)
        rule_es = dict.fromkeys(variants, 0.0)
        rule_tokens = dict.fromkeys(variants, 0)  # tokens generated before the pipeline stops
        best_exact, best_es, block_es, agree = 0, 0.0, 0.0, 0
        t0 = time.monotonic()
        raws = ((t, logged[t.task_id]) for t in tasks) if logged else oracle_raw(options, tasks, args.oracle_tokens)  # type: ignore[arg-type]
        for task, raw in raws:
            cuts = oracle_candidates(raw.text)
            ok = any(task.exact(c) for c in cuts)
            es = max(task.similarity(c) for c in cuts)
            inside = max(task.similarity(c) for c in [*(c for c in cuts if task.in_block(c)), ""])
            best_exact += ok
            best_es += es
            block_es += inside
            info = per_task[task.task_id]
            info.update(raw=raw.text, solvable=ok, best_es=round(es, 3), best_es_in_block=round(inside, 3))
            for name, off in variants.items():
                answer, used = replay_generation(raw, max_tokens, tuple(off) + tuple(ablate))
                rule_tokens[name] += used
                if name == "all rules":
                    agree += answer == info.get("answer")
                    if args.oracle_only:
                        on_answer(task, answer)
                    info["replayed"] = answer
                rule_exact[name] += task.exact(answer)
                rule_es[name] += task.similarity(answer)
            record("oracle", task, raw=raw.text, solvable=ok, best_es=round(es, 3), reason=raw.reason,
                   prefixes=raw.prefixes, ctx=dataclasses.asdict(raw.ctx))  # enough to replay the rules offline
            if not args.oracle_only:
                bar.step(ok)
        report["oracle"] = {"exact": best_exact, "exact_match": best_exact / n, "edit_similarity": best_es / n,
                            "tokens": args.oracle_tokens, "seconds": round(time.monotonic() - t0, 1),
                            "share_exact": sums["exact"] / best_exact if best_exact else None,
                            "share_es": sums["es"] / best_es if best_es else None,
                            # the same ceiling over the cuts that stay in the cursor's block (see Block.in_block)
                            "edit_similarity_in_block": block_es / n,
                            "share_es_in_block": sums["es"] / block_es if block_es else None}
        report["rules"] = {"replayed_exact": rule_exact, "replayed_es": {k: v / n for k, v in rule_es.items()},
                           "replayed_tokens": {k: v / n for k, v in rule_tokens.items()},
                           "replay_agrees_with_server": None if args.oracle_only else agree}
    report["codelsp"] = {"exact": sums["exact"], "exact_match": sums["exact"] / n, "edit_similarity": sums["es"] / n,
                         "seconds": seconds, "replayed": bool(args.oracle_only)}
    if args.compare_server:
        binary = find_server_bin(args.server_bin)
        if binary is None:
            raise EvalError("--compare-server: no llama-server binary (build one, see README, or pass --server-bin)")
        bar = Progress("llama-server", n, False)
        s_exact, s_es, t0 = 0, 0.0, time.monotonic()
        for task, answer in server_answers(binary, str(model_path), tasks, options, EvalError):
            exact, es = task.exact(answer), task.similarity(answer)
            s_exact += exact
            s_es += es
            per_task[task.task_id].update(server_answer=answer, server_exact=exact, server_es=round(es, 3))
            record("llama-server", task, answer=answer, exact=exact, es=round(es, 3))
            bar.step(exact)
        report["llama_server"] = {"binary": binary, "exact": s_exact, "exact_match": s_exact / n,
                                  "edit_similarity": s_es / n, "seconds": round(time.monotonic() - t0, 1),
                                  "codelsp_ratio_exact": sums["exact"] / s_exact if s_exact else None,
                                  "codelsp_ratio_es": sums["es"] / s_es if s_es else None}
    if log_file is not None:
        log_file.close()
    if args.json:
        report["per_task"] = list(per_task.values())
        print(json.dumps(report, indent=2))
        return 0
    c = report["codelsp"]
    print(f"{n} multi-line blocks from {root}, model {model_path.name}, fimOrder {report['fim_order']}"
          + (f", rules off: {','.join(ablate)}" if ablate else ""))
    print(f"codelsp        exact {100 * c['exact_match']:5.1f}% ({c['exact']}/{n})   edit similarity {c['edit_similarity']:.3f}")
    if "oracle" in report:
        o = report["oracle"]
        share = ""
        if o["share_es"] is not None:
            share = (f"   codelsp = {100 * o['share_es']:.0f}% of it (edit similarity)"
                     + (f", {100 * o['share_exact']:.0f}% (exact)" if o["share_exact"] is not None else ""))
        print(f"line-cut ceiling exact {100 * o['exact_match']:5.1f}% ({o['exact']}/{n})   edit similarity "
              f"{o['edit_similarity']:.3f}{share}")
        if o["share_es_in_block"] is not None:
            print(f"  cuts in the cursor's block only: edit similarity {o['edit_similarity_in_block']:.3f}   "
                  f"codelsp = {100 * o['share_es_in_block']:.0f}% of it")
        r = report["rules"]
        agreed = r["replay_agrees_with_server"]
        print("post-processing rules replayed on the raw generations"
              + (f" (agrees with the server on {agreed}/{n} answers):" if agreed is not None else ":"))
        for name, value in r["replayed_exact"].items():
            print(f"  {name:<18} exact {value:4d}/{n}   edit similarity {r['replayed_es'][name]:.3f}   "
                  f"tokens generated {r['replayed_tokens'][name]:.1f}")
    if "llama_server" in report:
        s = report["llama_server"]
        ratio = f"   codelsp = {s['codelsp_ratio_es']:.2f}x (edit similarity)" if s["codelsp_ratio_es"] else ""
        if s["codelsp_ratio_exact"] is not None:
            ratio += f", {s['codelsp_ratio_exact']:.2f}x (exact)"
        print(f"llama-server   exact {100 * s['exact_match']:5.1f}% ({s['exact']}/{n})   edit similarity "
              f"{s['edit_similarity']:.3f}{ratio}")
    sys.stdout.flush()
    return 0
