"""`codelsp eval`: completion quality on HumanEval infilling tasks, the way an editor sees them.

Tasks come from a HumanEval-infilling JSONL file (Bavarian et al. 2022, "Efficient Training of
Language Models to Fill in the Middle", MIT licence; plain or gzip). For each task the document
is the task's `prompt`, the hole's first-line indentation and then its `suffix`; the cursor stands
after the indentation (an editor that auto-indents shows exactly that). The answer comes from
`textDocument/inlineCompletion` of a real `codelsp serve` over stdio, and the inserted text runs
against the task's tests in a subprocess: `prompt + indentation + answer + "\\n" + suffix + test +
check(entry_point)`, in a temporary folder, without network where `unshare` allows, killed after
`--timeout` seconds. A task passes when that program exits 0.

Reported, per set of tasks:
- pass@1: greedy (temperature 0 unless given) answers that pass;
- exact line: answers equal to the canonical line (whitespace-normalised);
- `--oracle`: the model's raw generation for the same prompt (no post-processing, maxTokens
  `--oracle-tokens`) counts a task as solvable when any cut of it at a line end passes (also
  with its first line's restated indentation removed): the ceiling post-processing could reach
  with that model and layout;
- `--compare-server`: the same tasks through llama.cpp's `llama-server` `/infill`, asked
  llama.vim's way (`input_prefix` = the lines above, `prompt` = the line head, `input_suffix`,
  `n_indent`, its samplers), on the same model.
- `--ablate RULE,...`: the server runs with those post-processing rules off
  (completion/postprocess.py RULES), to show what each rule is worth.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from codelsp.tools.evalserver import SERVER_CACHE, find_server_bin, server_answers

DEFAULT_TASKS = Path("..") / "shared" / "heval" / "HumanEval-SingleLineInfilling.jsonl.gz"


class EvalError(Exception):
    """A one-line reason the evaluation cannot run."""


@dataclasses.dataclass
class Task:
    task_id: str
    prompt: str
    suffix: str
    canonical: str  # the hole: one line with its indentation (no line break)
    test: str
    entry_point: str
    # --mid-line: the hole is the inside of one bracket pair (or string) of the line, the
    # cursor after its opener, the line's text from the closer on after the cursor (an editor
    # that closed the bracket as it was typed); None: the whole line is the hole
    cut: int | None = None  # cursor column in `canonical`
    close: int | None = None  # where the line's text after the cursor starts in `canonical`

    @property
    def indent(self) -> str:
        return self.canonical[: len(self.canonical) - len(self.canonical.lstrip(" \t"))]

    @property
    def head(self) -> str:
        return self.indent if self.cut is None else self.canonical[: self.cut]

    @property
    def rest(self) -> str:
        return "" if self.close is None else self.canonical[self.close:]

    @property
    def document(self) -> str:
        return self.prompt + self.head + self.rest + "\n" + self.suffix

    @property
    def cursor(self) -> tuple[int, int]:
        """(line, character) of the cursor: after the hole line's indentation (ASCII)."""
        return self.prompt.count("\n"), len(self.head)

    def line(self, answer: str, replace: int = 0) -> str:
        """The hole's line once the item (`answer` over `replace` characters after the cursor) is in."""
        return self.head + answer + self.rest[replace:]

    def program(self, answer: str, replace: int = 0) -> str:
        return (self.prompt + self.line(answer, replace) + "\n" + self.suffix + "\n" + self.test
                + f"\n\ncheck({self.entry_point})\n")

    def exact(self, answer: str, replace: int = 0) -> bool:
        return " ".join(self.line(answer, replace).split()) == " ".join(self.canonical.split())


def mid_line(tasks: list[Task]) -> list[Task]:
    """The tasks whose line holds a bracket pair or string with something inside, each cut inside
    one of them (picked by the task id's CRC, so the same every run)."""
    import zlib

    out: list[Task] = []
    for t in tasks:
        pairs: list[tuple[int, int]] = []
        stack: list[int] = []
        quote: tuple[int, str] | None = None
        line = t.canonical
        for i, ch in enumerate(line):
            if quote:
                if ch == quote[1]:
                    pairs.append((quote[0], i))
                    quote = None
            elif ch in "'\"":
                quote = (i, ch)
            elif ch in "([{":
                stack.append(i)
            elif ch in ")]}" and stack:
                pairs.append((stack.pop(), i))
        pairs = sorted(p for p in pairs if p[1] > p[0] + 1)
        if pairs:
            a, b = pairs[zlib.crc32(t.task_id.encode()) % len(pairs)]
            out.append(dataclasses.replace(t, cut=a + 1, close=b))
    return out


def add_eval_parser(sub: Any, model_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    e = sub.add_parser("eval", help="measure completion quality (pass@1) on HumanEval infilling tasks through the real server")
    e.add_argument("file", nargs="?", help=f"tasks (.jsonl or .jsonl.gz); default: {DEFAULT_TASKS} from the project folder")
    e.add_argument("--path", dest="path", help="same as FILE")
    e.add_argument("--limit", type=int, metavar="N", help="at most N tasks (after --task and --every)")
    e.add_argument("--every", type=int, default=1, metavar="K", help="every K-th task (a spread-out subset; default 1)")
    e.add_argument("--task", action="append", metavar="REGEX", help="only task ids matching REGEX (repeatable)")
    e.add_argument("--json", action="store_true", help="print the result as JSON (per task too)")
    e.add_argument("--log", metavar="FILE", help="append each task's result to FILE as a JSON line as soon as it is known")
    e.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds a task's tests may run (default 10)")
    e.add_argument("--oracle", action="store_true",
                   help="also the ceiling: raw generation (no post-processing) solvable at any line end")
    e.add_argument("--oracle-tokens", type=int, default=128, metavar="N", help="generation budget for --oracle (default 128)")
    e.add_argument("--compare-server", action="store_true",
                   help="also ask llama.cpp's llama-server /infill the llama.vim way, on the same model")
    e.add_argument("--server-bin", metavar="PATH", help=f"llama-server binary (default: {SERVER_CACHE}/*/llama-server, then PATH)")
    e.add_argument("--mid-line", action="store_true",
                   help="cut each task's line inside a bracket pair or string, the line's rest after the cursor (tasks without one are left out)")
    e.add_argument("--ablate", metavar="RULES", help="comma-separated post-processing rules to turn off (oneline,block,blank,suffix,indent,unfinished,closecut)")
    e.add_argument("--multi-line", action="store_true",
                   help="multi-line blocks removed from the standard library's files (or FILE: a folder of Python files), "
                        "scored by exact match and edit similarity (tools/multiline.py)")
    e.add_argument("--cross-file", action="store_true",
                   help="lines that use names defined in another file of real projects (sdists fetched into the cache; "
                        "or FILE: a folder of projects), exact match and edit similarity with no context, "
                        "extraContextTokens, the repository context and llama-server (tools/crossfile.py)")
    e.add_argument("--configs", metavar="LIST", help="with --cross-file: the arms to run (default none,extra,repo,server; also oracle: the definitions the removed line uses, the ceiling of choosing context)")
    e.add_argument("--resume", action="store_true",
                   help="with --cross-file and --log: answers the log already holds (same model and options) are "
                        "scored, not asked again; a long run can go on where it stopped")
    e.add_argument("--next-edit", action="store_true",
                   help="next-edit prediction on edit sequences from consecutive package releases, against FIM at the "
                        "cursor and no edit (tools/nexteval.py)")
    e.add_argument("--rescore", metavar="LOG", help="with --next-edit: score a --log file's answers again with the current parser "
                   "and threshold, without the model")
    e.add_argument("--oracle-only", action="store_true",
                   help="with --multi-line: no server run; codelsp's answer is the pipeline replayed on the oracle's "
                        "raw generation (what greedy decoding gives; half the model time)")
    e.add_argument("--replay-log", metavar="LOG", help="with --multi-line: no model; the oracle's raw generations come from "
                   "LOG (the --log of an --oracle run), post-processing replayed on them with today's rules")
    model_flags(e)


# --- tasks ------------------------------------------------------------------------------------

def find_tasks_file(given: str | None) -> Path:
    if given:
        path = Path(given).expanduser()
    else:
        # ../shared/heval/... beside the project folder (or beside a folder above it: worktrees)
        root = Path(__file__).resolve().parents[2]
        path = root / DEFAULT_TASKS
        for parent in (root, *root.parents, Path.cwd()):
            if (parent / DEFAULT_TASKS.relative_to("..")).is_file():
                path = parent / DEFAULT_TASKS.relative_to("..")
                break
    if not path.is_file():
        raise EvalError(f"no task file at {path} (pass FILE or --path)")
    return path


def load_tasks(path: Path) -> list[Task]:
    opener = gzip.open if path.suffix == ".gz" else open
    tasks: list[Task] = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    tasks.append(Task(d["task_id"], d["prompt"], d["suffix"],
                                      d["canonical_solution"].rstrip("\n"), d["test"], d["entry_point"]))
                except (ValueError, KeyError, TypeError) as exc:
                    raise EvalError(f"{path}:{n}: not a HumanEval-infilling task ({exc.__class__.__name__}: {exc})") from None
    except (OSError, EOFError) as exc:
        raise EvalError(f"cannot read {path}: {exc}") from None
    if not tasks:
        raise EvalError(f"{path} holds no tasks")
    return tasks


def select(tasks: list[Task], patterns: list[str] | None, every: int, limit: int | None) -> list[Task]:
    if patterns:
        try:
            rx = [re.compile(p) for p in patterns]
        except re.error as exc:
            raise EvalError(f"--task: bad regular expression: {exc}") from None
        tasks = [t for t in tasks if any(r.search(t.task_id) for r in rx)]
    if every < 1:
        raise EvalError("--every must be at least 1")
    tasks = tasks[::every]
    if limit is not None:
        if limit < 1:
            raise EvalError("--limit must be at least 1")
        tasks = tasks[:limit]
    if not tasks:
        raise EvalError("no task matches the selection")
    return tasks


# --- running a task's tests -------------------------------------------------------------------

_UNSHARE: bool | None = None


def _no_network_prefix() -> list[str]:
    """`unshare -rn` (a new network namespace without interfaces) where it works, else nothing."""
    global _UNSHARE
    if _UNSHARE is None:
        exe = shutil.which("unshare")
        _UNSHARE = False
        if exe:
            try:
                _UNSHARE = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
            except (OSError, subprocess.SubprocessError):
                _UNSHARE = False
    return ["unshare", "-rn"] if _UNSHARE else []


def passes(program: str, timeout: float) -> bool:
    """Run `program` with this Python in a fresh temporary folder; True when it exits 0 in time."""
    with tempfile.TemporaryDirectory(prefix="codelsp-eval-") as tmp:
        path = Path(tmp) / "task.py"
        path.write_text(program, encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "HOME": tmp, "TMPDIR": tmp}
        proc = subprocess.Popen(
            [*_no_network_prefix(), sys.executable, "-I", str(path)], cwd=tmp, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            return False
        finally:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()


def line_cuts(raw: str) -> list[str]:
    """Every prefix of `raw` that ends at a line end (before a line break, or at its end)."""
    cuts = [raw[:i] for i, c in enumerate(raw) if c == "\n"]
    cuts.append(raw)
    return list(dict.fromkeys(cuts))


def oracle_candidates(raw: str) -> list[str]:
    """What the oracle tries: every line-end cut of the raw generation, as written and with the
    first line's leading whitespace removed (a model that restates the indentation the cursor's
    line already has; post-processing may fix that, so the ceiling must allow it too)."""
    stripped = raw.lstrip(" \t")
    return list(dict.fromkeys(line_cuts(raw) + (line_cuts(stripped) if stripped != raw else [])))


# --- progress ---------------------------------------------------------------------------------

class Progress:
    def __init__(self, label: str, total: int, quiet: bool):
        self.label, self.total, self.quiet = label, total, quiet
        self.done = self.passed = 0
        self.t0 = time.monotonic()

    def step(self, ok: bool) -> None:
        """One task done: redraw the bar on a terminal; elsewhere (a log) a line every tenth."""
        self.done += 1
        self.passed += ok
        if self.quiet:
            return
        tty = sys.stderr.isatty()
        if not tty and self.done != self.total and self.done % max(1, self.total // 10):
            return
        width = 30
        fill = width * self.done // self.total
        rate = (time.monotonic() - self.t0) / self.done
        eta = rate * (self.total - self.done)
        sys.stderr.write(f"{chr(13) if tty else ''}{self.label:<14} [{'#' * fill}{'.' * (width - fill)}] "
                         f"{self.done}/{self.total} pass {self.passed} ({100 * self.passed / self.done:.0f}%) "
                         f"eta {eta:.0f}s ")
        if self.done == self.total or not tty:
            sys.stderr.write("\n")
        sys.stderr.flush()


# --- codelsp through its LSP server -----------------------------------------------------------

async def _codelsp_answers(server_args: list[str], tasks: list[Task], env: dict[str, str],
                           on_answer: Callable[[Task, str, int], None]) -> None:
    from lsprotocol import types

    from codelsp.tools.lspclient import codelsp_client, inline_params, inline_texts

    problems: list[str] = []

    def show(params: types.ShowMessageParams) -> None:
        if params.type == types.MessageType.Error:
            problems.append(params.message)

    async with codelsp_client(server_args, name="codelsp-eval", env=env, on_show=show) as client:
        for n, task in enumerate(tasks):
            uri = f"file:///codelsp-eval/{n}.py"
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=task.document)))
            line, col = task.cursor
            result = await client.text_document_inline_completion_async(inline_params(uri, line, col))
            if problems:
                raise EvalError(problems[0])
            answer = (inline_texts(result) or [""])[0]
            replace = 0
            items = result.items if result is not None and not isinstance(result, list) else (result or [])
            if items and items[0].range is not None:  # the editor replaces the item's range
                replace = items[0].range.end.character - items[0].range.start.character
            client.text_document_did_close(types.DidCloseTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=uri)))
            on_answer(task, answer, replace)


# the settings `codelsp eval` passes on to its server (the flags are settings.py's)
_SERVER_KEYS = ("model", "contextSize", "maxTokens", "temperature", "topK", "topP", "repeatPenalty", "seed",
                "fimTemplate", "fimOrder", "timeoutMs", "nThreads", "nGpuLayers", "logLevel", "backend", "url")


def ablate_rules(text: str | None) -> list[str]:
    """The post-processing rules `--ablate RULE,...` turns off; EvalError naming an unknown one."""
    from codelsp.completion.postprocess import RULES

    ablate = [r.strip() for r in (text or "").split(",") if r.strip()]
    unknown = [r for r in ablate if r not in RULES]
    if unknown:
        raise EvalError(f"--ablate: unknown rule(s) {', '.join(unknown)}; known: {', '.join(RULES)}")
    return ablate


def _server_args(options: dict[str, Any]) -> list[str]:
    from codelsp.settings import flag_args

    return flag_args({k: options[k] for k in (*_SERVER_KEYS, "promptCache") if options.get(k) is not None})


# --- the oracle: raw generation, cut at any line end --------------------------------------------

@dataclasses.dataclass
class Raw:
    """The model's raw generation for a task, with what is needed to replay post-processing."""
    text: str
    prefixes: list[str]  # text after each generated token (an incomplete last character dropped)
    reason: str  # why the raw generation stopped ("stop" or "length")
    ctx: Any  # the DocContext the pipeline built


def oracle_raw(options: dict[str, Any], tasks: list[Task], budget: int) -> Iterable[tuple[Task, Raw]]:
    """(task, raw generation) with the pipeline's own prompt and no post-processing stop rule."""
    from codelsp.completion import pipeline, postprocess
    from codelsp.completion.context import build_context
    from codelsp.engine.generation import complete_text
    from codelsp.engine.worker import Engine
    from codelsp.models.errors import ModelError
    from codelsp.settings import Settings

    settings, problems = Settings().merged(options, "command line")
    if problems:
        raise EvalError(problems[0])
    long = dataclasses.replace(settings, max_tokens=budget, prompt_cache_bytes=0,
                               timeout_ms=max(settings.timeout_ms, 600_000),
                               ablate=frozenset(postprocess.RULES))  # no early stop: the raw generation
    engine = Engine()
    try:
        try:
            model = engine.load(long).future.result()
        except ModelError as exc:
            raise EvalError(str(exc)) from None
        for task in tasks:
            offset = len(task.prompt) + task.cursor[1]

            def job(job: Any, t: Task = task, o: int = offset) -> Raw:
                result = pipeline.complete(model, "oracle", t.document, o, long, job.cancel)
                pieces = [model.piece(tok) for tok in result.tokens]
                prefixes = [complete_text(b"".join(pieces[:k])) for k in range(1, len(pieces) + 1)]
                size = min(settings.context_size, model.context_size)
                ctx = build_context(t.document, o, model.tokenize, size, settings.max_tokens)
                return Raw(result.raw, prefixes, "length" if result.stop_reason == "length" else "stop", ctx)

            yield task, engine.run_sync(job)
    finally:
        engine.shutdown()


def replay(raw: Raw, max_tokens: int, off: Iterable[str] = ()) -> str:
    """What the pipeline inserts for this raw generation with rules `off` turned off."""
    return replay_generation(raw, max_tokens, off)[0]


def replay_generation(raw: Raw, max_tokens: int, off: Iterable[str] = ()) -> tuple[str, int]:
    """(what the pipeline inserts, how many tokens it generated) for this raw generation with
    rules `off` turned off.

    Greedy generation is deterministic, so the server's generation is the raw one stopped where
    the pipeline's early-stop check or maxTokens stops it; then clean() runs as in pipeline.py.
    """
    from codelsp.completion import postprocess

    ablate = frozenset(off)
    multiline = postprocess.is_multiline(raw.ctx, ablate)
    check = postprocess.early_stop(raw.ctx, multiline, ablate)
    text, reason, used = "", raw.reason, 0
    for used, prefix in enumerate(raw.prefixes, 1):
        text = prefix
        if check(prefix):
            reason = "check"
            break
        if used >= max_tokens:
            reason = "length"
            break
    return postprocess.clean(text, raw.ctx, multiline, finished=reason not in ("length", "time"), ablate=ablate), used


# --- the command ------------------------------------------------------------------------------

def run_eval(args: argparse.Namespace, options: dict[str, Any],
             run: Callable[[argparse.Namespace, dict[str, Any]], int] | None = None) -> int:
    """`codelsp eval`: `run` (default: the HumanEval tasks; `--multi-line`: tools/multiline.py's),
    with its EvalError as one line."""
    try:
        return (run or _run)(args, options)
    except EvalError as exc:
        print(f"codelsp eval: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("codelsp eval: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from codelsp.completion.postprocess import RULES
    from codelsp.models.errors import ModelError
    from codelsp.models.modelfile import resolve_model

    if args.file and args.path and args.file != args.path:
        raise EvalError("give the task file once (FILE or --path)")
    path = find_tasks_file(args.path or args.file)
    tasks = load_tasks(path)
    if args.mid_line:
        tasks = mid_line(tasks)
    tasks = select(tasks, args.task, args.every, args.limit)
    if args.timeout <= 0:
        raise EvalError("--timeout must be positive")
    options = dict(options)
    options.setdefault("temperature", 0.0)  # pass@1 of the greedy answer
    options.setdefault("timeoutMs", 600_000)  # quality, not latency: a busy machine must not cut answers
    env = dict(os.environ)
    ablate = ablate_rules(args.ablate)
    try:
        model_path, _ = resolve_model(options.get("model"))
    except ModelError as exc:
        raise EvalError(str(exc)) from None

    quiet = False  # the progress bar goes to stderr, also with --json
    log_file = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115

    def record(stage: str, task: Task, **fields: Any) -> None:
        if log_file is not None:
            log_file.write(json.dumps({"stage": stage, "task": task.task_id, **fields}) + "\n")
            log_file.flush()
    per_task: dict[str, dict[str, Any]] = {t.task_id: {"task": t.task_id} for t in tasks}
    report: dict[str, Any] = {"tasks_file": str(path), "tasks": len(tasks), "model": str(model_path),
                              "ablate": ablate}

    bar = Progress("codelsp", len(tasks), quiet)
    counts = {"pass": 0, "exact": 0}

    def on_answer(task: Task, answer: str, replace: int = 0) -> None:
        ok = passes(task.program(answer, replace), args.timeout)
        exact = task.exact(answer, replace)
        counts["pass"] += ok
        counts["exact"] += exact
        per_task[task.task_id].update(answer=answer, replace=replace, line=task.line(answer, replace), passed=ok, exact=exact)
        record("codelsp", task, answer=answer, replace=replace, passed=ok, exact=exact)
        bar.step(ok)

    t0 = time.monotonic()
    server_args = _server_args(options) + (["--ablate", ",".join(ablate)] if ablate else [])
    asyncio.run(_codelsp_answers(server_args, tasks, env, on_answer))
    report["codelsp"] = {"pass_at_1": counts["pass"] / len(tasks), "passed": counts["pass"],
                         "exact_line": counts["exact"] / len(tasks), "exact": counts["exact"],
                         "seconds": round(time.monotonic() - t0, 1)}

    if args.oracle:
        bar = Progress("oracle", len(tasks), quiet)
        solvable = 0
        t0 = time.monotonic()
        max_tokens = int(options.get("maxTokens") or 64)
        variants = {"all rules": (), **{f"without {r}": (r,) for r in RULES}, "no rules": RULES}
        rule_pass = dict.fromkeys(variants, 0)
        agree = 0
        for task, raw in oracle_raw(options, tasks, args.oracle_tokens):
            ok = any(passes(task.program(cut), args.timeout) for cut in oracle_candidates(raw.text))
            solvable += ok
            info = per_task[task.task_id]
            info.update(raw=raw.text, solvable=ok)
            rules_ok = {}
            for name, off in variants.items():
                answer = replay(raw, max_tokens, tuple(off) + tuple(ablate))
                if name == "all rules":
                    agree += answer == info.get("answer")
                    info["replayed"] = answer
                rules_ok[name] = passes(task.program(answer), args.timeout)
                rule_pass[name] += rules_ok[name]
            record("oracle", task, raw=raw.text, solvable=ok, replayed=info["replayed"], rules=rules_ok)
            bar.step(ok)
        ceiling = solvable / len(tasks)
        report["oracle"] = {"ceiling": ceiling, "solvable": solvable, "tokens": args.oracle_tokens,
                            "seconds": round(time.monotonic() - t0, 1),
                            "codelsp_share_of_ceiling": (counts["pass"] / solvable) if solvable else None}
        report["rules"] = {"replayed_pass_at_1": {k: v / len(tasks) for k, v in rule_pass.items()},
                           "replay_agrees_with_server": agree}

    if args.compare_server:
        binary = find_server_bin(args.server_bin)
        if binary is None:
            raise EvalError("--compare-server: no llama-server binary (build one, see README, or pass --server-bin)")
        bar = Progress("llama-server", len(tasks), quiet)
        passed = exact = 0
        t0 = time.monotonic()
        for task, answer in server_answers(binary, str(model_path), tasks, options, EvalError):
            ok = passes(task.program(answer), args.timeout)
            passed += ok
            exact += task.exact(answer)
            per_task[task.task_id].update(server_answer=answer, server_passed=ok)
            record("llama-server", task, answer=answer, passed=ok)
            bar.step(ok)
        report["llama_server"] = {"binary": binary, "pass_at_1": passed / len(tasks), "passed": passed,
                                  "exact_line": exact / len(tasks), "exact": exact,
                                  "seconds": round(time.monotonic() - t0, 1),
                                  "codelsp_ratio": (counts["pass"] / passed) if passed else None}

    if args.json:
        report["per_task"] = list(per_task.values())
        print(json.dumps(report, indent=2))
        return 0
    n = len(tasks)
    c = report["codelsp"]
    print(f"{n} tasks from {path.name}, model {model_path.name}" + (f", rules off: {','.join(ablate)}" if ablate else ""))
    print(f"codelsp        pass@1 {100 * c['pass_at_1']:5.1f}% ({c['passed']}/{n})   exact line {100 * c['exact_line']:5.1f}% ({c['exact']}/{n})")
    if "oracle" in report:
        o = report["oracle"]
        share = f"   codelsp = {100 * o['codelsp_share_of_ceiling']:.0f}% of it" if o["codelsp_share_of_ceiling"] is not None else ""
        print(f"oracle ceiling        {100 * o['ceiling']:5.1f}% ({o['solvable']}/{n}){share}")
        r = report["rules"]
        print(f"post-processing rules replayed on the oracle's generations (agrees with the server on "
              f"{r['replay_agrees_with_server']}/{n} answers):")
        for name, value in r["replayed_pass_at_1"].items():
            print(f"  {name:<18} pass@1 {100 * value:5.1f}%")
    if "llama_server" in report:
        s = report["llama_server"]
        ratio = f"   codelsp = {s['codelsp_ratio']:.2f}x" if s["codelsp_ratio"] is not None else ""
        print(f"llama-server   pass@1 {100 * s['pass_at_1']:5.1f}% ({s['passed']}/{n})   exact line {100 * s['exact_line']:5.1f}% ({s['exact']}/{n}){ratio}")
    return 0
