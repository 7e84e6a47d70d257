"""A small, dependency-free reader for GGUF headers.

codelsp reads a model's metadata *before* handing the file to llama.cpp: to reject files that are
not GGUF with a clear message instead of a native error, to estimate memory before loading, and to
let `codelsp doctor` describe a model without loading its weights. Large arrays (the tokenizer's
vocabulary) are skipped, not decoded; only their length is kept.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

MAGIC = b"GGUF"

# GGUF value types
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
_SCALARS = {
    _U8: "<B", _I8: "<b", _U16: "<H", _I16: "<h", _U32: "<I", _I32: "<i",
    _F32: "<f", _BOOL: "<?", _U64: "<Q", _I64: "<q", _F64: "<d",
}
# Arrays longer than this are not decoded (a vocabulary has tens of thousands of strings).
_MAX_DECODED_ARRAY = 64

# ggml type id -> (block size in elements, bytes per block); enough to size tensors.
_GGML_TYPE_SIZES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 30: (1, 2),
}


class GGUFError(ValueError):
    """The file is not a readable GGUF model."""


@dataclass
class ArrayInfo:
    """An array value that was too long to decode."""

    item_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int | None:
        size = _GGML_TYPE_SIZES.get(self.ggml_type)
        if size is None:
            return None
        block, nbytes = size
        return self.n_elements // block * nbytes


@dataclass
class GGUFInfo:
    path: str
    version: int
    file_size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name", os.path.basename(self.path)))

    @property
    def context_length(self) -> int | None:
        return self.arch_value("context_length")

    @property
    def n_layers(self) -> int | None:
        return self.arch_value("block_count")

    @property
    def has_chat_template(self) -> bool:
        return bool(self.metadata.get("tokenizer.chat_template"))

    @property
    def quantized(self) -> bool:
        """True when any 2-D weight is stored in a block-quantized type (Q4_*, Q8_0, K-quants)."""
        return any(t.ggml_type not in (0, 1, 30) and len(t.shape) >= 2 for t in self.tensors)

    def kv_head_dims(self) -> tuple[int, int, int]:
        """(KV heads, K head size, V head size) of the widest layer, from the header."""
        n_embd = int(self.arch_value("embedding_length", 0) or 0)
        n_head = self.arch_value("attention.head_count", 1) or 1
        n_head_kv = self.arch_value("attention.head_count_kv", n_head) or n_head
        if isinstance(n_head, ArrayInfo) or isinstance(n_head, list):
            n_head = max(n_head) if isinstance(n_head, list) else 1
        if isinstance(n_head_kv, ArrayInfo) or isinstance(n_head_kv, list):
            n_head_kv = max(n_head_kv) if isinstance(n_head_kv, list) else n_head
        head_dim_k = self.arch_value("attention.key_length", n_embd // max(int(n_head), 1))
        head_dim_v = self.arch_value("attention.value_length", head_dim_k)
        return int(n_head_kv), int(head_dim_k), int(head_dim_v)

    def kv_bytes_per_token(self, cache_type: str = "f16") -> int:
        """Bytes of K+V cache one token costs across all layers, with K and V stored as
        `cache_type` (KV_CACHE_TYPES: f16 2 bytes per value; q8_0 34 bytes and q4_0 18 bytes per
        block of 32 values, ggml's block layouts)."""
        n_layer = int(self.n_layers or 0)
        n_head_kv, head_dim_k, head_dim_v = self.kv_head_dims()
        _, block_bytes, block = KV_CACHE_TYPES[cache_type]
        row = lambda n: -(-n // block) * block_bytes  # noqa: E731 - one row of n values
        return n_layer * (row(n_head_kv * head_dim_k) + row(n_head_kv * head_dim_v))


# KV cache types codelsp offers: name -> (ggml type id for llama.cpp's type_k/type_v, bytes per
# block, values per block). The ids are ggml's enum ggml_type (GGML_TYPE_F16 = 1, Q4_0 = 2, Q8_0 = 8).
KV_CACHE_TYPES: dict[str, tuple[int, int, int]] = {"f16": (1, 2, 1), "q8_0": (8, 34, 32), "q4_0": (2, 18, 32)}


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GGUFError("file is truncated")
    return data


def _unpack(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def _read_str(f: BinaryIO) -> str:
    n = _unpack(f, "<Q")
    if n > 1 << 26:
        raise GGUFError("corrupt string length in header")
    return _read(f, n).decode("utf-8", errors="replace")


def _skip_str(f: BinaryIO) -> None:
    n = _unpack(f, "<Q")
    if n > 1 << 26:
        raise GGUFError("corrupt string length in header")
    f.seek(n, os.SEEK_CUR)


def _read_value(f: BinaryIO, vtype: int, decode_all: bool = False) -> Any:
    if vtype in _SCALARS:
        return _unpack(f, _SCALARS[vtype])
    if vtype == _STR:
        return _read_str(f)
    if vtype == _ARR:
        item_type = _unpack(f, "<I")
        length = _unpack(f, "<Q")
        if length > 1 << 32:
            raise GGUFError("corrupt array length in header")
        if length <= _MAX_DECODED_ARRAY or decode_all:
            return [_read_value(f, item_type) for _ in range(length)]
        if item_type in _SCALARS:
            f.seek(struct.calcsize(_SCALARS[item_type]) * length, os.SEEK_CUR)
        elif item_type == _STR:
            for _ in range(length):
                _skip_str(f)
        else:
            for _ in range(length):
                _read_value(f, item_type)
        return ArrayInfo(item_type, length)
    raise GGUFError(f"unknown metadata value type {vtype}")


def read_gguf(path: str | os.PathLike[str], keep: tuple[str, ...] = ()) -> GGUFInfo:
    """Read the header of a GGUF file. Raises GGUFError (or OSError) with a short reason.

    Long arrays are skipped unless their key is in `keep` (e.g. "tokenizer.ggml.tokens")."""
    path = os.fspath(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic != MAGIC:
            raise GGUFError("not a GGUF file (bad magic bytes)")
        version = _unpack(f, "<I")
        if version not in (2, 3):
            raise GGUFError(f"unsupported GGUF version {version}")
        n_tensors = _unpack(f, "<Q")
        n_kv = _unpack(f, "<Q")
        if n_tensors > 1 << 20 or n_kv > 1 << 20:
            raise GGUFError("corrupt header counts")
        info = GGUFInfo(path=path, version=version, file_size=file_size)
        for _ in range(n_kv):
            key = _read_str(f)
            vtype = _unpack(f, "<I")
            info.metadata[key] = _read_value(f, vtype, key in keep)
        total = 0
        for _ in range(n_tensors):
            name = _read_str(f)
            n_dims = _unpack(f, "<I")
            if n_dims > 8:
                raise GGUFError("corrupt tensor info")
            shape = tuple(_unpack(f, "<Q") for _ in range(n_dims))
            ggml_type = _unpack(f, "<I")
            _unpack(f, "<Q")  # offset
            t = TensorInfo(name, shape, ggml_type)
            info.tensors.append(t)
            total += t.n_bytes or 0
        data_start = f.tell()
        if total and data_start + total > file_size + 64:
            raise GGUFError(
                f"file is truncated: tensors need {total + data_start} bytes, file has {file_size}"
            )
    return info
