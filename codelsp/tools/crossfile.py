"""`codelsp eval --cross-file`: completing lines that use what another file of the project defines.

Cases come from real open-source Python projects nobody here wrote (PROJECTS: pinned versions),
downloaded at run time as source distributions (`pip download --no-deps --no-binary :all:`)
into the cache folder ($XDG_CACHE_HOME or ~/.cache)/codelsp/eval/crossfile and unpacked there
(nothing is committed). FILE instead names a folder of projects (each sub-folder one project) or
one project (it holds a `.py` file, a package or a `src` folder at its top), e.g. a generated one.

A case is one line of a file A (outside tests, docs and examples), a simple statement inside a
function, 8 to 120 characters, whose names include one that A imports from another file B of the
same project (completion/repo.py resolves the imports with `ast`). The line is removed: the
document is A with the line replaced by its indentation, the cursor after it (an editor's
auto-indent); the rest of the project stays on disk as context. At most PER_FILE lines a file and
PER_PROJECT a project, picked by a CRC of the file and line (the same every run); cases are
interleaved across projects so `--limit N` samples every project.

The "open files" of a case (what an editor would have open) are the project files A imports
names from, in import order. Configurations, on the same model in one run:
- `none`: the current file only;
- `extra`: today's `extraContextTokens` (neighbors.py) with the first MAX_FILES open files,
  budget `repoContextTokens` (1024 when it is 0, the default);
- `repo`: the repository context (completion/repo.py), the same budget;
- `oracle` (only when --configs names it): the repository context made of just the definitions
  the removed line itself uses (what a perfect retrieval would give; CrossCodeEval's "retrieval
  with reference" plays this part): the ceiling of what choosing context can add;
- `server`: llama.cpp's `llama-server` `/infill` asked llama.vim's way (tools/evalserver.py),
  its ring buffer `input_extra` = 64-line chunks of the open files from their tops, taken in turn
  from each file, at most RING_CHUNKS (llama.vim's ring_chunk_size and ring_n_chunks defaults).

Scored on the first line of each answer (the removed line is one line): exact match
(whitespace-normalised) and edit similarity (CrossCodeEval's, of the stripped lines). codelsp's
arms run the completion pipeline in process (pipeline.complete, as the server does), with
contextSize CROSS_CTX unless `--ctx` is given (a 2-core machine must finish a run); the arms with
context (`extra`, `repo`, `server`) get that plus the budget, so that every arm sees the same
window of the current file (what the default contextSize gives a file of a few thousand tokens)
and the comparison is of what the context adds.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterable

from codelsp.completion.repo import Project, imported_uses, project_files, _dotted, _parse
from codelsp.tools.multiline import Block, edit_similarity

PROJECTS = (("requests", "2.31.0"), ("click", "8.1.7"), ("attrs", "23.2.0"), ("httpx", "0.27.0"),
            ("jinja2", "3.1.4"), ("flask", "3.0.3"), ("rich", "13.7.1"), ("marshmallow", "3.21.1"))
PER_FILE = 5
PER_PROJECT = 60
RING_CHUNKS, RING_LINES = 16, 64
CROSS_CTX = 2048
CROSS_BUDGET = 1024  # the context arms' budget in tokens when repoContextTokens is 0 (its default: off)
CONFIGS = ("none", "extra", "repo", "server")  # the arms a run has unless --configs says otherwise
KNOWN_CONFIGS = CONFIGS + ("oracle",)
SKIP_PARTS = {"tests", "test", "docs", "doc", "examples", "benchmarks", "scripts"}
_SIMPLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Raise, ast.Assert)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "codelsp" / "eval" / "crossfile"


@dataclasses.dataclass
class Case(Block):
    """One case: a multi-line eval `Block` whose hole is one line, in a project (`root`), file A
    (`path`), and the project files A imports names from (`open_files`, in import order)."""
    root: Path
    path: Path
    open_files: list[Path]

    @property
    def offset(self) -> int:
        return len(self.prompt) + len(self.indent)

    def line(self, answer: str) -> str:
        return self.indent + answer.split("\n", 1)[0]

    def exact(self, answer: str) -> bool:
        return " ".join(self.line(answer).split()) == " ".join(self.hole.split())

    def similarity(self, answer: str) -> float:
        return edit_similarity(self.line(answer).strip(), self.hole.strip())


# --- the projects -------------------------------------------------------------------------------

def fetch(projects: Iterable[tuple[str, str]] = PROJECTS, cache: Path | None = None) -> list[Path]:
    """The unpacked source folders of `projects`, downloaded once into `cache`. EvalError-like
    RuntimeError with one line when pip cannot fetch one."""
    cache = cache or cache_dir()
    (cache / "sdist").mkdir(parents=True, exist_ok=True)
    (cache / "src").mkdir(parents=True, exist_ok=True)
    out = []
    for name, version in projects:
        found = [p for p in (cache / "src").iterdir() if p.is_dir() and p.name.lower().replace("_", "-") == f"{name}-{version}".lower()]
        if not found:
            sdists = [p for p in (cache / "sdist").glob("*.tar.gz") if p.name.lower().replace("_", "-").startswith(f"{name}-{version}.".lower())]
            if not sdists:
                r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                                    "-d", str(cache / "sdist"), f"{name}=={version}"], capture_output=True, text=True)
                if r.returncode != 0:
                    last = (r.stderr.strip().splitlines() or ["no output"])[-1]
                    raise RuntimeError(f"pip download {name}=={version} failed: {last}")
                sdists = [p for p in (cache / "sdist").glob("*.tar.gz") if p.name.lower().replace("_", "-").startswith(f"{name}-{version}.".lower())]
            if not sdists:
                raise RuntimeError(f"pip download {name}=={version} gave no .tar.gz sdist")
            with tarfile.open(sdists[0]) as tf:
                tf.extractall(cache / "src", filter="data")
            found = [p for p in (cache / "src").iterdir() if p.is_dir() and p.name.lower().replace("_", "-") == f"{name}-{version}".lower()]
        if not found:
            raise RuntimeError(f"the sdist of {name}=={version} did not unpack to {name}-{version}/")
        out.append(found[0])
    return out


def local_projects(folder: Path) -> list[Path]:
    """FILE given: one project (a `.py` file, a package or `src` at its top) or a folder of projects."""
    if any(folder.glob("*.py")) or any(folder.glob("*/__init__.py")) or (folder / "src").is_dir():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


# --- the cases --------------------------------------------------------------------------------

def cases_of(project: Project, path: Path) -> list[Case]:
    """The cases of file `path` (see the module's docstring), at most PER_FILE."""
    text = project.text(path)
    tree = _parse(text) if text is not None else None
    if tree is None or "\t" in text or "\r" in text:
        return []
    uses = imported_uses(project, path, text)
    names = {u.name for u in uses}
    if not names:
        return []
    lines = text.split("\n")
    rows: set[int] = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        # names the function binds itself (arguments, assignments) are its own, not the import's
        local = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
        local |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
        for stmt in ast.walk(fn):
            if not isinstance(stmt, _SIMPLE) or stmt.lineno != stmt.end_lineno:
                continue
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue  # a docstring
            line = lines[stmt.lineno - 1]
            code = line.strip()
            if not 8 <= len(code) <= 120 or line[:stmt.col_offset].strip() or "#" in code:
                continue
            used = _read_names(stmt)
            if {u for u in used & names if u.split(".", 1)[0] not in local}:
                rows.add(stmt.lineno - 1)
    rel = path.relative_to(project.root).as_posix()
    picked = sorted(rows, key=lambda r: zlib.crc32(f"{rel}:{r}".encode()))[:PER_FILE]
    opened = list(dict.fromkeys(u.path for u in uses))
    return [Case(f"{project.root.name}/{rel}:{r + 1}", "".join(ln + "\n" for ln in lines[:r]), lines[r],
                 "\n".join(lines[r + 1:]), project.root, path, opened)
            for r in sorted(picked)]


def project_cases(root: Path) -> tuple[Project, list[Case]]:
    project = Project(root, project_files(root))
    out: list[Case] = []
    for f in project.files:
        parts = set(f.relative_to(root).parts[:-1])
        if parts & SKIP_PARTS or f.name.startswith(("test_", "conftest")):
            continue
        out.extend(cases_of(project, f))
    out.sort(key=lambda c: zlib.crc32(c.task_id.encode()))
    out = out[:PER_PROJECT]
    out.sort(key=lambda c: (str(c.path), c.prompt.count("\n")))
    return project, out


def interleave(groups: list[list[Case]]) -> list[Case]:
    out: list[Case] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


# --- the arms ---------------------------------------------------------------------------------

def ring_chunks(files: list[Path], project: Project) -> list[dict[str, str]]:
    """llama.vim's ring buffer for the open `files`: 64-line chunks from each file's top, in turn."""
    per_file = []
    for f in files:
        lines = (project.text(f) or "").split("\n")
        rel = f.relative_to(project.root).as_posix()
        per_file.append([{"text": "".join(ln + "\n" for ln in lines[i:i + RING_LINES]), "filename": rel}
                         for i in range(0, len(lines), RING_LINES)])
    out: list[dict[str, str]] = []
    for i in range(max((len(c) for c in per_file), default=0)):
        out.extend(c[i] for c in per_file if i < len(c))
    return out[:RING_CHUNKS]


def context_budget(options: dict[str, Any]) -> int:
    """The context arms' budget in tokens: `repoContextTokens`, CROSS_BUDGET when it is 0 or unset."""
    return int(options.get("repoContextTokens") or CROSS_BUDGET)


def codelsp_answers(options: dict[str, Any], cases: list[Case], projects: dict[Path, Project], configs: list[str],
                    error: type[Exception], logged: dict[tuple[str, ...], dict[str, Any]] | None = None
                    ) -> Iterable[tuple[Case, str, str, dict[str, Any]]]:
    """(case, config, answer, info) for each case and codelsp arm, in process on one model.
    `logged` (logged_answers, for `--resume`): a row is the answer, not asked again, when its
    `context` (context_key) is the one the arm builds today (for `none`: the first row); info
    then has `logged: True`. info["context"] is the key of the context the answer was asked with."""
    from codelsp.completion.neighbors import MAX_FILES, Snapshot, extra_text
    from codelsp.completion.pipeline import complete
    from codelsp.completion.repo import gather, render_text
    from codelsp.engine.worker import Engine
    from codelsp.models.errors import ModelError
    from codelsp.settings import Settings

    settings, problems = Settings().merged(options, "command line")
    if problems:
        raise error(problems[0])
    budget = context_budget(options)
    logged = logged or {}
    # the arms with context get contextSize + budget, so that the current file's window is the one
    # `none` has (as with the default contextSize, where a file of a few thousand tokens fits whole
    # beside the context); the model is loaded with the wider one
    wide = dataclasses.replace(settings, context_size=settings.context_size + budget)
    engine = Engine()
    try:
        try:
            model = engine.load(wide).future.result()
        except ModelError as exc:
            raise error(str(exc)) from None
        for case in cases:
            project = projects[case.root]
            for config in configs:
                def job(job: Any, case: Case = case, config: str = config) -> tuple[str, dict[str, Any]]:
                    extra, repo, info = "", None, {}
                    if config == "extra":
                        files = tuple((f.as_uri(), project.text(f) or "") for f in case.open_files[:MAX_FILES])
                        extra = extra_text(Snapshot(files, 0.0), budget, model.tokenize, "#")
                        info["files"] = len(files)
                    elif config in ("repo", "oracle"):
                        uses = oracle_uses(project, case) if config == "oracle" else None
                        repo = gather(project, case.path, case.document, budget, model.tokenize, uses)
                        info["files"] = [p for p, _ in repo.files]
                    info["context"] = context_key(extra + (render_text(repo) if repo else ""))
                    row = logged.get((case.task_id, config) if config == "none" else (case.task_id, config, info["context"]))
                    if row is not None:
                        return str(row["answer"]), {**info, "logged": True}
                    result = complete(model, f"{config}:{case.path}", case.document, case.offset,
                                      settings if config == "none" else wide, job.cancel, extra, None, repo=repo)
                    info["evaluated"] = result.stats.evaluated
                    return result.text, info

                answer, info = engine.run_sync(job)
                yield case, config, answer, info
    finally:
        engine.shutdown()


def oracle_uses(project: Project, case: Case) -> list[Any]:
    """The definitions (repo.Use) the removed line of `case` uses from other project files: the
    names it reads that the document imports (its import lines stay in the document)."""
    try:
        tree = ast.parse(case.hole.strip())
    except SyntaxError:
        return []
    read = _read_names(tree)
    return [u for u in imported_uses(project, case.path, case.document) if u.name in read]


def _read_names(node: ast.AST) -> set[str | None]:
    """The names and dotted attributes (`mod.attr`) `node` reads: what a case's line uses."""
    return {_dotted(n) for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute)) and isinstance(n.ctx, ast.Load)}


def context_key(text: str) -> str:
    """A short hash of an arm's context text (sha1, 12 hex digits): a logged answer counts on
    `--resume` only when the context it was asked with is today's."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def server_answers(binary: str, model: str, cases: list[Case], projects: dict[Path, Project],
                   options: dict[str, Any], error: type[Exception]) -> Iterable[tuple[Case, str]]:
    """(case, first line llama.vim inserts) from llama-server with the ring buffer as input_extra."""
    import urllib.error
    import urllib.request

    from codelsp.tools.evalserver import llama_vim_request, llama_vim_text
    from codelsp.tools.llamaserver import llama_vim_command
    from codelsp.tools.procs import free_port, serving

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    n_predict = int(options.get("maxTokens") or 128)  # llama.vim's default 128; the first line is scored
    # /infill leaves n_ctx - n_batch - 2 * n_predict tokens for input_extra with the server's own
    # n_predict (default -1: 3 tokens too many once the ring fills it, a 400): give it ours
    # its ring gets the context budget on top of the window, as codelsp's context arms do
    wide = {**options, "contextSize": int(options["contextSize"]) + context_budget(options)}
    command = llama_vim_command(binary, model, port, wide) + ["-n", str(n_predict)]
    with serving(command, "llama-server", base + "/health", error=error):
        for case in cases:
            body = llama_vim_request(case, n_predict)
            body["input_extra"] = ring_chunks(case.open_files, projects[case.root])
            req = urllib.request.Request(base + "/infill", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=600) as r:
                    content = json.loads(r.read()).get("content", "")
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:200]
                raise error(f"llama-server /infill failed for {case.task_id}: {exc} {detail}") from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise error(f"llama-server /infill failed for {case.task_id}: {exc}") from None
            yield case, llama_vim_text(content)


# --- resuming a run from its log ---------------------------------------------------------------

def run_signature(model_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """What must be the same for logged answers to count in a run: the model file (name and size
    in bytes), contextSize, the context budget (tokens), maxTokens and temperature."""
    return {"model": model_path.name, "model_bytes": model_path.stat().st_size,
            "contextSize": int(options["contextSize"]), "budget": context_budget(options),
            "maxTokens": options.get("maxTokens"), "temperature": options.get("temperature")}


def logged_answers(path: Path, signature: dict[str, Any], error: type[Exception]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The rows of a `--log` file, for `--resume` (row: task, config, answer, exact, and for
    codelsp's arms the context key), by (task id, config) and, for rows with a context key, by
    (task id, config, context) too: a case asked again after its context changed has a row per
    context. The file's `run` lines (one per run that appended to it) must equal `signature`,
    else `error` names the first difference; a file without one (written before `--resume`
    existed) is taken as it is. The first row logged for a key wins. A missing file is an empty log."""
    answers: dict[tuple[str, ...], dict[str, Any]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return answers
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"--resume: cannot read {path}: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "run" in row:
                theirs = row["run"]
                for key, ours in signature.items():
                    if theirs.get(key) != ours:
                        raise error(f"--resume: {path} was written with {key} {theirs.get(key)!r}, this run has "
                                    f"{ours!r}; use the same options or another --log")
                continue
            str(row["answer"])
            answers.setdefault((str(row["task"]), str(row["config"])), row)
            if "context" in row:  # a context arm asked again after its context changed: each one
                answers.setdefault((str(row["task"]), str(row["config"]), str(row["context"])), row)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, error):
                raise
            raise error(f"--resume: {path}:{n} is not a line of a cross-file log ({exc.__class__.__name__})") from None
    return answers


# --- the command --------------------------------------------------------------------------------

def run_crossfile(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """`codelsp eval --cross-file`: the four arms on the cross-file cases, one table."""
    from codelsp.models.errors import ModelError
    from codelsp.models.modelfile import resolve_model
    from codelsp.tools.eval import EvalError, Progress, select
    from codelsp.tools.evalserver import find_server_bin

    configs = [c.strip() for c in (args.configs or ",".join(CONFIGS)).split(",") if c.strip()]
    unknown = [c for c in configs if c not in KNOWN_CONFIGS]
    if unknown or not configs:
        raise EvalError(f"--configs: unknown {', '.join(unknown) or 'empty list'}; known: {', '.join(KNOWN_CONFIGS)}")
    given = args.file or args.path
    if given:
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise EvalError(f"--cross-file takes a folder of projects (or one project), not {folder}")
        roots = local_projects(folder)
    else:
        try:
            roots = fetch()
        except (RuntimeError, OSError) as exc:
            raise EvalError(str(exc)) from None
    projects: dict[Path, Project] = {}
    groups = []
    for root in roots:
        project, cases = project_cases(root)
        projects[root] = project
        groups.append(cases)
    if not any(groups):
        raise EvalError("no cross-file case found in " + ", ".join(r.name for r in roots))
    # --every takes every K-th case of each project, then the projects take turns: every K-th of
    # the interleaved list would be one project's cases only whenever K is the number of projects
    if args.every < 1:
        raise EvalError("--every must be at least 1")
    cases = select(interleave([g[::args.every] for g in groups]), args.task, 1, args.limit)
    options = dict(options)
    options.setdefault("temperature", 0.0)
    options.setdefault("timeoutMs", 600_000)
    options.setdefault("contextSize", CROSS_CTX)
    try:
        model_path, _ = resolve_model(options.get("model"))
    except ModelError as exc:
        raise EvalError(str(exc)) from None
    n = len(cases)
    per_case: dict[str, dict[str, Any]] = {c.task_id: {"task": c.task_id, "hole": c.hole} for c in cases}
    sums = {c: {"exact": 0, "es": 0.0, "seconds": 0.0} for c in configs}
    signature = run_signature(model_path, options)
    logged: dict[tuple[str, ...], dict[str, Any]] = {}
    if args.resume:
        if not args.log:
            raise EvalError("--resume needs --log FILE (the log of the run to go on with)")
        logged = logged_answers(Path(args.log), signature, EvalError)
    log_file = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    if log_file is not None:
        log_file.write(json.dumps({"run": signature}) + "\n")

    def score(case: Case, config: str, answer: str, info: dict[str, Any] | None = None) -> None:
        exact, es = case.exact(answer), case.similarity(answer)
        sums[config]["exact"] += exact
        sums[config]["es"] += es
        per_case[case.task_id][config] = {"answer": answer, "exact": exact, "es": round(es, 3), **(info or {})}
        if log_file is not None and not (info or {}).get("logged"):
            row = {"task": case.task_id, "config": config, "answer": answer, "exact": exact}
            if info and "context" in info:
                row["context"] = info["context"]
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()

    # answers the log already holds are scored again (today's scorer) and not asked again: the
    # server's and `none`'s as they are, the context arms' when their context is today's
    own = [c for c in configs if c != "server"]
    reused = 0
    if own:
        bar = Progress("codelsp", n * len(own), False)
        t0 = time.monotonic()
        for case, config, answer, info in codelsp_answers(options, cases, projects, own, EvalError, logged):
            score(case, config, answer, info)
            reused += bool(info.get("logged"))
            bar.step(case.exact(answer))
        for c in own:
            sums[c]["seconds"] = round((time.monotonic() - t0) / len(own), 1)
    binary = None
    pending: list[Case] = []
    for case in cases if "server" in configs else []:
        if (case.task_id, "server") in logged:
            score(case, "server", str(logged[case.task_id, "server"]["answer"]), {"logged": True})
            reused += 1
        else:
            pending.append(case)
    if pending:
        binary = find_server_bin(args.server_bin)
        if binary is None:
            raise EvalError("no llama-server binary for the server arm (python -m codelsp.tools.llamaserver "
                            "builds one, or --server-bin; --configs none,extra,repo leaves it out)")
        bar = Progress("llama-server", len(pending), False)
        t0 = time.monotonic()
        for case, answer in server_answers(binary, str(model_path), pending, projects, options, EvalError):
            score(case, "server", answer)
            bar.step(case.exact(answer))
        sums["server"]["seconds"] = round(time.monotonic() - t0, 1)
    if log_file is not None:
        log_file.close()
    report: dict[str, Any] = {
        "projects": [r.name for r in roots], "cases": n, "cases_available": sum(map(len, groups)), "model": str(model_path),
        "context_size": options["contextSize"], "repo_context_tokens": context_budget(options),
        "from_log": reused,
        "results": {c: {"exact": s["exact"], "exact_match": s["exact"] / n, "edit_similarity": s["es"] / n,
                        "seconds": s["seconds"]} for c, s in sums.items()},
    }
    if binary:
        report["server_binary"] = binary
    if args.json:
        report["per_case"] = list(per_case.values())
        print(json.dumps(report, indent=2))
        return 0
    print(f"{n} cross-file cases (of {sum(map(len, groups))}) from {', '.join(r.name for r in roots)}; "
          f"model {model_path.name}, contextSize {options['contextSize']}, context budget {report['repo_context_tokens']} tokens"
          + (f"; {reused} answers from {args.log}" if reused else ""))
    labels = {"none": "no context", "extra": "extraContextTokens", "repo": "repository context",
              "oracle": "oracle (the line's definitions)", "server": "llama-server (llama.vim ring)"}
    print(f"{'configuration':<30} {'exact match':>16} {'edit similarity':>16}")
    for c, s in sums.items():
        print(f"{labels[c]:<30} {100 * s['exact'] / n:6.1f}% ({s['exact']:>3}/{n}) {s['es'] / n:16.3f}")
    sys.stdout.flush()
    return 0
