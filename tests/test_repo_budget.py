"""The repository context's budget against the context the model runs with (real server): a
budget over half of contextSize is cut to that half, never a reason to drop the context; and the
context a document keeps: the same wherever its cursor is, kept while its imports resolve to the
same definitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from codelsp.tools.lspclient import as_dict
from support import inline_at, lsp_server, open_doc, stats

BIG = "class Big:\n    \"\"\"A big class.\"\"\"\n\n" + "".join(
    f"    def method_{i}(self, first, second):\n        \"\"\"Method number {i}.\"\"\"\n        return first\n\n"
    for i in range(150))
MAIN = "from pkg.big import Big\n\n\ndef run(x):\n    box = Big()\n    \n"


async def first_request(model, root: Path, options: dict) -> tuple[dict, list[str]]:
    main = root / "pkg" / "main.py"
    async with lsp_server("--model", str(model.path), init_options=options, root=root) as (client, _):
        open_doc(client, main.as_uri(), MAIN)
        await inline_at(client, main.as_uri(), 5, 4)
        # the document named as codelsp's notifications name it (it used to give the totals alone)
        got = await client.protocol.send_request_async("codelsp/stats", {"textDocument": {"uri": main.as_uri()}})
        got = got if isinstance(got, dict) else got._asdict()
        last = {**as_dict(got["last"]), "repoContext": as_dict(got["repoContext"]) if got["repoContext"] else None}
        return last, [m.message for m in client.log_messages]


@pytest.mark.parametrize("family", ["qwen", "codellama"])  # the repository format, `# file:` comments
async def test_a_budget_over_half_the_context_is_cut_to_it(tmp_path, model_factory, family):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "big.py").write_text(BIG)
    (tmp_path / "pkg" / "main.py").write_text(MAIN)
    model = model_factory(family)
    off, _ = await first_request(model, tmp_path, {"contextSize": 1024})
    huge, logs = await first_request(model, tmp_path, {"contextSize": 1024, "repoContextTokens": 100000})
    fits, _ = await first_request(model, tmp_path, {"contextSize": 1024, "repoContextTokens": 512})
    # the class's summary alone is over half the context: it used to be dropped whole, now it
    # goes in cut to its first lines, as with a budget of that half
    assert huge["evaluated"] > off["evaluated"] + 40, (off, huge)
    assert huge["evaluated"] == fits["evaluated"], (huge, fits)
    assert huge["repoContext"] == {"files": ["pkg/big.py"]} and off["repoContext"] is None  # codelsp/stats says so
    assert any("repoContextTokens 100000 is more than half of the context" in m for m in logs), logs


async def test_snippets_sent_while_the_context_is_off_are_said_to_be_unused(tmp_path, model_factory):
    """codelsp/context with repoContextTokens 0: one log line says the snippets are not used
    (they used to vanish without a word), however often the client sends them."""
    model = model_factory("qwen")
    uri = (tmp_path / "main.py").as_uri()
    snippet = {"textDocument": {"uri": uri}, "snippets": [{"path": "lib/shapes.py", "text": "def area(w, h):\n    return w * h\n"}]}
    async with lsp_server("--model", str(model.path), root=tmp_path) as (client, _):
        open_doc(client, uri, MAIN)
        client.protocol.notify("codelsp/context", snippet)
        client.protocol.notify("codelsp/context", snippet)
        await inline_at(client, uri, 5, 4)  # after the notifications
        said = [m.message for m in client.log_messages if "not used while repoContextTokens is 0" in m.message]
        assert len(said) == 1, said


def test_the_context_serves_the_whole_document_not_the_cursor(tmp_path):
    """A document keeps one context (RepoCache) wherever the cursor goes, and the warm-up builds
    it at the document's end, so it is chosen for the whole document (gather takes no cursor):
    with room for one chunk, the name the file uses most wins over the one by its first lines
    (ranking the cursor's lines chose `helper` when built at the top, `LIMIT` at the bottom)."""
    from codelsp.completion.repo import Project, gather
    from test_repo_context import make_project

    main = make_project(tmp_path)
    doc = ("from pkg.util import helper\nfrom .consts import LIMIT\n\n\ndef run(x):\n    total = helper(x, 1)\n    \n"
           + "\n" * 60 + "def other():\n    b = LIMIT + 1\n    c = LIMIT * 2\n    return min(b, c, LIMIT)\n")
    words = lambda text, first=True: text.split()  # noqa: E731
    ctx = gather(Project(tmp_path), main, doc, 18, words)  # room for one of them
    assert [p for p, _ in ctx.files] == ["pkg/consts.py"] and "LIMIT" in ctx.files[0][1]


def test_typing_an_import_of_something_outside_the_project_keeps_the_context(tmp_path):
    """The context is rebuilt (and the prompt's head evaluated again) when what the imports
    resolve to changes, not at each keystroke of an import line that resolves to nothing here."""
    from codelsp.completion.repo import RepoCache
    from test_repo_context import MAIN, make_project

    main = make_project(tmp_path)
    words = lambda text, first=True: text.split()  # noqa: E731
    cache = RepoCache()
    first = cache.context("k", main, [tmp_path], MAIN, 200, words)
    for typed in ("import ", "import o", "import os"):
        text = typed + "\n" + MAIN
        assert cache.context("k", main, [tmp_path], text, 200, words) is first, typed
    more = "from pkg.util import unused\n" + MAIN
    changed = cache.context("k", main, [tmp_path], more, 200, words)
    assert changed is not first and "def unused" in dict(changed.files)["pkg/util.py"]


async def test_new_snippets_are_not_answered_from_a_suggestion_made_without_them(tmp_path, model_factory):
    """A suggestion kept for a place is reused when the user asks there again; after the client
    sends other snippets (codelsp/context) it was made with another context: the model is asked."""
    from test_repo_context import MAIN, make_project

    main = make_project(tmp_path)
    uri = main.as_uri()
    model = model_factory("qwen")
    snippet = [{"path": "lib/shapes.py", "text": "def area(w, h):\n    return w * h\n"}]
    async with lsp_server("--model", str(model.path), "--repo-context-tokens", "400", root=tmp_path) as (client, _):
        open_doc(client, uri, MAIN)
        await inline_at(client, uri, 5, 4)
        await inline_at(client, uri, 5, 4)
        assert as_dict((await stats(client, uri))["last"])["source"] == "typeThrough"  # kept: reused
        # a snippet without a path (or a blank one) is left out, as one without text is
        sent = snippet + [{"path": "", "text": "X = 1\n"}, {"path": "  ", "text": "Y = 2\n"}]
        client.protocol.notify("codelsp/context", {"textDocument": {"uri": uri}, "snippets": sent})
        await inline_at(client, uri, 5, 4)
        got = await stats(client, uri)
        last = as_dict(got["last"])
        assert last["source"] == "model" and last["evaluated"] > 10, last
        assert as_dict(got["repoContext"])["files"][-1:] == ["lib/shapes.py"], got["repoContext"]


async def test_an_untitled_document_gets_the_snippets_the_client_sends(model_factory):
    """VS Code sends codelsp/context for any editor, an unsaved `untitled:` one too: its snippets
    were dropped (no file path, so no repository context at all)."""
    uri = "untitled:Untitled-1"
    model = model_factory("qwen")
    snippet = [{"path": "lib/shapes.py", "text": "def area(w, h):\n    return w * h\n"}]
    async with lsp_server("--model", str(model.path), "--repo-context-tokens", "400") as (client, _):
        open_doc(client, uri, "def run(x):\n    \n")
        client.protocol.notify("codelsp/context", {"textDocument": {"uri": uri}, "snippets": snippet})
        await inline_at(client, uri, 1, 4)
        got = await stats(client, uri)
    assert as_dict(got["repoContext"])["files"] == ["lib/shapes.py"], got["repoContext"]
