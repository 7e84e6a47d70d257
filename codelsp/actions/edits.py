"""From the model's answer to a text edit.

`strip_reasoning()` drops a reasoning model's `<think>` block, `extract_code()` takes the code out
of the answer, `edit_for()` makes the line replacement an action's answer stands for, and
`reanchor()` moves that edit onto text the user changed meanwhile (or refuses).
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

from codelsp.actions.targets import (
    DOCUMENT,
    EXPLAIN,
    FIX,
    WRITE_FUNCTION,
    Function,
    Target,
    line_indent,
    signature_end,
)
from codelsp.languages import BLOCK_COMMENTS, NO_COMMENTS, comment_prefix

_THINK_OPEN = re.compile(r"\A\s*<(think|thinking)>", re.I)
_THINK_CLOSE = re.compile(r"</(think|thinking)>", re.I)


def strip_reasoning(answer: str) -> tuple[str, bool]:
    """The answer without the model's reasoning, and whether there was any.

    Reasoning models (Qwen3, QwQ, DeepSeek-R1 distills) served without a reasoning parser write
    `<think>…</think>` before the answer; a chat template that opens the block itself (in the
    prompt) leaves only the closing `</think>`; an answer that ran out of tokens while reasoning
    has no closing tag at all, and then nothing of it is the answer. Only a block that opens the
    answer counts, so code that mentions such a tag is left alone.
    """
    text = answer
    found = False
    while True:
        opened = _THINK_OPEN.match(text)
        close = _THINK_CLOSE.search(text)
        if opened is not None:
            found = True
            if close is None or close.start() < opened.end():
                return "", True  # unterminated: the model never got to its answer
            text = text[close.end():]
        elif close is not None and not found and text[: close.start()].strip() and \
                text[: close.start()].rstrip(" \t").endswith("\n") and "<think" not in text[: close.start()].lower():
            text, found = text[close.end():], True  # the template opened the block in the prompt
        else:
            return (text.lstrip("\n") if found else text), found

_FENCE = re.compile(r"^[ \t]*(```+|~~~+)[ \t]*([\w+#.-]*)[^\n]*$", re.M)


def extract_code(answer: str) -> str:
    """The code in a model's answer: the longest fenced block, else the answer minus prose."""
    blocks: list[str] = []
    marks = list(_FENCE.finditer(answer))
    i = 0
    while i < len(marks):
        opening = marks[i]
        close = next((m for m in marks[i + 1:] if m.group(1)[0] == opening.group(1)[0] and not m.group(2)), None)
        if close is None:  # an unterminated block (the answer hit the token limit): take the rest
            blocks.append(answer[opening.end():].strip("\n"))
            break
        blocks.append(answer[opening.end(): close.start()].strip("\n"))
        i = marks.index(close) + 1
    if blocks:
        return max(blocks, key=len).rstrip()
    # No fence: drop leading and trailing prose lines ("Here is the function:", "This works by ...")
    lines = answer.strip("\n").split("\n")
    while lines and _looks_like_prose(lines[0]):
        lines.pop(0)
    while lines and _looks_like_prose(lines[-1]):
        lines.pop()
    return "\n".join(lines).rstrip()


def _looks_like_prose(line: str) -> bool:
    s = line.strip()
    if not s:
        return True
    if line[:1] in (" ", "\t"):
        return False
    words = s.split()
    code_chars = sum(s.count(c) for c in "()[]{}=;:<>+-*/\"'_.,")
    return len(words) >= 4 and s[0].isupper() and code_chars <= 2 and not s.startswith(("#", "//", "--"))


def _strip_signature(code: str, fn: Function, language: str) -> str:
    """If the answer repeats the function's signature, keep only the body, dedented."""
    lines = code.split("\n")
    if language == "python":
        body = _py_body_of(code, fn.name)
        if body is not None:
            return body
        pat = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(fn.name)}\s*\(")
        for i, line in enumerate(lines):
            if pat.match(line):
                j = signature_end(lines, i)
                if j is None:
                    continue
                sig_indent = len(line_indent(line))
                body = []
                for k in range(j + 1, len(lines)):
                    if lines[k].strip() and len(line_indent(lines[k])) <= sig_indent:
                        break
                    body.append(lines[k])
                return textwrap.dedent("\n".join(body)).strip("\n")
        return textwrap.dedent(code).strip("\n")
    if fn.name:
        pat = re.compile(rf"\b{re.escape(fn.name)}\s*\(")
        for i, line in enumerate(lines):
            if pat.search(line) and line.rstrip().endswith("{"):
                depth = 0
                for k in range(i, len(lines)):
                    depth += lines[k].count("{") - lines[k].count("}")
                    if depth <= 0:
                        return textwrap.dedent("\n".join(lines[i + 1: k])).strip("\n")
                return textwrap.dedent("\n".join(lines[i + 1:])).strip("\n")
    return textwrap.dedent(code).strip("\n")


def _py_body_of(code: str, name: str) -> str | None:
    """The body of function `name` in `code`, dedented, when `code` parses."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    lines = textwrap.dedent(code).split("\n")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name and node.body:
            first = node.body[0]
            if lines[first.lineno - 1][: first.col_offset].strip():
                return None  # `def f(): return 1`: let the line-based path handle it
            return textwrap.dedent("\n".join(lines[first.lineno - 1: node.end_lineno])).strip("\n")
    return None


def _has_signature(code: str, fn: Function, language: str) -> bool:
    if not fn.name:
        return False
    if language == "python":
        return re.search(rf"^\s*(async\s+)?def\s+{re.escape(fn.name)}\s*\(", code, re.M) is not None
    return re.search(rf"\b{re.escape(fn.name)}\s*\(.*\{{\s*$", code, re.M) is not None


def _strip_docstring(body: str) -> str:
    """Drop a leading docstring from a generated Python body (the stub keeps its own)."""
    try:
        tree = ast.parse(body)
    except SyntaxError:
        return body
    if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(getattr(tree.body[0], "value", None), ast.Constant) \
            and isinstance(tree.body[0].value.value, str) and len(tree.body) > 1:
        rest = body.split("\n")[tree.body[0].end_lineno:]
        return "\n".join(rest).strip("\n")
    return body


def _reindent(code: str, indent: str) -> list[str]:
    return [indent + line if line.strip() else "" for line in textwrap.dedent(code).split("\n")]


@dataclass(frozen=True)
class LineEdit:
    """Replace lines [start, end) with `new_lines` (0-based; start == end inserts)."""

    start: int
    end: int
    new_lines: tuple[str, ...]


def _wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    for para in text.strip().split("\n"):
        if not para.strip():
            out.append("")
            continue
        lead = line_indent(para)
        out.extend(textwrap.wrap(para.strip(), width=max(width, 20), subsequent_indent=lead + ("  " if para.lstrip().startswith(("-", "*")) else ""),
                                 initial_indent=lead, break_long_words=False, break_on_hyphens=False) or [""])
    while out and not out[-1]:
        out.pop()
    return out


def edit_for(target: Target, text: str, language: str, answer: str, width: int = 88) -> LineEdit | None:
    """The edit an action's answer makes; None when the answer holds nothing usable."""
    lines = text.split("\n")
    fn = target.function
    if target.command == EXPLAIN:
        prose = answer.strip()
        if not prose:
            return None
        if language in NO_COMMENTS:
            return None  # nowhere to put it: the markdown result is all there is
        indent = line_indent(lines[target.start]) if target.start < len(lines) else ""
        if language in BLOCK_COMMENTS:
            opening, closing = BLOCK_COMMENTS[language]
            body = _wrap(prose.replace(closing, ""), width - len(indent) - 2)
            new = [f"{indent}{opening}", *[f"{indent}  {ln}".rstrip() for ln in body], f"{indent}{closing}"]
            return LineEdit(target.start, target.start, tuple(new))
        prefix = comment_prefix(language)
        body = _wrap(prose, width - len(indent) - len(prefix) - 1)
        new = [f"{indent}{prefix} {ln}".rstrip() for ln in body]
        return LineEdit(target.start, target.start, tuple(new))

    if target.command == DOCUMENT and fn is not None:
        doc = _clean_doc(answer)
        if not doc:
            return None
        if language == "python":
            ind = fn.body_indent
            doc_lines = _wrap(doc, width - len(ind))
            if len(doc_lines) == 1:
                new = [f'{ind}"""{doc_lines[0]}"""']
            else:
                new = [f'{ind}"""{doc_lines[0]}', *[f"{ind}{ln}" if ln else "" for ln in doc_lines[1:]], f'{ind}"""']
            if fn.doc:
                return LineEdit(fn.doc[0], fn.doc[1], tuple(new))
            return LineEdit(fn.body_start, fn.body_start, tuple(new))
        prefix = comment_prefix(language)
        new = [f"{fn.indent}{prefix} {ln}".rstrip() for ln in _wrap(doc, width - len(fn.indent) - len(prefix) - 1)]
        start = fn.start
        while start > 0 and lines[start - 1].strip().startswith(prefix):
            start -= 1  # replace an existing comment block right above
        return LineEdit(start, fn.start, tuple(new))

    code = extract_code(answer)
    if not code.strip():
        return None
    if target.command == WRITE_FUNCTION and fn is not None and fn.stub is not None:
        body = _strip_signature(code, fn, language)
        if language == "python" and fn.doc:
            body = _strip_docstring(body)
        if not body.strip():
            return None
        return LineEdit(fn.stub[0], fn.stub[1], tuple(_reindent(body, fn.body_indent)))
    if target.command == WRITE_FUNCTION and target.comment is not None:
        indent = line_indent(lines[target.comment[0]])
        # an answer that repeats the comment should not duplicate it
        comment = [ln.strip() for ln in lines[target.comment[0]: target.comment[1]]]
        code_lines = textwrap.dedent(code).split("\n")
        while code_lines and code_lines[0].strip() in comment:
            code_lines.pop(0)
        return LineEdit(target.comment[1], target.comment[1], tuple(_reindent("\n".join(code_lines), indent)))
    if target.command == FIX:
        if fn is not None and (target.start, target.end) == (fn.start, fn.end) and not _has_signature(code, fn, language):
            # the answer is the corrected body only: keep the signature
            return LineEdit(fn.body_start, fn.end, tuple(_reindent(code, fn.body_indent)))
        replaced = [ln for ln in lines[target.start: target.end] if ln.strip()]
        indent = min((line_indent(ln) for ln in replaced), key=len, default="")
        return LineEdit(target.start, target.end, tuple(_reindent(code, indent)))
    return None


def _clean_doc(answer: str) -> str:
    text = answer.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = extract_code(text)
    text = text.strip()
    for q in ('"""', "'''", "/**", "*/"):
        text = text.replace(q, "")
    lines = [re.sub(r"^\s*(\*|//|#)\s?", "", ln) for ln in text.split("\n")]
    doc = textwrap.dedent("\n".join(lines)).strip().replace('"""', "'''")
    # the text goes between triple quotes: backslashes are literal, a final quote must not
    # touch the closing ones
    doc = doc.replace("\\", "\\\\")
    return doc[:-1] + '\\"' if doc.endswith('"') else doc


def apply_edit(text: str, edit: LineEdit) -> str:
    """The text after `edit` (what the editor will show); used for checks and tests."""
    lines = text.split("\n")
    return "\n".join(lines[: edit.start] + list(edit.new_lines) + lines[edit.end:])


def reanchor(old_text: str, new_text: str, edit: LineEdit, context: int = 2) -> LineEdit | None:
    """Move `edit` (made for `old_text`) onto `new_text`, or None when that is not safe.

    The lines it replaces plus `context` lines around them must appear exactly once in the new
    text; then the same replacement applies there. Otherwise the user changed the code the action
    was about, and applying it would overwrite their edit.
    """
    if old_text == new_text:
        return edit
    old = old_text.split("\n")
    new = new_text.split("\n")
    a = max(edit.start - context, 0)
    b = min(edit.end + context, len(old))
    window = old[a:b]
    if not window:
        return None
    hits = [i for i in range(len(new) - len(window) + 1) if new[i: i + len(window)] == window]
    if len(hits) != 1:
        return None
    shift = hits[0] - a
    return LineEdit(edit.start + shift, edit.end + shift, edit.new_lines)
