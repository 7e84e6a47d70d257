"""`codelsp bench`: replay typing against the real server and measure keystroke latency."""

from __future__ import annotations

import argparse
from typing import Any, Callable


def add_bench_parser(sub: Any, model_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    b = sub.add_parser("bench", help="measure keystroke-to-suggestion latency with and without the prompt cache")
    b.add_argument("file", nargs="?", help="source file to replay typing in (default: a shipped example)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    model_flags(b)


def run_bench(args: argparse.Namespace, options: dict[str, Any]) -> int:
    raise SystemExit("codelsp bench: not implemented yet")
