"""`codelsp eval --next-edit`: next-edit prediction on real edit sequences.

Cases come from consecutive releases of packages on the package index (`pip download --no-deps
--no-binary :all: NAME==OLD NAME==NEW`, the sdists unpacked into a cache folder, never into the
project): each Python file changed between the two releases is diffed with difflib into hunks,
top to bottom. A case is "hunks 1..i were made (the history), the cursor at the end of hunk i;
the next hunk i+1 starts within `NEAR` lines below it". Applying the hunks in order stands in for
the user making them; the next hunk is the answer.

Three predictors run on the same cases, with the same model, in one process, one after the
other per case:

- `next-edit`: nextedit/run.py's predict(): the last edit repeated (nextedit/repeat.py, no
  model), else the model's rewrite of the region (the prompt of nextedit/predict.py);
- `fim-cursor`: the completion pipeline (completion/pipeline.py) at the cursor, its suggestion
  inserted there;
- `no-edit`: never shows anything.

Scores: exact match (the text after the shown edit equals the text after the next hunk),
false positives (an edit shown that is not it), silences (nothing shown); precision = exact /
shown. Latency p50/p95 and prompt tokens evaluated per request (cold: each case is a new
document) for next-edit and for the inline completion at the cursor.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codelsp.nextedit.history import Hunk, split_lines

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codelsp" / "nextedit-eval"
NEAR = 6  # the next hunk starts at most this many lines below the cursor's line
MAX_HUNK_LINES = 4  # cases whose next hunk replaces or adds more lines than this are left out
# consecutive releases with small Python changes between them (sdists on the package index)
RELEASES = (
    ("click", "8.1.6", "8.1.7"), ("click", "8.1.5", "8.1.6"), ("requests", "2.31.0", "2.32.0"),
    ("attrs", "23.1.0", "23.2.0"), ("packaging", "23.1", "23.2"), ("idna", "3.6", "3.7"),
    ("pluggy", "1.3.0", "1.4.0"), ("tomli", "2.0.0", "2.0.1"), ("urllib3", "2.2.0", "2.2.1"),
    ("jinja2", "3.1.3", "3.1.4"), ("markupsafe", "2.1.4", "2.1.5"), ("itsdangerous", "2.1.1", "2.1.2"),
    ("six", "1.15.0", "1.16.0"), ("attrs", "22.2.0", "23.1.0"), ("packaging", "23.2", "24.0"),
    ("pluggy", "1.4.0", "1.5.0"), ("urllib3", "2.1.0", "2.2.0"), ("click", "8.1.3", "8.1.4"), ("certifi", "2023.11.17", "2024.2.2"), ("wheel", "0.42.0", "0.43.0"),
)


class NextEvalError(Exception):
    """A one-line reason the evaluation cannot run."""


@dataclass
class Case:
    name: str  # package/file:line
    path: str  # the file's path in the package (shown to the model)
    text: str  # the file with hunks 1..i applied
    cursor: int  # character offset of the cursor (the end of hunk i's new text)
    line: int  # its line
    history: list[Hunk]
    expected: str  # the text after the next hunk too


def _sdist(name: str, version: str) -> dict[str, str]:
    """Python files of the sdist of name==version (path inside the package -> text), downloaded
    once into CACHE."""
    folder = CACHE / f"{name}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    files = [p for p in folder.iterdir() if p.suffix in (".gz", ".zip")]
    if not files:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(folder),
               f"{name}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise NextEvalError(f"pip download {name}=={version} failed: {done.stderr.strip().splitlines()[-1:]}")
        files = [p for p in folder.iterdir() if p.suffix in (".gz", ".zip")]
        if not files:
            raise NextEvalError(f"no sdist for {name}=={version}")
    out: dict[str, str] = {}
    archive = files[0]
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for n in z.namelist():
                if n.endswith(".py"):
                    out[n.split("/", 1)[-1]] = z.read(n).decode("utf-8", "replace")
    else:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if m.isfile() and m.name.endswith(".py"):
                    f = t.extractfile(m)
                    if f is not None:
                        out[m.name.split("/", 1)[-1]] = io.TextIOWrapper(f, "utf-8", "replace").read()
    return out


def hunks_of(old: str, new: str) -> list[tuple[int, list[str], list[str]]]:
    """difflib's hunks from `old` to `new`: (first line in `old`, old lines, new lines), top to
    bottom, without context lines."""
    a, b = split_lines(old), split_lines(new)
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            out.append((i1, a[i1:i2], b[j1:j2]))
    return out


def cases_of(name: str, path: str, old: str, new: str) -> list[Case]:
    """The cases of one file changed between two releases (see the module's docstring)."""
    found = hunks_of(old, new)
    lines = split_lines(old)
    out: list[Case] = []
    shift = 0  # lines added so far by the applied hunks
    history: list[Hunk] = []
    uri = f"file:///{name}/{path}"
    for i, (start, a, b) in enumerate(found[:-1]):
        at = start + shift
        lines[at:at + len(a)] = b
        shift += len(b) - len(a)
        history.append(Hunk(uri, at, "".join(a), "".join(b), i + 1))
        nstart, na, nb = found[i + 1]
        nat = nstart + shift
        cursor_line = at + max(len(b) - 1, 0)
        if not b or nat - (at + len(b)) > NEAR or len(na) > MAX_HUNK_LINES or len(nb) > MAX_HUNK_LINES:
            continue
        if not "".join(b).strip() or not ("".join(na) + "".join(nb)).strip():
            continue
        text = "".join(lines)
        cursor = sum(len(x) for x in lines[:cursor_line]) + len(lines[cursor_line].rstrip("\n"))
        expected = "".join(lines[:nat] + nb + lines[nat + len(na):])
        out.append(Case(f"{name}/{path}:{cursor_line + 1}", path, text, cursor, cursor_line, list(history), expected))
    return out


def load_cases(limit: int | None) -> list[Case]:
    out: list[Case] = []
    for name, v1, v2 in RELEASES:
        try:
            old, new = _sdist(name, v1), _sdist(name, v2)
        except NextEvalError as exc:
            print(f"codelsp eval: {exc}; skipped", file=sys.stderr)
            continue
        for path in sorted(set(old) & set(new)):
            if old[path] != new[path] and "/tests/" not in f"/{path}" and len(old[path]) < 200_000:
                out += cases_of(name, path, old[path], new[path])
        if limit is not None and len(out) >= limit:
            break
    return out[:limit] if limit is not None else out


def _apply(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def rescore(log: str, dedicated: bool = False, floors: tuple[float, ...] = ()) -> dict[str, Any]:
    """The scores of a `--log` file's cases with the current predictor: the repeat stage
    (nextedit/repeat.py, no model) and else the logged model answer judged again with the current
    parser and threshold (nextedit/run.py judge, its confidence floor included: a log written
    with the token log-probabilities). The model's answers do not depend on them (greedy, the same
    prompt), so this is what a new run would score, without the model. FIM at the cursor as
    logged. Latency: the repeat stage's own time where it answers, else the logged request's.
    `floors`: also the model stage's scores at each of these confidence floors (choosing one).
    `repeatAll`: the repeat stage alone on every case (it needs no model)."""
    from codelsp.engine.generation import GenStats
    from codelsp.nextedit.repeat import repeat_edit
    from codelsp.nextedit.run import MIN_LOGPROB, judge

    every = load_cases(None)
    cases = {c.name: c for c in every}

    def outcome(case: Case, start: int, end: int, new: str) -> str:
        return "exact" if _apply(case.text, start, end, new) == case.expected else "wrong"
    blank = {"exact": 0, "wrong": 0, "silent": 0}
    quick: dict[str, tuple[int, int, str, str] | None] = {}  # the repeat stage on every case, once
    quick_ms: dict[str, float] = {}
    alone = dict(blank)
    for case in every:
        t0 = time.perf_counter()
        quick[case.name] = repeat_edit(case.text, case.history[-1], case.history[-1].uri)
        quick_ms[case.name] = (time.perf_counter() - t0) * 1000
        found = quick[case.name]
        alone["silent" if found is None else outcome(case, *found[:3])] += 1
    score = {k: dict(blank) for k in ("next-edit", "repeat stage", "model stage", "fim-cursor")}
    sweep = {f: dict(blank) for f in floors}
    reasons: dict[str, int] = {}
    lat: list[float] = []
    fim_ms: list[float] = []
    n = 0
    with open(log, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            case = cases.get(rec["case"])
            if case is None:
                continue
            n += 1
            found = quick[case.name]
            if found is not None:
                lat.append(quick_ms[case.name])
                got = outcome(case, *found[:3])
                reasons["repeat"] = reasons.get("repeat", 0) + 1
                for k in ("next-edit", "repeat stage"):
                    score[k][got] += 1
                score["model stage"]["silent"] += 1
            else:
                lat.append(rec["nextEditMs"])
                score["repeat stage"]["silent"] += 1
                stats = GenStats(logprobs=rec.get("logprobs", []))
                complete = rec.get("stop", rec["reason"] != "answer cut short")
                for k, floor in enumerate((MIN_LOGPROB, *floors)):
                    p = judge(dedicated, case.text, case.line, case.history[-1], rec["answer"], complete, stats, floor=floor)
                    got = "silent" if p.edit is None else outcome(case, p.edit.start, p.edit.end, p.edit.text)
                    if k == 0:  # the default floor: what next-edit shows
                        reasons[p.reason] = reasons.get(p.reason, 0) + 1
                        for arm in ("next-edit", "model stage"):
                            score[arm][got] += 1
                    else:
                        sweep[floor][got] += 1
            score["fim-cursor"]["silent" if not rec["fim"].strip() else "exact" if rec["fimExact"] else "wrong"] += 1
            fim_ms.append(rec["fimMs"])
    return {"cases": n, "scores": score, "reasons": reasons, "floors": {str(k): v for k, v in sweep.items()},
            "latencyMs": {"next-edit": {"p50": round(statistics.median(lat), 1) if lat else None, "p95": round(_pct(lat, 0.95), 1)},
                          "fim-cursor": {"p50": round(statistics.median(fim_ms), 1) if fim_ms else None,
                                         "p95": round(_pct(fim_ms, 0.95), 1)}},
            "repeatAll": {"cases": len(every), **alone}}


def run_next_edit_eval(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """`codelsp eval --next-edit [--limit N] [--every K] [--json] [--log FILE] [--rescore LOG]`: every K-th
    case, at most N; `--rescore`: judge a log's answers again (`rescore`)."""
    from codelsp.engine.llama import load_model
    from codelsp.models.errors import ModelError
    from codelsp.models.modelfile import resolve_models
    from codelsp.settings import Settings

    if args.rescore:
        floors = (-0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
        print(json.dumps(rescore(args.rescore, bool(options.get("nextEditModel")), floors), indent=2))
        return 0
    settings, problems = Settings().merged({"timeoutMs": 600_000, "temperature": 0.0, **options}, "command line")
    if problems:
        raise NextEvalError("; ".join(problems))
    every = max(1, args.every or 1)
    cases = load_cases(None if every > 1 else args.limit)[::every][:args.limit]
    if not cases:
        raise NextEvalError("no cases (the package index could not be reached?)")
    try:
        paths = resolve_models(settings)
        model = load_model(str(paths.base), settings)
        nem = load_model(os.path.expanduser(settings.next_edit_model), settings, instruct=True) \
            if settings.next_edit_model else model
    except ModelError as exc:
        raise NextEvalError(str(exc)) from None
    log_file = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    score = {k: {"exact": 0, "wrong": 0, "silent": 0} for k in ("next-edit", "fim-cursor", "no-edit")}
    before_threshold = {"exact": 0, "wrong": 0}
    lat: dict[str, list[float]] = {"next-edit": [], "fim-cursor": []}
    evald: dict[str, list[int]] = {"next-edit": [], "fim-cursor": []}
    reasons: dict[str, int] = {}
    done = 0
    tallies = (score, before_threshold, lat, evald, reasons)
    saved = copy.deepcopy(tallies)
    try:
        for n, case in enumerate(cases):
            saved = copy.deepcopy(tallies)
            _one(n, case, model, nem, settings, score, before_threshold, lat, evald, reasons, log_file, len(cases))
            done += 1
    except KeyboardInterrupt:  # Ctrl-C: the figures of the whole cases done so far
        for now, before in zip(tallies, saved):
            now.clear()
            now.update(before)
        print(f"\ninterrupted after {done} cases", file=sys.stderr)
    if not done:
        raise NextEvalError("interrupted before the first case")
    print(file=sys.stderr)
    _report(args, nem, model, done, score, before_threshold, lat, evald, reasons)
    return 0


def _one(n: int, case: Case, model: Any, nem: Any, settings: Any, score: dict, before_threshold: dict,
         lat: dict, evald: dict, reasons: dict, log_file: Any, total: int) -> None:
    """Run the three predictors on one case and add up its scores."""
    from codelsp.completion.pipeline import complete
    from codelsp.nextedit.run import predict

    key = f"case-{n}"
    history = case.history
    p = predict(nem, key, case.path, history[-1].uri, case.text, case.line, history[:-1] + history[-1:],
                history[-1], settings.seed)
    nem.forget(key)
    reasons[p.reason] = reasons.get(p.reason, 0) + 1
    lat["next-edit"].append(p.total_ms)
    evald["next-edit"].append(p.stats.evaluated)
    got = None if p.edit is None else _apply(case.text, p.edit.start, p.edit.end, p.edit.text)
    s = score["next-edit"]
    s["silent" if got is None else "exact" if got == case.expected else "wrong"] += 1
    if p.candidate is not None:
        cand = _apply(case.text, p.candidate.start, p.candidate.end, p.candidate.text)
        before_threshold["exact" if cand == case.expected else "wrong"] += 1
    t0 = time.perf_counter()
    c = complete(model, key, case.text, case.cursor, settings)
    lat["fim-cursor"].append((time.perf_counter() - t0) * 1000)
    evald["fim-cursor"].append(c.stats.evaluated)
    model.forget(key)
    fim = _apply(case.text, case.cursor, case.cursor, c.text) if c.text.strip() else None
    s = score["fim-cursor"]
    s["silent" if fim is None else "exact" if fim == case.expected else "wrong"] += 1
    score["no-edit"]["silent"] += 1
    if log_file:
        log_file.write(json.dumps({"case": case.name, "reason": p.reason, "answer": p.answer,
                                   "edit": None if p.edit is None else [p.edit.old, p.edit.text],
                                   "nextEditExact": got == case.expected, "fim": c.text,
                                   "fimExact": fim == case.expected, "nextEditMs": round(p.total_ms, 1),
                                   "nextEditEvaluated": p.stats.evaluated, "fimMs": round(lat["fim-cursor"][-1], 1),
                                   "fimEvaluated": c.stats.evaluated, "pieces": p.pieces,
                                   "logprobs": [round(x, 4) for x in p.stats.logprobs],
                                   "stop": p.reason != "answer cut short"}) + "\n")
        log_file.flush()
    print(f"\r{n + 1}/{total} next-edit exact {score['next-edit']['exact']} wrong {score['next-edit']['wrong']}",
          end="", file=sys.stderr, flush=True)


def _report(args: argparse.Namespace, nem: Any, model: Any, n: int, score: dict, before_threshold: dict,
            lat: dict, evald: dict, reasons: dict) -> None:
    cases = range(n)
    result = {"model": os.path.basename(str(nem.path)), "fimModel": os.path.basename(str(model.path)), "cases": len(cases),
              "near": NEAR, "maxHunkLines": MAX_HUNK_LINES, "scores": {}, "reasons": reasons,
              "beforeThreshold": before_threshold, "latencyMs": {}, "promptTokensEvaluated": {}}
    for k, s in score.items():
        shown = s["exact"] + s["wrong"]
        result["scores"][k] = {**s, "exactMatch": round(s["exact"] / len(cases), 4),
                               "precision": round(s["exact"] / shown, 4) if shown else None}
    for k in lat:
        result["latencyMs"][k] = {"p50": round(statistics.median(lat[k]), 1), "p95": round(_pct(lat[k], 0.95), 1)}
        result["promptTokensEvaluated"][k] = {"p50": statistics.median(evald[k]), "mean": round(statistics.mean(evald[k]), 1)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"next-edit eval: {len(cases)} cases (next hunk within {NEAR} lines, at most {MAX_HUNK_LINES} lines), "
              f"model {result['model']}")
        for k, s in result["scores"].items():
            print(f"  {k:10s} exact {s['exact']:4d} ({s['exactMatch']:.1%})  wrong shown {s['wrong']:4d}  "
                  f"silent {s['silent']:4d}  precision {s['precision'] if s['precision'] is not None else '-'}")
        print(f"  before the threshold: exact {before_threshold['exact']}, wrong {before_threshold['wrong']}; reasons {reasons}")
        for k in lat:
            print(f"  latency {k:10s} p50 {result['latencyMs'][k]['p50']} ms  p95 {result['latencyMs'][k]['p95']} ms  "
                  f"prompt tokens evaluated p50 {result['promptTokensEvaluated'][k]['p50']}")
