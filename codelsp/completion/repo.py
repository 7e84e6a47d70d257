"""Repository context: the definitions from the rest of the project that the current file uses.

For a Python document inside a workspace folder, the names it imports from the project are
resolved with `ast` to the project file that defines them (absolute and relative imports; a
package's `__init__.py` that re-exports a name is followed up to REEXPORT_DEPTH times), and each
definition becomes a chunk: a function whole when short (SHORT_LINES), else its signature and
docstring's first line; a class as its header, docstring line, class attributes and method
signatures; a module-level assignment as its lines. Chunks are ranked by the names they share
with the lines around the cursor (a BM25-style weight: rarer names count more) and by how often
the file uses their name, and taken best first while they fit the token budget.

The chosen chunks form a `RepoContext`: the files they come from, in rank order with the best
file last (nearest the code), rendered per model family by `render_tokens` (Qwen2.5-Coder's and
StarCoder2's repository format, control-token ids from the vocabulary) or `render_text`
(`# file:` comments for families without one). It goes before the FIM prefix token, so it is a
stable head of the prompt: the session keeps one per document until the document's imports
change (context.py's windows and engine/reuse.py then keep every keystroke's cost unchanged).

Which files of the workspace are read (`project_files`, `readable`): workspace.py.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from codelsp.completion.workspace import inside, project_files, readable, relative, uri_path

SHORT_LINES = 12  # a function this long or shorter goes in whole
# a chunk takes at most this share of the budget (or MIN_CAP tokens), cut to its first lines: on
# `eval --cross-file`'s 326 lines that use an imported name, its definition is then in a 768-token
# context for 294 (90 %) against 210 when long chunks went in whole or not at all
PART = 0.1
MIN_CAP = 64
REEXPORT_DEPTH = 2
_CONTINUATION = re.compile(r"[\w\s,().\\]*$")  # what a line inside `from m import (...)` can hold
_IMPORT_START = re.compile(r"[ \t]*(?:from[ \t]+\S+[ \t]+import\b|import[ \t]+\S)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Tokenize = Callable[[str, bool], list[int]]
log = logging.getLogger(__name__)


# --- resolving imports ------------------------------------------------------------------------

class Project:
    """The Python files of one workspace folder, their module names and (lazily) their definitions."""

    def __init__(self, root: Path, files: Iterable[Path] | None = None,
                 read: Callable[[Path], str | None] = readable):
        self.root = Path(root)
        self.files = [Path(f) for f in (project_files(self.root) if files is None else files)]
        self._read = read
        self._file_set = set(self.files)
        self._texts: dict[Path, str | None] = {}
        self._trees: dict[Path, ast.Module | None] = {}
        # absolute imports resolve from the import roots only (Python 3 has no implicit relative
        # imports: `import json` in a package is the standard library's, not its json.py): the
        # workspace root, its `src/`, and the folder above a file's outermost package;
        # src/pkg/mod.py (with src/pkg/__init__.py) is "src.pkg.mod" and "pkg.mod", never "mod"
        self._packages = {f.parent for f in self.files if f.name == "__init__.py"}
        self.modules: dict[str, Path] = {}
        for f in self.files:
            top = f.parent
            while top in self._packages and top != self.root:
                top = top.parent
            for base in (self.root, self.root / "src", top if f.parent in self._packages else self.root):
                if base in f.parents:
                    parts = f.relative_to(base).with_suffix("").parts
                    parts = parts[:-1] if parts[-1] == "__init__" else parts
                    if parts:
                        self.modules.setdefault(".".join(parts), f)

    def text(self, path: Path) -> str | None:
        if path not in self._texts:
            self._texts[path] = self._read(path) if path in self._file_set else None  # listed files only
        return self._texts[path]

    def tree(self, path: Path, text: str | None = None) -> ast.Module | None:
        if text is not None:
            return _parse(text)
        if path not in self._trees:
            t = self.text(path)
            self._trees[path] = _parse(t) if t is not None else None
        return self._trees[path]

    def module_file(self, module: str | None, level: int, current: Path) -> Path | None:
        """The file of module `module` imported with `level` leading dots from `current`."""
        if level:
            base = current.parent
            for _ in range(level - 1):
                base = base.parent
            parts = module.split(".") if module else []
            cand = base.joinpath(*parts) if parts else base
            for f in (cand.with_suffix(".py") if parts else None, cand / "__init__.py"):
                if f is not None and f in self._file_set:
                    return f
            return None
        found = self.modules.get(module or "")
        if found is None and module and current.parent not in self._packages:
            # a script's own folder is on sys.path: its sibling modules import by their names
            cand = current.parent.joinpath(*module.split("."))
            found = next((f for f in (cand.with_suffix(".py"), cand / "__init__.py") if f in self._file_set), None)
        return found

    def definition(self, path: Path, name: str, depth: int = 0) -> tuple[Path, ast.stmt] | None:
        """(file, node) of the top-level definition of `name` in module file `path`, following
        re-exports (`from .x import name` in it) up to REEXPORT_DEPTH times."""
        tree = self.tree(path)
        if tree is None:
            return None
        for node in tree.body:
            if _defines(node, name):
                return path, node
        if depth >= REEXPORT_DEPTH:
            return None
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        target = self.module_file(node.module, node.level, path)
                        if target is not None and target != path:
                            return self.definition(target, alias.name, depth + 1)
        return None


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return None


def _defines(node: ast.stmt, name: str) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name == name
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name
    return False


@dataclass(frozen=True)
class Use:
    """A name the current file gets from another project file, and where it is defined."""
    name: str  # the name as the current file writes it (an alias, or `module.attr`)
    path: Path  # the file that defines it
    line: int  # first line of the definition (0-based, decorators included)
    end: int  # last line (0-based, inclusive)
    kind: str  # "def", "class" or "assign"


def imported_uses(project: Project, path: Path, text: str) -> list[Use]:
    """The definitions in other project files of the names `text` (the file at `path`) imports:
    `from m import name` and `import m` / `import m as x` with its `x.attr` uses. Resolved with
    `ast` (a text that does not parse: its import statements alone); absolute imports from the
    project's import roots only (Project); unresolvable imports (the standard library, other
    packages) give nothing."""
    tree = _parse(text)
    whole = tree is not None
    if tree is None:
        tree = _parse_imports_only(text)
    uses: dict[str, Use] = {}
    modules: dict[str, Path] = {}  # local name -> module file (import m, from pkg import submodule)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = project.module_file(node.module, node.level, path)
            for alias in node.names:
                local = alias.asname or alias.name
                if target is None:
                    sub = project.module_file(f"{node.module}.{alias.name}" if node.module else alias.name, node.level, path)
                    if sub is not None:
                        modules[local] = sub
                    continue
                found = project.definition(target, alias.name)
                if found is None:
                    sub = project.module_file(f"{node.module}.{alias.name}" if node.module else alias.name, node.level, path)
                    if sub is not None and sub != path:
                        modules[local] = sub
                    continue
                _add(uses, local, *found, path)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                target = project.module_file(alias.name, 0, path)
                if target is not None and target != path:
                    modules[alias.asname or alias.name] = target
    if modules and whole:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                base = _dotted(node.value)
                if base in modules:
                    found = project.definition(modules[base], node.attr)
                    if found is not None:
                        _add(uses, f"{base}.{node.attr}", *found, path)
    elif modules:  # the code does not parse (the user is typing): its `module.attr` uses, read as text
        for base, module in modules.items():
            for attr in dict.fromkeys(re.findall(rf"(?<![\w.]){re.escape(base)}\s*\.\s*([A-Za-z_]\w*)", text)):
                found = project.definition(module, attr)
                if found is not None:
                    _add(uses, f"{base}.{attr}", *found, path)
    return list(uses.values())


def import_statements(text: str) -> list[str]:
    """The import statements of a Python text, each whole (continuation lines inside parentheses
    or after a backslash joined, at most 64 lines) and dedented, in order; read line by line, so a
    file that does not parse (the user is typing) has them too."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].split("#", 1)[0]
        i += 1
        if not _IMPORT_START.match(line):
            continue
        stmt = [line.strip()]
        depth = line.count("(") - line.count(")")
        while (depth > 0 or stmt[-1].endswith("\\")) and i < len(lines) and len(stmt) < 64:
            nxt = lines[i].split("#", 1)[0]
            if _IMPORT_START.match(nxt) or not _CONTINUATION.match(nxt):
                break  # a parenthesis left open while typing: the next import or the code is not in it
            stmt.append(nxt.strip())
            depth += nxt.count("(") - nxt.count(")")
            i += 1
        out.append("\n".join(stmt))
    return out


def _parse_imports_only(text: str) -> ast.Module:
    """The import statements of a file that does not parse, each parsed alone."""
    body: list[ast.stmt] = []
    for stmt in import_statements(text):
        t = _parse(stmt)
        if t is None and stmt.count("(") > stmt.count(")"):  # being typed: `from m import (a, b`
            t = _parse(stmt.rstrip().rstrip("\\") + ")")
        if t is not None:
            body.extend(t.body)
    return ast.Module(body=body, type_ignores=[])


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _add(uses: dict[str, Use], local: str, where: Path, node: ast.stmt, current: Path) -> None:
    if where == current or local in uses:
        return
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
    kind = "class" if isinstance(node, ast.ClassDef) else "def" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else "assign"
    uses[local] = Use(local, where, first, (node.end_lineno or node.lineno) - 1, kind)


# --- chunks -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    path: str  # workspace-relative POSIX path
    line: int  # first line (0-based), for ordering within a file
    text: str  # ends with a line break


def chunk_text(project: Project, use: Use) -> str:
    """The text a definition contributes: short functions whole, else a summary (module doc)."""
    source = project.text(use.path) or ""
    lines = source.split("\n")
    body = lines[use.line:use.end + 1]
    if use.kind == "assign":
        return "\n".join(body[:6]) + "\n"
    if use.kind == "def" and len(body) <= SHORT_LINES:
        return "\n".join(body) + "\n"
    tree = project.tree(use.path)
    node = next((n for n in (tree.body if tree else []) if n.lineno - 1 <= use.line + len(getattr(n, "decorator_list", [])) and
                 (n.end_lineno or n.lineno) - 1 == use.end and _defines(n, use.name.rsplit(".", 1)[-1])), None)
    if node is None:
        return "\n".join(body[:SHORT_LINES]) + "\n"
    return "\n".join(_summary(lines, node)) + "\n"


def _header(lines: list[str], node: ast.stmt) -> list[str]:
    """Decorators and the `def`/`class` line(s) up to the body's first statement."""
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
    body = getattr(node, "body", [])
    end = body[0].lineno - 1 if body else node.lineno
    head = lines[start:max(end, node.lineno)]
    # a one-line body on the header line (`def f(): return 1`) stays; else cut at the header's end
    return [ln for ln in head if ln.strip()]


def _docline(lines: list[str], node: ast.stmt, indent: str) -> list[str]:
    doc = ast.get_docstring(node, clean=True) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else None
    if not doc:
        return []
    first = doc.strip().split("\n", 1)[0].replace('"""', "'''")
    return [f'{indent}"""{first}"""']


def _summary(lines: list[str], node: ast.stmt) -> list[str]:
    head = _header(lines, node)
    indent = " " * (node.col_offset + 4)
    out = head + _docline(lines, node, indent)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return out + [indent + "..."]
    for stmt in getattr(node, "body", []):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            sig = _header(lines, stmt)
            inner = " " * (stmt.col_offset + 4)
            out += sig + _docline(lines, stmt, inner) + [inner + "..."]
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            out += lines[stmt.lineno - 1:(stmt.end_lineno or stmt.lineno)][:3]
    return out


def _idf(texts: Sequence[str]) -> Callable[[str], float]:
    df: Counter[str] = Counter()
    for t in texts:
        df.update(set(_IDENT.findall(t)))
    n = max(len(texts), 1)
    return lambda w: math.log(1 + (n - df.get(w, 0) + 0.5) / (df.get(w, 0) + 0.5))


def rank(uses: Sequence[Use], texts: Sequence[str], document: str) -> list[int]:
    """Indices of `uses` best first: BM25-style overlap of each chunk's names with the names the
    document uses, plus how often (log) it uses the name itself; ties keep file order. The whole
    document, not the lines around the cursor: a document keeps its context wherever the cursor
    goes (RepoCache), so it must serve the whole file, not where it happened to be built (the
    background warm-up builds it at the document's end)."""
    counts = Counter(_IDENT.findall(document))
    idf = _idf(list(texts) + [document])
    scores = []
    for i, (use, text) in enumerate(zip(uses, texts)):
        words = set(_IDENT.findall(text))
        overlap = sum(idf(w) * counts[w] / (counts[w] + 1.2) for w in words if w in counts)
        short = use.name.rsplit(".", 1)[-1]
        direct = 3.0 * counts[short] / (counts[short] + 0.5) if counts[short] else 0.0
        scores.append((-(overlap + direct + math.log1p(counts[short])), i))
    return [i for _, i in sorted(scores)]


def project_path(project: Project, path: Path) -> Path:
    """`path` as the project spells it (its files are listed under its root as given, so a
    symlinked or `..` spelling of the same file is respelled), or `path` when outside it."""
    under = relative(project.root, path)
    return project.root / under if under is not None else Path(path)


@dataclass(frozen=True)
class RepoContext:
    """The other files' chunks a document's prompt starts with, best file last."""
    name: str  # the project's name (the workspace folder's)
    path: str  # the current file's workspace-relative path
    files: tuple[tuple[str, str], ...]  # (relative path, text of its chunks)

    @property
    def empty(self) -> bool:
        return not self.files


def gather(project: Project, path: Path, text: str, budget: int, tokenize: Tokenize,
           uses: Sequence[Use] | None = None) -> RepoContext:
    """The chunks of the definitions `text` (the document at `path`) uses from other project
    files, best first (rank) while their tokens fit `budget` (tokens). The choice is made for the
    whole document, not a cursor: a document keeps one context wherever its cursor goes.
    `uses`: imported_uses(project, project_path(project, path), text) when the caller has it."""
    path = project_path(project, path)
    under = relative(project.root, path)
    rel = under.as_posix() if under is not None else Path(path).name
    if uses is None:
        uses = imported_uses(project, path, text) if budget > 0 else []
    if not uses or budget <= 0:
        return RepoContext(project.root.name, rel, ())
    texts = [chunk_text(project, u) for u in uses]
    order = rank(uses, texts, text)
    chosen: list[Chunk] = []
    seen: set[tuple[Path, int]] = set()
    headed: set[Path] = set()
    # the format's own tokens count too: the project's name, the current file's path, and a
    # separator and path line for every file that gets a chunk (render_tokens), so that the
    # rendered head stays within `budget`
    used = len(tokenize(f"{project.root.name}\n{rel}\n", False)) + 2
    cap = max(int(budget * PART), MIN_CAP)
    for i in order:
        u = uses[i]
        if (u.path, u.line) in seen:
            continue
        where = u.path.relative_to(project.root).as_posix()
        head = len(tokenize(where + "\n", False)) + 1 if u.path not in headed else 0
        body = texts[i]
        n = len(tokenize(body, False)) + 1
        if n > cap:
            # a long definition (a big class's summary) gives its first lines (header, docstring
            # line, first methods), so that it neither crowds out the others nor is left out
            body = _first_lines(body, cap, tokenize)
            n = len(tokenize(body, False)) + 1
        n += head
        if not body or used + n > budget:
            continue
        seen.add((u.path, u.line))
        headed.add(u.path)
        used += n
        chosen.append(Chunk(where, u.line, body))
    by_file: dict[str, list[Chunk]] = {}
    for c in chosen:  # files in the order of their best chunk
        by_file.setdefault(c.path, []).append(c)
    files = [(p, "\n".join(c.text for c in sorted(cs, key=lambda c: c.line))) for p, cs in by_file.items()]
    files.reverse()  # the best file last, nearest the current file
    return RepoContext(project.root.name, rel, tuple(files))


def _first_lines(text: str, room: int, tokenize: Tokenize) -> str:
    """The first whole lines of `text` within `room` tokens (counted as one text), "" when not
    even its first line fits."""
    lines = text.split("\n")
    lo, hi = 0, len(lines)
    while lo < hi:  # the most lines whose text fits
        mid = (lo + hi + 1) // 2
        if len(tokenize("\n".join(lines[:mid]) + "\n", False)) <= room:
            lo = mid
        else:
            hi = mid - 1
    return "\n".join(lines[:lo]) + "\n" if lo else ""


# --- rendering per family -----------------------------------------------------------------------

def render_tokens(ctx: RepoContext, repo_id: int, sep_id: int, after_name: str, tokenize: Tokenize) -> list[int]:
    """`<repo_name>name <file_sep>path\\ncontent ... <file_sep>current/path\\n` as token ids (the
    FIM prefix token follows). Empty for a context with no files."""
    if ctx.empty:
        return []
    out = [repo_id] + tokenize(ctx.name + after_name, True)
    for path, body in ctx.files:
        out += [sep_id] + tokenize(f"{path}\n{body.rstrip()}\n", True)
    return out + [sep_id] + tokenize(f"{ctx.path}\n", True)


def render_text(ctx: RepoContext, comment: str = "#") -> str:
    """The chunks under `# file: path` comments, for families without a repository format."""
    return "".join(f"{comment} file: {path}\n{body.rstrip()}\n\n" for path, body in ctx.files)


# --- kept per document ----------------------------------------------------------------------------

PROJECT_TTL_S = 30.0  # a workspace's file list and texts are read again after this, when needed


def _sent(use: Use, sent: Sequence[tuple[str, str]], project: Project) -> bool:
    """Whether a client snippet of the file that defines `use` (workspace-relative path) holds its
    definition's first line already (a language server's definition of the same name)."""
    where = relative(project.root, use.path)
    lines = (project.text(use.path) or "").split("\n")[use.line:use.end + 1]
    head = next((line.strip() for line in lines if not line.lstrip().startswith("@")), "")  # past its decorators
    return bool(head) and where is not None and any(p == where.as_posix() and head in body for p, body in sent)


def import_signature(text: str) -> tuple[str, ...]:
    """The import statements of a Python text (whitespace collapsed), in order: what decides its
    repository context."""
    return tuple(" ".join(s.split()) for s in import_statements(text))


class RepoCache:
    """Each document's repository context, kept until its imports (or the budget) change, so the
    prompt's head stays the same while the user types (engine/reuse.py then reuses it), and
    looked at again when the project is read again (PROJECT_TTL_S: a module written since, an
    imported definition edited), rebuilt only when it differs. Used on the engine thread only."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        import time
        from concurrent.futures import ThreadPoolExecutor

        self._clock = clock or time.monotonic
        # key -> (signature, context, uses, the Project it was made from)
        self._docs: dict[str, tuple[tuple, RepoContext | None, tuple, Project | None]] = {}
        self._projects: dict[Path, tuple[float, Project]] = {}
        self._reading: dict[Path, Future[Project]] = {}  # a project read again, off the engine thread
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="codelsp-repo")

    def project(self, root: Path) -> Project:
        """The project of workspace folder `root`: read at its first use, then read again in a
        thread once PROJECT_TTL_S have passed (a large workspace's listing takes a few hundred ms:
        a keystroke never waits for it), the one read last until the new one is ready."""
        now = self._clock()
        kept = self._projects.get(root)
        if kept is None:
            kept = self._projects[root] = (now, Project(root))
        elif now - kept[0] > PROJECT_TTL_S:
            reading = self._reading.get(root)
            if reading is None:
                self._reading[root] = self._reader.submit(Project, root)
            elif reading.done():
                del self._reading[root]
                try:
                    kept = self._projects[root] = (now, reading.result())
                except Exception as exc:  # an unreadable folder: keep what was read, try again later
                    log.warning("could not read the workspace %s again: %s: %s", root, type(exc).__name__, exc)
                    kept = self._projects[root] = (now, kept[1])
        return kept[1]

    def context(self, key: str, path: Path, roots: Sequence[Path], text: str, budget: int,
                tokenize: Tokenize, snippets: Sequence[tuple[str, str]] = ()) -> RepoContext | None:
        """The repository context of the document `key` (file `path`): the definitions it imports
        when it is a Python file inside one of `roots`, and the client's `snippets` ((path, text),
        sent with `codelsp/context`; they take the budget first and go last, nearest the code; a
        definition a snippet of the same file holds is not put in twice); None when off or when
        there is neither."""
        if budget <= 0:
            return None
        root = next((Path(r) for r in roots if inside(Path(r), path)), None)
        python = root is not None and path.suffix in (".py", ".pyi")
        if not python and not snippets:
            return None
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # LSP allows CR-only line ends
        project = self.project(root) if python and root is not None else None
        sig = (root, import_signature(text) if python else (), budget, tuple(snippets))
        kept = self._docs.get(key)
        if kept is not None and kept[0] == sig and kept[3] is project:
            return kept[1]
        uses: tuple = ()
        try:
            found = None
            if project is not None:
                # what the imports resolve to decides the context, not their text: typing an
                # import of something outside the project (`import o`, `import os`) keeps it
                found = imported_uses(project, project_path(project, path), text)
                uses = tuple((u.name, u.path, u.line, u.end) for u in found)
                if kept is not None and kept[2] == uses and kept[3] is project and (kept[0][0], kept[0][2:]) == (sig[0], sig[2:]):
                    self._docs[key] = (sig, kept[1], uses, project)
                    return kept[1]
            ctx = self._build(root, project, path, text, found, budget, tokenize, snippets)
            if kept is not None and ctx == kept[1]:
                ctx = kept[1]  # read again, the same: the prompt's head stays as it was
            else:
                log.debug("repository context of %s: %s", key, ", ".join(p for p, _ in ctx.files) or "no file fits")
        except ValueError:  # a path that cannot be made relative: leave the context out
            log.debug("no repository context for %s", path, exc_info=True)
            ctx = None
        except Exception as exc:  # never fail the completion over its context
            log.warning("no repository context for %s: %s: %s", path, type(exc).__name__, exc)
            ctx = None
        self._docs[key] = (sig, ctx, uses, project)
        return ctx

    def _build(self, root: Path | None, project: Project | None, path: Path, text: str, found: Sequence[Use] | None,
               budget: int, tokenize: Tokenize, snippets: Sequence[tuple[str, str]]) -> RepoContext:
        """`found`: the imported definitions of a Python document in `project` (root `root`;
        None: not one)."""
        under = relative(root, path) if root is not None else None
        name, rel = root.name if root is not None else "workspace", under.as_posix() if under else path.name
        # the format's tokens count as in gather: the name and current path once, a separator and
        # path line per snippet
        header = len(tokenize(f"{name}\n{rel}\n", False)) + 2
        sent: list[tuple[str, str]] = []
        used = header if snippets else 0
        for where, body in snippets:
            local = uri_path(where) if where.startswith("file:") else None
            if local is not None:
                inner = relative(root, local) if root is not None else None
                where = inner.as_posix() if inner is not None else local.as_posix() if not local.is_absolute() else local.name
            n = len(tokenize(f"{where}\n", False)) + len(tokenize(body, False)) + 2
            if used + n <= budget:
                used += n
                sent.append((where, body))
            else:
                log.debug("codelsp/context snippet %s (%d tokens) does not fit repoContextTokens %d", where, n, budget)
        if found is not None and project is not None:  # gather counts the header itself
            have = [(p, b.replace("\r\n", "\n")) for p, b in sent]
            found = [u for u in found if not _sent(u, have, project)]
            ctx = gather(project, path, text, budget - used + (header if snippets else 0), tokenize, found)
        else:
            ctx = RepoContext(name, rel, ())
        return RepoContext(ctx.name, ctx.path, ctx.files + tuple(sent))

    def forget(self, key: str) -> None:
        self._docs.pop(key, None)

    def kept(self, key: str) -> RepoContext | None:
        """The context document `key` has now (None: none built yet or off), for codelsp/stats."""
        kept = self._docs.get(key)
        return kept[1] if kept is not None else None
