"""Code actions against clients that answer badly or not at all, byte for byte (rawlsp.py):
a client that never answers `workspace/applyEdit` (ALE did), one that refuses the edit, a
`shutdown` while an action runs, and arguments that are not what they claim."""

from __future__ import annotations

import pytest

from rawlsp import FAST, INVALID_REQUEST, NO_ANSWER, RawLsp
from test_code_actions import STUB, STUB_LINE

URI = "file:///w/stub.py"
MUL_LINE = 9


@pytest.fixture(scope="module")
def model(model_factory):
    return model_factory("codellama", answer="return a + b", default="answer")


def command(s: RawLsp, name: str, line: int, **extra) -> int:
    return s.send("workspace/executeCommand", {
        "command": name, "arguments": [{"uri": URI, "position": {"line": line, "character": 4}, **extra}]})


def edit_requests(s: RawLsp) -> list[dict]:
    with s._cv:
        return [n for n in s.notifications if n["method"] == "workspace/applyEdit"]


def test_a_client_that_never_answers_apply_edit_blocks_nothing_and_shutdown_still_answers(model):
    with RawLsp("--model", str(model.path), *FAST) as s:
        s.answers["workspace/applyEdit"] = NO_ANSWER
        s.initialize()
        s.open(URI, STUB)
        write = command(s, "codelsp.writeFunction", STUB_LINE)
        s.wait(lambda: edit_requests(s), 60, "the workspace/applyEdit request")
        # a later command is answered while the first waits for the editor
        explain = s.response(command(s, "codelsp.explain", MUL_LINE, insertComment=False), 60)
        assert explain["result"]["markdown"] == "return a + b" and explain["result"]["applied"] is False
        assert write not in s.responses
        # shutdown while Write function still waits: null, then exit 0
        assert s.request("shutdown", timeout=30) == {"jsonrpc": "2.0", "id": s.order[-1], "result": None}
        refused = s.request("textDocument/codeAction", {
            "textDocument": {"uri": URI}, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
            "context": {"diagnostics": []}})
        assert refused["error"]["code"] == INVALID_REQUEST
        s.notify("exit")
        assert s.wait_exit() == 0
        assert "dictionary changed size" not in s.log()


def test_the_wait_for_the_editor_has_a_bound(model):
    with RawLsp("--model", str(model.path), *FAST) as s:
        s.answers["workspace/applyEdit"] = NO_ANSWER
        s.initialize()
        s.open(URI, STUB)
        answer = s.response(command(s, "codelsp.writeFunction", STUB_LINE), 90)["result"]
        assert answer["applied"] is False and "did not answer workspace/applyEdit within 30 s" in answer["message"]
        assert s.shutdown_and_exit() == 0


@pytest.mark.parametrize("reply, reason", [
    ({"applied": False, "failureReason": "the file is read-only"}, "the file is read-only"),
    ({"applied": False}, None),
    (None, None),
])
def test_an_edit_the_client_refuses_is_reported_as_refused(model, reply, reason):
    with RawLsp("--model", str(model.path), *FAST) as s:
        s.answers["workspace/applyEdit"] = reply
        s.initialize()
        s.open(URI, STUB)
        answer = s.response(command(s, "codelsp.writeFunction", STUB_LINE), 60)["result"]
        assert answer["applied"] is False
        assert answer["message"].startswith("the editor did not apply the edit")
        if reason:
            assert reason in answer["message"]
        shown = s.wait(lambda: [n for n in s.notifications if n["method"] == "window/showMessage"], 10, "a message")
        assert "did not apply the edit" in shown[0]["params"]["message"]
        assert s.shutdown_and_exit() == 0


def test_shutdown_while_an_action_generates_answers_null_and_exit_is_0(demo_model):
    long_code = "".join(f"def helper_{i}(x):\n    return x * {i} + {i * i}\n\n" for i in range(12))
    with RawLsp("--model", str(demo_model), *FAST) as s:
        s.initialize(init_options={"actionMaxTokens": 400, "temperature": 0.8, "seed": 7})
        s.open(URI, long_code)
        s.send("workspace/executeCommand", {"command": "codelsp.explain", "arguments": [
            {"uri": URI, "position": {"line": 0, "character": 0}, "insertComment": False}]})
        s.wait_log("no instructModel configured", 120)  # the action has begun on the engine
        assert s.request("shutdown", timeout=60)["result"] is None
        s.notify("exit")
        assert s.wait_exit(60) == 0
        assert "dictionary changed size" not in s.log()


@pytest.mark.parametrize("position", [{"line": True, "character": 0}, {"line": 9, "character": False},
                                      {"line": 9.0, "character": 0}, {"line": -1, "character": 0}])
def test_command_positions_must_be_integers(model, position):
    with RawLsp("--model", str(model.path), *FAST) as s:
        s.initialize()
        s.open(URI, "a = 1\nb = a * 2\n")  # line 1 (`true`) has code Explain would apply to
        answer = s.result("workspace/executeCommand", {
            "command": "codelsp.explain", "arguments": [{"uri": URI, "position": position}]})
        assert answer["applied"] is False and "integer 'line' and 'character'" in answer["message"]
        assert edit_requests(s) == []
        assert s.shutdown_and_exit() == 0
