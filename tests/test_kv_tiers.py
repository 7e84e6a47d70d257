"""Where the documents' KV state lives: the KV pool (cells by need, eviction) and the system-memory
tier (saved, restored exactly, within its budget), the KV cache type, and `codelsp bench
--switching`; checked by the token and byte counts `codelsp/stats` reports.
"""

from __future__ import annotations

from lsprotocol import types

from codelsp.tools.lspclient import as_dict
from support import DOC, LINE, inline_at, lsp_server, open_doc, stats, type_at


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
            st = await stats(client, uri)
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
        last = as_dict((await stats(client, a))["last"])
        assert last["reused"] < 10 and last["evaluated"] > 500 and last["restored"] == 0, last


async def test_an_evicted_document_comes_back_from_system_memory(model_factory):
    model = model_factory("codellama")
    a, b = "file:///w/a.py", "file:///w/b.py"
    async with lsp_server("--model", str(model.path), "--ctx", "1024", "--prompt-cache-bytes", "1") as (client, _):
        open_doc(client, a, DOC)
        open_doc(client, b, DOC.replace("helper", "other"))
        await inline_at(client, a, LINE, 4)
        held = (await stats(client, a))["cachedTokens"]  # the prompt and the generated tokens
        prompt = as_dict((await stats(client, a))["last"])["evaluated"]
        await inline_at(client, b, LINE, 4)  # a leaves the KV pool for system memory
        st = await stats(client, a)
        assert st["cachedTokens"] == 0 and st["hostTokens"] == held > 500, st
        type_at(client, a, 2, LINE, 4, "x")
        assert (await inline_at(client, a, LINE, 5)).items[0].insert_text == "return a + b"
        last = as_dict((await stats(client, a))["last"])
        assert last["restored"] == held and last["reused"] >= prompt - 3 and last["evaluated"] <= 3, last
        cache = as_dict((await stats(client, a))["cache"])
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
                st = await stats(client, uri)
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
        first = as_dict((await stats(client, a))["last"])
        assert first["evaluated"] > 300 and first["reused"] == 0, first
        await inline_at(client, b, text_b.count("\n"), len(text_b.rsplit("\n", 1)[1]))
        st = await stats(client, a)
        assert st["cachedTokens"] == 0 and st["hostTokens"] >= first["evaluated"], st  # saved, out of the KV
        # a later line changes (the demo model completes from the prefix alone): the same prompt
        # again, but not the same request, so the model runs
        end = types.Position(line=line + 2, character=5)
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=a, version=2),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=end, end=end), text=".")]))
        again = (await inline_at(client, a, line, col)).items[0].insert_text
        last = as_dict((await stats(client, a))["last"])
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
                st = await stats(client, uri)
                sizes.append((st["cachedTokens"], st["stateBytes"]))
            cache = as_dict(st["cache"])
            assert cache["kvCacheType"] == kind and cache["kvBytesPerToken"] == info.kv_bytes_per_token(kind)
            (t1, b1), (t2, b2) = sizes
            assert t2 > t1 > 0
            # llama.cpp's state per cell: position, sequence count and id (12 bytes) + K and V rows
            assert (b2 - b1) == (t2 - t1) * (cache["kvBytesPerToken"] + 12), (kind, sizes, cache)
            seen[kind] = cache["kvBytesPerToken"]
    assert seen["q8_0"] * 32 == seen["f16"] * 17 and seen["q4_0"] * 32 == seen["f16"] * 9, seen


def test_bench_switching_restores_five_documents_under_a_one_context_budget(model_factory):
    import json

    from support import run_cli

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
