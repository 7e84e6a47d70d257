"""Command line: `codelsp serve | complete | doctor | models | bench | eval`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Any, Sequence

from codelsp import __version__
from codelsp.settings import flag_arguments, flag_options

log = logging.getLogger("codelsp")


def _model_flags(p: argparse.ArgumentParser) -> None:
    """The settings' flags (declared with each setting, settings.py), in their two groups."""
    groups = {
        "model": p.add_argument_group("model and generation (each overrides the editor's settings)"),
        "remote": p.add_argument_group("remote backend (instead of a model in process; see README 'Remote backends')"),
    }
    for group, flags, kwargs in flag_arguments():
        groups[group].add_argument(*flags, **kwargs)


def cli_options(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, as camelCase keys (only those given)."""
    return flag_options(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="codelsp",
        description="Local-LLM code completion for any editor: a language server over llama.cpp.",
    )
    p.add_argument("--version", action="version", version=f"codelsp {__version__}")
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("serve", help="run the language server (stdio by default)")
    s.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default)")
    s.add_argument("--tcp", type=int, metavar="PORT", help="listen on a TCP port instead of stdio")
    s.add_argument("--host", default="127.0.0.1", help="address for --tcp (default 127.0.0.1: this machine only)")
    s.add_argument("--ablate", metavar="RULES", help=argparse.SUPPRESS)  # `codelsp eval --ablate`: rules off
    _model_flags(s)

    c = sub.add_parser("complete", help="print the completion the server would insert at FILE:LINE:COL")
    c.add_argument("location", metavar="FILE:LINE:COL", help="1-based line and column (column in characters)")
    _model_flags(c)

    d = sub.add_parser("doctor", help="check the setup: versions, GPU, model, FIM tokens, memory")
    _model_flags(d)

    m = sub.add_parser("models", help="list the GGUF models on this machine: family, FIM support, size, quantization")
    m.add_argument("paths", nargs="*", metavar="PATH", help="more files or folders to search")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _model_flags(m)

    from codelsp.tools.bench import add_bench_parser

    add_bench_parser(sub, _model_flags)
    from codelsp.tools.eval import add_eval_parser

    add_eval_parser(sub, _model_flags)
    return p


def setup_logging(level: str | None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("codelsp %(levelname)s %(message)s"))
    root = logging.getLogger("codelsp")
    root.handlers[:] = [handler]
    root.setLevel((level or "info").upper())
    root.propagate = False
    logging.getLogger("pygls").setLevel(logging.WARNING if (level or "info") != "debug" else logging.DEBUG)
    logging.getLogger("pygls").addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["serve", *argv]
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "log_level", None))
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "complete":
            return cmd_complete(args)
        if args.command == "models":
            from codelsp.models.discovery import run_models

            return run_models(args, cli_options(args))
        if args.command == "doctor":
            from codelsp.tools.doctor import run_doctor

            return run_doctor(args, cli_options(args))
        if args.command == "bench":
            from codelsp.tools.bench import run_bench

            return run_bench(args, cli_options(args))
        if args.command == "eval":
            from codelsp.tools.eval import run_eval

            if args.cross_file:
                from codelsp.tools.crossfile import run_crossfile

                return run_eval(args, cli_options(args), run_crossfile)
            if args.next_edit:
                from codelsp.tools.nexteval import NextEvalError, run_next_edit_eval

                try:
                    return run_next_edit_eval(args, cli_options(args))
                except NextEvalError as exc:
                    print(f"codelsp eval: {exc}", file=sys.stderr)
                    return 2
            if args.multi_line:
                from codelsp.tools.multiline import run_multiline

                return run_eval(args, cli_options(args), run_multiline)

            return run_eval(args, cli_options(args))
    except KeyboardInterrupt:
        return 130
    parser.print_help(sys.stderr)
    return 2


def _private_stdout() -> Any:
    """A private handle on the real stdout, with fd 1 pointed at stderr.

    llama.cpp (and llama-cpp-python while loading) may write to fd 1; on a stdio language server
    that would corrupt the JSON-RPC stream, and for `complete` it would pollute the answer.
    """
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    from codelsp.completion.postprocess import RULES
    from codelsp.lsp.server import create_server

    options = cli_options(args)
    # post-processing rules turned off, for measurement only (`codelsp eval --ablate`)
    ablate = frozenset(r for r in (args.ablate or "").split(",") if r in RULES)
    if args.tcp is not None:
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "listening on %s:%d: anyone who can reach this address can use the server "
                "and read the code sent to it", args.host, args.tcp,
            )
        server = create_server(options, ablate)
        server.start_tcp(args.host, args.tcp)
        return 0
    rpc_out = _private_stdout()
    server = create_server(options, ablate)
    server.start_io(sys.stdin.buffer, rpc_out)
    server.engine.shutdown()
    return 0


def parse_location(location: str) -> tuple[str, int, int]:
    parts = location.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"expected FILE:LINE:COL (1-based), got {location!r}")
    line, col = int(parts[1]), int(parts[2])
    if line < 1 or col < 1:
        raise ValueError(f"LINE and COL are 1-based, got {line}:{col}")
    return parts[0], line, col


def offset_of(text: str, line: int, col: int) -> int:
    """Character offset of 1-based LINE:COL (COL in characters); ValueError when outside."""
    from codelsp.completion.context import split_lines

    lines = split_lines(text)
    if line > len(lines):
        raise ValueError(f"line {line} is past the end of the file ({len(lines)} lines)")
    body = lines[line - 1].rstrip("\r\n")
    if col > len(body) + 1:
        raise ValueError(f"column {col} is past the end of line {line} ({len(body)} characters)")
    return sum(len(x) for x in lines[: line - 1]) + col - 1


def cmd_complete(args: argparse.Namespace) -> int:
    from codelsp.completion.pipeline import complete
    from codelsp.engine.worker import Engine
    from codelsp.models.errors import ModelError
    from codelsp.settings import Settings

    out = _private_stdout()
    try:
        path, line, col = parse_location(args.location)
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        offset = offset_of(text, line, col)
    except (ValueError, OSError) as exc:
        msg = exc.strerror + f": {exc.filename}" if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"codelsp: {msg}", file=sys.stderr)
        return 2
    settings, problems = Settings().merged(cli_options(args), "command line")
    for p in problems:
        log.warning("%s", p)
    # one request: no other document will reuse cached prompt state, so allocate one KV slot
    settings = dataclasses.replace(settings, prompt_cache_bytes=0, host_cache_bytes=0)
    if args.timeout_ms is None:
        # timeoutMs is an editor's keystroke budget: a one-shot command waits for the whole answer
        settings = dataclasses.replace(settings, timeout_ms=0)
    engine = Engine()
    try:
        model = engine.load(settings).future.result()
        result = engine.run_sync(lambda job: complete(model, os.path.abspath(path), text, offset, settings, job.cancel))
    except ModelError as exc:
        print(f"codelsp: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.shutdown()
    if result.text:  # the answer and a newline, so that a shell's prompt starts on a line of its own
        out.write(result.text.encode("utf-8") + b"\n")
    return 0
