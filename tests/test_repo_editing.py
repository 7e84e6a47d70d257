"""The repository context (completion/repo.py RepoCache) while the user edits: half-typed import
lines, a file that does not parse, a module written after the import of it, a client snippet of
a definition the context already has, CR line ends. Found by trying it as a newcomer (session 6);
each test failed before its fix. Whitespace "tokens" (test_repo_context.words): no model needed.
"""

from __future__ import annotations

import time

from codelsp.completion.repo import RepoCache
from test_repo_context import MAIN, make_project, words


def files(ctx) -> list[str]:
    return [p for p, _ in ctx.files]


def test_a_parenthesis_left_open_above_other_imports_keeps_them(tmp_path):
    """Typing `from pkg.util import (helper` above another import: the line used to swallow the
    next ones (the context went empty until `)` was typed, then the whole head was evaluated)."""
    main = make_project(tmp_path)
    typing = "from pkg.util import (helper\nfrom .consts import LIMIT\n\n\ndef run(x):\n    \n"
    ctx = RepoCache().context("k", main, [tmp_path], typing, 400, words)
    assert sorted(files(ctx)) == ["pkg/consts.py", "pkg/util.py"], ctx
    assert "def helper" in dict(ctx.files)["pkg/util.py"]


def test_module_attribute_uses_count_while_the_file_does_not_parse(tmp_path):
    """`import pkg.util as u` ... `u.helper(...)`, and a line being typed that does not parse
    (`import pkg.`): `u.helper` used to vanish from the context for that request."""
    main = make_project(tmp_path)
    text = "import pkg.util as u\n\n\ndef run(x):\n    return u.helper(x, 1)\n\nimport pkg.\n"
    ctx = RepoCache().context("k", main, [tmp_path], text, 400, words)
    assert files(ctx) == ["pkg/util.py"] and "def helper" in ctx.files[0][1]


def test_a_module_written_after_its_import_comes_in_when_the_project_is_read_again(tmp_path):
    """The import of a module that did not exist yet (or that the kept project list did not have)
    resolves to nothing; once the project is read again (PROJECT_TTL_S, in a thread) a request
    gets a context that has it. It used to stay out while the import lines stayed the same."""
    main = make_project(tmp_path)
    now = [0.0]
    cache = RepoCache(clock=lambda: now[0])
    text = "from pkg.labels import label_for\nfrom .consts import LIMIT\n\n\ndef run(x):\n    \n"
    first = cache.context("k", main, [tmp_path], text, 400, words)
    assert files(first) == ["pkg/consts.py"]
    (tmp_path / "pkg" / "labels.py").write_text("def label_for(item):\n    return str(item)\n")
    now[0] += 5
    assert cache.context("k", main, [tmp_path], text, 400, words) is first  # within the TTL: kept as it is
    now[0] += 60
    # the project is read again in a thread (a keystroke never waits for the listing): a later
    # request gets the new context
    later = first
    for _ in range(200):
        later = cache.context("k", main, [tmp_path], text, 400, words)
        if later is not first:
            break
        time.sleep(0.02)
    assert sorted(files(later)) == ["pkg/consts.py", "pkg/labels.py"], later
    now[0] += 60  # read again, nothing changed: the same context (the prompt's head stays)
    for _ in range(20):
        assert cache.context("k", main, [tmp_path], text, 400, words) is later
        time.sleep(0.02)


def test_a_definition_a_client_snippet_holds_goes_in_once(tmp_path):
    """A language server's definition of `helper` sent with codelsp/context, and the context's
    own chunk of it: it went in twice (the budget paid for it twice)."""
    main = make_project(tmp_path)
    snippet = ("pkg/util.py", 'def helper(a, b):\n    """Add two numbers."""\n    return a + b\n')
    text = "from pkg.util import helper\n\n\ndef run(x):\n    \n"
    ctx = RepoCache().context("k", main, [tmp_path], text, 400, words, [snippet])
    assert sum(body.count("def helper") for _, body in ctx.files) == 1, ctx


def test_cr_line_ends_find_the_imports(tmp_path):
    """LSP allows CR alone as a line end: such a document's imports were not found."""
    main = make_project(tmp_path)
    ctx = RepoCache().context("k", main, [tmp_path], MAIN.replace("\n", "\r"), 400, words)
    assert sorted(files(ctx)) == ["pkg/consts.py", "pkg/util.py"], ctx
