"""What applies at the cursor: the functions of a document and the code actions that fit there.

Nothing here runs a model or speaks LSP. `targets()` finds the actions that make sense at a
position (instantly: it only reads the text); prompts.py builds the chat for one action and
edits.py turns the model's answer into a text replacement.

Python is understood through `ast` (with an indentation fallback for code that does not parse
while the user is typing); other languages get a generic, indentation- and brace-based view.
"""

from __future__ import annotations

import ast
import heapq
import re
from dataclasses import dataclass, field

from codelsp.languages import comment_prefix

WRITE_FUNCTION = "codelsp.writeFunction"
EXPLAIN = "codelsp.explain"
DOCUMENT = "codelsp.document"
FIX = "codelsp.fix"
COMMANDS = (WRITE_FUNCTION, EXPLAIN, DOCUMENT, FIX)

_PY_DEF = re.compile(r"^(\s*)(async\s+def|def)\s+(\w+)")
AST_MAX_CHARS = 1_000_000
MAX_FUNCTION_LINES = 2000
_PY_STUB_LINE = re.compile(r"^\s*(pass|\.\.\.|raise\s+NotImplementedError\b.*)\s*(#.*)?$")


def line_indent(line: str) -> str:
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
        indent = line_indent(lines[start])
        body_indent = line_indent(lines[body_start])
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
        j = signature_end(lines, i)
        if j is None:
            continue  # a one-line function, or a signature not closed yet
        body_start = j + 1
        end = body_start
        body_indent = indent + "    "
        for k in range(body_start, len(lines)):
            if _is_blank(lines[k]):
                continue
            if len(line_indent(lines[k])) <= len(indent):
                break
            if end == body_start:
                body_indent = line_indent(lines[k])
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


def signature_end(lines: list[str], i: int) -> int | None:
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
        indent = line_indent(line)
        inner = [k for k in range(i + 1, end - 1) if not _is_blank(lines[k])]
        body_indent = line_indent(lines[inner[0]]) if inner else indent + "    "
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

