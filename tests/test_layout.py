"""The folders are the architecture: each stage imports only the stages below it.

Read from the import graph of the source (ast, every import statement, including those inside
functions; imports under `if TYPE_CHECKING:` are types only and do not count).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "codelsp"

# stage -> the stages it may import (besides itself); top-level modules are stages of their own
ALLOWED: dict[str, set[str]] = {
    "settings": set(),
    "languages": set(),
    "models": {"settings"},
    "engine": {"models", "settings"},
    "completion": {"languages", "engine", "models", "settings"},
    "actions": {"languages", "engine", "models", "settings"},
    "nextedit": {"actions", "languages", "engine", "models", "settings"},
    "lsp": {"nextedit", "completion", "actions", "languages", "engine", "models", "settings", "__init__"},
    "tools": {"nextedit", "lsp", "completion", "actions", "languages", "engine", "models", "settings", "__init__"},
    "cli": {"nextedit", "lsp", "tools", "completion", "languages", "engine", "models", "settings", "__init__"},
    "__main__": {"cli"},
    "__init__": set(),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_only(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> set[str]:
    """codelsp modules that `path` imports at run time (absolute names)."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "codelsp")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "codelsp":
                for a in node.names:
                    sub = f"{mod}.{a.name}"
                    known = (PKG.parent / (sub.replace(".", "/") + ".py")).exists() or (
                        PKG.parent / sub.replace(".", "/")).is_dir()
                    found.add(sub if known else mod)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PKG.rglob("*.py") if "examples" not in p.parts}


def test_each_stage_imports_only_the_stages_below_it():
    bad = []
    for mod, deps in sorted(graph().items()):
        for dep in sorted(deps):
            if stage(dep) != stage(mod) and stage(dep) not in ALLOWED[stage(mod)]:
                bad.append(f"{mod} imports {dep}")
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_every_module_belongs_to_a_known_stage():
    assert {stage(m) for m in graph()} <= set(ALLOWED)


def test_no_import_cycles_between_modules():
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def dfs(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if dep not in g:
                continue
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                dfs(dep, path + [dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            dfs(node, [node])
    # a package importing its own submodule (codelsp.x -> codelsp.x.y) is not a cycle
    cycles = [c for c in cycles if not all(a.startswith(b) or b.startswith(a) for a, b in zip(c, c[1:]))]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_broken_rule(tmp_path):
    """The rules above would catch an engine module that imports completion."""
    fake = PKG / "engine" / "_layering_probe.py"
    fake.write_text("from codelsp.completion.pipeline import complete\n")
    try:
        deps = imports_of(fake)
    finally:
        fake.unlink()
    assert "codelsp.completion.pipeline" in deps
    assert stage("codelsp.completion.pipeline") not in ALLOWED["engine"]


def test_python_dash_m_codelsp_and_every_module_import():
    mods = sorted(graph())
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    out = subprocess.run([sys.executable, "-m", "codelsp", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "serve" in out.stdout


def duck_typed_models(source: str) -> list[str]:
    """`getattr(`/`hasattr(` calls in `source` whose first argument is a name or attribute naming a
    model (`model`, `engine.model`, `self.instruct_model`...): a model is a `Model`
    (engine/generation.py) whose members both backends declare, so it is read directly."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and node.args):
            continue
        target = node.args[0]
        name = target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) else ""
        if "model" in name.lower():
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_duck_types_a_model():
    # the checker sees the pattern it forbids
    probe = 'if getattr(model, "remote", False) or hasattr(engine.model, "pool"):\n    pass\n'
    assert len(duck_typed_models(probe)) == 2
    assert not duck_typed_models('getattr(args, "model", None)\nmodel.remote\n')
    bad = [f"{p.relative_to(ROOT)} {hit}" for p in sorted(PKG.rglob("*.py")) if "examples" not in p.parts
           for hit in duck_typed_models(p.read_text())]
    assert not bad, "duck-typed models (declare the member on both backends, engine/generation.py Model):\n" + "\n".join(bad)


MAX_LINES = 600


def test_no_module_is_longer_than_600_lines():
    """A module past 600 lines does several jobs: split it along its seams (codelsp/ and tests/)."""
    long = []
    for path in sorted([*PKG.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)
