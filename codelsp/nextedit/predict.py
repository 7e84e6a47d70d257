"""The next-edit predictor as plain functions: the region, the prompt, the answer's edit.

The model rewrites a region of lines around the cursor given the file around it and the recent
edits, in Qwen2.5-Coder's repository format (`<|file_sep|>` between files), the layout Sweep's
next-edit models were trained on (Sweep's model card and blog, blog.sweep.dev/posts/oss-next-edit):

    <|file_sep|>{path}
    {the file around the region}
    <|file_sep|>{path}.diff          (one block per recent hunk, oldest first)
    original:
    {its old lines}
    updated:
    {its new lines}
    <|file_sep|>original/{path}
    {the region before the last edit}
    <|file_sep|>current/{path}
    {the region now}
    <|file_sep|>updated/{path}
    -> the model writes the region as it will be, and ends with <|file_sep|> or <|endoftext|>

The file part comes first and is cut at fixed line boundaries (`CONTEXT_STEP`), so while the user
edits inside the region the start of the prompt is the same and its KV state is reused.

The answer is compared with the region now: the lines that differ, trimmed to the characters that
differ, are the edit (`answer_edit`). `plausible` is the threshold: what a small model gets wrong
most (cutting lines off, undoing the user's edit, large rewrites) is not shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from codelsp.nextedit.history import Hunk, common_ends, line_diff, split_lines

SEP = "<|file_sep|>"
REGION_BEFORE = 2  # lines of the region above the cursor's line
REGION_AFTER = 6  # ... and below it (the region is at most 9 lines: a short answer)
CONTEXT_BEFORE = 24  # lines of the file part above the region (at most; cut at CONTEXT_STEP lines)
CONTEXT_AFTER = 8  # ... below it
CONTEXT_STEP = 8
MAX_EDIT_LINES = 4  # plausible(): an edit replacing more lines than this is not shown
HISTORY_HUNKS = 3  # recent hunks put in the prompt


@dataclass(frozen=True)
class Region:
    """Lines [start, end) of the document's text (0-based)."""

    start: int
    end: int


@dataclass(frozen=True)
class Edit:
    """Replace characters [start, end) of the text the prediction was made on with `text`;
    `lines`: how many lines the replaced text spans (for the threshold)."""

    start: int
    end: int
    text: str
    old: str  # the replaced text


def region_at(lines: list[str], line: int, before: int = REGION_BEFORE, after: int = REGION_AFTER) -> Region:
    """The region around `line` (clamped to the document)."""
    start = max(0, min(line, len(lines)) - before)
    return Region(start, min(len(lines), max(line, 0) + after + 1))


def original_region(region_lines: list[str], region: Region, hunk: Hunk | None, uri: str) -> list[str]:
    """The region's lines before the document's last hunk (`hunk`, the open one), where that hunk
    lies inside the region; else the region as it is (Sweep's `original/` block)."""
    if hunk is None or hunk.uri != uri:
        return region_lines
    at = hunk.start - region.start
    if at < 0 or at + hunk.new_lines > len(region_lines):
        return region_lines
    return region_lines[:at] + split_lines(hunk.old) + region_lines[at + hunk.new_lines:]


def _block(lines: list[str]) -> str:
    text = "".join(lines)
    return text if text.endswith("\n") or not text else text + "\n"


def prompt_segments(path: str, text: str, region: Region, hunks: list[Hunk], uri: str,
                    last: Hunk | None) -> list[tuple[str, bool]]:
    """The prompt as (text, special) segments: `special` ones are the separators (their
    special-token text is parsed), the others are document text (never parsed). `hunks`: the
    recent edits, oldest first; `last`: the document's open hunk (for the `original/` block)."""
    lines = split_lines(text)
    lo = max(0, region.start - CONTEXT_BEFORE)
    lo -= lo % CONTEXT_STEP  # fixed boundaries: the prompt's start stays while the cursor moves a little
    hi = min(len(lines), region.end + CONTEXT_AFTER)
    cur = lines[region.start:region.end]
    segs: list[tuple[str, bool]] = [(SEP, True), (f"{path}\n" + _block(lines[lo:region.start] + cur + lines[region.end:hi]), False)]
    for h in hunks[-HISTORY_HUNKS:]:
        name = path if h.uri == uri else h.uri.rsplit("/", 1)[-1]
        segs += [(SEP, True), (f"{name}.diff\noriginal:\n{_block(split_lines(h.old))}updated:\n{_block(split_lines(h.new))}", False)]
    segs += [(SEP, True), (f"original/{path}\n" + _block(original_region(cur, region, last, uri)), False),
             (SEP, True), (f"current/{path}\n" + _block(cur), False),
             (SEP, True), (f"updated/{path}\n", False)]
    return segs


def clean_answer(answer: str) -> tuple[str, bool]:
    """(the model's rewrite without the markdown a small instruct model wraps code in, whether it
    ended at a closing fence). A first line that opens a fence (```lang) is dropped, and the
    answer ends before a line that is a fence: the default Qwen2.5-Coder-0.5B-Instruct often
    closes the block with ``` after the region (an answer that ends there is whole)."""
    lines = split_lines(answer)
    if lines and lines[0].lstrip().startswith("```"):
        lines = lines[1:]
    for i, line in enumerate(lines):
        if line.strip().startswith("```"):
            return "".join(lines[:i]), True
    return "".join(lines), False


def answer_edit(text: str, region: Region, answer: str) -> Edit | None:
    """The edit that turns the region of `text` into `answer` (the model's rewrite of it), as
    the smallest character range; None when they are the same. A final line break the answer
    lacks (or adds) where the region ends is not an edit."""
    lines = split_lines(text)
    cur = "".join(lines[region.start:region.end])
    if cur.endswith("\n") and not answer.endswith("\n"):
        answer += "\n"
    elif answer.endswith("\n") and not cur.endswith("\n"):
        answer = answer[:-1]
    if answer == cur:
        return None
    base = sum(len(x) for x in lines[:region.start])
    head, tail = common_ends(cur, answer)
    return Edit(base + head, base + len(cur) - tail, answer[head:len(answer) - tail], cur[head:len(cur) - tail])


def plausible(text: str, region: Region, answer: str, edit: Edit, last: Hunk | None, complete: bool,
              max_lines: int = MAX_EDIT_LINES) -> str | None:
    """Why the edit is not shown (a short reason), or None to show it. The threshold: an answer
    cut short (`complete` False), an edit of more than `max_lines` lines, one that only deletes,
    one that changes only white space, one that undoes the last hunk."""
    if not complete:
        return "answer cut short"
    if not edit.text.strip() and edit.old.strip():
        return "deletes only"
    if edit.text.strip() == edit.old.strip() or "".join(edit.text.split()) == "".join(edit.old.split()):
        return "white space only"
    diff = line_diff("".join(split_lines(text)[region.start:region.end]), answer)
    if diff is not None and (len(diff[1]) > max_lines or len(diff[2]) > max_lines + 2):
        return "too large"
    if last is not None:
        after = split_lines(text[:edit.start] + edit.text + text[edit.end:])
        if "".join(after[last.start:last.start + last.old_lines]) == last.old and \
                "".join(split_lines(text)[last.start:last.start + last.new_lines]) == last.new:
            return "undoes the last edit"
    return None


def rebase(old_text: str, new_text: str, edit: Edit) -> Edit | None:
    """`edit` (made on `old_text`) moved onto `new_text`, when the change between them neither
    touches the edit's range nor ends or starts right next to it; None when it does."""
    if old_text == new_text:
        return edit
    head, tail = common_ends(old_text, new_text)
    changed_end = len(old_text) - tail  # the change replaced old [head, changed_end)
    if edit.end < head:  # a change touching the edit's range (next to it too) drops it
        return edit
    if edit.start > changed_end:
        delta = len(new_text) - len(old_text)
        return Edit(edit.start + delta, edit.end + delta, edit.text, edit.old)
    return None
