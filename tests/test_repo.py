"""The repository keeps its promises: README commands, CI script, build flags."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from codelsp.engine.buildflags import safe_cmake_args
from codelsp.tools.doctor import amx_risk
from codelsp.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_has_exactly_two_setup_commands_at_the_top():
    head = README.split("\n---\n", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)\n```", head, re.S)
    assert len(blocks) == 2
    assert all(len(b.splitlines()) == 1 for b in blocks)
    main_cmd, test_cmd = blocks
    assert "codelsp complete codelsp/examples/fib.py:8:12" in main_cmd
    assert "pytest" in test_cmd
    assert (ROOT / "codelsp/examples/fib.py").is_file()


def test_ci_runs_the_readme_test_command():
    out = subprocess.run(
        ["awk", '/<!-- test-command/ {found=1; next} found && /^```sh/ {getline; print; exit}', "README.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert "python -m pytest" in out
    assert out in README.split("\n---\n", 1)[0]
    assert "README.md" in (ROOT / ".ci/run").read_text()


def test_every_setting_is_documented_in_the_readme():
    for key in Settings.keys():
        assert f"`{key}`" in README, key


def test_buildflags_avoid_amx_but_keep_simd():
    flags = {"avx", "avx2", "fma", "f16c", "avx512f", "amx_tile", "amx_int8"}
    args = safe_cmake_args(flags)
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AVX512=ON" in args
    assert "AMX" not in args and "VNNI" not in args


def test_buildflags_keep_a_users_cmake_args():
    out = subprocess.run(
        [sys.executable, str(ROOT / "codelsp/engine/buildflags.py")],
        env={"CMAKE_ARGS": "-DGGML_CUDA=on", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out == "-DGGML_CUDA=on"


def test_doctor_recognises_an_amx_build_on_an_amx_cpu():
    native = "CPU : AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1"
    safe = "CPU : AVX512 = 1 | AVX512_VNNI = 1 | REPACK = 1"
    assert amx_risk(native, {"amx_tile", "amx_int8"})
    assert not amx_risk(safe, {"amx_tile", "amx_int8"})
    assert not amx_risk(native, {"avx2"})
