"""Switches and moves in files longer than the context, through the real server, by the token
counts `codelsp/stats` reports (never time): a move inside the prefix window keeps the cached
prompt's start, and a switch back to a document whose state left the KV pool restores it, without
any `codelsp/didFocus`, even when the cursor is somewhere else now (issue 22, item 2)."""

from __future__ import annotations

from support import inline_at, lsp_server, open_doc, stats, type_at, wait_for_total
from codelsp.tools.lspclient import as_dict
from test_kv_reuse import BIG, BIG_LINE

# --ctx 2048: the suffix window is at most 256 tokens (context.py); a move up
# evaluates it again (it follows the prefix in the psm-tail layout) and little else
SUFFIX = 256


async def last(client, uri: str) -> dict:
    out = as_dict((await stats(client, uri))["last"])
    assert out["source"] == "model", out
    return out


async def test_a_move_up_inside_the_window_keeps_the_cached_prefix(model_factory):
    model = model_factory("qwen", default="answer")
    uri = "file:///w/big.py"
    async with lsp_server("--model", str(model.path), "--ctx", "2048") as (client, _):
        open_doc(client, uri, BIG)
        await inline_at(client, uri, BIG_LINE, 4)
        whole = (await last(client, uri))["evaluated"]
        assert whole > 1000, whole  # the context's worth of a 1,200-line file
        for up in (10, 40, 70):  # the cursor 10, 40, 70 lines up: the window's start stays
            await inline_at(client, uri, BIG_LINE - up, 4)
            moved = await last(client, uri)
            assert moved["evaluated"] <= SUFFIX + 30 and moved["reused"] > 300, (up, moved)


async def test_a_switch_back_after_editing_the_other_file_restores_the_document(model_factory):
    """A pool of one context holds one of the two documents: going back to `a` after typing in
    `b` (no didFocus) restores `a`'s state from system memory and evaluates only what changed,
    also when the cursor in `a` is somewhere else now (40 lines up, then 80 lines down)."""
    model = model_factory("qwen", default="answer")
    a, b = "file:///w/a.py", "file:///w/b.py"
    async with lsp_server("--model", str(model.path), "--ctx", "2048", "--prompt-cache-bytes", "1") as (client, _):
        open_doc(client, a, BIG)
        open_doc(client, b, BIG.replace("helper", "other"))
        await inline_at(client, a, BIG_LINE, 4)
        whole = (await last(client, a))["evaluated"]
        assert whole > 1000
        type_at(client, a, 2, BIG_LINE, 4, "x")
        for n, (row, col) in enumerate(((BIG_LINE, 5), (BIG_LINE - 40, 4), (BIG_LINE + 40, 4))):
            type_at(client, b, 2 + n, BIG_LINE, 4 + n, "yzw"[n])  # an edit of b, then its suggestion
            await inline_at(client, b, BIG_LINE, 5 + n)
            await last(client, b)
            st = as_dict(await stats(client, a))
            assert st["cachedTokens"] == 0 and st["hostTokens"] > 1000, st  # a left the pool
            await inline_at(client, a, row, col)  # back to a: where it was, 40 lines up, 40 down
            back = await last(client, a)
            assert back["restored"] > 1000, (row - BIG_LINE, back)
            if n < 2:  # the same place: the typed character; 40 lines up: the suffix window
                assert back["evaluated"] <= (3 if n == 0 else SUFFIX + 60), (row - BIG_LINE, back)
            else:  # 80 lines below the last request there: those lines join the prefix, the rest shifts
                assert back["reused"] > 400 and back["evaluated"] < whole * 0.6, (whole, back)


def line_end(row: int) -> int:
    return len(BIG.split("\n")[row])


async def test_a_move_costs_the_lines_new_where_they_stand_not_the_suffix_window(model_factory):
    """psm-tail puts the suffix window after the prefix: a move up puts lines in front of it, a
    move down takes lines out of it into the near text. The cached window is moved into place
    (engine/reuse.py), so a move evaluates about the lines that are new where they stand (the
    lines that went from prefix to suffix or back, in their new role), not the window; the answer
    is the one a server without the prompt cache gives."""
    model = model_factory("qwen", default="answer")
    uri = "file:///w/big.py"
    async with lsp_server("--model", str(model.path), "--ctx", "2048") as (client, _):
        open_doc(client, uri, BIG)
        await inline_at(client, uri, BIG_LINE, 4)
        assert (await last(client, uri))["evaluated"] > 1000
        answers = []
        row = BIG_LINE
        for step, most in ((-3, 40), (-10, 100), (-5, 60), (+6, 100), (+20, 300)):
            row += step
            answers.append((await inline_at(client, uri, row, line_end(row))).items[0].insert_text)
            moved = await last(client, uri)
            assert moved["evaluated"] <= most and moved["shifted"] > 50, (step, moved)
    async with lsp_server("--model", str(model.path), "--ctx", "2048", "--no-prompt-cache") as (client, _):
        open_doc(client, uri, BIG)
        row, fresh = BIG_LINE, []
        for step in (-3, -10, -5, +6, +20):
            row += step
            fresh.append((await inline_at(client, uri, row, line_end(row))).items[0].insert_text)
            assert (await last(client, uri))["evaluated"] > 1000  # no reuse there
    assert answers == fresh


async def test_a_switch_back_after_editing_the_other_file_costs_what_changed(model_factory):
    """No didFocus: the user types in b, then opens a new line in a above where a's last request
    was and asks there (the editing replay's switch). The line goes in front of a's cached suffix
    window, which is moved into place instead of evaluated again."""
    model = model_factory("qwen", default="answer")
    a, b = "file:///w/a.py", "file:///w/b.py"
    async with lsp_server("--model", str(model.path), "--ctx", "2048") as (client, _):
        open_doc(client, a, BIG)
        open_doc(client, b, BIG.replace("helper", "other"))
        await inline_at(client, a, BIG_LINE, 4)
        await inline_at(client, b, BIG_LINE, 4)
        type_at(client, b, 2, BIG_LINE, 4, "y")
        await inline_at(client, b, BIG_LINE, 5)
        type_at(client, a, 2, BIG_LINE - 6, 0, "    \n")  # a new indented line 6 lines up
        got = await inline_at(client, a, BIG_LINE - 6, 4)
        back = await last(client, a)
        assert got.items[0].insert_text == "return a + b"
        assert back["evaluated"] <= 60 and back["shifted"] > 100, back


def test_the_reuse_plan_moves_runs_past_insertions_deletions_and_reorders():
    """engine/reuse.py's plan, a plain function of token lists: runs of 16 or more cached tokens
    are found after new text (a move up), after removed text (a move down) and out of cache
    order (lines of the cached suffix that now come after it); the last token is never reused."""
    from codelsp.engine.reuse import Run, plan_reuse

    a, b, c = list(range(100, 140)), list(range(200, 240)), list(range(300, 340))
    cached = [1, 2, 3] + a + [9] + b + [8] + c
    common, runs = plan_reuse(cached, [1, 2, 3, 7, 7] + a + [9] + b + [8] + c)  # an insertion
    assert common == 3 and runs == [Run(5, 3, len(cached) - 3 - 1)]
    common, runs = plan_reuse(cached, [1, 2, 3] + b + [8] + c)  # a deletion
    assert common == 3 and runs == [Run(3, 44, 81 - 1)]
    common, runs = plan_reuse(cached, [1, 2, 3] + c + [5] + a + [6])  # a reorder
    assert runs == [Run(3, 85, 40), Run(44, 3, 40)]
    assert plan_reuse(cached, cached) == (len(cached) - 1, [])
    assert plan_reuse(cached, [1, 2, 3] + a[:15] + [0]) == (18, [])  # shorter than a run


def test_runs_keep_their_section_of_the_fim_layout():
    """Text cached as prefix is never moved behind the suffix token (nor suffix text into the
    prefix): the run's state was computed for its old role (issue 22: the warm-up's prefix state of
    the suffix window, moved there, cost single-line pass@1 70 % -> 52 %)."""
    from codelsp.engine.reuse import Run, plan_reuse

    P, S, M = 1, 2, 3
    a, b = list(range(100, 140)), list(range(200, 240))
    cached = [P] + a + b + [S, M]  # the warm-up: the whole document as prefix
    prompt = [P] + a + [S] + b + [M]  # a request between a and b
    assert plan_reuse(cached, prompt) == (41, [Run(42, 41, 40)])  # without sections: b moved
    assert plan_reuse(cached, prompt, controls={P, S, M}) == (41, [])
    moved = [P] + a[:5] + [S] + a[5:] + b + [M]  # a move up: the suffix's own text still moves
    common, runs = plan_reuse([P] + a[:10] + [S] + a[10:] + b + [M], moved, controls={P, S, M})
    assert common == 6 and runs == [Run(12, 12, 70)]  # a[5:10] is evaluated as suffix text


async def test_a_warmed_documents_suffix_is_not_moved_from_its_prefix_state(model_factory):
    """The warm-up on open evaluates the document as one long prefix (a short file: in one batch).
    A first request in the middle evaluates its suffix after the suffix token, by default
    too (`moveRuns`), instead of moving the warm-up's state of the same text there."""
    model = model_factory("qwen", default="answer")
    uri = "file:///w/a.py"
    body = "".join(f"def helper_{i}(x):\n    return x * {i}\n\n" for i in range(12))
    async with lsp_server("--model", str(model.path), warm=True) as (client, _):
        open_doc(client, uri, body + "def add(a, b):\n    \n" + body)
        await wait_for_total(client, uri, "warmed", 300)
        assert as_dict(await stats(client, uri))["cachedTokens"] > 300  # the whole file, as prefix
        assert (await inline_at(client, uri, body.count("\n") + 1, 4)).items[0].insert_text == "return a + b"
        first = await last(client, uri)
        assert first["reused"] > 150 and first["shifted"] == 0 and first["evaluated"] > 150, first
