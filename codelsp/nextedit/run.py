"""A next-edit prediction on the engine thread: prompt -> model -> the edit (or none).

`predict()` is the two stages in turn: `repeated()` (the last edit again, no model; cheap enough
for the event loop) and `rewrite()`, which runs where the llama.cpp context lives
(engine/worker.py). They are given plain values (the text, the cursor's line, the recent hunks)
and answer a `Prediction`. Its KV state is kept
under its own key (`next-edit <uri>`), so the file part of the prompt (predict.py) is evaluated
once while the user edits inside the region, and completions keep theirs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from codelsp.actions.chat import ChatPrompt, Segment
from codelsp.engine.generation import GenStats, Model, SamplerParams
from codelsp.nextedit.history import Hunk, split_lines
from codelsp.nextedit.predict import (MAX_EDIT_LINES, SEP, Edit, answer_edit, clean_answer, plausible, prompt_segments,
                                      region_at)
from codelsp.nextedit.repeat import repeat_edit

# the confidence floor of the default (not next-edit) model's answers: one token picked with a
# log-probability under it and the edit is not shown (chosen on the eval's logged cases, README)
MIN_LOGPROB: float | None = None
STOPS = (SEP, "<|endoftext|>", "\n```")  # the last: a markdown fence closing the block (clean_answer)


@dataclass
class Prediction:
    """`edit`: what to show (None: nothing); `reason`: "repeat" (the last edit repeated, no model:
    repeat.py), "edit", "same" (the model kept the region), "empty" (it wrote nothing), "unsure"
    (a token under the confidence floor, judge), or why the edit is not shown (predict.plausible);
    `answer`: the model's rewrite; `prompt_tokens`: the prompt's length."""

    edit: Edit | None
    reason: str
    answer: str = ""
    stats: GenStats = field(default_factory=GenStats)
    total_ms: float = 0.0
    prompt_tokens: int = 0
    candidate: Edit | None = None  # the edit found before the threshold (eval: false positives)
    pieces: list[str] = field(default_factory=list)  # the text of each generated token (stats.logprobs' tokens)


def is_next_edit_model(model: Model) -> bool:
    """A dedicated next-edit model (Sweep's next-edit GGUFs: `sweep` and `next-edit` in its file
    name or general.name): its edits are trusted up to twice the default size."""
    name = f"{model.path} {model.name}".lower().replace("_", "-")
    return "sweep" in name or "next-edit" in name


def repeated(text: str, last: Hunk | None, uri: str) -> Prediction | None:
    """The first stage, without the model: the document's last hunk `last` repeated on the next
    line below it that it applies to (repeat.py), reason "repeat"; None where it applies nowhere.
    Cheap (no engine thread needed): lsp/nextedit.py asks it before queueing the model."""
    t0 = time.perf_counter()
    quick = repeat_edit(text, last, uri)
    if quick is None:
        return None
    found = Edit(*quick)
    return Prediction(found, "repeat", total_ms=(time.perf_counter() - t0) * 1000, candidate=found)


def predict(model: Model, key: str, path: str, uri: str, text: str, line: int, hunks: list[Hunk],
            last: Hunk | None, seed: int = 0, cancel=None, deadline: float | None = None,
            max_lines: int | None = None) -> Prediction:
    """Predict the next edit in `text` (the document `uri`, shown to the model as `path`) with
    the cursor on `line`, given the recent `hunks` (oldest first) and the document's open hunk
    `last`. First the last edit repeated on a line below (`repeated`, no model); else the model's
    rewrite of the region (`rewrite`). A remote backend predicts only the repeated edit (else
    reason "remote")."""
    quick = repeated(text, last, uri)
    if quick is not None:
        return quick
    return rewrite(model, key, path, uri, text, line, hunks, last, seed, cancel, deadline, max_lines)


def rewrite(model: Model, key: str, path: str, uri: str, text: str, line: int, hunks: list[Hunk],
            last: Hunk | None, seed: int = 0, cancel=None, deadline: float | None = None,
            max_lines: int | None = None) -> Prediction:
    """The second stage of `predict` alone: the model rewrites the region at `line`, greedy with
    prompt-lookup drafts (the rewrite mostly copies the region), and `judge` says whether the edit
    is shown. Runs on the engine thread; lsp/nextedit.py calls it after `repeated` found nothing."""
    t0 = time.perf_counter()
    if model.remote:
        return Prediction(None, "remote")
    lines = split_lines(text)
    region = region_at(lines, line)
    segs = prompt_segments(path, text, region, hunks, uri, last)
    tokens = model.chat_tokens(ChatPrompt(tuple(Segment(t, s) for t, s in segs), "next edit"))
    current = "".join(lines[region.start:region.end])
    room = model.context_size - len(tokens) - 1
    budget = min(room, len(model.tokenize(current)) + 32)
    most = current.count("\n") + MAX_EDIT_LINES  # lines an answer may have before it is cut (not shown)

    def too_long(so_far: str) -> bool:
        return so_far.count("\n") > most
    if budget <= 8:
        return Prediction(None, "does not fit", prompt_tokens=len(tokens))
    sampler = SamplerParams(0.0, 0, 1.0, 1.0, seed, "lookup")
    gen = model.generate(key, tokens, max_tokens=budget, sampler=sampler, cancel=cancel, deadline=deadline,
                         check=too_long, stop_texts=STOPS)
    total = (time.perf_counter() - t0) * 1000
    p = judge(is_next_edit_model(model), text, line, last, gen.text, gen.stop_reason == "stop", gen.stats, total, len(tokens), max_lines)
    p.pieces = [model.piece(t).decode("utf-8", "replace") for t in gen.tokens]
    return p


def judge(dedicated: bool, text: str, line: int, last: Hunk | None, raw: str, complete: bool, stats: GenStats,
          total: float = 0.0, prompt_tokens: int = 0, max_lines: int | None = None,
          floor: float | None = MIN_LOGPROB) -> Prediction:
    """The prediction from the model's answer `raw` (`complete`: it ended at its stop token):
    the edit it makes to the region at `line` and the threshold's verdict (`dedicated`: a
    next-edit model, whose edits may be twice as large). `codelsp eval --next-edit --rescore`
    judges logged answers again with it."""
    region = region_at(split_lines(text), line)
    answer, fenced = clean_answer(raw)
    complete = complete or fenced
    if not answer.strip():  # the model closed the block at once: no opinion
        return Prediction(None, "empty", raw, stats, total, prompt_tokens)
    edit = answer_edit(text, region, answer)
    if edit is None:
        return Prediction(None, "same", raw, stats, total, prompt_tokens)
    limit = max_lines or (2 * MAX_EDIT_LINES if dedicated else MAX_EDIT_LINES)
    why = plausible(text, region, answer, edit, last, complete, limit)
    if why is None and floor is not None and not dedicated and stats.logprobs and min(stats.logprobs) < floor:
        why = "unsure"  # a token of the answer was a guess (its log-probability under the floor)
    return Prediction(None if why else edit, why or "edit", raw, stats, total, prompt_tokens, edit)
