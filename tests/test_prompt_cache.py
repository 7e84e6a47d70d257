"""Prompt (KV) reuse per document, type-through, supersession and cancellation — through the
real server, asserting on the token counts it reports (never on time)."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types

from conftest import complete_at, inline_at, inline_params, lsp_server, open_doc
from codelsp.tools.lspclient import as_dict

BODY = "".join(f"def helper_{i}(x):\n    return x * {i}\n\n" for i in range(30))
DOC = BODY + "def add(a, b):\n    \n" + BODY
LINE = BODY.count("\n") + 1  # the empty line inside add()


def type_at(client, uri: str, version: int, line: int, character: int, text: str) -> None:
    pos = types.Position(line=line, character=character)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=text)],
        )
    )


async def stats(client, uri: str) -> dict:
    return await client.protocol.send_request_async("codelsp/stats", {"uri": uri})



async def test_a_keystroke_evaluates_only_its_new_tokens(model_factory):
    model = model_factory("codellama")  # SPM: the suffix sits before the prefix in the prompt
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, uri, DOC)
        first = await inline_at(client, uri, LINE, 4)
        assert first.items[0].insert_text == "return a + b"
        s1 = as_dict((await stats(client, uri)).last)
        assert s1["source"] == "model" and s1["reused"] == 0 and s1["evaluated"] > 500

        type_at(client, uri, 2, LINE, 4, "x")  # not the start of the suggestion: the model runs
        second = await inline_at(client, uri, LINE, 5)
        assert second.items[0].insert_text == "return a + b"
        s2 = as_dict((await stats(client, uri)).last)
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
        last = as_dict((await stats(client, uri)).last)
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
        assert as_dict((await stats(client, uri)).last)["evaluated"] > 500
        evaluated, generated, floor = await type_and_measure(client, uri, 2, LINE, 4, "xq_zk(")
        assert floor > 0
        assert evaluated + generated <= 1.3 * floor, (family, evaluated, generated, floor)


async def test_the_plain_psm_order_can_still_be_forced(model_factory):
    """`fimOrder psm`: the whole suffix comes after the changed token, so it is evaluated again."""
    model = model_factory("starcoder")  # answers only right after the middle token
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path), "--fim-order", "psm") as (client, _):
        open_doc(client, uri, DOC)
        assert (await inline_at(client, uri, LINE, 4)).items[0].insert_text == "return a + b"
        type_at(client, uri, 2, LINE, 4, "x")
        await inline_at(client, uri, LINE, 5)
        s2 = as_dict((await stats(client, uri)).last)
        assert s2["evaluated"] > 100


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
            last = as_dict((await stats(client, uri)).last)
            assert last["evaluated"] <= 3 and last["reused"] > 500, (uri, last)


async def test_a_one_context_budget_holds_several_short_documents(model_factory):
    """KV sized by need: a budget of one full context (4,096 cells) holds three documents of
    about 1,000 tokens, each taking the cells its prompt needs (not a whole context each)."""
    model = model_factory("codellama")
    uris = [f"file:///w/doc{i}.py" for i in range(3)]
    async with lsp_server("--model", str(model.path), "--prompt-cache-bytes", "1") as (client, _):
        for uri in uris:
            open_doc(client, uri, DOC.replace("helper", f"helper{uri[-4]}"))
            await inline_at(client, uri, LINE, 4)
        for uri in uris:
            type_at(client, uri, 2, LINE, 4, "x")
            await inline_at(client, uri, LINE, 5)
            st = as_dict(await stats(client, uri))
            last = as_dict(st["last"])
            assert last["evaluated"] <= 3 and last["reused"] > 500 and last["restored"] == 0, (uri, last)
        cache = as_dict(st["cache"])
        assert cache["poolDocuments"] == 3 and cache["poolCells"] == 4096 and cache["evictions"] == 0, cache
        assert cache["poolUsed"] <= cache["poolCells"]


async def test_without_the_system_memory_tier_an_evicted_document_is_evaluated_again(model_factory):
    model = model_factory("codellama")
    a, b = "file:///w/a.py", "file:///w/b.py"
    # a pool of one 1,024-token context holds one of these ~670-token prompts at a time
    async with lsp_server("--model", str(model.path), "--ctx", "1024", "--prompt-cache-bytes", "1",
                          "--host-cache-bytes", "0") as (client, _):
        open_doc(client, a, DOC)
        open_doc(client, b, DOC.replace("helper", "other"))
        await inline_at(client, a, LINE, 4)
        await inline_at(client, b, LINE, 4)
        type_at(client, a, 2, LINE, 4, "x")
        await inline_at(client, a, LINE, 5)
        last = as_dict((await stats(client, a)).last)
        assert last["reused"] < 10 and last["evaluated"] > 500 and last["restored"] == 0, last


async def test_an_evicted_document_comes_back_from_system_memory(model_factory):
    model = model_factory("codellama")
    a, b = "file:///w/a.py", "file:///w/b.py"
    async with lsp_server("--model", str(model.path), "--ctx", "1024", "--prompt-cache-bytes", "1") as (client, _):
        open_doc(client, a, DOC)
        open_doc(client, b, DOC.replace("helper", "other"))
        await inline_at(client, a, LINE, 4)
        held = (await stats(client, a)).cachedTokens  # the prompt and the generated tokens
        prompt = as_dict((await stats(client, a)).last)["evaluated"]
        await inline_at(client, b, LINE, 4)  # a leaves the KV pool for system memory
        st = as_dict(await stats(client, a))
        assert st["cachedTokens"] == 0 and st["hostTokens"] == held > 500, st
        type_at(client, a, 2, LINE, 4, "x")
        assert (await inline_at(client, a, LINE, 5)).items[0].insert_text == "return a + b"
        last = as_dict((await stats(client, a)).last)
        assert last["restored"] == held and last["reused"] >= prompt - 3 and last["evaluated"] <= 3, last
        cache = as_dict((await stats(client, a)).cache)
        assert cache["restores"] == 1 and cache["saves"] >= 2, cache


async def test_the_system_memory_tier_never_exceeds_its_budget(model_factory):
    model = model_factory("codellama")
    uris = [f"file:///w/doc{i}.py" for i in range(4)]
    budget = 200_000  # room for one of these documents' saved states (~720 tokens x 140 bytes), not two
    async with lsp_server("--model", str(model.path), "--ctx", "1536", "--prompt-cache-bytes", "1",
                          "--host-cache-bytes", str(budget)) as (client, _):
        for uri in uris:
            open_doc(client, uri, DOC.replace("helper", f"helper{uri[-4]}"))
        restored, held = [], []
        for rnd in range(2):
            for uri in uris:
                await inline_at(client, uri, LINE, 4 if rnd == 0 else 5)
                st = as_dict(await stats(client, uri))
                cache = as_dict(st["cache"])
                assert cache["hostBudget"] == budget and cache["hostBytes"] <= budget, cache
                assert cache["hostDocuments"] <= 1, cache
                held.append(cache["hostBytes"])
                restored.append(as_dict(st["last"])["restored"])
                type_at(client, uri, 2 + rnd, LINE, 4 + rnd, "x")
        # round-robin over four documents with room for one saved state: the state saved last is
        # never the one asked for next, so nothing is restored and older states are dropped
        assert restored == [0] * 8 and cache["hostDropped"] >= 5, (restored, cache)
        # the pool (1,536 cells) holds two of these documents' prompts: saving starts with the third
        assert held[:2] == [0, 0] and all(100_000 < h <= budget for h in held[2:]), held


async def test_an_evicted_document_is_restored_exactly(demo_model):
    """A real model (attention matters): after its state went to system memory and back, the
    completion is the one computed from scratch for the same prompt, token for token (greedy)."""
    head = "".join(f"def square_{i}(x):\n    return x * x + {i}\n\n" for i in range(25)) + "def cube(x):\n    return"
    text_a = head + "\n\n# end\n"
    text_b = "".join(f"class Point{i}:\n    x = {i}\n\n" for i in range(30)) + "class Vector:\n    def"
    line, col = head.count("\n"), len(head.rsplit("\n", 1)[1])
    a, b = "file:///w/a.py", "file:///w/b.py"
    # a pool of one 768-token context holds one of these ~400-token documents at a time
    async with lsp_server("--model", str(demo_model), "--ctx", "768", "--prompt-cache-bytes", "1",
                          "--max-tokens", "12", "--temperature", "0", "--threads", "1", "--timeout-ms", "600000") as (client, _):
        open_doc(client, a, text_a)
        open_doc(client, b, text_b)
        scratch = (await inline_at(client, a, line, col)).items[0].insert_text
        first = as_dict((await stats(client, a)).last)
        assert first["evaluated"] > 300 and first["reused"] == 0, first
        await inline_at(client, b, text_b.count("\n"), len(text_b.rsplit("\n", 1)[1]))
        st = as_dict(await stats(client, a))
        assert st["cachedTokens"] == 0 and st["hostTokens"] >= first["evaluated"], st  # saved, out of the KV
        # a later line changes (the demo model completes from the prefix alone): the same prompt
        # again, but not the same request, so the model runs
        end = types.Position(line=line + 2, character=5)
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=a, version=2),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=end, end=end), text=".")]))
        again = (await inline_at(client, a, line, col)).items[0].insert_text
        last = as_dict((await stats(client, a)).last)
        assert last["source"] == "model" and last["restored"] >= first["evaluated"], last
        assert last["evaluated"] == 1 and last["reused"] == first["evaluated"] - 1, last
        assert last["generated"] == first["generated"] and again == scratch, (first, last, again, scratch)


async def test_kv_cache_type_changes_bytes_per_token_as_the_plan_says(demo_model):
    from codelsp.models.gguf import read_gguf

    info = read_gguf(demo_model)
    short = "".join(f"x{i} = {i}\n" for i in range(20))
    long = "".join(f"y{i} = {i} * 2\n" for i in range(60))
    seen = {}
    for kind in ("f16", "q8_0", "q4_0"):
        async with lsp_server("--model", str(demo_model), "--ctx", "1024", "--kv-cache-type", kind,
                              "--max-tokens", "2", "--threads", "1") as (client, _):
            sizes = []
            for uri, text in (("file:///w/s.py", short), ("file:///w/l.py", long)):
                open_doc(client, uri, text)
                await inline_at(client, uri, text.count("\n"), 0)
                st = as_dict(await stats(client, uri))
                sizes.append((st["cachedTokens"], st["stateBytes"]))
            cache = as_dict(st["cache"])
            assert cache["kvCacheType"] == kind and cache["kvBytesPerToken"] == info.kv_bytes_per_token(kind)
            (t1, b1), (t2, b2) = sizes
            assert t2 > t1 > 0
            # llama.cpp's state per cell: position, sequence count and id (12 bytes) + K and V rows
            assert (b2 - b1) == (t2 - t1) * (cache["kvBytesPerToken"] + 12), (kind, sizes, cache)
            seen[kind] = cache["kvBytesPerToken"]
    assert seen["q8_0"] * 32 == seen["f16"] * 17 and seen["q4_0"] * 32 == seen["f16"] * 9, seen


async def test_type_through_answers_without_the_model(model_factory):
    model = model_factory("starcoder")
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, uri, DOC)
        assert (await inline_at(client, uri, LINE, 4)).items[0].insert_text == "return a + b"
        before = as_dict((await stats(client, uri)).totals)
        type_at(client, uri, 2, LINE, 4, "ret")
        inline = await inline_at(client, uri, LINE, 7)
        assert inline.items[0].insert_text == "urn a + b"
        menu = await complete_at(client, uri, LINE, 7)
        assert menu.items[0].text_edit.new_text == "return a + b"
        after = as_dict((await stats(client, uri)).totals)
        assert after["model"] == before["model"]
        assert after["typeThrough"] == before["typeThrough"] + 2
        # typing something else runs the model again
        type_at(client, uri, 3, LINE, 7, "X")
        await inline_at(client, uri, LINE, 8)
        assert as_dict((await stats(client, uri)).totals)["model"] == before["model"] + 1


async def test_no_prompt_cache_really_disables_reuse(model_factory):
    model = model_factory("codellama")
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path), "--no-prompt-cache") as (client, _):
        open_doc(client, uri, DOC)
        await inline_at(client, uri, LINE, 4)
        first = as_dict((await stats(client, uri)).last)
        await inline_at(client, uri, LINE, 4)  # identical request: no result cache either
        second = as_dict((await stats(client, uri)).last)
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
        first = as_dict((await stats(client, uri)).last)
        assert 500 < first["evaluated"] <= 1024, first  # cut to the context, not the whole file
        col, version, costs = 4, 2, []
        for ch in "xyzw(),;":  # typing on the line
            type_at(client, uri, version, BIG_LINE, col, ch)
            version, col = version + 1, col + 1
            result = await inline_at(client, uri, BIG_LINE, col)
            assert result.items[0].insert_text == "return a + b"
            costs.append(as_dict((await stats(client, uri)).last)["evaluated"])
        assert max(costs) <= 3, costs
        line = BIG_LINE
        costs = []
        for _ in range(8):  # pressing Enter: new lines above the cursor
            type_at(client, uri, version, line, col, "\n    ")
            version, line, col = version + 1, line + 1, 4
            await inline_at(client, uri, line, col)
            costs.append(as_dict((await stats(client, uri)).last)["evaluated"])
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
        alone = as_dict((await stats(client, a)).last)["evaluated"]
        type_at(client, a, 2, LINE, 4, "x")
        await inline_at(client, a, LINE, 5)
        assert as_dict((await stats(client, a)).last)["evaluated"] <= 3

        open_doc(client, b, OTHER)  # a new neighbour: a's prompt now starts with it
        type_at(client, a, 3, LINE, 5, "y")
        result = await inline_at(client, a, LINE, 6)
        assert result.items[0].insert_text == "return a + b"
        with_other = as_dict((await stats(client, a)).last)
        # Code Llama's SPM layout puts the suffix first: it is reused; the prefix, which now
        # starts with the other file, is evaluated again and is longer by the extra context
        added = with_other["evaluated"] - (alone - with_other["reused"])
        assert 100 < added <= 256 + 8, (alone, with_other)

        type_at(client, b, 2, 0, 0, "# edited\n")  # editing the neighbour keeps a's snapshot
        type_at(client, a, 4, LINE, 6, "z")
        await inline_at(client, a, LINE, 7)
        assert as_dict((await stats(client, a)).last)["evaluated"] <= 3

        client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=b)))
        type_at(client, a, 5, LINE, 7, "w")
        await inline_at(client, a, LINE, 8)
        after_close = as_dict((await stats(client, a)).last)
        assert after_close["evaluated"] < with_other["evaluated"] - 100, (with_other, after_close)


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


LONG = {"maxTokens": 4000, "timeoutMs": 120000, "fimTemplate": "none"}
COUNTING = "numbers = [" + ", ".join(str(i) for i in range(1, 40)) + ","


async def test_cancel_stops_a_long_generation_and_the_next_request_is_answered(demo_model):
    uri = "file:///w/count.py"
    async with lsp_server("--model", str(demo_model), init_options=LONG) as (client, _):
        open_doc(client, uri, COUNTING)
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=0, character=len(COUNTING)),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
        fut = client.protocol.send_request("textDocument/inlineCompletion", params, msg_id="long-1")
        await asyncio.sleep(1.5)  # the model is loaded and generating
        client.protocol.notify("$/cancelRequest", types.CancelParams(id="long-1"))
        with pytest.raises(Exception):
            await asyncio.wait_for(asyncio.wrap_future(fut), 30)
        totals = as_dict((await stats(client, uri)).totals)
        assert totals["cancelled"] == 1
        # the engine is free again: a short request is answered in full
        open_doc(client, "file:///w/short.py", "def add(a, b):\n    return a")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"codelsp": {"maxTokens": 4}}))
        result = await asyncio.wait_for(inline_at(client, "file:///w/short.py", 1, 12), 30)
        assert isinstance(result, types.InlineCompletionList)
        last = as_dict((await stats(client, "file:///w/short.py")).last)
        assert last["source"] == "model" and last["generated"] <= 4


async def test_a_newer_request_supersedes_an_older_one(demo_model):
    uri = "file:///w/count.py"
    async with lsp_server("--model", str(demo_model), init_options=LONG) as (client, _):
        open_doc(client, uri, COUNTING)
        older = asyncio.ensure_future(inline_at(client, uri, 0, len(COUNTING)))
        await asyncio.sleep(1.5)
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"codelsp": {"maxTokens": 3}}))
        newer = await asyncio.wait_for(inline_at(client, uri, 0, len(COUNTING) - 1), 30)
        old_result = await asyncio.wait_for(older, 30)
        assert list(old_result.items) == []  # no stale answer for the superseded request
        assert isinstance(newer, types.InlineCompletionList)
        assert as_dict((await stats(client, uri)).totals)["cancelled"] >= 1


def test_bench_replays_typing_and_compares_with_no_prompt_cache(model_factory):
    import json

    from conftest import run_cli

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


def test_bench_switching_restores_five_documents_under_a_one_context_budget(model_factory):
    import json

    from conftest import run_cli

    model = model_factory("codellama")
    proc = run_cli("bench", "--switching", "--model", str(model.path), "--ctx", "2048", "--keystrokes", "10", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (one, five), (one_off, five_off) = report["results"]["system tier"], report["results"]["no system tier"]
    assert [r["replay"] for r in (one, five)] == ["one document", "five documents"]
    assert five["keystrokes"] == five_off["keystrokes"] == 10
    # the pool (one 2,048-token context) holds two of the five ~730-token prompts: every switch
    # but the first (to the document typed in just before) brings a document back from system
    # memory, or, without that tier, evaluates it again
    assert five["restores"] == five["model_keystrokes"] - 1 > 0 and five["restored_per_keystroke"] > 500, five
    assert five["evaluated_per_keystroke"] <= 3 and one["evaluated_per_keystroke"] <= 3
    assert five_off["restores"] == 0 and five_off["evaluated_per_keystroke"] > 500, five_off
    m = report["memory"]
    assert 0 < m["host_held_mib"] <= m["host_budget_mib"] and five["cache"]["poolCells"] == 2048
def edit(client, uri: str, version: int, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
    rng = types.Range(start=types.Position(line=start[0], character=start[1]),
                      end=types.Position(line=end[0], character=end[1]))
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=rng, text=text)],
        )
    )


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
        whole = as_dict((await stats(client, a)).last)["evaluated"]
        assert whole > 600

        async def cost(uri: str, line: int, col: int) -> dict:
            await inline_at(client, uri, line, col)
            last = as_dict((await stats(client, uri)).last)
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


async def wait_for_total(client, uri: str, name: str, at_least: int = 1) -> dict:
    """Poll the server's totals until `name` reaches `at_least` (background work finished)."""
    for _ in range(600):
        totals = as_dict((await stats(client, uri)).totals)
        if totals.get(name, 0) >= at_least:
            return totals
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never reached {at_least}: {totals}")


async def test_an_opened_document_is_warmed_in_the_background(model_factory):
    """On open, the document's prompt is evaluated at low priority: the first request in it
    reuses the prefix instead of evaluating the whole prompt."""
    model = model_factory("qwen", default="answer")
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path), warm=True) as (client, _):
        open_doc(client, uri, DOC)
        await wait_for_total(client, uri, "warmed", 800)
        result = await inline_at(client, uri, LINE, 4)
        assert result.items[0].insert_text == "return a + b"
        first = as_dict((await stats(client, uri)).last)
        assert first["reused"] > 400, first


async def test_after_an_accepted_suggestion_the_next_state_is_ready(model_factory):
    """Accepting a suggestion (the change inserts it) starts the next completion at once: when
    the editor asks, the prompt is evaluated already."""
    model = model_factory("qwen", default="answer")
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path)) as (client, _):
        open_doc(client, uri, DOC)
        text = (await inline_at(client, uri, LINE, 4)).items[0].insert_text
        type_at(client, uri, 2, LINE, 4, text)  # the editor inserts the suggestion
        await wait_for_total(client, uri, "speculative")
        await inline_at(client, uri, LINE, 4 + len(text))
        last = as_dict((await stats(client, uri)).last)
        assert last["evaluated"] <= 1, last  # only the last token, for its logits


async def test_coming_back_to_a_document_warms_it_at_the_cursor(model_factory):
    """`codelsp/didFocus` (the editor switched to a document; editors/ send it): its state comes
    back from system memory (evicting the document left) and the prompt at the cursor is
    evaluated in the background, so the first keystroke there costs only its last token."""
    model = model_factory("codellama")
    a, b = "file:///w/a.py", "file:///w/b.py"
    # a pool of one 1,024-token context holds one of these ~670-token prompts at a time
    async with lsp_server("--model", str(model.path), "--ctx", "1024", "--prompt-cache-bytes", "1",
                          warm=True) as (client, _):
        open_doc(client, a, DOC)
        open_doc(client, b, DOC.replace("helper", "other"))
        await inline_at(client, a, LINE, 4)
        await inline_at(client, b, LINE, 4)  # a leaves the KV pool for system memory
        st = as_dict(await stats(client, a))
        held = st["hostTokens"]
        assert st["cachedTokens"] == 0 and held > 500, st
        type_at(client, a, 2, LINE, 4, "x")
        client.protocol.notify("codelsp/didFocus", {"position": {"line": 0}})  # no document: ignored
        client.protocol.notify("codelsp/didFocus", {"textDocument": {"uri": a},
                                                    "position": {"line": LINE, "character": 5}})
        totals = await wait_for_total(client, a, "warmRestored")
        assert totals["warmed"] >= 1, totals
        assert (await inline_at(client, a, LINE, 5)).items[0].insert_text == "return a + b"
        last = as_dict((await stats(client, a)).last)
        assert last["restored"] == 0 and last["reused"] > 500 and last["evaluated"] <= 1, last
        assert totals["warmRestored"] == held, totals
        # focus on the document already in front does nothing
        client.protocol.notify("codelsp/didFocus", {"textDocument": {"uri": a}})
        await inline_at(client, a, LINE, 5)
        after = as_dict((await stats(client, a)).totals)
        assert (after["warmed"], after["warmRestored"]) == (totals["warmed"], totals["warmRestored"]), after
        # a position outside LSP's range is left out (the last cursor is used), never an error
        client.protocol.notify("codelsp/didFocus", {"textDocument": {"uri": b},
                                                    "position": {"line": 2**40, "character": 0}})
        await wait_for_total(client, b, "focused", totals["focused"] + 1)
        await inline_at(client, b, LINE, 4)
        assert not [m.message for m in client.messages if m.type == types.MessageType.Error]


async def test_closing_a_document_drops_its_warm_job(model_factory):
    """A document focused and closed at once (VS Code's preview tabs): the focus warm must not
    run after the close and bring its state back (evicting documents that are still open)."""
    model = model_factory("codellama")
    a, b = "file:///w/a.py", "file:///w/b.py"
    async with lsp_server("--model", str(model.path), warm=True) as (client, _):
        open_doc(client, a, DOC)
        open_doc(client, b, DOC.replace("helper", "other"))
        client.protocol.notify("codelsp/didFocus", {"textDocument": {"uri": a}})
        client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=a)))
        client.protocol.notify("codelsp/didFocus", {"textDocument": {"uri": b}})
        # warm jobs run in order: once b's has run, a's would have run before it
        await wait_for_total(client, b, "warmed", 500)
        st = as_dict(await stats(client, a))
        assert st["cachedTokens"] == 0 and st["hostTokens"] == 0, st


async def test_a_request_riding_a_queued_job_outlives_the_request_that_started_it(demo_model):
    """The job of a document is still queued (the engine is busy with another document) when
    the user types into it: the newer request rides it, and cancelling the older request (an
    editor that sends the new request first) must not cancel the job the newer one waits for."""
    busy, uri = "file:///w/busy.py", "file:///w/count.py"
    async with lsp_server("--model", str(demo_model), init_options={**LONG, "maxTokens": 150}) as (client, _):
        open_doc(client, busy, COUNTING)
        open_doc(client, uri, COUNTING)
        await inline_at(client, busy, 0, 5)  # the model is loaded
        running = client.protocol.send_request("textDocument/inlineCompletion", inline_params(busy, 0, len(COUNTING)))
        await asyncio.sleep(0.3)  # busy.py is generating
        older = client.protocol.send_request("textDocument/inlineCompletion", inline_params(uri, 0, len(COUNTING)),
                                             msg_id="older")
        await asyncio.sleep(0.1)
        type_at(client, uri, 2, 0, len(COUNTING), " 40")
        newer = asyncio.ensure_future(inline_at(client, uri, 0, len(COUNTING) + 3))
        await asyncio.sleep(0.1)
        client.protocol.notify("$/cancelRequest", types.CancelParams(id="older"))
        answer = await asyncio.wait_for(newer, 600)
        assert answer.items[0].insert_text.startswith(", 41"), answer
        await asyncio.wait_for(asyncio.wrap_future(running), 600)
        with pytest.raises(Exception):
            await asyncio.wait_for(asyncio.wrap_future(older), 60)  # answered "cancelled"
        totals = as_dict((await stats(client, uri)).totals)
        assert totals["inFlight"] + totals["typeThrough"] == 1 and totals["orphaned"] == 1, totals


async def test_background_warming_does_not_stop_a_generation_being_typed_into(demo_model):
    """A generation whose request the editor cancelled runs on for the next keystroke; a
    document opened meanwhile (its warm job queued) must not make it give way."""
    uri, other = "file:///w/count.py", "file:///w/other.py"
    async with lsp_server("--model", str(demo_model), init_options={**LONG, "maxTokens": 150},
                          warm=True) as (client, _):
        open_doc(client, "file:///w/short.py", "x = 1\n")
        open_doc(client, uri, COUNTING)
        await inline_at(client, "file:///w/short.py", 0, 5)  # the model is loaded
        await wait_for_total(client, uri, "warmed", 100)  # count.py's own warm job is done
        client.protocol.send_request("textDocument/inlineCompletion", inline_params(uri, 0, len(COUNTING)),
                                     msg_id="older")
        await asyncio.sleep(0.5)  # it is generating
        client.protocol.notify("$/cancelRequest", types.CancelParams(id="older"))
        open_doc(client, other, DOC)  # queues a warm job
        type_at(client, uri, 2, 0, len(COUNTING), " 40")
        newer = await asyncio.wait_for(inline_at(client, uri, 0, len(COUNTING) + 3), 600)
        assert newer.items[0].insert_text.startswith(", 41"), newer
        totals = as_dict((await stats(client, uri)).totals)
        assert totals["model"] == 1 and totals["orphaned"] == 1, totals  # short.py; count.py ran once


@pytest.mark.parametrize("editor_cancels", [False, True])
async def test_typing_into_a_generation_in_flight_rides_it(demo_model, editor_cancels):
    """The user types the characters the running generation is producing: the new request
    waits for it and answers the rest, instead of superseding it and starting over -- also when
    the editor cancels the older request as it sends the newer one (VS Code does). That case
    failed while the engine left a running job's future cancellable: asyncio.wrap_future
    cancelled it with the request, and the newer request found nothing to ride."""
    uri = "file:///w/count.py"
    async with lsp_server("--model", str(demo_model), init_options={**LONG, "maxTokens": 150}) as (client, _):
        open_doc(client, "file:///w/short.py", "x = 1\n")
        await inline_at(client, "file:///w/short.py", 0, 5)  # the model is loaded
        open_doc(client, uri, COUNTING)
        params = inline_params(uri, 0, len(COUNTING))
        older = client.protocol.send_request("textDocument/inlineCompletion", params, msg_id="older")
        await asyncio.sleep(0.5)  # it is generating
        if editor_cancels:
            client.protocol.notify("$/cancelRequest", types.CancelParams(id="older"))
        type_at(client, uri, 2, 0, len(COUNTING), " 40")
        newer = await asyncio.wait_for(inline_at(client, uri, 0, len(COUNTING) + 3), 600)
        totals = as_dict((await stats(client, uri)).totals)
        assert totals["model"] == 1 + (not editor_cancels), totals  # short.py (and the older one)
        # answered from the generation while it ran, or (it finished first) from its suggestion
        assert totals["inFlight"] + totals["typeThrough"] == 1, totals
        assert newer.items[0].insert_text.startswith(", 41"), newer
        if not editor_cancels:
            # answered after " 40" was typed: carried over to the text as it is now, at the
            # cursor (never the old position and " 40" again: issue 29, kind 3)
            old = await asyncio.wait_for(asyncio.wrap_future(older), 600)
            assert old.items[0].insert_text == newer.items[0].insert_text
            assert old.items[0].range.start == types.Position(line=0, character=len(COUNTING) + 3)


def test_bench_editing_replay_reports_each_kind_of_event(model_factory):
    """`codelsp bench --editing`: the editing session over three files, with prompt tokens per
    kind of event from the server's own counts."""
    import json

    from conftest import run_cli
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
    assert report["floor_ms"] > 0


SHAPES = '''import math


def area(shape, size):
    """Area of a square or a circle."""
    if shape == "square":
        return size * size
    if shape == "circle":
        return math.pi * size * size
    raise ValueError(shape)
'''


def test_bench_typing_rate_types_into_a_multi_line_suggestion(model_factory, tmp_path):
    """`codelsp bench --typing-rate`: the body of area() is taken out, the model's suggestion
    there is learnt, and its first line typed at 20 characters a second with the editor
    cancelling each request at the next keystroke; one model run serves every keystroke."""
    import json

    from conftest import run_cli

    multi = "if a:\n        raise ValueError\n    return b"
    model = model_factory("qwen", multi, default="answer")
    src = tmp_path / "shapes.py"
    src.write_text(SHAPES)
    proc = run_cli("bench", str(src), "--typing-rate", "20", "--model", str(model.path), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["line"] == 6 and report["suggestion"] == multi and report["typed"] == "if a:"
    rows = report["rows"]
    assert len(rows) == report["keystrokes"] + 1 == 6
    assert rows[-1]["shown"] and rows[-1]["multiline"], rows  # after the last keystroke: the rest
    server = report["server"]
    assert server["requests"] == 6 and server["model"] + server["orphaned"] == 1, server
    assert server["model"] + server["inFlight"] + server["typeThrough"] + server["cancelled"] == 6, server


def test_bench_typing_rate_where_the_model_suggests_nothing_says_so(model_factory, tmp_path):
    """A clear error and exit 1 (the bench used to wait forever for its server to exit)."""
    from conftest import run_cli

    model = model_factory("qwen", "", default="answer")
    src = tmp_path / "shapes.py"
    src.write_text(SHAPES)
    proc = run_cli("bench", str(src), "--typing-rate", "20", "--model", str(model.path), timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        "codelsp bench: --typing-rate: the model suggests nothing at 6:5: pick another place", proc.stderr
