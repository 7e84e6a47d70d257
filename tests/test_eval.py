"""`codelsp eval`: HumanEval infilling tasks through the real server, with models whose answers
are known (modelgen.py), so pass@1, exact-line match and the oracle ceiling are known too."""

from __future__ import annotations

import gzip
import json

import pytest

from support import ROOT, run_cli
from codelsp.tools import eval as heval

TASKS = None
for parent in (ROOT, *ROOT.parents):
    if (parent / "shared" / "heval" / "HumanEval-SingleLineInfilling.jsonl.gz").is_file():
        TASKS = parent / "shared" / "heval" / "HumanEval-SingleLineInfilling.jsonl.gz"
        break
needs_tasks = pytest.mark.skipif(TASKS is None, reason="the HumanEval single-line set (../shared/heval) is not here")

# HumanEval/2 (truncate_number): the hole is its only line, `    return number % 1.0`
TWO = "^SingleLineInfilling/HumanEval/2/L0$"
THREE = "^SingleLineInfilling/HumanEval/3/L0$"  # `    balance = 0`


def run_eval(model, *args: str):
    proc = run_cli("eval", str(TASKS), "--model", str(model.path), "--threads", "1", "--json", *args, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_tasks
def test_eval_counts_the_task_a_model_solves(model_factory, tmp_path):
    model = model_factory("starcoder", answer="return number % 1.0")
    log = tmp_path / "log.jsonl"
    report = run_eval(model, "--task", TWO, "--task", THREE, "--log", str(log))
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["stage"], x["task"], x["passed"]) for x in lines] == [
        ("codelsp", "SingleLineInfilling/HumanEval/2/L0", True), ("codelsp", "SingleLineInfilling/HumanEval/3/L0", False)]
    assert report["tasks"] == 2
    assert report["codelsp"]["passed"] == 1 and report["codelsp"]["pass_at_1"] == 0.5
    assert report["codelsp"]["exact"] == 1
    by_id = {t["task"]: t for t in report["per_task"]}
    assert by_id["SingleLineInfilling/HumanEval/2/L0"]["answer"] == "return number % 1.0"
    assert by_id["SingleLineInfilling/HumanEval/2/L0"]["passed"] is True
    assert by_id["SingleLineInfilling/HumanEval/3/L0"]["passed"] is False  # NameError: number


@needs_tasks
def test_oracle_finds_the_line_end_that_passes(model_factory):
    # the answer's second line is a syntax error that no rule removes: the inserted text fails,
    # but the raw generation cut after its first line passes: solvable
    model = model_factory("starcoder", answer="return number % 1.0\n    return None)")
    report = run_eval(model, "--task", TWO, "--oracle", "--oracle-tokens", "32")
    assert report["codelsp"]["passed"] == 0
    assert report["oracle"]["solvable"] == 1 and report["oracle"]["ceiling"] == 1.0
    assert report["per_task"][0]["raw"] == "return number % 1.0\n    return None)"
    assert report["rules"]["replay_agrees_with_server"] == 1
    assert report["rules"]["replayed_pass_at_1"]["all rules"] == 0.0


@needs_tasks
def test_compare_server_asks_llama_server_the_llama_vim_way(model_factory):
    binary = heval.find_server_bin(None)
    if binary is None:
        pytest.skip("no llama-server binary (~/.cache/codelsp/llama-server/*/llama-server or PATH)")
    # llama-server puts the line head ("    ") after <fim_middle>: a model that answers after any
    # ordinary token
    model = model_factory("starcoder", answer="return number % 1.0", default="answer")
    report = run_eval(model, "--task", TWO, "--compare-server", "--server-bin", binary)
    assert report["llama_server"]["passed"] == 1
    assert report["per_task"][0]["server_answer"] == "return number % 1.0"


def test_eval_bad_input_is_one_line(tmp_path, model_factory):
    model = model_factory("starcoder", answer="return number % 1.0")
    proc = run_cli("eval", str(tmp_path / "missing.jsonl.gz"), "--model", str(model.path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("codelsp eval: no task file at")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "x"}\n')
    proc = run_cli("eval", str(bad), "--model", str(model.path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "bad.jsonl:1: not a HumanEval-infilling task" in proc.stderr


def test_task_selection_and_line_cuts(tmp_path):
    rows = [{"task_id": f"T/{i}/L0", "prompt": "def f():\n", "suffix": "", "canonical_solution": "    return 1\n",
             "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"} for i in range(10)]
    path = tmp_path / "t.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    tasks = heval.load_tasks(path)
    assert [t.task_id for t in heval.select(tasks, None, 3, 2)] == ["T/0/L0", "T/3/L0"]
    assert [t.task_id for t in heval.select(tasks, [r"/[57]/"], 1, None)] == ["T/5/L0", "T/7/L0"]
    t = tasks[0]
    assert t.document == "def f():\n    \n" and t.cursor == (1, 4)
    assert heval.passes(t.program("return 1"), 10) and not heval.passes(t.program("return 2"), 10)
    assert not heval.passes(t.program("while True: pass"), 1)  # killed at the timeout
    assert heval.line_cuts("a\nb\nc") == ["a", "a\nb", "a\nb\nc"]
    assert heval.oracle_candidates("  a\nb") == ["  a", "  a\nb", "a", "a\nb"]


# --- --multi-line: blocks removed from real files, scored by exact match and edit similarity ------

PAD = '"""' + "A module long enough to be taken (files under 2,000 bytes are left out).\n" * 30 + '"""\n'
SOURCE = PAD + "\n\ndef add(a, b):\n    total = a + b\n    return total\n\n\ndef other():\n    pass\n"


def test_multi_line_cases_are_bodies_where_a_block_is_expected():
    from codelsp.tools import multiline

    (block,) = multiline.blocks_of(SOURCE, "m.py")  # other()'s one-line body is too short
    assert block.hole == "    total = a + b\n    return total"
    assert block.document == PAD + "\n\ndef add(a, b):\n    \n\n\ndef other():\n    pass\n"
    assert block.cursor == (PAD.count("\n") + 3, 4)
    assert block.exact("total  =  a + b\n    return total\n")  # whitespace-normalised per line
    assert not block.exact("total = a + b")
    assert multiline.edit_similarity("kitten", "sitting") == 1 - 3 / 7
    # a body that starts with a docstring, or on its header's line, is not a case
    assert multiline.blocks_of(PAD + 'def f():\n    "doc"\n    return 1\n\nif x: a = 1; b = 2\n', "n.py") == []


def test_eval_multi_line_scores_the_inserted_block(model_factory, tmp_path):
    (tmp_path / "m.py").write_text(SOURCE)
    right = model_factory("qwen", answer="total = a + b\n    return total")
    report = json.loads(_multi(right, tmp_path, "--oracle").stdout)
    assert report["tasks"] == 1 and report["codelsp"]["exact"] == 1 and report["codelsp"]["edit_similarity"] == 1.0
    assert report["per_task"][0]["answer"] == "total = a + b\n    return total"
    assert report["oracle"]["exact"] == 1 and report["rules"]["replay_agrees_with_server"] == 1
    wrong = model_factory("qwen", answer="total = a - b\n    return total")
    report = json.loads(_multi(wrong, tmp_path, "--oracle-only").stdout)
    assert report["codelsp"]["exact"] == 0 and report["oracle"]["exact"] == 0
    hole, got = "    total = a + b\n    return total", "    total = a - b\n    return total"
    assert report["per_task"][0]["es"] == round(1 - 1 / len(hole), 3) == round(1 - 1 / len(got), 3)


def test_eval_multi_line_ceiling_in_the_block_leaves_out_cuts_past_its_end(model_factory, tmp_path):
    # the second line leaves the block (column 0): the edit-similarity ceiling takes it (its length
    # fits the removed block), the ceiling over cuts in the cursor's block does not
    (tmp_path / "m.py").write_text(SOURCE)
    model = model_factory("qwen", answer="total = a - b\nreturn total\n    pass")
    report = json.loads(_multi(model, tmp_path, "--oracle-only").stdout)
    hole = "    total = a + b\n    return total"
    outside = 1 - 5 / len(hole)  # "    total = a - b\nreturn total": one letter and four spaces
    inside = 1 - (1 + len("\n    return total")) / len(hole)  # "    total = a - b"
    assert report["oracle"]["edit_similarity"] == pytest.approx(outside)
    assert report["oracle"]["edit_similarity_in_block"] == pytest.approx(inside)
    assert report["codelsp"]["edit_similarity"] == pytest.approx(inside)  # the block rule cut there
    assert report["oracle"]["share_es_in_block"] == pytest.approx(1.0)
    # generation stops once the line that leaves the block is finished: "pass" is never generated
    tokens = report["rules"]["replayed_tokens"]
    assert tokens["no rules"] == len(model.answer_ids)
    assert tokens["all rules"] == tokens["without blank"] < tokens["without block"] == len(model.answer_ids)


def test_eval_multi_line_replays_a_log_and_compares_llama_server(model_factory, tmp_path):
    binary = heval.find_server_bin(None)
    if binary is None:
        pytest.skip("no llama-server binary (~/.cache/codelsp/llama-server/*/llama-server or PATH)")
    (tmp_path / "m.py").write_text(SOURCE)
    # a model that answers after any ordinary token: llama-server puts the line head after <fim_middle>
    model = model_factory("qwen", answer="total = a - b\n    return total", default="answer")
    log = tmp_path / "raw.jsonl"
    recorded = json.loads(_multi(model, tmp_path, "--oracle-only", "--log", str(log)).stdout)
    log_lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["stage"] for x in log_lines] == ["codelsp", "oracle"]
    assert log_lines[1]["raw"] == "total = a - b\n    return total" and log_lines[1]["prefixes"][-1] == log_lines[1]["raw"]
    # the recorded generation, replayed without the model, and llama-server on the same case
    report = json.loads(_multi(model, tmp_path, "--replay-log", str(log), "--compare-server", "--server-bin", binary).stdout)
    assert report["replay_log"] == str(log) and report["tasks"] == 1
    assert report["codelsp"] == {**recorded["codelsp"], "seconds": report["codelsp"]["seconds"]}
    assert report["oracle"]["edit_similarity"] == recorded["oracle"]["edit_similarity"]
    task = report["per_task"][0]
    assert task["server_answer"] == "total = a - b\n    return total" and task["server_exact"] is False
    assert task["server_es"] == task["es"] == round(1 - 1 / len("    total = a + b\n    return total"), 3)
    server = report["llama_server"]
    assert server["exact"] == 0 and server["codelsp_ratio_exact"] is None and server["codelsp_ratio_es"] == 1.0


def test_eval_multi_line_without_a_folder_is_one_line(model_factory, tmp_path):
    model = model_factory("qwen", answer="x")
    proc = run_cli("eval", "--multi-line", str(tmp_path / "nowhere"), "--model", str(model.path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("codelsp eval: --multi-line takes a folder")


def _multi(model, folder, *args: str):
    proc = run_cli("eval", "--multi-line", str(folder), "--model", str(model.path), "--threads", "1", "--json",
                   *args, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc
