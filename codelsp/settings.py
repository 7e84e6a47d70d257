"""The one settings object.

Settings come from four places; later wins:
defaults <- initializationOptions <- workspace/didChangeConfiguration (section `codelsp`)
<- command-line flags. Keys are camelCase on the wire (mirroring the flags); bad values are
reported and replaced by the value from the layer below, never a crash.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

log = logging.getLogger(__name__)

FIM_FAMILIES = ("codellama", "starcoder", "deepseek", "qwen", "codegemma", "codestral", "none")
FIM_ORDERS = ("auto", "psm", "spm", "psm-tail")
LOG_LEVELS = ("debug", "info", "warning", "error")
BACKENDS = ("local", "openai", "llama-server")
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass(frozen=True)
class Settings:
    """Every knob codelsp has. Field docs are shown by `codelsp serve --help` and the README."""

    model: str | None = None  # base (FIM) model: path to a .gguf file
    instruct_model: str | None = None  # model for code actions; default: the base model
    hf_repo: str | None = None  # Hugging Face repository of the base model (with hf_file; wins over model)
    hf_file: str | None = None  # the .gguf file in hf_repo
    instruct_hf_repo: str | None = None  # Hugging Face repository of the instruct model
    instruct_hf_file: str | None = None  # the .gguf file in instruct_hf_repo
    n_gpu_layers: int = -1  # -1: every layer on the GPU when the build has one
    context_size: int = 5000  # tokens of context per request (the seed's num_ctx)
    max_tokens: int = 64  # completion length cap, in tokens
    candidates: int = 1  # inline completion: up to this many distinct suggestions, the greedy one first
    prompt_cache: bool = True  # keep and reuse prompt (KV) state per document
    prompt_cache_bytes: int | None = None  # KV pool for cached documents, bytes; None: from the memory plan
    host_cache_bytes: int | None = None  # system memory for document states evicted from the KV, bytes; None: from the memory plan; 0: off
    kv_cache_type: str = "f16"  # K/V cache storage: f16 | q8_0 | q4_0 (see KV_CACHE_TYPES)
    warm_documents: bool = True  # evaluate an opened document's prompt in the background (low priority)
    temperature: float = 0.01
    top_k: int = 40
    top_p: float = 0.95
    repeat_penalty: float = 1.0
    seed: int = 42
    fim_template: str | None = None  # override the detected FIM family (see FIM_FAMILIES)
    fim_order: str = "auto"  # auto | psm | spm | psm-tail
    timeout_ms: int = 5000  # wall-clock budget for one completion
    n_threads: int | None = None  # CPU threads; default: all cores
    log_level: str = "info"
    system_prompt: str = (
        "You are an expert programmer. Answer with code only unless asked to explain."
    )
    action_max_tokens: int = 512  # answer length cap for code actions, in tokens
    extra_context_tokens: int = 0  # tokens of other open files to put before the current one; 0: off
    backend: str = "local"  # local | openai | llama-server (see BACKENDS)
    url: str | None = None  # remote backend: base URL (for openai up to and including /v1)
    api_key: str | None = field(default=None, repr=False)  # remote backend: bearer token; default: $CODELSP_API_KEY

    # --- construction -------------------------------------------------------------------
    @classmethod
    def keys(cls) -> dict[str, str]:
        """camelCase key -> field name."""
        return {_camel(f.name): f.name for f in fields(cls)}

    def merged(self, options: Mapping[str, Any] | None, source: str) -> tuple["Settings", list[str]]:
        """Return a copy with `options` (camelCase keys) applied, and a list of problems."""
        if not options:
            return self, []
        if not isinstance(options, Mapping):
            return self, [f"{source}: expected an object of settings, got {type(options).__name__}"]
        keys = self.keys()
        changes: dict[str, Any] = {}
        problems: list[str] = []
        for key, value in options.items():
            name = keys.get(key) or (key if key in keys.values() else None)
            if name is None:
                problems.append(f"{source}: unknown setting {key!r} (ignored)")
                continue
            try:
                changes[name] = _coerce(name, value)
            except ValueError as exc:
                kept = "the previous value" if name == "api_key" else repr(getattr(self, name))
                problems.append(f"{source}: setting {key!r}: {exc}; keeping {kept}")
        return dataclasses.replace(self, **changes), problems

    def to_options(self) -> dict[str, Any]:
        return {_camel(f.name): getattr(self, f.name) for f in fields(self)}


_OPTIONAL_STR = {"model", "instruct_model", "fim_template", "url", "api_key",
                 "hf_repo", "hf_file", "instruct_hf_repo", "instruct_hf_file"}
_OPTIONAL_INT = {"n_threads", "prompt_cache_bytes", "host_cache_bytes"}  # None: decided at load time
_POSITIVE = {"context_size", "max_tokens", "timeout_ms", "action_max_tokens", "candidates"}


def _coerce(name: str, value: Any) -> Any:
    f = Settings.__dataclass_fields__[name]
    default = f.default
    if value is None:
        if name in _OPTIONAL_STR or name in _OPTIONAL_INT:
            return None
        raise ValueError("must not be null")
    if name in _OPTIONAL_STR:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        value = value.strip()
        if name == "fim_template" and value and value not in FIM_FAMILIES:
            raise ValueError(f"must be one of {', '.join(FIM_FAMILIES)}")
        if name == "url" and value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value or None
    if name == "backend":
        if value not in BACKENDS:
            raise ValueError(f"must be one of {', '.join(BACKENDS)}")
        return value
    if name == "kv_cache_type":
        if value not in KV_CACHE_TYPES:
            raise ValueError(f"must be one of {', '.join(KV_CACHE_TYPES)}")
        return value
    if name == "fim_order":
        if value not in FIM_ORDERS:
            raise ValueError(f"must be one of {', '.join(FIM_ORDERS)}")
        return value
    if name == "log_level":
        if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.lower()
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if isinstance(default, int) or name in _OPTIONAL_INT:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError("must be an integer")
        value = int(value)
        if name in _POSITIVE and value <= 0:
            raise ValueError("must be positive")
        if name in ("prompt_cache_bytes", "host_cache_bytes", "top_k", "extra_context_tokens") and value < 0:
            raise ValueError("must not be negative")
        if name == "n_threads" and value <= 0:
            raise ValueError("must be positive")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    return value


@dataclass
class SettingsLayers:
    """The layers settings come from, merged on demand (later wins)."""

    init_options: Mapping[str, Any] = field(default_factory=dict)
    client_config: Mapping[str, Any] = field(default_factory=dict)
    cli: Mapping[str, Any] = field(default_factory=dict)

    def effective(self) -> tuple[Settings, list[str]]:
        s = Settings()
        problems: list[str] = []
        for source, options in (
            ("initializationOptions", self.init_options),
            ("configuration", self.client_config),
            ("command line", self.cli),
        ):
            s, p = s.merged(options, source)
            problems += p
        return s, problems
