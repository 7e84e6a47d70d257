"""Random-weight GGUF models of real code models' shapes, for measuring speed where no weights are.

A model written here computes exactly what the real model of its shape computes per token (same
architecture, layers, widths, heads, grouped-query attention, vocabulary and Q4_0 weights), so
llama.cpp's speed and memory on it are the real model's; its outputs are noise. The tokenizer is a
real one, copied either from a GGUF file (every ``tokenizer.*`` key, e.g. from the default demo
model Qwen2.5-Coder-0.5B in ``~/.cache/codelsp/``) or from a ``.json.gz`` dump of those keys
(``{key: [value type, array element type or null, value]}``, the GPU kit's ``qwen-vocab.json.gz``).

    python -m codelsp.tools.shapes --shape qwen7b --vocab model.gguf --out qwen7b.gguf

Weights are Q4_0 blocks of random 4-bit values with the block scale chosen so that each row has
unit variance against a unit-variance input (norms are ones, Qwen's q/k/v biases small), so
activations neither vanish nor overflow through 32 layers. Tensors are generated and written one
at a time: a 4 GiB model needs a few hundred MiB of memory and well under a minute.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@dataclass(frozen=True)
class Shape:
    arch: str  # llama.cpp architecture
    layers: int
    embd: int
    ff: int
    heads: int
    kv_heads: int
    ctx: int  # trained context
    rope_base: float
    eps: float
    qkv_bias: bool  # Qwen2 has biases on q, k, v
    tied: bool  # no output.weight: the head reuses token_embd (Qwen2.5 0.5B)
    about: str

    @property
    def head_dim(self) -> int:
        return self.embd // self.heads

    def kv_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """f16 K and V of every layer for one token."""
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value


SHAPES: dict[str, Shape] = {
    "qwen7b": Shape("qwen2", 28, 3584, 18944, 28, 4, 32768, 1e6, 1e-6, True, False,
                    "Qwen2.5-Coder-7B: qwen2, 28 layers, 3584 wide, 18944 FFN, 28 heads / 4 KV heads"),
    "codellama7b": Shape("llama", 32, 4096, 11008, 32, 32, 16384, 1e6, 1e-5, False, False,
                         "Code Llama 7B: llama, 32 layers, 4096 wide, 11008 FFN, 32 heads, no GQA"),
    "qwen05b": Shape("qwen2", 24, 896, 4864, 14, 2, 32768, 1e6, 1e-6, True, True,
                     "Qwen2.5-Coder-0.5B: qwen2, 24 layers, 896 wide, 4864 FFN, 14 heads / 2 KV heads, tied head"),
    "tiny": Shape("qwen2", 2, 256, 512, 4, 2, 4096, 1e6, 1e-6, True, False,
                  "tests: qwen2, 2 layers, 256 wide, 512 FFN, 4 heads / 2 KV heads"),
}

Q4_0_BLOCK = 32  # values per Q4_0 block: an f16 scale and 16 bytes of 4-bit values
Q4_0_BYTES = 18


# --- the vocabulary ---------------------------------------------------------------------
def read_vocab(path: str | os.PathLike[str]) -> dict[str, tuple[int, int | None, Any]]:
    """The ``tokenizer.*`` keys of a GGUF file or a ``.json.gz`` dump, as
    ``{key: (GGUFValueType, element type of an array or None, value)}``."""
    p = Path(path)
    if p.name.endswith((".json.gz", ".json")):
        opener = gzip.open if p.name.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as f:
            raw = json.load(f)
        out = {k: (int(v[0]), None if v[1] is None else int(v[1]), v[2]) for k, v in raw.items()
               if k.startswith("tokenizer.")}
    else:
        import gguf

        reader = gguf.GGUFReader(str(p))
        out = {}
        for name, field in reader.fields.items():
            if not name.startswith("tokenizer.") or not field.types:
                continue
            main = int(field.types[0])
            sub = int(field.types[-1]) if field.types[0] == gguf.GGUFValueType.ARRAY else None
            value = field.contents()
            if isinstance(value, np.generic):
                value = value.item()
            out[name] = (main, sub, value)
    if "tokenizer.ggml.tokens" not in out:
        raise ValueError(f"{p}: no tokenizer.ggml.tokens (not a GGUF with a vocabulary, nor a dump of one)")
    return out


def dump_vocab(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Write the ``tokenizer.*`` keys of the GGUF `src` as a ``.json.gz`` dump (the format above)."""
    with gzip.open(out, "wt", encoding="utf-8") as f:
        json.dump({k: list(v) for k, v in read_vocab(src).items()}, f)


# --- the weights ------------------------------------------------------------------------
class Q4Random:
    """Q4_0 blocks of random values, tiled from a pool (fast for GiBs, varied between tensors)."""

    def __init__(self, seed: int = 0, pool_blocks: int = 1 << 16) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.pool = rng.integers(0, 256, size=(pool_blocks, Q4_0_BYTES), dtype=np.uint8)
        self.jitter = rng.uniform(0.75, 1.25, size=pool_blocks)
        self.start = 0

    def tensor(self, rows: int, cols: int) -> np.ndarray:
        """``rows`` x ``cols`` values as Q4_0 bytes (rows x cols/32*18); about unit variance of
        a row's dot product with a unit-variance input."""
        if cols % Q4_0_BLOCK:
            raise ValueError(f"Q4_0 needs a multiple of {Q4_0_BLOCK} columns, not {cols}")
        n = rows * cols // Q4_0_BLOCK
        pool_n = self.pool.shape[0]
        idx = (np.arange(n, dtype=np.int64) + self.start) % pool_n
        self.start = (self.start + 7919) % pool_n
        blocks = self.pool[idx]
        # 4-bit values q-8 in [-8, 7] have variance 21.25: d = 1/sqrt(21.25 * cols)
        d = (self.jitter[idx] / np.sqrt(21.25 * cols)).astype(np.float16)
        blocks[:, :2] = d.view(np.uint8).reshape(-1, 2)
        return blocks.reshape(rows, cols // Q4_0_BLOCK * Q4_0_BYTES)

    def vector(self, n: int, scale: float) -> np.ndarray:
        return (self.rng.standard_normal(n) * scale).astype(np.float32)


def tensors(shape: Shape, n_vocab: int, gen: Q4Random) -> Iterator[tuple[str, np.ndarray, bool]]:
    """(name, data, quantized) of every tensor in llama.cpp's order, generated one at a time."""
    s, e, d = shape, shape.embd, shape.head_dim
    kv = s.kv_heads * d
    ones = lambda n: np.ones(n, dtype=np.float32)  # noqa: E731
    yield "token_embd.weight", gen.tensor(n_vocab, e), True
    for i in range(s.layers):
        p = f"blk.{i}."
        yield p + "attn_norm.weight", ones(e), False
        yield p + "attn_q.weight", gen.tensor(e, e), True
        yield p + "attn_k.weight", gen.tensor(kv, e), True
        yield p + "attn_v.weight", gen.tensor(kv, e), True
        if s.qkv_bias:
            yield p + "attn_q.bias", gen.vector(e, 0.02), False
            yield p + "attn_k.bias", gen.vector(kv, 0.02), False
            yield p + "attn_v.bias", gen.vector(kv, 0.02), False
        yield p + "attn_output.weight", gen.tensor(e, e), True
        yield p + "ffn_norm.weight", ones(e), False
        yield p + "ffn_gate.weight", gen.tensor(s.ff, e), True
        yield p + "ffn_up.weight", gen.tensor(s.ff, e), True
        yield p + "ffn_down.weight", gen.tensor(e, s.ff), True
    yield "output_norm.weight", ones(e), False
    if not s.tied:
        yield "output.weight", gen.tensor(n_vocab, e), True


def write_model(shape_name: str, vocab: str | os.PathLike[str], out: str | os.PathLike[str], seed: int = 0) -> dict[str, Any]:
    """Write the random-weight GGUF of `shape_name` with the tokenizer of `vocab` to `out`
    (atomically: a partial file never has the final name). Returns what was written."""
    import gguf

    shape = SHAPES[shape_name]
    keys = read_vocab(vocab)
    n_vocab = len(keys["tokenizer.ggml.tokens"][2])
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    w = gguf.GGUFWriter(str(tmp), shape.arch)
    w.add_name(f"random {shape_name} (codelsp GPU bench: {shape.about})")
    w.add_context_length(shape.ctx)
    w.add_embedding_length(shape.embd)
    w.add_block_count(shape.layers)
    w.add_feed_forward_length(shape.ff)
    w.add_head_count(shape.heads)
    w.add_head_count_kv(shape.kv_heads)
    w.add_rope_freq_base(shape.rope_base)
    w.add_layer_norm_rms_eps(shape.eps)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, (vtype, sub, value) in keys.items():
        w.add_key_value(key, value, gguf.GGUFValueType(vtype),
                        sub_type=gguf.GGUFValueType(sub) if sub is not None else None)
    # tensor infos first (shapes and sizes), then the data one tensor at a time
    n_bytes = 0
    for name, byte_shape, quant in _infos(shape, n_vocab):
        w.add_tensor_info(name, byte_shape, np.dtype(np.uint8 if quant else np.float32), _nbytes(byte_shape, quant),
                          raw_dtype=gguf.GGMLQuantizationType.Q4_0 if quant else None)
        n_bytes += _nbytes(byte_shape, quant)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _name, data, _quant in tensors(shape, n_vocab, Q4Random(seed)):
        w.write_tensor_data(data)
    w.close()
    os.replace(tmp, out)
    return {"shape": shape_name, "about": shape.about, "arch": shape.arch, "layers": shape.layers,
            "n_embd": shape.embd, "n_vocab": n_vocab, "weights_bytes": n_bytes, "file": str(out),
            "file_bytes": out.stat().st_size, "kv_bytes_per_token_f16": shape.kv_bytes_per_token()}


def _infos(shape: Shape, n_vocab: int) -> Iterator[tuple[str, tuple[int, ...], bool]]:
    """(name, byte shape, quantized) of the tensors `tensors()` yields, without making them."""
    s, e = shape, shape.embd
    kv = s.kv_heads * s.head_dim
    q = lambda rows, cols: (rows, cols // Q4_0_BLOCK * Q4_0_BYTES)  # noqa: E731
    yield "token_embd.weight", q(n_vocab, e), True
    for i in range(s.layers):
        p = f"blk.{i}."
        yield p + "attn_norm.weight", (e,), False
        yield p + "attn_q.weight", q(e, e), True
        yield p + "attn_k.weight", q(kv, e), True
        yield p + "attn_v.weight", q(kv, e), True
        if s.qkv_bias:
            yield p + "attn_q.bias", (e,), False
            yield p + "attn_k.bias", (kv,), False
            yield p + "attn_v.bias", (kv,), False
        yield p + "attn_output.weight", q(e, e), True
        yield p + "ffn_norm.weight", (e,), False
        yield p + "ffn_gate.weight", q(s.ff, e), True
        yield p + "ffn_up.weight", q(s.ff, e), True
        yield p + "ffn_down.weight", q(e, s.ff), True
    yield "output_norm.weight", (e,), False
    if not s.tied:
        yield "output.weight", q(n_vocab, e), True


def _nbytes(shape: tuple[int, ...], quant: bool) -> int:
    return int(np.prod(shape)) * (1 if quant else 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m codelsp.tools.shapes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), help="which model's shape")
    ap.add_argument("--vocab", required=True, help="a GGUF file or a .json.gz dump of tokenizer keys")
    ap.add_argument("--out", required=True, help="the GGUF file to write (or, with --dump-vocab, the .json.gz)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dump-vocab", action="store_true", help="write the vocabulary of --vocab as a .json.gz dump")
    a = ap.parse_args(argv)
    try:
        if a.dump_vocab:
            dump_vocab(a.vocab, a.out)
            print(f"wrote {a.out}")
            return 0
        if not a.shape:
            ap.error("--shape is required")
        info = write_model(a.shape, a.vocab, a.out, a.seed)
    except (OSError, ValueError, KeyError) as exc:
        print(f"codelsp shapes: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
