"""Command line: `codelsp serve | complete | doctor | models | bench | eval`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Any, Sequence

from codelsp import __version__
from codelsp.settings import BACKENDS, FIM_FAMILIES, FIM_ORDERS, KV_CACHE_TYPES, LOG_LEVELS

API_KEY_ENV = "CODELSP_API_KEY"  # read by remote.py (kept in step with remote.API_KEY_ENV)

log = logging.getLogger("codelsp")


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and generation (each overrides the editor's settings)")
    g.add_argument("--model", metavar="PATH", help="base/FIM model (.gguf); default: the embedded Qwen2.5-Coder-0.5B-Instruct (codelsp[demo])")
    g.add_argument("--instruct-model", metavar="PATH", help="instruct model for code actions; default: the base model")
    g.add_argument("--hf-repo", metavar="OWNER/NAME", help="take the base model from this Hugging Face repository (with --hf-file)")
    g.add_argument("--hf-file", metavar="FILE", help="the .gguf file in --hf-repo; downloaded once into the Hugging Face cache")
    g.add_argument("--instruct-hf-repo", metavar="OWNER/NAME", help="Hugging Face repository of the instruct model")
    g.add_argument("--instruct-hf-file", metavar="FILE", help="the .gguf file in --instruct-hf-repo")
    g.add_argument("--n-gpu-layers", type=int, metavar="N", help="layers to offload to the GPU (-1: all, the default)")
    g.add_argument("--ctx", dest="context_size", type=int, metavar="N", help="context size in tokens (default 5000)")
    g.add_argument("--max-tokens", type=int, metavar="N", help="completion length cap in tokens (default 64)")
    g.add_argument("--candidates", type=int, metavar="N",
                   help="inline completion: up to N distinct suggestions, the greedy one first (default 1)")
    g.add_argument("--no-prompt-cache", dest="prompt_cache", action="store_const", const=False,
                   help="turn off all prompt/KV reuse (the benchmark baseline)")
    g.add_argument("--no-warm", dest="warm_documents", action="store_const", const=False,
                   help="do not evaluate opened documents in the background")
    g.add_argument("--prompt-cache-bytes", type=int, metavar="BYTES",
                   help="KV pool for cached documents (default: what the memory plan finds free)")
    g.add_argument("--host-cache-bytes", type=int, metavar="BYTES",
                   help="system memory for document states evicted from the KV (default: from the memory plan; 0: off)")
    g.add_argument("--kv-cache-type", choices=KV_CACHE_TYPES, help="K/V cache storage (default f16; q8_0 halves it, q4_0 quarters it)")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--repeat-penalty", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--fim-template", "--fim-family", dest="fim_template", choices=FIM_FAMILIES,
                   help="override the detected FIM family")
    g.add_argument("--fim-order", choices=FIM_ORDERS, help="FIM order (default auto: the family's best)")
    g.add_argument("--timeout-ms", type=int, metavar="MS", help="wall-clock budget for one completion")
    g.add_argument("--threads", dest="n_threads", type=int, metavar="N", help="CPU threads (default: all cores)")
    g.add_argument("--log-level", choices=LOG_LEVELS, help="log level (default info); logs go to stderr")
    r = p.add_argument_group("remote backend (instead of a model in process; see README 'Remote backends')")
    r.add_argument("--backend", choices=BACKENDS, help="local (default), openai (/v1/completions) or llama-server (/infill)")
    r.add_argument("--url", metavar="URL", help="server URL: for openai up to and including /v1, for llama-server its root")
    r.add_argument("--api-key", metavar="KEY", help=f"bearer token (better: the {API_KEY_ENV} environment variable)")


_SETTING_FLAGS = (
    "model", "instruct_model", "n_gpu_layers", "context_size", "max_tokens", "candidates", "prompt_cache", "warm_documents",
    "prompt_cache_bytes", "host_cache_bytes", "kv_cache_type", "temperature", "top_k", "top_p", "repeat_penalty", "seed",
    "fim_template", "fim_order", "timeout_ms", "n_threads", "log_level", "backend", "url", "api_key",
    "hf_repo", "hf_file", "instruct_hf_repo", "instruct_hf_file",
)


def cli_options(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, as camelCase keys (only those given)."""
    from codelsp.settings import _camel

    out = {}
    for name in _SETTING_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            out[_camel(name)] = value
    return out


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
    from codelsp.lsp.server import create_server

    options = cli_options(args)
    if args.tcp is not None:
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "listening on %s:%d: anyone who can reach this address can use the server "
                "and read the code sent to it", args.host, args.tcp,
            )
        server = create_server(options)
        server.start_tcp(args.host, args.tcp)
        return 0
    rpc_out = _private_stdout()
    server = create_server(options)
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
    out.write(result.text.encode("utf-8"))
    if out.isatty():
        out.write(b"\n")
    return 0
