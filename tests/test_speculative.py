"""Speculative decoding by prompt lookup (issue 24): the same text as plain decoding, token for
token, with fewer batches where the answer repeats the prompt; the document's KV state after a
drafted generation is exactly the one plain decoding leaves.

Real llama.cpp on generated models (modelgen.py) whose greedy answer is known and whose logits
are far apart (a batch's rounding cannot flip them, unlike near ties of a real model: README,
Speculative decoding); the assertions are on texts and token counts, never on time.
"""

from __future__ import annotations

import pytest

from codelsp.engine.generation import SamplerParams
from codelsp.engine.llama import load_model
from codelsp.engine.speculative import K_MAX, LookupDrafter, Speculation, propose
from codelsp.settings import Settings
from support import inline_at, lsp_server, open_doc
from codelsp.tools.lspclient import as_dict

ANSWER = "result = alpha * beta - gamma / delta"
REPEATS = "x = 0\nresult = alpha * beta - gamma / delta\n"  # the answer is in the prompt: drafts accepted
DIFFERS = "result = alpha * beta + gamma * delta\n"  # the same start, then other tokens: drafts rejected
NOTHING = "pass\n"  # nothing to look up


# --- propose: a plain function --------------------------------------------------------------

def test_propose_continues_the_latest_occurrence_of_the_longest_ngram():
    prompt = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8]
    assert propose([2, 3], prompt, 3, 4) == [7, 8, 2, 3]  # [2, 3] last seen before 7 8 (and itself)
    assert propose([9, 2, 3], prompt, 3, 2) == [7, 8]  # the 3-gram wins over the later 2-gram
    assert propose([1, 2, 3], prompt, 3, 3) == [4, 5, 9]
    assert propose([4], prompt, 3, 3) == [5, 9, 2]
    assert propose([6], prompt, 3, 3) == []  # never seen
    assert propose([5], prompt, 3, 0) == []
    assert propose([4], prompt, 3, 3, n_min=2) == []  # [9, 4] never seen; a lone 4 does not count


def test_propose_looks_in_what_was_generated_too():
    assert propose([10, 11, 12, 10], [1, 2], 3, 4) == [11, 12, 10]


def test_k_grows_on_full_acceptance_shrinks_on_rejection_and_drafting_gives_up():
    spec = Speculation(LookupDrafter([1, 2, 3, 4, 5, 6, 7, 8, 9] * 4))
    spec.verified([], 4, 4)
    assert spec.k == 8
    for _ in range(3):
        spec.verified([], spec.k, spec.k)
    assert spec.k == K_MAX
    spec.verified([], 16, 3)
    assert spec.k == 3 and spec.on
    for _ in range(20):
        spec.verified([], 4, 0)
    assert not spec.on and spec.draft([1, 2], 8) == []


class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_steps(spec: Speculation, clock: Clock, plain_s: float, verify_s: float, accepted: int, steps: int) -> list[int]:
    """Drive `spec` as LoadedModel.generate does: one draft() per step, a verify step taking
    `verify_s` and keeping `accepted` drafts (plus the model's own pick), a plain one `plain_s`
    and one token. The number of drafts asked each step ([] = a plain step)."""
    history: list[int] = [1]
    asked = []
    for _ in range(steps):
        drafts = spec.draft(history, 16)
        asked.append(len(drafts))
        if drafts:
            clock.now += verify_s
            history += drafts[:accepted] + [0]
            spec.verified(history[:-1], len(drafts), min(accepted, len(drafts)))
        else:
            clock.now += plain_s
            history.append(0)
    return asked


def test_drafting_turns_itself_off_where_its_steps_are_slower_than_plain_ones():
    """The first step is plain (the measure); drafts whose batches write fewer tokens a second
    than plain steps stop after PAY_BATCHES batches, faster ones go on (a CPU where a batch costs
    about as much as its tokens, and a GPU where it costs about one)."""
    from codelsp.engine.speculative import PAY_BATCHES

    class Always:
        def draft(self, history, k):
            return [7] * k

        def accepted(self, history, n):
            pass

    clock = Clock()
    slow = run_steps(Speculation(Always(), clock), clock, plain_s=1.0, verify_s=4.0, accepted=2, steps=8)  # 3 tokens in 4 s
    assert slow[0] == 0 and all(slow[1:1 + PAY_BATCHES]) and not any(slow[1 + PAY_BATCHES:])
    clock = Clock()
    fast = run_steps(Speculation(Always(), clock), clock, plain_s=1.0, verify_s=2.5, accepted=2, steps=8)  # 3 in 2.5 s
    assert fast[0] == 0 and all(fast[1:])


# --- through llama.cpp ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def info(model_factory):
    return model_factory("starcoder", ANSWER)


@pytest.fixture(scope="module")
def model(info):
    m = load_model(str(info.path), Settings(n_threads=1, context_size=256))
    yield m
    m.close()


def prompt_of(model, prefix: str, suffix: str = "\n") -> list[int]:
    f = model.fim
    return [f.pre, *model.tokenize(prefix), f.suf, *model.tokenize(suffix), f.mid]


def run(model, key: str, prompt: list[int], mode: str, temperature: float = 0.0, **kw):
    model.forget(key)
    gen = model.generate(key, prompt, max_tokens=kw.pop("max_tokens", 32),
                         sampler=SamplerParams(temperature, 40, 0.95, 1.0, 42, mode), **kw)
    return gen, list(model.pool.slot_of(key).tokens)


@pytest.mark.parametrize("prefix", [REPEATS, DIFFERS, NOTHING])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_the_same_text_and_kv_with_and_without_drafting(model, info, prefix, temperature):
    prompt = prompt_of(model, prefix)
    off, kv_off = run(model, "off", prompt, "off", temperature)
    on, kv_on = run(model, "on", prompt, "lookup", temperature)
    assert off.text == info.completion
    assert (on.text, on.tokens, on.stop_reason) == (off.text, off.tokens, off.stop_reason)
    assert kv_on == kv_off  # the slot holds what plain decoding evaluated, nothing more
    assert off.stats.drafted == 0
    if temperature == 0.0:  # greedy: each pick's log-probability, the stop token's too; drafts change none
        assert len(on.stats.logprobs) == len(off.stats.logprobs) == len(off.tokens) + 1
        assert on.stats.logprobs == pytest.approx(off.stats.logprobs, abs=1e-3)
        assert all(-0.01 < x <= 0.0 for x in off.stats.logprobs)  # the generated model is sure of each
    else:
        assert on.stats.logprobs == off.stats.logprobs == []
    if prefix == REPEATS:
        assert on.stats.accepted >= 4 and on.stats.verifies >= 1
        assert on.stats.verifies + on.stats.drafted - on.stats.accepted < len(off.tokens)  # fewer batches
    elif prefix == DIFFERS:
        assert on.stats.drafted > on.stats.accepted
    else:
        assert on.stats.drafted == 0


@pytest.mark.parametrize("limit", [
    {"max_tokens": 4},
    {"check": lambda text: text.endswith(" beta")},
    {"stop_texts": [" gamma"]},
    {"pause": lambda: True},
])
def test_stops_inside_an_accepted_run_act_as_in_plain_decoding(model, limit):
    prompt = prompt_of(model, REPEATS)
    off, kv_off = run(model, "off", prompt, "off", **limit)
    on, kv_on = run(model, "on", prompt, "lookup", **limit)
    assert (on.text, on.tokens, on.stop_reason) == (off.text, off.tokens, off.stop_reason)
    assert off.stop_reason in ("length", "check", "stop", "paused") and off.text != ANSWER
    assert kv_on == kv_off


def test_the_next_request_on_the_document_reuses_the_same_prefix(model, info):
    # after a drafted generation the KV must hold exactly its tokens: the next request (the same
    # prompt, then the prompt with the first words of the suggestion typed) evaluates as much as
    # after plain decoding, and answers the same
    prompt = prompt_of(model, REPEATS)
    typed = prompt_of(model, REPEATS, "\n")[:-1] + model.tokenize("result =", first=False) + [model.fim.mid]
    runs = {}
    for mode in ("off", "lookup"):
        model.forget(mode)
        sampler = SamplerParams(0.0, 40, 0.95, 1.0, 42, mode)
        runs[mode] = [model.generate(mode, p, max_tokens=32, sampler=sampler) for p in (prompt, prompt, typed)]
    for off, on in zip(runs["off"], runs["lookup"]):
        assert on.text == off.text
        assert (on.stats.reused, on.stats.evaluated) == (off.stats.reused, off.stats.evaluated)
    assert runs["off"][0].text == info.completion
    assert runs["lookup"][1].stats.evaluated == 1


def test_drafts_stay_inside_the_context(info):
    # a prompt that leaves a few tokens of room: drafts never reach past the context's end
    # (llama.cpp would be called with positions it does not have)
    m = load_model(str(info.path), Settings(n_threads=1, context_size=64))
    try:
        lines = 0
        while 64 - len(prompt_of(m, "x = 0\n" * (lines + 1) + REPEATS)) >= 3:
            lines += 1
        prompt = prompt_of(m, "x = 0\n" * lines + REPEATS)
        room = 64 - len(prompt)
        assert 3 <= room < 9  # less than the answer's tokens
        off, _ = run(m, "off", prompt, "off", max_tokens=64)
        on, _ = run(m, "on", prompt, "lookup", max_tokens=64)
        assert (on.text, on.stop_reason) == (off.text, off.stop_reason) == (on.text, "length")
        assert len(on.tokens) == room and on.stats.accepted > 0
    finally:
        m.close()


# --- through the server ---------------------------------------------------------------------

async def test_stats_count_drafted_and_accepted_tokens(model_factory):
    model = model_factory("starcoder", ANSWER)
    uri = "file:///w/a.py"
    doc = REPEATS + "\n"
    for mode in ("lookup", "off"):
        async with lsp_server("--model", str(model.path), "--threads", "1", "--speculative", mode) as (client, _):
            open_doc(client, uri, doc)
            got = await inline_at(client, uri, 2, 0)
            assert [i.insert_text for i in got.items] == [ANSWER]
            totals = as_dict((await client.protocol.send_request_async("codelsp/stats", {"uri": uri})).totals)
            if mode == "lookup":
                assert totals["accepted"] >= 4 and totals["drafted"] >= totals["accepted"] and totals["verifies"] >= 1
            else:
                assert totals["drafted"] == totals["accepted"] == totals["verifies"] == 0


# --- the bench ------------------------------------------------------------------------------

FILE = '''def first(alpha, beta, gamma, delta):
    """The answer, spelled out."""
    result = alpha * beta - gamma / delta
    print(result)
    return result


def second(alpha, beta, gamma, delta):
    x = 0
    result = alpha * beta - gamma / delta
    return result
'''


def test_function_holes_take_out_each_body_of_three_lines():
    from codelsp.tools.specbench import function_holes

    holes = function_holes(FILE)
    assert [(line, col) for _, line, col in holes] == [(2, 4), (8, 4)]
    assert holes[0][0].split("\n")[:4] == ["def first(alpha, beta, gamma, delta):", '    """The answer, spelled out."""', "    ", ""]


def test_bench_speculative_compare_reports_the_same_texts(model_factory, tmp_path):
    import json

    from support import run_cli

    model = model_factory("starcoder", ANSWER)
    src = tmp_path / "f.py"
    src.write_text(FILE)
    proc = run_cli("bench", "--speculative-compare", str(src), "--json", "--model", str(model.path), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["holes"] == report["same_text"] == 2
    assert report["off"]["generated"] == report["lookup"]["generated"] > 0
    assert report["off"]["drafted"] == 0 and report["lookup"]["accepted"] > 0

