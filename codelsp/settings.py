"""The one settings object.

Settings come from four places; later wins:
defaults <- initializationOptions <- workspace/didChangeConfiguration (section `codelsp`)
<- command-line flags. Keys are camelCase on the wire (mirroring the flags); bad values are
reported and replaced by the value from the layer below, never a crash.

Each setting is declared once, on its `Settings` field (`setting()`: type, default, bounds or
choices, command-line flag and help, whether a change reloads the models); the checks, the flags,
the camelCase keys and the reload keys are derived from those declarations.
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
SPECULATIVE = ("off", "lookup", "draft")


API_KEY_ENV = "CODELSP_API_KEY"  # read by engine/http.py (kept in step with its API_KEY_ENV)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass(frozen=True)
class Spec:
    """How one setting is read, checked, given on the command line and applied: declared once,
    on its field (`setting()`); coercion, the flags, the camelCase keys and the reload keys come
    from it."""

    type: type  # str, int, float or bool: what a value must be
    optional: bool = False  # None is a value (decided at load time; a string "" is None too)
    choices: tuple[str, ...] = ()  # the values it may take ("must be one of ...")
    fold_case: bool = False  # a choice given in any case, kept in lower case
    bound: str | None = None  # "positive" | "non-negative" (numbers)
    prefixes: tuple[str, ...] = ()  # a non-empty string must start with one of these
    # "model": a change reloads the models; "draft": a change loads or frees the draft model alone
    # (engine/worker.py Engine.load_draft); "live": the next request uses it
    reload: str = "live"
    flags: tuple[str, ...] = ()  # command-line flags (the first one shown); none: not on the command line
    help: str | None = None  # the flag's help
    metavar: str | None = None
    group: str = "model"  # the flag's group: "model" (model and generation) | "remote" (remote backend)
    wire: bool = True  # a camelCase key of the editor's settings; False: the command line only


def setting(default: Any, type: type | None = None, *, repr: bool = True, **spec: Any) -> Any:
    """A Settings field with its Spec (type from the default unless given)."""
    return field(default=default, repr=repr,
                 metadata={"spec": Spec(type=type or default.__class__, **spec)})


@dataclass(frozen=True)
class Settings:
    """Every knob codelsp has. Field docs are shown by `codelsp serve --help` and the README."""

    model: str | None = setting(  # base (FIM) model: path to a .gguf file
        None, str, optional=True, reload="model", flags=("--model",), metavar="PATH",
        help="base/FIM model (.gguf); default: the embedded Qwen2.5-Coder-0.5B-Instruct (codelsp[demo])")
    instruct_model: str | None = setting(  # model for code actions; default: the base model
        None, str, optional=True, reload="model", flags=("--instruct-model",), metavar="PATH",
        help="instruct model for code actions; default: the base model")
    hf_repo: str | None = setting(  # Hugging Face repository of the base model (with hf_file; wins over model)
        None, str, optional=True, reload="model", flags=("--hf-repo",), metavar="OWNER/NAME",
        help="take the base model from this Hugging Face repository (with --hf-file)")
    hf_file: str | None = setting(  # the .gguf file in hf_repo
        None, str, optional=True, reload="model", flags=("--hf-file",), metavar="FILE",
        help="the .gguf file in --hf-repo; downloaded once into the Hugging Face cache")
    instruct_hf_repo: str | None = setting(  # Hugging Face repository of the instruct model
        None, str, optional=True, reload="model", flags=("--instruct-hf-repo",), metavar="OWNER/NAME",
        help="Hugging Face repository of the instruct model")
    instruct_hf_file: str | None = setting(  # the .gguf file in instruct_hf_repo
        None, str, optional=True, reload="model", flags=("--instruct-hf-file",), metavar="FILE",
        help="the .gguf file in --instruct-hf-repo")
    n_gpu_layers: int = setting(  # -1: every layer on the GPU when the build has one
        -1, reload="model", flags=("--n-gpu-layers",), metavar="N",
        help="layers to offload to the GPU (-1: all, the default)")
    context_size: int = setting(  # tokens of context per request (the seed's num_ctx)
        5000, bound="positive", reload="model", flags=("--ctx",), metavar="N",
        help="context size in tokens (default 5000)")
    max_tokens: int = setting(  # completion length cap, in tokens
        64, bound="positive", flags=("--max-tokens",), metavar="N",
        help="completion length cap in tokens (default 64)")
    candidates: int = setting(  # inline completion: up to this many distinct suggestions, the greedy one first
        1, bound="positive", flags=("--candidates",), metavar="N",
        help="inline completion: up to N distinct suggestions, the greedy one first (default 1)")
    prompt_cache: bool = setting(  # keep and reuse prompt (KV) state per document
        True, reload="model", flags=("--no-prompt-cache",),
        help="turn off all prompt/KV reuse (the benchmark baseline)")
    move_runs: bool = setting(  # reuse.py: move cached runs past new text (moves, switches back), within their FIM section
        True, reload="model", flags=("--no-move-runs",),
        help="evaluate cached prompt text again after new text instead of moving its state into place "
             "(the baseline for moves and switches back; answers are the same on HumanEval single-line)")
    warm_documents: bool = setting(  # evaluate an opened document's prompt in the background (low priority)
        True, flags=("--no-warm",), help="do not evaluate opened documents in the background")
    prompt_cache_bytes: int | None = setting(  # KV pool for cached documents, bytes; None: from the memory plan
        None, int, optional=True, bound="non-negative", reload="model", flags=("--prompt-cache-bytes",),
        metavar="BYTES", help="KV pool for cached documents (default: what the memory plan finds free)")
    host_cache_bytes: int | None = setting(  # system memory for document states evicted from the KV, bytes; None: from the memory plan; 0: off
        None, int, optional=True, bound="non-negative", reload="model", flags=("--host-cache-bytes",),
        metavar="BYTES", help="system memory for document states evicted from the KV (default: from the memory plan; 0: off)")
    kv_cache_type: str = setting(  # K/V cache storage: f16 | q8_0 | q4_0 (see KV_CACHE_TYPES)
        "f16", choices=KV_CACHE_TYPES, reload="model", flags=("--kv-cache-type",),
        help="K/V cache storage (default f16; q8_0 halves it, q4_0 quarters it)")
    temperature: float = setting(0.01, bound="non-negative", flags=("--temperature",))
    top_k: int = setting(40, bound="non-negative", flags=("--top-k",))
    top_p: float = setting(0.95, bound="non-negative", flags=("--top-p",))
    repeat_penalty: float = setting(1.0, bound="non-negative", flags=("--repeat-penalty",))
    seed: int = setting(42, flags=("--seed",))
    speculative: str = setting(  # off | lookup (engine/speculative.py) | draft (draftModel drafts: engine/draft.py)
        "off", choices=SPECULATIVE, reload="draft", flags=("--speculative",),
        help="speculative decoding: off (default), lookup (guess the next tokens from the prompt and what "
             "was generated) or draft (draftModel guesses them); the guesses are checked in one batch "
             "(see README, Speculative decoding)")
    draft_model: str | None = setting(  # a small GGUF of the base model's vocabulary that drafts for speculative "draft"
        None, str, optional=True, reload="draft", flags=("--draft-model",), metavar="PATH",
        help="a small model of the base model's vocabulary (.gguf, e.g. Qwen2.5-Coder-0.5B for a Qwen2.5-Coder-7B) "
             "that guesses the next tokens when speculative is draft")
    fim_template: str | None = setting(  # override the detected FIM family (see FIM_FAMILIES)
        None, str, optional=True, choices=FIM_FAMILIES, reload="model", flags=("--fim-template", "--fim-family"),
        help="override the detected FIM family")
    fim_order: str = setting(  # auto | psm | spm | psm-tail
        "auto", choices=FIM_ORDERS, reload="model", flags=("--fim-order",),
        help="FIM order (default auto: the family's best)")
    timeout_ms: int = setting(  # wall-clock budget for one completion
        5000, bound="positive", flags=("--timeout-ms",), metavar="MS", help="wall-clock budget for one completion")
    n_threads: int | None = setting(  # CPU threads; default: all cores
        None, int, optional=True, bound="positive", reload="model", flags=("--threads",), metavar="N",
        help="CPU threads (default: all cores)")
    log_level: str = setting(
        "info", choices=LOG_LEVELS, fold_case=True, flags=("--log-level",),
        help="log level (default info); logs go to stderr")
    system_prompt: str = setting(
        "You are an expert programmer. Answer with code only unless asked to explain."
    )
    action_max_tokens: int = setting(512, bound="positive")  # answer length cap for code actions, in tokens
    extra_context_tokens: int = setting(0, bound="non-negative")  # tokens of other open files to put before the current one; 0: off
    # tokens of project definitions the file uses (completion/repo.py); 0: off. Off by default until
    # `codelsp eval --cross-file` shows it pays (README, Cross-file lines); measured at 768
    repo_context_tokens: int = setting(
        0, bound="non-negative", flags=("--repo-context-tokens",), metavar="N",
        help="tokens of definitions from the rest of the project to put before the file (default 0: off; 768 is the size measured)")
    next_edit: bool = setting(  # next-edit suggestions (textDocument/copilotInlineEdit); opt-in: off unless asked
        False, flags=("--next-edit-suggestions",),
        help="answer textDocument/copilotInlineEdit with predicted next edits (off by default; copilot-lsp.nvim's "
             "nextEditSuggestions.enabled also turns it on)")
    next_edit_model: str | None = setting(  # a dedicated next-edit GGUF (Sweep next-edit); default: the base model
        None, str, optional=True, reload="model", flags=("--next-edit-model",), metavar="PATH",
        help="a dedicated next-edit model (.gguf, e.g. Sweep next-edit); default: the base model")
    backend: str = setting(  # local | openai | llama-server (see BACKENDS)
        "local", choices=BACKENDS, reload="model", flags=("--backend",), group="remote",
        help="local (default), openai (/v1/completions) or llama-server (/infill)")
    url: str | None = setting(  # remote backend: base URL (for openai up to and including /v1)
        None, str, optional=True, prefixes=("http://", "https://"), reload="model", flags=("--url",),
        group="remote", metavar="URL", help="server URL: for openai up to and including /v1, for llama-server its root")
    api_key: str | None = setting(  # remote backend: bearer token; default: $CODELSP_API_KEY
        None, str, repr=False, optional=True, reload="model", flags=("--api-key",), group="remote",
        metavar="KEY", help=f"bearer token (better: the {API_KEY_ENV} environment variable)")
    # post-processing rules turned off (completion/postprocess.py RULES), for measurement only:
    # `codelsp eval --ablate RULES` starts `codelsp serve --ablate RULES`; not an editor setting
    ablate: frozenset[str] = setting(frozenset(), wire=False, repr=False)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def keys(cls) -> dict[str, str]:
        """camelCase key -> field name."""
        return {_camel(f.name): f.name for f in fields(cls) if spec(f.name).wire}

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
        return {_camel(f.name): getattr(self, f.name) for f in fields(self) if spec(f.name).wire}


def spec(name: str) -> Spec:
    """The Spec of setting `name` (a field name)."""
    return Settings.__dataclass_fields__[name].metadata["spec"]


def _coerce(name: str, value: Any) -> Any:
    s = spec(name)
    if value is None:
        if s.optional:
            return None
        raise ValueError("must not be null")
    if s.optional and s.type is str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        value = value.strip()
        if s.choices and value and value not in s.choices:
            raise ValueError(f"must be one of {', '.join(s.choices)}")
        if s.prefixes and value and not value.startswith(s.prefixes):
            raise ValueError(f"must start with {' or '.join(s.prefixes)}")
        return value or None
    if s.choices:
        if s.fold_case:
            if not isinstance(value, str) or value.lower() not in s.choices:
                raise ValueError(f"must be one of {', '.join(s.choices)}")
            return value.lower()
        if value not in s.choices:
            raise ValueError(f"must be one of {', '.join(s.choices)}")
        return value
    if s.type is bool:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if s.type is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError("must be an integer")
        value = int(value)
        if s.bound == "positive" and value <= 0:
            raise ValueError("must be positive")
        if s.bound == "non-negative" and value < 0:
            raise ValueError("must not be negative")
        return value
    if s.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        if s.bound == "non-negative" and value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if s.type is str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    return value


# --- what the declarations give ---------------------------------------------------------------

def reload_key(settings: Settings, kind: str = "model") -> tuple:
    """The values of the settings declared reload=`kind`: when those of "model" change, the models
    reload; when only those of "draft" change, the draft model alone is loaded or freed."""
    return tuple(getattr(settings, f.name) for f in fields(Settings) if spec(f.name).reload == kind)


def flag_arguments() -> list[tuple[str, tuple[str, ...], dict[str, Any]]]:
    """(group, flags, argparse keyword arguments) of every setting given on the command line, in
    declaration order; the value lands on the namespace under the field name."""
    out = []
    for f in fields(Settings):
        s = spec(f.name)
        if not s.flags:
            continue
        kwargs: dict[str, Any] = {"dest": f.name}
        if s.type is bool:  # a flag that turns a default-on setting off
            kwargs.update(action="store_const", const=not f.default)
        else:
            if s.choices:
                kwargs["choices"] = s.choices
            elif s.type in (int, float):
                kwargs["type"] = s.type
            if s.metavar:
                kwargs["metavar"] = s.metavar
        if s.help:
            kwargs["help"] = s.help
        out.append((s.group, s.flags, kwargs))
    return out


def flag_options(namespace: Any) -> dict[str, Any]:
    """The settings given as flags on an argparse namespace, as camelCase keys (only those given)."""
    out = {}
    for f in fields(Settings):
        if spec(f.name).flags:
            value = getattr(namespace, f.name, None)
            if value is not None:
                out[_camel(f.name)] = value
    return out


def flag_of(key: str) -> str:
    """The command-line flag of camelCase setting `key` (e.g. contextSize -> --ctx); KeyError when
    it has none."""
    flags = spec(Settings.keys()[key]).flags
    if not flags:
        raise KeyError(key)
    return flags[0]


def flag_args(options: Mapping[str, Any]) -> list[str]:
    """Command-line arguments that give `options` (camelCase keys, as `flag_options` returns them)
    to another codelsp process: `[flag, value]` per setting, the bare flag for an on/off setting
    set to the value its flag gives (`warmDocuments` False -> `--no-warm`), nothing for one left at
    its default. KeyError for a key without a flag."""
    out: list[str] = []
    for key, value in options.items():
        name = Settings.keys()[key]
        flag = flag_of(key)
        if spec(name).type is bool:
            default = next(f.default for f in fields(Settings) if f.name == name)
            if bool(value) != default:
                out.append(flag)
            continue
        out += [flag, str(value)]
    return out


@dataclass
class SettingsLayers:
    """The layers settings come from, merged on demand (later wins)."""

    init_options: Mapping[str, Any] = field(default_factory=dict)
    client_config: Mapping[str, Any] = field(default_factory=dict)
    cli: Mapping[str, Any] = field(default_factory=dict)
    ablate: frozenset[str] = frozenset()  # post-processing rules off (`serve --ablate`, measurement only)

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
        if self.ablate:
            s = dataclasses.replace(s, ablate=frozenset(self.ablate))
        return s, problems
