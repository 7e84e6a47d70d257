"""The next-edit history and predictor as plain functions (nextedit/history.py, predict.py, repeat.py)."""

from __future__ import annotations

from codelsp.nextedit.history import EditHistory, Hunk, line_diff
from codelsp.nextedit.predict import (Edit, Region, answer_edit, plausible, prompt_segments, rebase,
                                      region_at)
from codelsp.nextedit.history import split_lines

DOC = "def scale(value, factor):\n    return value*factor\n"


def test_typing_a_word_letter_by_letter_is_one_hunk_from_the_text_before_it():
    h = EditHistory()
    h.open("u", DOC)
    text = DOC
    for i, ch in enumerate("ratio"):
        text = text.replace("factor", "", 1) if i == 0 else text
        at = text.index(")") if i == 0 else text.index(", ") + 2 + i
        text = text[:at] + ch + text[at:] if i else text[:text.index(", ") + 2] + ch + text[text.index(", ") + 2:]
        h.update("u", i + 1, text)
    assert text.startswith("def scale(value, ratio):")
    hunks = h.hunks()
    assert hunks == [Hunk("u", 0, "def scale(value, factor):\n", "def scale(value, ratio):\n", 5)]


def test_an_edit_away_from_the_open_hunk_closes_it():
    h = EditHistory()
    h.open("u", "a\nb\nc\nd\ne\n")
    h.update("u", 1, "A\nb\nc\nd\ne\n")
    h.update("u", 2, "A\nb\nc\nd\nE\n")
    assert [(x.start, x.old, x.new) for x in h.hunks()] == [(0, "a\n", "A\n"), (4, "e\n", "E\n")]
    assert h.before_last("u") == "A\nb\nc\nd\ne\n"


def test_the_history_is_bounded_in_hunks_characters_and_documents():
    h = EditHistory(max_hunks=4, max_chars=10, max_documents=2)
    lines = [f"line {i}\n" for i in range(40)]
    h.open("u", "".join(lines))
    for i in range(0, 40, 4):  # ten edits far apart: ten hunks
        lines[i] = "x" * 50 + "\n"
        h.update("u", i, "".join(lines))
    got = h.hunks()
    assert len(got) == 4 and all(len(x.new) <= 10 for x in got)
    for u in ("v", "w"):
        h.open(u, "")
    assert "u" not in h._texts and len(h._texts) == 2


def test_typing_and_removing_again_leaves_no_hunk():
    h = EditHistory()
    h.open("u", "abc\n")
    h.update("u", 1, "abXc\n")
    h.update("u", 2, "abc\n")
    assert h.hunks() == []


def test_line_diff():
    assert line_diff("a\nb\nc\n", "a\nB\nc\n") == (1, ["b\n"], ["B\n"])
    assert line_diff("a\n", "a\n") is None


def test_the_prompt_has_the_file_the_recent_edits_and_the_three_region_blocks():
    text = "def scale(value, ratio):\n    return value*factor\n"
    last = Hunk("file:///p/calc.py", 0, "def scale(value, factor):\n", "def scale(value, ratio):\n", 1)
    region = region_at(split_lines(text), 0)
    assert region == Region(0, 2)
    segs = prompt_segments("calc.py", text, region, [last], "file:///p/calc.py", last)
    joined = "".join(t for t, _ in segs)
    assert joined == (
        "<|file_sep|>calc.py\n" + text
        + "<|file_sep|>calc.py.diff\noriginal:\ndef scale(value, factor):\nupdated:\ndef scale(value, ratio):\n"
        + "<|file_sep|>original/calc.py\ndef scale(value, factor):\n    return value*factor\n"
        + "<|file_sep|>current/calc.py\n" + text
        + "<|file_sep|>updated/calc.py\n"
    )
    assert [t for t, special in segs if special] == ["<|file_sep|>"] * 5  # only separators are parsed


def test_the_answer_becomes_the_smallest_edit_possibly_below_the_cursor():
    text = "x = 1\ndef scale(value, ratio):\n    return value*factor\n"
    edit = answer_edit(text, Region(1, 3), "def scale(value, ratio):\n    return value*ratio")  # no final newline
    assert edit == Edit(text.index("factor"), text.index("factor") + 6, "ratio", "factor")
    assert answer_edit(text, Region(1, 3), "def scale(value, ratio):\n    return value*factor\n") is None


def test_the_threshold_hides_cut_answers_deletions_large_rewrites_and_undos():
    text = "a = 1\nb = 2\nc = 3\n"
    region = Region(0, 3)
    ok = "a = 1\nb = 20\nc = 3\n"
    edit = answer_edit(text, region, ok)
    assert plausible(text, region, ok, edit, None, True) is None
    assert plausible(text, region, ok, edit, None, False) == "answer cut short"
    gone = "a = 1\nc = 3\n"
    assert plausible(text, region, gone, answer_edit(text, region, gone), None, True) == "deletes only"
    big = "x\ny\nz\nw\nv\n"
    assert plausible(text, region, big, answer_edit(text, region, big), None, True, max_lines=2) == "too large"
    undo = Hunk("u", 1, "b = 20\n", "b = 2\n", 3)  # the user just changed 20 to 2
    assert plausible(text, region, ok, edit, undo, True) == "undoes the last edit"


def test_a_prediction_moves_with_edits_that_do_not_touch_it_and_is_dropped_by_one_that_does():
    old = "a\nfoo(x)\n"
    edit = Edit(old.index("x"), old.index("x") + 1, "y", "x")
    moved = rebase(old, "# c\n" + old, edit)
    assert moved == Edit(edit.start + 4, edit.end + 4, "y", "x")
    assert rebase(old, old + "z\n", edit) == edit
    assert rebase(old, old.replace("x", "xy"), edit) is None


def test_eval_cases_are_the_next_hunk_after_the_hunks_made_so_far():
    from codelsp.tools.nexteval import cases_of

    old = "".join(f"x{i} = f(a)\n" for i in range(10))
    new = old.replace("x2 = f(a)", "x2 = f(a, b)").replace("x5 = f(a)", "x5 = f(a, b)")
    (case,) = cases_of("pkg", "m.py", old, new)
    assert case.line == 2 and case.text == old.replace("x2 = f(a)", "x2 = f(a, b)")
    assert case.text[case.cursor - 1:case.cursor + 1] == ")\n"  # the end of the edited line
    assert case.expected == new
    assert [(h.start, h.old, h.new) for h in case.history] == [(2, "x2 = f(a)\n", "x2 = f(a, b)\n")]


def test_a_markdown_fence_around_the_rewrite_is_not_part_of_it():
    from codelsp.nextedit.predict import clean_answer

    assert clean_answer("```python\nx = 1\n```\nmore\n") == ("x = 1\n", True)
    assert clean_answer("x = 1\ny = 2\n") == ("x = 1\ny = 2\n", False)


def test_the_last_edit_is_repeated_on_the_next_line_it_applies_to_whole():
    from codelsp.nextedit.repeat import repeat_edit

    def nxt(text: str, old: str, new: str, at: int) -> str | None:
        found = repeat_edit(text, Hunk("u", at, old, new, 1), "u")
        return None if found is None else text[:found[0]] + found[2] + text[found[1]:]

    chain = '    if k == "a":\n        x = 1\n    elif k == "b":\n        x = 2\n    elif k == "c":\n'
    done = chain.replace('elif k == "b"', 'if k == "b"')  # the user made the first one
    assert nxt(done, '    elif k == "b":\n', '    if k == "b":\n', 2) == done.replace('elif k == "c"', 'if k == "c"')
    # an insertion repeats between the same neighbours: a `;` after `)` at the line's end
    fish = "a = f(x);\nb = g(y)\nc = 1\n"
    assert nxt(fish, "a = f(x)\n", "a = f(x);\n", 0) == "a = f(x);\nb = g(y);\nc = 1\n"
    # a line that takes only a part of the edit is a different edit: nothing
    typed = "x: Optional[List[str]]\ny: Dict[str, str]\n"
    assert nxt(typed, "x: List[str]\n", "x: Optional[List[str]]\n", 0) is None
    # white space only, a statement restructured over lines, nothing to repeat below: nothing
    assert nxt("a  = 1\na = 2\n", "a = 1\n", "a  = 1\n", 0) is None
    assert nxt("y = (\n 1)\nraise E(y)\n", "raise E(1)\n", "y = (\n 1)\n", 0) is None
    assert nxt("def f(ratio):\n    pass\n", "def f(factor):\n", "def f(ratio):\n", 0) is None
    # the nearest line it applies to is unlike the edited one (a docstring, not the signature)
    doc = "def evolve(*args, **changes):\n    :param inst: Instance of a class.\n"
    assert nxt(doc, "def evolve(inst, **changes):\n", "def evolve(*args, **changes):\n", 0) is None


def test_a_confidence_floor_hides_an_answer_with_a_token_the_model_guessed():
    from codelsp.engine.generation import GenStats
    from codelsp.nextedit.run import judge

    text = "a = 1\nb = 2\nc = 3\n"
    answer = "a = 1\nb = 20\nc = 3\n"
    sure, guess = GenStats(logprobs=[-0.01, -0.2, -0.05]), GenStats(logprobs=[-0.01, -2.5, -0.05])
    assert judge(False, text, 1, None, answer, True, sure, floor=-1.0).reason == "edit"
    hidden = judge(False, text, 1, None, answer, True, guess, floor=-1.0)
    assert (hidden.edit, hidden.reason) == (None, "unsure") and hidden.candidate is not None
    assert judge(False, text, 1, None, answer, True, guess, floor=None).reason == "edit"  # off (the default)
    assert judge(True, text, 1, None, answer, True, guess, floor=-1.0).reason == "edit"  # a next-edit model: not gated
