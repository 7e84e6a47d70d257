"""Speculative decoding with a draft model (issue 24 item 2; engine/draft.py): the same text as
plain decoding, drafts accepted when the draft model agrees, the draft model's KV kept per
document so that a second request costs it only its new tokens, and a draft model of another
vocabulary refused with one line while completions go on.

Real llama.cpp on generated models (modelgen.py): the main model, a draft model that is the
same file (it agrees on every token), one of the same vocabulary with another answer (it is
wrong from the first token on), and one of another vocabulary (Code Llama's FIM token texts at
the ids where StarCoder's are). Assertions are on texts and token counts, never on time.
"""

from __future__ import annotations

import llama_cpp
import pytest
from lsprotocol import types

from codelsp.engine.draft import DraftModel, check_vocabulary, draft_settings
from codelsp.engine.generation import SamplerParams
from codelsp.engine.llama import load_model
from codelsp.models.errors import ModelError
from codelsp.settings import Settings
from codelsp.tools.lspclient import as_dict
from support import DOC, LINE, inline_at, lsp_server, open_doc, run_cli, stats, type_at, wait_for_total

ANSWER = "result = alpha * beta - gamma / delta"
OTHER = "value = one + two"  # the same vocabulary, another answer: every draft is wrong
PREFIX = "x = 0\n"


@pytest.fixture(scope="module")
def main_info(model_factory):
    return model_factory("starcoder", ANSWER)


def _load(path, base=None):
    return load_model(str(path), Settings(n_threads=1, context_size=256)) if base is None else \
        load_model(str(path), draft_settings(_info(path), base.settings, base.pool.cells))


def _info(path):
    from codelsp.models.modelfile import check_model

    return check_model(path)


@pytest.fixture(scope="module")
def main(main_info):
    m = _load(main_info.path)
    yield m
    m.close()


@pytest.fixture(scope="module")
def same(main, main_info):
    d = DraftModel(_load(main_info.path, main), main)
    yield d
    d.close()


@pytest.fixture(scope="module")
def other(main, model_factory):
    d = DraftModel(_load(model_factory("starcoder", OTHER).path, main), main)
    yield d
    d.close()


def prompt_of(model, prefix: str, suffix: str = "\n") -> list[int]:
    f = model.fim
    return [f.pre, *model.tokenize(prefix), f.suf, *model.tokenize(suffix), f.mid]


def run(model, draft, key: str, prompt: list[int], mode: str, temperature: float = 0.0, **kw):
    model.draft = draft
    model.forget(key)
    if draft is not None:
        draft.model.forget(key)
    try:
        gen = model.generate(key, prompt, max_tokens=kw.pop("max_tokens", 32),
                             sampler=SamplerParams(temperature, 40, 0.95, 1.0, 42, mode), **kw)
    finally:
        model.draft = None
    return gen, list(model.pool.slot_of(key).tokens)


# --- through llama.cpp ----------------------------------------------------------------------

@pytest.mark.parametrize("which", ["same", "other"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_the_same_text_and_kv_with_a_draft_model(main, main_info, same, other, which, temperature):
    draft = same if which == "same" else other
    prompt = prompt_of(main, PREFIX)
    off, kv_off = run(main, None, "off", prompt, "off", temperature)
    on, kv_on = run(main, draft, "on", prompt, "draft", temperature)
    assert off.text == main_info.completion
    assert (on.text, on.tokens, on.stop_reason) == (off.text, off.tokens, off.stop_reason)
    assert kv_on == kv_off  # the main model's slot holds what plain decoding evaluated
    assert on.stats.draft_evaluated >= len(prompt)  # a new document: the draft evaluated its prompt
    if which == "same":  # it agrees on every token: all its drafts are accepted, few batches
        assert on.stats.drafted == on.stats.accepted >= len(off.tokens) // 2
        assert on.stats.verifies < len(off.tokens) // 2
    else:  # wrong from the first token: drafts rejected, then drafting gives up (speculative.py)
        assert on.stats.drafted > 0 and on.stats.accepted == 0


def test_stops_inside_an_accepted_run_act_as_in_plain_decoding(main, same):
    prompt = prompt_of(main, PREFIX)
    for limit in ({"max_tokens": 4}, {"check": lambda text: text.endswith(" beta")}, {"stop_texts": [" gamma"]}):
        off, kv_off = run(main, None, "off", prompt, "off", **limit)
        on, kv_on = run(main, same, "on", prompt, "draft", **limit)
        assert (on.text, on.tokens, on.stop_reason) == (off.text, off.tokens, off.stop_reason)
        assert kv_on == kv_off


def test_speculative_draft_without_a_draft_model_decodes_plainly(main, main_info):
    on, _ = run(main, None, "on", prompt_of(main, PREFIX), "draft")
    assert on.text == main_info.completion and on.stats.drafted == on.stats.draft_evaluated == 0


def test_a_second_request_costs_the_draft_model_only_its_new_tokens(main, same):
    # the draft model keeps the document's KV between requests: the same prompt again costs it
    # the one token whose logits it needs plus the generated ones it catches up with, and a prompt
    # with a word typed at the end its new tokens and those; never the whole prompt again
    long_prefix = "".join(f"v{i} = {i}\n" for i in range(20)) + PREFIX
    first = prompt_of(main, long_prefix)
    typed = first[:-1] + main.tokenize("result =", first=False) + [main.fim.mid]
    main.draft = same
    try:
        main.forget("doc")
        same.model.forget("doc")
        sampler = SamplerParams(0.0, 40, 0.95, 1.0, 42, "draft")
        gens = [main.generate("doc", p, max_tokens=32, sampler=sampler) for p in (first, first, typed)]
    finally:
        main.draft = None
    assert len(first) > 60
    one, again, more = (g.stats for g in gens)
    assert one.draft_evaluated >= len(first)
    # catching up in generation: at most the picked token and the last draft per verify batch
    assert again.draft_evaluated <= 1 + 2 * again.verifies + 1
    assert more.evaluated < 10 and more.draft_evaluated <= more.evaluated + 2 * more.verifies + 1
    assert gens[0].text == gens[1].text


def test_a_draft_model_of_another_vocabulary_is_refused_in_one_line(main, model_factory):
    foreign = _load(model_factory("codellama", ANSWER).path, main)
    try:
        with pytest.raises(ModelError) as err:
            check_vocabulary(main, foreign)
        msg = str(err.value)
        assert "\n" not in msg and "does not have the vocabulary of" in msg and "token 11 is '<fim_prefix>' there" in msg
        with pytest.raises(ModelError):
            DraftModel(foreign, main)
    finally:
        foreign.close()


# --- through the server ---------------------------------------------------------------------

async def test_the_server_drafts_with_the_draft_model_and_answers_the_same_and_forgets_closed_documents(model_factory):
    model = model_factory("starcoder", ANSWER)
    uri = "file:///w/a.py"
    doc = PREFIX + "\n"
    answers = {}
    for mode in ("off", "draft"):
        async with lsp_server("--model", str(model.path), "--threads", "1", "--speculative", mode,
                              "--draft-model", str(model.path)) as (client, _):
            open_doc(client, uri, doc)
            answers[mode] = [i.insert_text for i in (await inline_at(client, uri, 1, 0)).items]
            got = await stats(client, uri)
            totals = as_dict(got["totals"])
            if mode == "draft":
                assert totals["drafted"] == totals["accepted"] > 0 and totals["draftEvaluated"] > 0
                # its load line says it is the draft model, its GPU layers as the base model's line does
                (line,) = [m.message for m in client.log_messages if m.message.startswith("loaded draft model ")]
                assert line.startswith(f"loaded draft model {model.path} (")
                if not llama_cpp.llama_supports_gpu_offload():  # a CPU-only build: none, never "all"
                    assert "(llama, 0 layers on the GPU requested" in line, line
                assert as_dict(got["cache"])["draftPoolDocuments"] == 1
                client.text_document_did_close(types.DidCloseTextDocumentParams(
                    text_document=types.TextDocumentIdentifier(uri=uri)))
                # a closed document leaves the draft model's KV pool too
                assert as_dict((await stats(client))["cache"])["draftPoolDocuments"] == 0
            else:
                assert totals["drafted"] == totals["draftEvaluated"] == 0
    assert answers["off"] == answers["draft"] == [ANSWER]


async def test_the_draft_model_is_loaded_only_while_speculative_is_draft(model_factory):
    """draftModel alone (speculative off or lookup) loads nothing: no memory, no load time.
    Switching speculative to draft (workspace/didChangeConfiguration) loads it beside the base
    model, which stays with its documents' state; switching away frees it."""
    model = model_factory("starcoder", ANSWER)
    a, b, c = "file:///w/a.py", "file:///w/b.py", "file:///w/c.py"

    def switch(client, mode: str) -> None:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"codelsp": {"speculative": mode}}))

    def draft_lines(client) -> list[str]:
        return [m.message for m in client.log_messages if "draft model" in m.message]

    async with lsp_server("--threads", "1", init_options={"model": str(model.path),
                                                          "draftModel": str(model.path)}) as (client, _):
        for uri in (a, b, c):
            open_doc(client, uri, PREFIX + "\n")
        assert [i.insert_text for i in (await inline_at(client, a, 1, 0)).items] == [ANSWER]
        off = await stats(client, a)
        assert "draftPoolCells" not in as_dict(off["cache"]) and not draft_lines(client), off
        switch(client, "draft")
        assert [i.insert_text for i in (await inline_at(client, b, 1, 0)).items] == [ANSWER]
        on = await stats(client, a)
        totals = as_dict(on["totals"])
        assert as_dict(on["cache"])["draftPoolDocuments"] == 1 and totals["drafted"] == totals["accepted"] > 0
        assert on["cachedTokens"] == off["cachedTokens"] > 0  # the base model was not reloaded: a's state is there
        assert len(draft_lines(client)) == 1, draft_lines(client)
        switch(client, "lookup")
        await inline_at(client, c, 1, 0)
        lookup = await stats(client, a)
        assert "draftPoolCells" not in as_dict(lookup["cache"]) and lookup["cachedTokens"] == off["cachedTokens"]
        assert as_dict(lookup["totals"])["draftEvaluated"] == totals["draftEvaluated"]  # c: no draft model ran


async def test_speculative_draft_without_a_draft_model_says_so_once(model_factory):
    model = model_factory("starcoder", ANSWER)
    async with lsp_server("--model", str(model.path), "--threads", "1", "--speculative", "draft") as (client, _):
        open_doc(client, "file:///w/a.py", PREFIX + "\n")
        assert [i.insert_text for i in (await inline_at(client, "file:///w/a.py", 1, 0)).items] == [ANSWER]
        said = [m for m in client.log_messages if "draftModel" in m.message]
    assert [(m.type, m.message) for m in said] == [
        (types.MessageType.Warning, "speculative is draft but no draftModel is set; decoding without drafting")]


async def test_a_keystroke_costs_the_draft_model_only_its_new_tokens(model_factory):
    model = model_factory("starcoder", "return a + b")
    uri = "file:///w/doc.py"
    async with lsp_server("--model", str(model.path), "--threads", "1", "--speculative", "draft",
                          "--draft-model", str(model.path)) as (client, _):
        open_doc(client, uri, DOC)
        await inline_at(client, uri, LINE, 4)
        first = as_dict((await stats(client, uri))["last"])
        type_at(client, uri, 2, LINE, 4, "x")  # not the suggestion's start: the model runs again
        await inline_at(client, uri, LINE, 5)
        second = as_dict((await stats(client, uri))["last"])
    assert first["draftEvaluated"] >= first["evaluated"] > 500  # the whole ~700-token prompt, once
    # the keystroke: its new tokens, and at most the picked token and the last draft per batch
    assert second["source"] == "model" and second["evaluated"] < 10
    assert second["draftEvaluated"] <= second["evaluated"] + 2 * second["generated"] + 1


async def test_warming_a_document_warms_the_draft_model_too(model_factory):
    model = model_factory("starcoder", "return a + b")
    uri = "file:///w/doc.py"
    async with lsp_server("--model", str(model.path), "--threads", "1", "--speculative", "draft",
                          "--draft-model", str(model.path), warm=True) as (client, _):
        # a prompt of one batch (< 512 tokens): the test's own stats requests, more urgent than
        # warming, cannot pause it between batches before the draft model's catch-up
        body = "".join(f"def helper_{i}(x):\n    return x * {i}\n\n" for i in range(12))
        open_doc(client, uri, body + "def add(a, b):\n    \n" + body)
        await wait_for_total(client, uri, "warmed", 250)
        line = body.count("\n") + 1
        assert [i.insert_text for i in (await inline_at(client, uri, line, 4)).items] == ["return a + b"]
        last = as_dict((await stats(client, uri))["last"])
    assert last["reused"] > 150, last
    assert last["draftEvaluated"] <= last["evaluated"] + 2 * last["generated"] + 1, last


async def test_a_draft_model_of_another_vocabulary_is_reported_and_completions_go_on(model_factory):
    model = model_factory("starcoder", ANSWER)
    foreign = model_factory("codellama", ANSWER)
    uri = "file:///w/a.py"
    async with lsp_server("--model", str(model.path), "--threads", "1", "--speculative", "draft",
                          "--draft-model", str(foreign.path)) as (client, _):
        open_doc(client, uri, PREFIX + "\n")
        assert [i.insert_text for i in (await inline_at(client, uri, 1, 0)).items] == [ANSWER]
        totals = as_dict((await stats(client, uri))["totals"])
        errors = [m.message for m in client.log_messages if m.type == types.MessageType.Error]
    assert totals["drafted"] == 0
    said = [m for m in errors if "draftModel" in m]
    assert len(said) == 1 and "\n" not in said[0] and "does not have the vocabulary of" in said[0] \
        and "without drafting" in said[0]


# --- the bench ------------------------------------------------------------------------------

FILE = '''def first(alpha, beta, gamma, delta):
    """The answer, spelled out."""
    result = alpha * beta - gamma / delta
    print(result)
    return result
'''


def test_bench_compares_off_with_a_draft_model(model_factory, tmp_path):
    import json

    model = model_factory("starcoder", ANSWER)
    src = tmp_path / "f.py"
    src.write_text(FILE)
    proc = run_cli("bench", "--speculative-compare", str(src), "--json", "--model", str(model.path), "--threads", "1",
                   "--speculative", "draft", "--draft-model", str(model.path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["mode"] == "draft" and report["holes"] == report["same_text"] == 1
    assert report["off"]["generated"] == report["draft"]["generated"] > 0
    assert report["off"]["drafted"] == 0 and report["draft"]["accepted"] == report["draft"]["drafted"] > 0
    bad = run_cli("bench", "--speculative-compare", str(src), "--model", str(model.path), "--speculative", "draft")
    assert bad.returncode == 2 and "--draft-model" in bad.stderr
