"""What each edit costs in prompt tokens: KV reuse through the real server.

By the token counts `codelsp/stats` reports: a keystroke in every FIM family, Enter, a move, a
deleted line, backspace, a file switch, an accepted suggestion; stable windows in a file longer
than the context; other open files as a snapshot; `codelsp bench` replays of typing and editing.
The server runs with `--no-warm` (support.lsp_server) and a generous `timeoutMs`.
"""

from __future__ import annotations

import pytest
from lsprotocol import types

from codelsp.tools.lspclient import as_dict
from support import DOC, LINE, edit, inline_at, lsp_server, open_doc, stats, type_at


async def test_a_keystroke_evaluates_only_its_new_tokens(model_factory):
    model = model_factory("codellama")  # SPM: the suffix sits before the prefix in the prompt
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, uri, DOC)
        first = await inline_at(client, uri, LINE, 4)
        assert first.items[0].insert_text == "return a + b"
        s1 = as_dict((await stats(client, uri))["last"])
        assert s1["source"] == "model" and s1["reused"] == 0 and s1["evaluated"] > 500

        type_at(client, uri, 2, LINE, 4, "x")  # not the start of the suggestion: the model runs
        second = await inline_at(client, uri, LINE, 5)
        assert second.items[0].insert_text == "return a + b"
        s2 = as_dict((await stats(client, uri))["last"])
        assert s2["source"] == "model"
        assert s2["evaluated"] <= 3, s2
        assert s2["reused"] >= s1["evaluated"] - 3, (s1, s2)


FIM_TABLE = ("codellama", "starcoder", "deepseek", "qwen", "codegemma", "codestral")


async def type_and_measure(client, uri: str, version: int, line: int, col: int, text: str) -> tuple[int, int, int]:
    """Type `text` one character at a time, asking for a suggestion after each keystroke; returns
    (prompt tokens evaluated, tokens generated, floor) summed over the keystrokes the model
    answered. The floor of a keystroke is one new prompt token plus what is generated."""
    evaluated = generated = floor = 0
    for ch in text:
        type_at(client, uri, version, line, col, ch)
        version, col = version + 1, col + 1
        await inline_at(client, uri, line, col)
        last = as_dict((await stats(client, uri))["last"])
        if last["source"] == "model":
            evaluated += last["evaluated"]
            generated += last["generated"]
            floor += 1 + last["generated"]
    return evaluated, generated, floor


@pytest.mark.parametrize("family", FIM_TABLE)
async def test_typing_on_a_line_costs_only_its_new_tokens_in_every_family(model_factory, family):
    """PSM families put the current line's head after the middle token (order psm-tail, as
    llama.cpp's /infill does), Code Llama uses SPM, Codestral is suffix-first: in every family a
    keystroke evaluates about one token, never the suffix again."""
    model = model_factory(family, default="answer")
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, uri, DOC)
        first = await inline_at(client, uri, LINE, 4)
        assert first.items[0].insert_text == "return a + b"
        assert as_dict((await stats(client, uri))["last"])["evaluated"] > 500
        evaluated, generated, floor = await type_and_measure(client, uri, 2, LINE, 4, "xq_zk(")
        assert floor > 0
        assert evaluated + generated <= 1.3 * floor, (family, evaluated, generated, floor)


@pytest.mark.parametrize("move_runs", [False, True])
async def test_the_plain_psm_order_can_still_be_forced(model_factory, move_runs):
    """`fimOrder psm`: the prompt ends with the middle token (the model answers only there), and
    the whole suffix comes after the changed token: with `moveRuns` (the default) moved into place
    after the new token (engine/reuse.py), with it off evaluated again."""
    model = model_factory("starcoder")  # answers only right after the middle token
    uri = "file:///w/a.py"
    flags = [] if move_runs else ["--no-move-runs"]
    async with lsp_server("--model", str(model.path), "--fim-order", "psm", *flags) as (client, _):
        open_doc(client, uri, DOC)
        assert (await inline_at(client, uri, LINE, 4)).items[0].insert_text == "return a + b"
        type_at(client, uri, 2, LINE, 4, "x")
        assert (await inline_at(client, uri, LINE, 5)).items[0].insert_text == "return a + b"
        s2 = as_dict((await stats(client, uri))["last"])
        if move_runs:
            assert s2["shifted"] > 100 and s2["evaluated"] <= 6, s2
        else:
            assert s2["evaluated"] > 100 and s2["shifted"] == 0, s2


async def test_switching_documents_keeps_each_documents_state(model_factory):
    model = model_factory("codellama")
    uris = [f"file:///w/doc{i}.py" for i in range(3)]
    async with lsp_server("--model", str(model.path)) as (client, _):
        for uri in uris:
            open_doc(client, uri, DOC.replace("helper", f"helper{uri[-4]}"))
        for uri in uris:
            await inline_at(client, uri, LINE, 4)
        for i, uri in enumerate(uris):
            type_at(client, uri, 2, LINE, 4, "x")
            await inline_at(client, uri, LINE, 5)
            last = as_dict((await stats(client, uri))["last"])
            assert last["evaluated"] <= 3 and last["reused"] > 500, (uri, last)


async def test_no_prompt_cache_really_disables_reuse(model_factory):
    model = model_factory("codellama")
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path), "--no-prompt-cache") as (client, _):
        open_doc(client, uri, DOC)
        await inline_at(client, uri, LINE, 4)
        first = as_dict((await stats(client, uri))["last"])
        await inline_at(client, uri, LINE, 4)  # identical request: no result cache either
        second = as_dict((await stats(client, uri))["last"])
        assert second["source"] == "model"
        assert second["reused"] == 0 and second["evaluated"] == first["evaluated"]


BIG_BODY = "".join(f"def helper_{i}(x):\n    return x * {i}\n\n" for i in range(400))
BIG = BIG_BODY + "def add(a, b):\n    \n" + BIG_BODY


BIG_LINE = BIG_BODY.count("\n") + 1


async def test_a_file_longer_than_the_context_keeps_stable_windows(model_factory):
    """The prefix/suffix windows of a long file do not slide with each keystroke: typing on a
    line, and even adding lines, keeps the evaluated prompt a prefix of the cached one."""
    model = model_factory("codellama")
    uri = "file:///w/big.py"
    async with lsp_server("--model", str(model.path), "--ctx", "1024") as (client, _):
        open_doc(client, uri, BIG)
        await inline_at(client, uri, BIG_LINE, 4)
        first = as_dict((await stats(client, uri))["last"])
        assert 500 < first["evaluated"] <= 1024, first  # cut to the context, not the whole file
        col, version, costs = 4, 2, []
        for ch in "xyzw(),;":  # typing on the line
            type_at(client, uri, version, BIG_LINE, col, ch)
            version, col = version + 1, col + 1
            result = await inline_at(client, uri, BIG_LINE, col)
            assert result.items[0].insert_text == "return a + b"
            costs.append(as_dict((await stats(client, uri))["last"])["evaluated"])
        assert max(costs) <= 3, costs
        line = BIG_LINE
        costs = []
        for _ in range(8):  # pressing Enter: new lines above the cursor
            type_at(client, uri, version, line, col, "\n    ")
            version, line, col = version + 1, line + 1, 4
            await inline_at(client, uri, line, col)
            costs.append(as_dict((await stats(client, uri))["last"])["evaluated"])
        # at most one re-anchoring of the windows (a coarse step), every other keystroke is cheap
        assert sum(c > 10 for c in costs) <= 1, costs


OTHER = "".join(f"CONSTANT_{i} = {i}\n" for i in range(60))


async def test_other_open_files_come_first_and_stay_put(model_factory):
    """With extraContextTokens, the beginning of the other open files goes before the current
    one, as a snapshot: editing the other file does not cost the current one its cache."""
    model = model_factory("codellama")
    a, b = "file:///w/a.py", "file:///w/constants.py"
    async with lsp_server("--model", str(model.path), init_options={"extraContextTokens": 256}) as (client, _):
        open_doc(client, a, DOC)
        await inline_at(client, a, LINE, 4)
        alone = as_dict((await stats(client, a))["last"])["evaluated"]
        type_at(client, a, 2, LINE, 4, "x")
        await inline_at(client, a, LINE, 5)
        assert as_dict((await stats(client, a))["last"])["evaluated"] <= 3

        open_doc(client, b, OTHER)  # a new neighbour: a's prompt now starts with it
        type_at(client, a, 3, LINE, 5, "y")
        result = await inline_at(client, a, LINE, 6)
        assert result.items[0].insert_text == "return a + b"
        with_other = as_dict((await stats(client, a))["last"])
        # Code Llama's SPM layout puts the suffix first: it is reused; the prefix, which now
        # starts with the other file, is evaluated again and is longer by the extra context
        added = with_other["evaluated"] - (alone - with_other["reused"])
        assert 100 < added <= 256 + 8, (alone, with_other)

        type_at(client, b, 2, 0, 0, "# edited\n")  # editing the neighbour keeps a's snapshot
        type_at(client, a, 4, LINE, 6, "z")
        await inline_at(client, a, LINE, 7)
        assert as_dict((await stats(client, a))["last"])["evaluated"] <= 3

        client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=b)))
        type_at(client, a, 5, LINE, 7, "w")
        await inline_at(client, a, LINE, 8)
        after_close = as_dict((await stats(client, a))["last"])
        assert after_close["evaluated"] < with_other["evaluated"] - 100, (with_other, after_close)


@pytest.mark.parametrize("worked_at", [300, 5, None])
async def test_where_the_user_worked_in_another_file_reaches_the_prompt(model_factory, worked_at):
    """With extraContextTokens, the lines around where the user last worked in another open file
    go into this file's prompt after that file's beginning (the server's debug log names the lines
    it took); where the user worked near the top, or not at all, the beginning alone."""
    model = model_factory("starcoder")
    a, b = "file:///w/a.py", "file:///w/big.py"
    big = "".join(f"VALUE_{i} = {i}\n" for i in range(400))
    async with lsp_server("--model", str(model.path), "--log-level", "debug",
                          init_options={"extraContextTokens": 256}) as (client, _):
        open_doc(client, b, big)
        if worked_at is not None:
            await inline_at(client, b, worked_at, 0)  # the user types there
        open_doc(client, a, DOC)
        await inline_at(client, a, LINE, 4)
        line = next(m.message for m in client.log_messages if "other files before file:///w/a.py" in m.message)
        spans = line.split("big.py lines ", 1)[1].split(", ")
        first = [int(x) for x in spans[0].split("-")]
        assert first[0] == 1
        if worked_at == 300:
            assert len(spans) == 2, line
            lo, hi = (int(x) for x in spans[1].split("-"))
            assert first[1] < lo < 300 < hi and 300 - lo > hi - 300, line  # more above the focus than below
        else:
            assert len(spans) == 1 and first[1] > 20, line


def test_neighbour_snapshots_refresh_only_when_needed():
    from codelsp.completion.neighbors import REFRESH_S, Neighbors, extra_text

    n = Neighbors()
    n.touch("a")
    n.touch("b")
    first = n.snapshot("a", {"b": "x = 1\n"}, now=0.0)
    assert first.files == (("b", "x = 1\n"),)
    assert n.snapshot("a", {"b": "x = 2\n"}, now=10.0) is first  # edits alone: keep it
    later = n.snapshot("a", {"b": "x = 2\n"}, now=REFRESH_S + 1)  # old and changed: refresh
    assert later.files == (("b", "x = 2\n"),)
    assert n.snapshot("a", {"b": "x = 2\n", "c": "y\n"}, now=REFRESH_S + 2).files[1][0] == "c"
    assert n.snapshot("a", {}, now=REFRESH_S + 3).files == ()

    def tokenize(text, first=True):
        return text.split()

    text = extra_text(later, 100, tokenize)
    assert text == "# file: b\nx = 2\n\n"
    assert extra_text(later, 0, tokenize) == ""


def test_the_lines_where_the_user_worked_in_another_file_go_in_with_its_beginning():
    """Ring of recently edited/viewed chunks: the other file's first lines, then the lines around
    where the user last worked in it (its focus), within the budget; the focus alone does not
    refresh a fresh snapshot."""
    from codelsp.completion.neighbors import REFRESH_S, Neighbors, extra_text

    other = "".join(f"line{i} = {i}\n" for i in range(400))
    n = Neighbors()
    n.touch("b", 300)
    n.touch("a", 5)
    snap = n.snapshot("a", {"b": other}, now=0.0)
    assert snap.focus == (("b", 300),)

    def tokenize(text, first=True):
        return text.split()

    text = extra_text(snap, 60, tokenize)
    assert len(tokenize(text)) <= 60
    assert text.startswith("# file: b\nline0 = 0\n") and "\n# ...\n" in text
    assert "line300 = 300\n" in text and "line295 = 295\n" in text and "line150 = 150" not in text
    n.touch("b", 10)
    assert n.snapshot("a", {"b": other}, now=1.0) is snap  # fresh: kept (the cache of a stays)
    later = n.snapshot("a", {"b": other}, now=REFRESH_S + 1)
    near_top = extra_text(later, 60, tokenize)
    assert "line10 = 10\n" in near_top and "# ..." not in near_top  # the focus lies in the beginning
    unfocused = extra_text(Neighbors().snapshot("a", {"b": other}, now=0.0), 60, tokenize)
    assert unfocused == "# file: b\n" + "".join(f"line{i} = {i}\n" for i in range(19)) + "\n"  # as before


def test_using_files_in_another_order_keeps_the_snapshot():
    from codelsp.completion.neighbors import Neighbors

    n = Neighbors()
    texts = {"a": "A\n", "b": "B\n", "c": "C\n"}
    for u in "abc":
        n.touch(u)
    first = n.snapshot("a", {u: t for u, t in texts.items() if u != "a"}, now=0.0)
    n.touch("b")  # the user moves between the other files: a's prompt must not change
    assert n.snapshot("a", {u: t for u, t in texts.items() if u != "a"}, now=1.0) is first


def test_a_minified_line_is_tokenized_from_a_stable_start():
    """A 400 KB one-line file: only the tail of the line is tokenized, and while the user types
    the tokens stay a prefix of the previous ones (the cache keeps working)."""
    from codelsp.completion.context import build_context

    sizes: list[int] = []

    def tokenize(text: str, first: bool = True) -> list[str]:
        sizes.append(len(text))
        return [text[i:i + 3] for i in range(0, len(text), 3)]

    line = "a=f(1);" * 60000
    before = build_context(line, len(line), tokenize, 5000, 64)
    typed = line + "b="
    after = build_context(typed, len(typed), tokenize, 5000, 64)
    assert max(sizes) < 10000  # never the whole line
    common = len(before.prefix_tokens) - 1
    assert after.prefix_tokens[:common] == before.prefix_tokens[:common]


async def test_each_kind_of_edit_costs_about_what_changed(model_factory):
    """Enter, a move down, deleting a line below, backspace, switching files and accepting a
    suggestion each evaluate about the tokens that changed (psm-tail layout + shifted KV runs);
    a move up re-evaluates the suffix but keeps the prefix."""
    model = model_factory("qwen", default="answer")
    a, b = "file:///w/a.py", "file:///w/b.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, a, DOC)
        open_doc(client, b, DOC.replace("helper", "other"))
        await inline_at(client, b, LINE, 4)
        await inline_at(client, a, LINE, 4)
        whole = as_dict((await stats(client, a))["last"])["evaluated"]
        assert whole > 600

        async def cost(uri: str, line: int, col: int) -> dict:
            await inline_at(client, uri, line, col)
            last = as_dict((await stats(client, uri))["last"])
            assert last["source"] == "model", last
            return last

        type_at(client, a, 2, LINE, 4, "x = 1")
        assert (await cost(a, LINE, 9))["evaluated"] <= 6  # five characters typed at once
        type_at(client, a, 3, LINE, 9, "\n    ")
        assert (await cost(a, LINE + 1, 4))["evaluated"] <= 6  # Enter
        # nine lines down (about 50 tokens): they join the near text, and the suffix window, which
        # ends a budget's worth of lines below the cursor, gains as many at its end
        down = await cost(a, LINE + 10, 0)
        assert down["evaluated"] <= 130 and down["shifted"] > 100, down
        edit(client, a, 4, (LINE + 12, 0), (LINE + 13, 0), "")  # delete a line below the cursor
        deleted = await cost(a, LINE + 10, 0)
        # the rest of the suffix is shifted back; its window takes in as many lines at its end
        assert deleted["evaluated"] <= 60 and deleted["shifted"] > 100, deleted
        up = await cost(a, LINE + 1, 4)  # back up: the suffix again, the prefix kept
        assert up["reused"] > 400 and up["evaluated"] < whole * 0.7, (whole, up)
        type_at(client, a, 5, LINE + 1, 4, "yz")
        await cost(a, LINE + 1, 6)
        edit(client, a, 6, (LINE + 1, 5), (LINE + 1, 6), "")  # backspace
        assert (await cost(a, LINE + 1, 5))["evaluated"] <= 3
        type_at(client, b, 2, LINE, 4, "q")  # switch to b and back: each keeps its state
        assert (await cost(b, LINE, 5))["evaluated"] <= 3
        type_at(client, a, 7, LINE + 1, 5, "w")
        assert (await cost(a, LINE + 1, 6))["evaluated"] <= 3
        suggestion = (await inline_at(client, a, LINE + 1, 6)).items
        text = suggestion[0].insert_text if suggestion else "return a + b"
        type_at(client, a, 8, LINE + 1, 6, text)  # accept: the editor inserts the suggestion
        accepted = await cost(a, LINE + 1, 6 + len(text))
        assert accepted["evaluated"] <= len(text) // 2 + 3, accepted


def test_bench_replays_typing_and_compares_with_no_prompt_cache(model_factory):
    import json

    from support import run_cli

    model = model_factory("codellama")
    proc = run_cli("bench", "--model", str(model.path), "--keystrokes", "8", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    cached, base = report["results"]["cached"], report["results"]["no-prompt-cache"]
    assert [r["replay"] for r in cached] == ["one document", "three documents"]
    for with_cache, without in zip(cached, base):
        assert with_cache["keystrokes"] == without["keystrokes"] > 0
        # with the cache a keystroke evaluates a few tokens; without it, the whole prompt
        assert with_cache["evaluated_per_keystroke"] <= 3
        assert without["evaluated_per_keystroke"] > 300
        assert without["sources"] == {"model": without["keystrokes"]}
        # the server's resident memory is reported around each replay, and typing adds little
        assert with_cache["server_rss_start_mib"] > 10
        assert with_cache["server_rss_end_mib"] - with_cache["server_rss_start_mib"] < 64


def test_bench_editing_replay_reports_each_kind_of_event(model_factory):
    """`codelsp bench --editing`: the editing session over three files, with prompt tokens per
    kind of event from the server's own counts."""
    import json

    from support import run_cli
    from codelsp.tools import editing

    model = model_factory("qwen", default="answer")
    proc = run_cli("bench", "--editing", "--model", str(model.path), "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    texts = [p.read_text() for p in editing.DEFAULT_FILES]
    assert report["events"] == len(editing.session(texts)) > 50
    (arm,) = report["arms"]
    assert arm["arm"] == "codelsp" and arm["events"] == report["events"]
    kinds = arm["by_kind"]
    assert set(kinds) == set(editing.KINDS)

    def cost(kind: str) -> float:  # None: every such event was answered without the model
        return kinds[kind]["prompt_tokens_mean"] or 0

    assert kinds["type"]["model_events"] > 0 and cost("type") <= 3, kinds
    assert cost("delete") <= 3 and cost("enter") <= 8, kinds
    assert cost("move") < 300 and cost("switch") < 300, kinds  # the suffix window at most, not the file
    assert kinds["type"]["prompt_tokens_p95"] <= 3 and kinds["move"]["prompt_tokens_p50"] is not None
    # the tail named: the events at or above p95, by kind, with the prompt tokens they evaluated
    tail = arm["tail"]
    assert tail["events"] >= 1 and sum(k["events"] for k in tail["by_kind"].values()) == tail["events"]
    assert tail["cause"].split()[0] in editing.KINDS, tail
    assert arm["model_p50_ms"] > 0 and "model_p95_x_floor" in arm
    assert report["floor_ms"] > 0


def test_bench_editing_replay_in_a_workspace_carries_the_repository_context(model_factory, tmp_path):
    """`codelsp bench --editing --workspace DIR`: the files are opened under their own URIs in
    that workspace, so `--repo-context-tokens` puts what they import before each prompt (more
    tokens reused on every keystroke), while a keystroke still evaluates only its new tokens."""
    import json

    from support import run_cli
    from codelsp.tools import editing

    model = model_factory("qwen", default="answer")
    (tmp_path / "shapes.py").write_text("".join(
        f"def area_{i}(width, height):\n    \"\"\"The area of shape {i}.\"\"\"\n    return width * height * {i}\n\n"
        for i in range(6)))
    files = []
    for n, src in enumerate(editing.DEFAULT_FILES):
        f = tmp_path / f"user{n}.py"
        f.write_text("from shapes import " + ", ".join(f"area_{i}" for i in range(6)) + "\n" + src.read_text())
        files.append(str(f))

    def reused_per_keystroke(*flags: str) -> float:
        proc = run_cli("bench", "--editing", *files, "--workspace", str(tmp_path), "--model", str(model.path),
                       "--json", *flags, timeout=600)
        assert proc.returncode == 0, proc.stderr
        (arm,) = json.loads(proc.stdout)["arms"]
        typed = [r for r in arm["rows"] if r["kind"] == "type" and r["source"] == "model"]
        assert typed and max(r["evaluated"] for r in typed) <= 3, typed
        return sum(r["reused"] for r in typed) / len(typed)

    off = reused_per_keystroke()
    on = reused_per_keystroke("--repo-context-tokens", "256")
    assert on > off + 60, (off, on)
