"""`codelsp complete` and `codelsp doctor`, run as a user runs them."""

from __future__ import annotations

import pytest

from support import run_cli

ADD = "def add(a, b):\n    \n"


@pytest.fixture
def add_py(tmp_path):
    path = tmp_path / "add.py"
    path.write_text(ADD)
    return path


@pytest.mark.parametrize(
    "family, extra",
    [
        ("codellama", {}),
        ("starcoder", {}),
        ("deepseek", {}),
        ("qwen", {}),
        ("codegemma", {}),
        ("codestral", {}),
    ],
)
def test_complete_prints_exact_fim_answer(model_factory, add_py, family, extra):
    model = model_factory(family, **extra)
    proc = run_cli("complete", f"{add_py}:2:5", "--model", str(model.path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == model.completion + "\n" == "return a + b\n"  # a newline after the answer


def test_complete_codellama_psm_order_ends_with_middle_token(model_factory, add_py):
    # default="wrong": only a prompt that ends with <MID> gives the answer
    model = model_factory("codellama", default="wrong")
    proc = run_cli("complete", f"{add_py}:2:5", "--model", str(model.path), "--fim-order", "psm")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "return a + b\n"


def test_complete_without_fim_tokens_continues_the_prefix(model_factory, add_py):
    model = model_factory("none")
    proc = run_cli("complete", f"{add_py}:2:5", "--model", str(model.path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "return a + b\n"
    assert "no FIM" in proc.stderr or "prefix-only" in proc.stderr


def test_complete_trims_what_already_follows_the_cursor(model_factory, tmp_path):
    model = model_factory("starcoder", answer="a, b)", default="answer")  # psm-tail: the prompt ends with "add("
    src = tmp_path / "call.py"
    src.write_text("result = add()\n")
    proc = run_cli("complete", f"{src}:1:14", "--model", str(model.path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "a, b\n"


def test_max_tokens_caps_the_completion(model_factory, add_py):
    model = model_factory("starcoder")
    proc = run_cli("complete", f"{add_py}:2:5", "--model", str(model.path), "--max-tokens", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "return a\n"


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda p: None, "model file not found"),
        (lambda p: p.write_text("hello"), "not a GGUF file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 7), "truncated"),
    ],
    ids=["missing", "not-gguf", "directory", "truncated"],
)
def test_bad_model_path_gives_one_clear_line(tmp_path, add_py, make, expect):
    bad = tmp_path / "model.gguf"
    make(bad)
    proc = run_cli("complete", f"{add_py}:2:5", "--model", str(bad))
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert expect in lines[0] and str(bad) in lines[0]


def test_bad_location_is_a_clear_error(model_factory, add_py):
    model = model_factory("starcoder")
    proc = run_cli("complete", f"{add_py}:9:1", "--model", str(model.path))
    assert proc.returncode == 2
    assert "line 9 is past the end" in proc.stderr and "Traceback" not in proc.stderr


def test_doctor_describes_a_fim_model(model_factory):
    model = model_factory("starcoder")
    proc = run_cli("doctor", "--model", str(model.path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "llama-cpp-python" in out and "GPU offload" in out
    assert "architecture   llama" in out
    pre, suf, mid = model.fim_ids["pre"], model.fim_ids["suf"], model.fim_ids["mid"]
    assert f"starcoder (PSM-TAIL, pre={pre} suf={suf} mid={mid}" in out
    assert "result           OK" in out


def test_doctor_reports_a_missing_model(tmp_path):
    proc = run_cli("doctor", "--model", str(tmp_path / "nope.gguf"))
    assert proc.returncode == 1
    assert "model file not found" in proc.stdout


def test_prefix_only_real_weights_smoke(demo_model, tmp_path):
    """SmolLM2-135M (no FIM tokens): prefix-only continuation with real weights."""
    src = tmp_path / "fib.py"
    src.write_text("def fibonacci(n):\n    if n < 2:\n        return n\n    return ")
    # no time limit: the same input must give the same text however busy the machine is
    fixed = ("--model", str(demo_model), "--timeout-ms", "600000", "--max-tokens", "16")
    first = run_cli("complete", f"{src}:4:12", *fixed)
    assert first.returncode == 0, first.stderr
    assert "has no FIM tokens" in first.stderr
    assert first.stdout.strip(), "the model should complete something"
    again = run_cli("complete", f"{src}:4:12", *fixed)
    assert again.stdout == first.stdout  # fixed seed: same input, same completion


def test_settings_given_to_another_process_parse_back_the_same():
    """bench and eval start `codelsp serve` with the user's settings as flags: each must parse
    back to the same setting (an on/off flag takes no value: `--no-warm False` killed the server)."""
    from codelsp.cli import build_parser, cli_options
    from codelsp.settings import flag_args

    options = {"warmDocuments": False, "promptCache": False, "contextSize": 2048, "fimOrder": "psm",
               "temperature": 0.5, "maxTokens": 16}
    argv = ["serve", *flag_args(options)]
    assert "False" not in argv
    assert cli_options(build_parser().parse_args(argv)) == options
    assert flag_args({"warmDocuments": True, "promptCache": True}) == []  # the defaults: nothing to say
