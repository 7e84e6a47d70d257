"""Several inline candidates (setting `candidates`), through the real server on a generated model
whose best and next-best answers are known exactly. Costs are token counts from codelsp/stats."""

from __future__ import annotations

import pytest
from lsprotocol import types

import modeltok
from codelsp.tools.lspclient import as_dict
from support import inline_at, lsp_server, open_doc, stats, type_at

DOC = "def add(a, b):\n    \n"
ANSWER = "return a + b"
SECOND = "raise ValueError"
URI = "file:///w/add.py"


@pytest.fixture
def model(model_factory):
    info = model_factory("starcoder", ANSWER, second=SECOND, default="answer")
    assert info.completion == ANSWER and info.second_completion == SECOND
    return info


def texts(result: types.InlineCompletionList) -> list[str]:
    return [item.insert_text for item in result.items]


async def invoked_at(client, uri: str, line: int, character: int) -> types.InlineCompletionList:
    return await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
    )


async def test_the_first_candidate_costs_what_it_costs_alone(model):
    """With candidates = 2 the automatic answer is the greedy one, with exactly the token counts
    of candidates = 1; the second is generated after it and comes with the next request there."""
    costs = {}
    for n in (1, 2):
        async with lsp_server("--model", str(model.path), "--candidates", str(n)) as (client, _):
            open_doc(client, URI, DOC)
            first = await inline_at(client, URI, 1, 4)
            assert texts(first) == [ANSWER]
            costs[n] = as_dict((await stats(client, URI))["last"])
            again = await inline_at(client, URI, 1, 4)  # the editor asks again at the same place
            s = await stats(client, URI)
            if n == 1:
                assert texts(again) == [ANSWER]
                assert s["lastAlternatives"] is None
                continue
            assert texts(again) == [ANSWER, SECOND]
            assert as_dict(s["last"])["source"] == "typeThrough"
            alt = as_dict(s["lastAlternatives"])
            # 1 token again for the first-token logits, then "raise" forced (1) and the rest of
            # the second answer generated
            rest = len(modeltok._tokenize(SECOND)) - 1
            assert alt == {**alt, "candidates": 1, "tried": 1, "evaluated": 2, "generated": rest}, alt
            assert as_dict(s["totals"])["alternativeTokens"] == 2 + rest
    for k in ("source", "reused", "evaluated", "generated"):
        assert costs[1][k] == costs[2][k], (costs[1], costs[2])


async def test_an_invoked_request_gets_every_candidate_at_once(model):
    async with lsp_server("--model", str(model.path), "--candidates", "2") as (client, _):
        open_doc(client, URI, DOC)
        assert texts(await invoked_at(client, URI, 1, 4)) == [ANSWER, SECOND]


async def test_an_invoked_request_at_a_place_answered_before_gets_every_candidate(model):
    """Whether the background generation there finished or was superseded by the request at the
    other place, an invoked request gets both candidates."""
    async with lsp_server("--model", str(model.path), "--candidates", "2") as (client, _):
        open_doc(client, URI, DOC + "\ndef sub(a, b):\n    \n")
        assert texts(await inline_at(client, URI, 1, 4)) == [ANSWER]
        assert texts(await inline_at(client, URI, 4, 4)) == [ANSWER]
        assert texts(await invoked_at(client, URI, 1, 4)) == [ANSWER, SECOND]
        assert as_dict((await stats(client, URI))["totals"])["model"] == 2


async def test_candidates_are_typed_through(model):
    async with lsp_server("--model", str(model.path), "--candidates", "2") as (client, _):
        open_doc(client, URI, DOC)
        assert texts(await invoked_at(client, URI, 1, 4)) == [ANSWER, SECOND]
        type_at(client, URI, 2, 1, 4, "r")  # the start of both
        assert texts(await inline_at(client, URI, 1, 5)) == ["eturn a + b", "aise ValueError"]
        type_at(client, URI, 3, 1, 5, "a")  # only the second goes on with "a"
        assert texts(await inline_at(client, URI, 1, 6)) == ["ise ValueError"]
        assert as_dict((await stats(client, URI))["totals"])["model"] == 1


async def test_after_a_keystroke_the_candidates_are_those_of_the_new_place(model):
    """A keystroke supersedes the background generation of the old place's candidates (if it is
    still running); the next requests at the new place get the new place's candidates."""
    async with lsp_server("--model", str(model.path), "--candidates", "2") as (client, _):
        open_doc(client, URI, DOC)
        assert texts(await inline_at(client, URI, 1, 4)) == [ANSWER]
        type_at(client, URI, 2, 1, 4, "x")  # not the start of a candidate: the model runs again
        assert texts(await inline_at(client, URI, 1, 5)) == [ANSWER]
        assert texts(await inline_at(client, URI, 1, 5)) == [ANSWER, SECOND]
        s = await stats(client, URI)
        assert as_dict(s["totals"])["model"] == 2
        assert as_dict(s["lastAlternatives"])["candidates"] == 1


def test_candidates_must_be_a_positive_integer():
    from codelsp.settings import Settings

    for bad in (0, -1, 1.5, "2", True):
        merged, problems = Settings().merged({"candidates": bad}, "configuration")
        assert merged.candidates == 1 and len(problems) == 1 and "'candidates'" in problems[0], problems
    assert Settings().merged({"candidates": 3}, "configuration") == (Settings(candidates=3), [])
