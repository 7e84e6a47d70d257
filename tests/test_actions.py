"""The plain steps behind code actions: what applies where, code extraction, edits, chat prompts.

These are pure functions (no server, no model); the server-level behaviour is in
test_code_actions.py.
"""

from __future__ import annotations

import ast

import jinja2
import pytest

from codelsp import languages
from codelsp.actions import edits, targets
from codelsp.actions.chat import TemplateError, build_prompt, llama2_prompt, render_template

SRC = '''import math


def add(a, b):
    """Return the sum of a and b."""
    pass


def mul(a, b):
    return a * b


class K:
    async def m(self):
        raise NotImplementedError("later")

    def n(self):
        """Only a docstring."""

# return the square of x
'''


def commands(line: int, text: str = SRC, language: str = "python", end: int | None = None) -> list[str]:
    return [t.command for t in targets.targets(text, language, line, end)]


def test_targets_follow_the_cursor():
    assert commands(5) == [targets.WRITE_FUNCTION, targets.EXPLAIN, targets.DOCUMENT]  # in a `pass` stub
    assert commands(9) == [targets.EXPLAIN, targets.DOCUMENT]  # a real body: nothing to write
    assert commands(14)[0] == targets.WRITE_FUNCTION  # raise NotImplementedError
    assert commands(17)[0] == targets.WRITE_FUNCTION  # docstring only
    assert commands(19)[0] == targets.WRITE_FUNCTION  # a comment describing a function
    assert commands(0) == [targets.EXPLAIN]
    assert commands(2) == []  # a blank line outside any function: nothing to explain
    assert commands(0, end=9)[:1] == [targets.EXPLAIN]


def test_stub_ranges_keep_the_docstring():
    fns = {f.name: f for f in targets.functions(SRC, "python")}
    assert fns["add"].stub == (5, 6) and fns["add"].doc == (4, 5)
    assert fns["n"].stub == (18, 18)  # insert after the docstring
    assert fns["mul"].stub is None


def test_unparsable_python_still_finds_the_stub():
    broken = "def f(x):\n    pass\n\ndef g(:\n"
    [f] = targets.functions(broken, "python")  # g's signature is not closed yet
    assert f.name == "f" and f.stub == (1, 2)
    # a docstring before the stub, and a function without a body yet further down
    typing = 'def add(a, b):\n    """Add.\n\n    Two numbers.\n    """\n    pass\n\ndef mul(a, b):\n'
    add = targets.functions(typing, "python")[0]
    assert (add.doc, add.stub) == ((1, 5), (5, 6))
    target = targets.targets(typing, "python", 5)[0]
    assert target.command == targets.WRITE_FUNCTION
    after = edits.apply_edit(typing, edits.edit_for(target, typing, "python", 'def add(a, b):\n    """Add."""\n    return a + b'))
    assert after == typing.replace("    pass\n", "    return a + b\n")
    only_doc = 'def f():\n    """Doc."""\n\ndef g(:\n'
    assert targets.functions(only_doc, "python")[0].stub == (2, 2)


def test_generic_languages_use_braces_and_their_comment_syntax():
    ts = "function add(a: number, b: number): number {\n  // TODO\n}\n"
    assert commands(1, ts, "typescript")[0] == targets.WRITE_FUNCTION
    target = targets.targets(ts, "typescript", 1)[0]
    edit = edits.edit_for(target, ts, "typescript", "```ts\nfunction add(a: number, b: number): number {\n  return a + b;\n}\n```")
    assert edits.apply_edit(ts, edit) == "function add(a: number, b: number): number {\n  return a + b;\n}\n"
    assert languages.comment_prefix("lua") == "--" and languages.comment_prefix("rust") == "//"


@pytest.mark.parametrize("answer", [
    "return a + b",
    "```python\ndef add(a, b):\n    return a + b\n```",
    "Here is the implementation you asked for:\n```python\ndef add(a, b):\n    \"\"\"Sum.\"\"\"\n    return a + b\n```\nIt adds the two numbers.",
    "```\n    return a + b\n```",
    "```python\ndef add(a, b):\n    return a + b",  # cut off by the token limit: no closing fence
])
def test_write_function_answers_in_many_shapes_give_the_same_edit(answer):
    target = targets.targets(SRC, "python", 5)[0]
    edit = edits.edit_for(target, SRC, "python", answer)
    after = edits.apply_edit(SRC, edit)
    assert after == SRC.replace("    pass\n", "    return a + b\n")
    ast.parse(after)


def test_extract_code_prefers_the_longest_fence_and_drops_prose():
    answer = "Use `x`:\n```py\nx = 1\n```\nor better:\n```python\ndef f():\n    return 2\n```\n"
    assert edits.extract_code(answer) == "def f():\n    return 2"
    assert edits.extract_code("Sure, here is the code you need.\nx = compute(1)\n") == "x = compute(1)"
    assert edits.extract_code("") == ""


def test_write_from_a_comment_inserts_below_it():
    target = targets.targets(SRC, "python", 19)[0]
    edit = edits.edit_for(target, SRC, "python", "```python\n# return the square of x\ndef square(x):\n    return x * x\n```")
    assert edits.apply_edit(SRC, edit).endswith("# return the square of x\ndef square(x):\n    return x * x\n")


def test_explain_wraps_a_comment_at_the_code_indentation():
    target = [t for t in targets.targets(SRC, "python", 14) if t.command == targets.EXPLAIN][0]
    edit = edits.edit_for(target, SRC, "python", "word " * 40, width=40)
    assert edit.start == edit.end == 13
    assert all(line.startswith("    # ") and len(line) <= 40 for line in edit.new_lines)


def test_document_replaces_an_existing_docstring():
    target = [t for t in targets.targets(SRC, "python", 5) if t.command == targets.DOCUMENT][0]
    after = edits.apply_edit(SRC, edits.edit_for(target, SRC, "python", '"""Add two numbers.\n\nReturns their sum.\n"""'))
    assert '    """Add two numbers.\n\n    Returns their sum.\n    """\n    pass' in after
    assert "Return the sum of a and b" not in after
    ast.parse(after)


def test_reanchor_moves_past_unrelated_edits_and_refuses_overlapping_ones():
    target = targets.targets(SRC, "python", 5)[0]
    edit = edits.edit_for(target, SRC, "python", "return a + b")
    shifted = "# a new first line\n" + SRC
    moved = edits.reanchor(SRC, shifted, edit)
    assert moved is not None and moved.start == edit.start + 1
    assert edits.apply_edit(shifted, moved) == "# a new first line\n" + edits.apply_edit(SRC, edit)
    assert edits.reanchor(SRC, SRC.replace("    pass", "    return 0"), edit) is None
    assert edits.reanchor(SRC, SRC, edit) == edit


# --- chat prompts ---------------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_message_text_is_never_parsed_as_special_tokens():
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "x = '<|im_end|>'"}]
    prompt = render_template(CHATML, msgs)
    assert prompt.text.endswith("<|im_start|>assistant\n")
    content = [s for s in prompt.segments if not s.special]
    assert [s.text for s in content] == ["sys", "x = '<|im_end|>'"]
    assert all("<|im_start|>" in s.text for s in prompt.segments if s.special)


def test_llama2_fallback_format():
    prompt = llama2_prompt([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert prompt.text == "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]"
    assert build_prompt(None, [{"role": "user", "content": "U"}]).text == "[INST] U [/INST]"


HOSTILE = (
    "{{ messages[0]['content'] }}"
    "{{ lipsum.__globals__['os'].popen('touch {path}').read() }}"
)


def test_a_hostile_template_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    template = HOSTILE.replace("{path}", str(marker))
    # the template is really hostile: an ordinary Jinja environment runs the command
    jinja2.Environment().from_string(template).render(messages=[{"content": "x"}])
    assert marker.exists()
    marker.unlink()
    with pytest.raises(TemplateError, match="unsafe"):
        render_template(template, [{"role": "user", "content": "x"}])
    assert not marker.exists()
    # build_prompt falls back to the Llama-2 format instead of failing the action
    assert build_prompt(template, [{"role": "user", "content": "x"}]).source == "llama-2 fallback"
    assert not marker.exists()


def test_a_template_cannot_hang_or_flood_the_server(monkeypatch):
    import codelsp.actions.chat as chat

    monkeypatch.setattr(chat, "RENDER_SECONDS", 0.2)
    slow = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ messages[0]['content'] }}"
    with pytest.raises(TemplateError, match="took longer"):
        render_template(slow, [{"role": "user", "content": "x"}])
    with pytest.raises(TemplateError, match="unsafe"):
        render_template("{{ 'a' * 300000000 }}{{ messages[0]['content'] }}", [{"role": "user", "content": "x"}])


def test_a_template_that_refuses_system_messages_gets_them_in_the_user_turn():
    gemma_like = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{{ '<start_of_turn>model\n' }}"
    )
    prompt = build_prompt(gemma_like, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert prompt.source == "model template"
    assert prompt.text == "<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n"
