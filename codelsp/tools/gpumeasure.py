"""Two measurements of issue 21 that no `codelsp bench` replay reports: codelsp's decode speed on
a long generation, and the time from opening a long file to its first suggestion.

    python -m codelsp.tools.gpumeasure decode --model M [--tokens 512] [codelsp flags ...]
    python -m codelsp.tools.gpumeasure first-suggestion --model M [--file-tokens 5000] [flags ...]

`decode` loads the model as every codelsp command does (the engine thread, the memory plan's GPU
layers), evaluates a short prompt and generates `--tokens` tokens through `LoadedModel.generate`,
the path completions take (greedy: argmax of the logits; and with the settings' sampler chain),
continuing past an end-of-generation token (a random-weight model emits them by chance) so the
count is what was asked for. Tokens per second: generated / generation time, the figure to set
against `llama-bench` tg128 on the same file.

`first-suggestion` starts `codelsp serve` over stdio as an editor does, waits until the model is
loaded (a completion in a one-line document), then opens a Python file of about `--file-tokens`
tokens (codelsp's own source, cut to length with the model's tokenizer) and asks for an inline
completion at the end of the line in its middle: the time from `didOpen` to the answer, and the
server's own account (`codelsp/stats`: tokens evaluated, prompt and generation ms).

Both print one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SOURCES = Path(__file__).resolve().parent.parent  # the codelsp package: Python text to open


def decode(model: str, tokens: int, options: dict[str, Any]) -> dict[str, Any]:
    from codelsp.engine.generation import SamplerParams
    from codelsp.engine.worker import Engine
    from codelsp.settings import Settings

    settings, problems = Settings().merged({"model": model, **options}, "gpumeasure")
    engine = Engine()
    try:
        loaded = engine.load(settings).future.result()

        def run(job: Any) -> dict[str, Any]:
            prompt = loaded.tokenize("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n")
            out: dict[str, Any] = {"gpu_layers": loaded.gpu_layers, "load_ms": round(loaded.load_ms, 1),
                                   "prompt_tokens": len(prompt)}
            for label, sampler in (("greedy", SamplerParams(0.0, 0, 1.0, 1.0, 0)),
                                   ("sampler", SamplerParams.from_settings(loaded.settings))):
                key = f"decode-{label}"
                loaded.forget(key)
                done, gen_ms, calls, rates = 0, 0.0, 0, []
                seq = list(prompt)
                while done < tokens and len(seq) + 2 < loaded.context_size:
                    g = loaded.generate(key, seq, max_tokens=min(tokens - done, loaded.context_size - len(seq) - 1),
                                        sampler=sampler, stop_texts=[])
                    calls += 1
                    done += g.stats.generated
                    gen_ms += g.stats.gen_ms
                    if g.stats.generated > 1:
                        rates.append(g.stats.generated / (g.stats.gen_ms / 1000))
                    seq += g.tokens
                    if g.stats.generated == 0:  # stopped at once: step past the end token
                        seq.append(loaded.tokenize(" x", first=False)[-1])
                out[label] = {"generated": done, "gen_ms": round(gen_ms, 1), "calls": calls,
                              "tokens_per_s": round(done / (gen_ms / 1000), 1) if gen_ms else None,
                              "median_call_tokens_per_s": round(statistics.median(rates), 1) if rates else None}
                loaded.forget(key)
            return out

        result = engine.run_sync(run)
    finally:
        engine.shutdown()
    return {"model": model, "tokens": tokens, "settings": options, "problems": problems, **result}


def long_file(model: str, n_tokens: int) -> tuple[str, int]:
    """Python text of about `n_tokens` tokens of `model`'s vocabulary (codelsp's own modules,
    whole lines), and its exact token count."""
    import logging

    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its log of the vocabulary
    p = llama_cpp.llama_model_default_params()
    p.vocab_only = True
    m = llama_cpp.llama_model_load_from_file(model.encode(), p)
    if not m:
        raise RuntimeError(f"cannot read the vocabulary of {model}")
    vocab = llama_cpp.llama_model_get_vocab(m)

    def count(text: str) -> int:
        data = text.encode()
        return -llama_cpp.llama_tokenize(vocab, data, len(data), None, 0, False, False)

    try:
        lines: list[str] = []
        for src in sorted(SOURCES.rglob("*.py")):
            lines += src.read_text(encoding="utf-8").split("\n")
            if len(lines) > n_tokens:  # fewer than one token a line never happens in code
                break
        lo, hi = 1, len(lines)
        while lo < hi:  # the most whole lines within n_tokens
            mid = (lo + hi + 1) // 2
            if count("\n".join(lines[:mid])) <= n_tokens:
                lo = mid
            else:
                hi = mid - 1
        text = "\n".join(lines[:lo])
        return text, count(text)
    finally:
        llama_cpp.llama_model_free(m)


async def _first_suggestion(server_args: list[str], text: str) -> dict[str, Any]:
    from lsprotocol import types

    from codelsp.tools.lspclient import as_dict, codelsp_client, inline_params, inline_texts

    lines = text.split("\n")
    row = len(lines) // 2
    while row < len(lines) - 1 and not lines[row].strip():
        row += 1
    async with codelsp_client(server_args, name="codelsp-gpumeasure") as client:
        t0 = time.perf_counter()
        warm = "file:///codelsp-gpumeasure/warm.py"
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=warm, language_id="python", version=1, text="import os\n")))
        await client.text_document_inline_completion_async(inline_params(warm, 1, 0))
        ready_ms = (time.perf_counter() - t0) * 1000
        uri = "file:///codelsp-gpumeasure/long.py"
        t1 = time.perf_counter()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        result = await client.text_document_inline_completion_async(inline_params(uri, row, len(lines[row])))
        first_ms = (time.perf_counter() - t1) * 1000
        st = await client.protocol.send_request_async("codelsp/stats", {"uri": uri})
        # the same request again: what a keystroke costs once the file is in the cache
        t2 = time.perf_counter()
        await client.text_document_inline_completion_async(inline_params(uri, row, len(lines[row])))
        again_ms = (time.perf_counter() - t2) * 1000
    return {"server_ready_ms": round(ready_ms, 1), "first_suggestion_ms": round(first_ms, 1),
            "again_ms": round(again_ms, 1), "line": row + 1, "answered": bool(inline_texts(result)),
            "server_last": as_dict(st.last)}


def first_suggestion(model: str, file_tokens: int, flags: list[str]) -> dict[str, Any]:
    text, n = long_file(model, file_tokens)
    out = asyncio.run(_first_suggestion(["--model", model, *flags], text))
    return {"model": model, "file_tokens": n, "file_lines": text.count("\n") + 1, "flags": flags, **out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m codelsp.tools.gpumeasure", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("decode", help="codelsp's decode tokens/s on a long generation")
    d.add_argument("--model", required=True)
    d.add_argument("--tokens", type=int, default=512)
    d.add_argument("--n-gpu-layers", type=int)
    d.add_argument("--ctx", type=int, default=4096, help="contextSize (default 4096)")
    f = sub.add_parser("first-suggestion", help="didOpen of a long file -> its first suggestion")
    f.add_argument("--model", required=True)
    f.add_argument("--file-tokens", type=int, default=5000)
    a, rest = ap.parse_known_args(argv)
    if a.what == "decode":
        if rest:
            ap.error(f"decode: unknown arguments {' '.join(rest)}")
        opts: dict[str, Any] = {"contextSize": a.ctx}
        if a.n_gpu_layers is not None:
            opts["nGpuLayers"] = a.n_gpu_layers
        report = decode(a.model, a.tokens, opts)
    else:
        report = first_suggestion(a.model, a.file_tokens, rest)  # the rest: `codelsp serve` flags
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
