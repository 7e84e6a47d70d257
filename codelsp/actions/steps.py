"""Code actions as plain functions: what applies at the cursor, the prompt, and the edit.

Nothing here runs a model or speaks LSP. `targets()` finds the actions that make sense at a
position (instantly: it only reads the text); `messages()` builds the chat for one action;
`extract_code()` and `edit_for()` turn the model's answer into a text replacement.

Python is understood through `ast` (with an indentation fallback for code that does not parse
while the user is typing); other languages get a generic, indentation- and brace-based view.
"""

from __future__ import annotations

import ast
import heapq
import re
import textwrap
from dataclasses import dataclass, field

from codelsp.languages import BLOCK_COMMENTS, NO_COMMENTS, comment_prefix

WRITE_FUNCTION = "codelsp.writeFunction"
EXPLAIN = "codelsp.explain"
DOCUMENT = "codelsp.document"
FIX = "codelsp.fix"
COMMANDS = (WRITE_FUNCTION, EXPLAIN, DOCUMENT, FIX)

_PY_DEF = re.compile(r"^(\s*)(async\s+def|def)\s+(\w+)")
AST_MAX_CHARS = 1_000_000
MAX_FUNCTION_LINES = 2000
_PY_STUB_LINE = re.compile(r"^\s*(pass|\.\.\.|raise\s+NotImplementedError\b.*)\s*(#.*)?$")


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _is_blank(line: str) -> bool:
    return not line.strip()


@dataclass(frozen=True)
class Function:
    """A function in the document, by 0-based line numbers (end exclusive)."""

    name: str
    start: int  # first line of the signature (decorators excluded)
    end: int  # one past the last line of the function
    body_start: int  # first line after the signature
    indent: str  # the signature's indentation
    body_indent: str
    doc: tuple[int, int] | None = None  # docstring lines [start, end)
    stub: tuple[int, int] | None = None  # lines to replace when writing the body, [start, end)
    stub_kind: str = ""  # "pass", "docstring", "empty", ...


@dataclass(frozen=True)
class Target:
    """One action that applies at the cursor."""

    command: str
    title: str
    kind: str  # LSP CodeActionKind
    start: int  # the code it is about, lines [start, end)
    end: int
    function: Function | None = None
    comment: tuple[int, int] | None = None  # a describing comment (write function from a comment)
    diagnostics: tuple[str, ...] = field(default_factory=tuple)


# --- finding functions --------------------------------------------------------------------

def _py_functions_ast(text: str, lines: list[str]) -> list[Function] | None:
    if len(text) > AST_MAX_CHARS:
        return None  # listing actions must stay instant: the line-based view is linear
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    out: list[Function] = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
            continue
        first = node.body[0]
        body_start = first.lineno - 1
        if lines[body_start][: first.col_offset].strip():
            continue  # the body shares a line with the signature: `def f(): pass`, `) -> int: ...`
        # decorators belong to the function: comments go above them
        start = min([node.lineno - 1] + [d.lineno - 1 for d in node.decorator_list])
        end = node.end_lineno or node.lineno
        indent = _indent(lines[start])
        body_indent = _indent(lines[body_start])
        doc = None
        stmts = list(node.body)
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            doc = (first.lineno - 1, first.end_lineno or first.lineno)
            stmts = stmts[1:]
        stub = None
        kind = ""
        if not stmts and doc is not None:
            stub, kind = (doc[1], doc[1]), "docstring"
        elif len(stmts) == 1 and _py_is_stub_stmt(stmts[0]):
            s = stmts[0]
            stub, kind = (s.lineno - 1, s.end_lineno or s.lineno), "stub"
        # trailing comment lines inside the body belong to the function's text range
        out.append(Function(node.name, start, end, body_start, indent, body_indent, doc, stub, kind))
    return out


def _py_is_stub_stmt(s: ast.stmt) -> bool:
    if isinstance(s, ast.Pass):
        return True
    if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and s.value.value is Ellipsis:
        return True
    if isinstance(s, ast.Raise) and s.exc is not None:
        exc = s.exc.func if isinstance(s.exc, ast.Call) else s.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def _py_functions_indent(lines: list[str]) -> list[Function]:
    """Functions of Python that does not parse: by `def` lines and indentation."""
    out: list[Function] = []
    for i, line in enumerate(lines):
        m = _PY_DEF.match(line)
        if not m:
            continue
        indent = m.group(1)
        j = _signature_end(lines, i)
        if j is None:
            continue  # a one-line function, or a signature not closed yet
        body_start = j + 1
        end = body_start
        body_indent = indent + "    "
        for k in range(body_start, len(lines)):
            if _is_blank(lines[k]):
                continue
            if len(_indent(lines[k])) <= len(indent):
                break
            if end == body_start:
                body_indent = _indent(lines[k])
            end = k + 1
        body = [k for k in range(body_start, end) if not _is_blank(lines[k])]
        doc = _docstring_lines(lines, body)
        if doc is not None:
            body = [k for k in body if k >= doc[1]]
        stub = None
        kind = ""
        if not body:
            at = doc[1] if doc else body_start
            stub, kind = (at, at), "docstring" if doc else "empty"
        elif len(body) == 1 and _PY_STUB_LINE.match(lines[body[0]]):
            stub, kind = (body[0], body[0] + 1), "stub"
        out.append(Function(m.group(3), i, max(end, body_start), body_start, indent, body_indent, doc, stub, kind))
    return out


def _code_part(line: str) -> str:
    """The line without a trailing `#` comment (good enough for signatures)."""
    return re.sub(r"#[^\"']*$", "", line).rstrip()


def _signature_end(lines: list[str], i: int) -> int | None:
    """The line where a `def` starting at line i ends with its `:`; None for a one-liner/unclosed."""
    depth = 0
    for j in range(i, min(len(lines), i + 200)):
        code = _code_part(lines[j])
        depth += code.count("(") + code.count("[") - code.count(")") - code.count("]")
        if depth <= 0:
            return j if code.endswith(":") else None
    return None


def _docstring_lines(lines: list[str], body: list[int]) -> tuple[int, int] | None:
    """Lines [start, end) of a docstring opening the body, found by its quotes."""
    if not body:
        return None
    first = lines[body[0]].strip()
    for q in ('"""', "'''"):
        for p in ("", "r", "u", "R", "U"):
            if first.startswith(p + q):
                rest = first[len(p) + 3:]
                if q in rest:
                    return body[0], body[0] + 1
                for k in range(body[0] + 1, len(lines)):
                    if q in lines[k]:
                        return body[0], k + 1
                return None
    return None


def _generic_functions(lines: list[str]) -> list[Function]:
    """Brace languages: a line that opens a block ending in `{`, up to its matching `}`.

    One pass over the running brace depth (a heap of open candidates), so unclosed braces
    while the user types cost no more than closed ones.
    """
    candidates: list[int] = []
    ends: dict[int, int] = {}
    heap: list[tuple[int, int]] = []  # (-depth before the candidate's line, line)
    depth = 0
    for k, line in enumerate(lines):
        stripped = line.strip()
        if stripped.endswith("{") and "(" in stripped and not _CONTROL.match(line):
            candidates.append(k)
            heapq.heappush(heap, (-depth, k))
        depth += line.count("{") - line.count("}")
        while heap and -heap[0][0] >= depth:
            ends[heapq.heappop(heap)[1]] = k + 1
    out: list[Function] = []
    for i in candidates:
        end = ends.get(i)
        if end is None:
            continue
        line = lines[i]
        indent = _indent(line)
        inner = [k for k in range(i + 1, end - 1) if not _is_blank(lines[k])]
        body_indent = _indent(lines[inner[0]]) if inner else indent + "    "
        stub = None
        kind = ""
        comment_only = all(lines[k].strip().startswith(("//", "/*", "*", "#", "--")) for k in inner[:MAX_FUNCTION_LINES])
        todo = len(inner) == 1 and re.search(r"todo!\(|unimplemented!\(|not implemented|TODO", lines[inner[0]], re.I)
        if end - 1 > i and (not inner or comment_only or todo):
            stub, kind = (i + 1, end - 1), "empty"
        name = re.findall(r"(\w+)\s*\(", line.strip())
        out.append(Function(name[0] if name else "", i, end, i + 1, indent, body_indent, None, stub, kind))
    return out


_CONTROL = re.compile(r"^\s*(if|for|while|switch|else|do|try|catch)\b")


def functions(text: str, language: str) -> list[Function]:
    lines = text.split("\n")
    if language == "python":
        found = _py_functions_ast(text, lines)
        return found if found is not None else _py_functions_indent(lines)
    return _generic_functions(lines)


def enclosing_function(text: str, language: str, line: int) -> Function | None:
    """The innermost function whose lines contain `line`."""
    best = None
    for f in functions(text, language):
        if f.start <= line < max(f.end, f.body_start + 1):
            if best is None or f.start >= best.start:
                best = f
    return best


# --- what applies at the cursor -------------------------------------------------------------

def _comment_block(lines: list[str], line: int, prefix: str) -> tuple[int, int] | None:
    if not (0 <= line < len(lines)) or not lines[line].strip().startswith(prefix):
        return None
    start = line
    while start > 0 and lines[start - 1].strip().startswith(prefix):
        start -= 1
    end = line + 1
    while end < len(lines) and lines[end].strip().startswith(prefix):
        end += 1
    return start, end


def _paragraph(lines: list[str], line: int) -> tuple[int, int]:
    """Lines around `line` up to blank lines: what Explain covers outside any function."""
    line = min(max(line, 0), max(len(lines) - 1, 0))
    start = line
    while start > 0 and not _is_blank(lines[start - 1]):
        start -= 1
    end = line + 1
    while end < len(lines) and not _is_blank(lines[end]):
        end += 1
    return start, end


def targets(
    text: str,
    language: str,
    start_line: int,
    end_line: int | None = None,
    diagnostics: tuple[tuple[int, int, str], ...] = (),
) -> list[Target]:
    """The actions that make sense for a cursor (or a selection of lines [start_line, end_line])."""
    lines = text.split("\n")
    if not lines or start_line >= len(lines) or start_line < 0:
        return []
    selected = end_line is not None and end_line > start_line
    fn = enclosing_function(text, language, start_line)
    prefix = comment_prefix(language)
    out: list[Target] = []

    if fn is not None and fn.stub is not None:
        out.append(Target(WRITE_FUNCTION, f"codelsp: Write function {fn.name}", "refactor.rewrite",
                          fn.start, fn.end, fn))
    elif fn is None or fn.stub is None:
        block = _comment_block(lines, start_line, prefix)
        if block is not None and (fn is None or block[0] >= fn.body_start):
            out.append(Target(WRITE_FUNCTION, "codelsp: Write function from this comment", "refactor.rewrite",
                              block[0], block[1], None, block))

    if selected:
        last = min(end_line, len(lines) - 1)
        out.append(Target(EXPLAIN, "codelsp: Explain the selection", "refactor.explain", start_line, last + 1))
    elif fn is not None:
        out.append(Target(EXPLAIN, f"codelsp: Explain {fn.name or 'this function'}", "refactor.explain",
                          fn.start, fn.end, fn))
    elif lines[start_line].strip():
        a, b = _paragraph(lines, start_line)
        out.append(Target(EXPLAIN, "codelsp: Explain this code", "refactor.explain", a, b))

    if fn is not None and fn.name:
        verb = "Update" if fn.doc else "Add"
        out.append(Target(DOCUMENT, f"codelsp: {verb} the documentation of {fn.name}", "refactor.rewrite",
                          fn.start, fn.end, fn))

    if diagnostics:
        first = min(d[0] for d in diagnostics)
        last = max(d[1] for d in diagnostics)
        if fn is not None and fn.start <= first and last < fn.end:
            a, b = fn.start, fn.end
        else:
            a, b = max(first - 2, 0), min(last + 3, len(lines))
        msgs = tuple(d[2] for d in diagnostics)
        title = (msgs[0].splitlines() or ["a problem"])[0] if len(msgs) == 1 else f"{len(msgs)} problems"
        if len(title) > 60:
            title = title[:59] + "…"
        out.append(Target(FIX, f"codelsp: Fix: {title}", "quickfix", a, b, fn, None, msgs))
    return out


# --- prompts --------------------------------------------------------------------------------

CONTEXT_LINES = 40


def _fence(language: str) -> str:
    return "" if language == "text" else language


def _around(lines: list[str], start: int, end: int, n: int = CONTEXT_LINES) -> str:
    return "\n".join(lines[max(start - n, 0): min(end + n, len(lines))])


def messages(target: Target, text: str, language: str, system: str) -> list[dict[str, str]]:
    """The chat (system + user message) for one action."""
    lines = text.split("\n")
    lang = _fence(language)
    code = "\n".join(lines[target.start: target.end])
    context = _around(lines, target.start, target.end)
    fn = target.function
    if target.command == WRITE_FUNCTION and fn is not None:
        head_end = fn.doc[1] if fn.doc else fn.body_start
        header = "\n".join(lines[fn.start: head_end])
        user = (
            f"Here is some {language} code:\n```{lang}\n{context}\n```\n\n"
            f"Write the body of the function `{fn.name}` below so that it does what its name, "
            f"signature and documentation say. Reply with the complete function in one ```{lang} "
            f"code block and nothing else.\n```{lang}\n{header}\n```"
        )
    elif target.command == WRITE_FUNCTION:
        comment = "\n".join(lines[target.comment[0]: target.comment[1]]) if target.comment else code
        user = (
            f"Here is some {language} code:\n```{lang}\n{context}\n```\n\n"
            f"Write the {language} code that this comment describes. Reply with the code in one "
            f"```{lang} code block and nothing else.\n```{lang}\n{comment}\n```"
        )
    elif target.command == EXPLAIN:
        user = (
            f"Explain what this {language} code does, briefly and precisely, for a programmer "
            f"reading it. Use a short paragraph or a few bullet points; do not repeat the code.\n"
            f"```{lang}\n{code}\n```"
        )
    elif target.command == DOCUMENT:
        style = "a docstring" if language == "python" else "a documentation comment"
        user = (
            f"Write {style} for the {language} function `{fn.name if fn else ''}` below: one summary "
            f"line, then its parameters and return value if any. Reply with only the text of the "
            f"documentation, without quotes, comment markers or code.\n```{lang}\n{code}\n```"
        )
    else:  # FIX
        problems = "\n".join(f"- {d}" for d in target.diagnostics)
        user = (
            f"This {language} code has these problems:\n{problems}\n\n```{lang}\n{code}\n```\n\n"
            f"Reply with the corrected code, all of it, in one ```{lang} code block and nothing else."
        )
    out = [{"role": "system", "content": system}] if system else []
    out.append({"role": "user", "content": user})
    return out


# --- turning answers into code --------------------------------------------------------------

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
                j = _signature_end(lines, i)
                if j is None:
                    continue
                sig_indent = len(_indent(line))
                body = []
                for k in range(j + 1, len(lines)):
                    if lines[k].strip() and len(_indent(lines[k])) <= sig_indent:
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
        lead = _indent(para)
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
        indent = _indent(lines[target.start]) if target.start < len(lines) else ""
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
        indent = _indent(lines[target.comment[0]])
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
        indent = min((_indent(ln) for ln in replaced), key=len, default="")
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
