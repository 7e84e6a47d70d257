"""`codelsp models`: the GGUF models on this machine, with their FIM family.

It looks where models usually are — the configured paths, the Hugging Face cache, LM Studio's and
ollama's model folders, llama.cpp's download cache — and reads each file's GGUF header (never the
weights): architecture, size, quantization, and the FIM family from the vocabulary's tokens, by the
same rules (fim.detect_family) the loader applies to llama.cpp's vocabulary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from codelsp.models.errors import ModelError
from codelsp.models.families import FAMILIES, detect_family, resolve_ids
from codelsp.models.gguf import GGUFError, GGUFInfo, read_gguf
from codelsp.settings import Settings

log = logging.getLogger(__name__)

TOKENS_KEY = "tokenizer.ggml.tokens"

# llama.cpp's llama_ftype (general.file_type)
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}
# ggml_type of a tensor, for files without general.file_type
TENSOR_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
    29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}
_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.I)
_FIM_TEXTS = {t for fam in FAMILIES.values() for group in (fam.pre, fam.suf, fam.mid, fam.stops) for t in group}


# --- reading one file ---------------------------------------------------------------------
def fim_family(info: GGUFInfo) -> tuple[str, str]:
    """(family, how it was detected) from the GGUF vocabulary; ("none", why) without FIM tokens."""
    tokens = info.metadata.get(TOKENS_KEY)
    if not isinstance(tokens, list):
        return "none", "no vocabulary in the file"
    ids: dict[str, int] = {}
    for i, text in enumerate(tokens):
        if text in _FIM_TEXTS and text not in ids:
            ids[text] = i

    def text_of(i: int) -> str:
        return tokens[i] if 0 <= i < len(tokens) else ""

    meta_pre = info.metadata.get("tokenizer.ggml.fim_pre_token_id", info.metadata.get("tokenizer.ggml.prefix_token_id"))
    pre_id = meta_pre if isinstance(meta_pre, int) else -1
    family, how = detect_family(text_of, ids.get, pre_id, info.architecture)
    if family == "none":
        return family, how
    how = "GGUF metadata" if how == "llama.cpp vocab" else how
    pre, suf, mid = resolve_ids(family, ids.get)[:3]
    fam = FAMILIES[family]
    if any(need and tid is None for tid, need in ((pre, fam.pre), (suf, fam.suf), (mid, fam.mid))):
        if how != "GGUF metadata":
            return "none", f"{family} tokens incomplete"
    return family, how


def quantization(info: GGUFInfo) -> str:
    ftype = info.metadata.get("general.file_type")
    if isinstance(ftype, int) and ftype in FILE_TYPES:
        return FILE_TYPES[ftype]
    weights = Counter(t.ggml_type for t in info.tensors if len(t.shape) >= 2)
    if not weights:
        return "?"
    return TENSOR_TYPES.get(weights.most_common(1)[0][0], "?")


@dataclass
class Found:
    """One model file and where it was found."""

    source: str  # configured | argument | huggingface | lmstudio | ollama | llama.cpp | demo
    name: str  # how the source names it (repo and file, ollama tag, relative path)
    path: Path
    hf: tuple[str, str] | None = None  # (repo, file) in the Hugging Face cache
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "name": self.name, "path": str(self.path)}
        if self.hf:
            out["hfRepo"], out["hfFile"] = self.hf
        out.update(self.extra)
        try:
            info = read_gguf(self.path, keep=(TOKENS_KEY,))
        except (GGUFError, OSError) as exc:
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            out.update(error=msg, family=None, fim=False)
            return out
        family, how = fim_family(info)
        size = info.file_size
        m = _SPLIT_RE.search(self.path.name)
        if m:  # a model split into N files: count them all
            stem = self.path.name[: m.start()]
            parts = list(self.path.parent.glob(f"{stem}-*-of-{m.group(2)}.gguf"))
            size = sum(p.stat().st_size for p in parts)
            out["parts"] = len(parts)
        out.update(
            error=None,
            family=family,
            fim=family != "none",
            fimDetectedBy=how,
            sizeBytes=size,
            quantization=quantization(info),
            architecture=info.architecture,
            modelName=info.metadata.get("general.name"),
            layers=info.n_layers,
            contextLength=info.context_length,
            chatTemplate=info.has_chat_template,
        )
        return out


# --- where models are ---------------------------------------------------------------------
def _ggufs(folder: Path) -> Iterator[Path]:
    try:
        for p in sorted(folder.rglob("*")):
            if p.suffix.lower() == ".gguf" and p.is_file():
                m = _SPLIT_RE.search(p.name)
                if m and int(m.group(1)) != 1:
                    continue
                yield p
    except OSError:
        return


def hf_models(cache: Path) -> Iterator[Found]:
    if not cache.is_dir():
        return
    for repo_dir in sorted(cache.glob("models--*")):
        repo = repo_dir.name[len("models--"):].replace("--", "/")
        snaps = repo_dir / "snapshots"
        for snap in sorted(snaps.glob("*")) if snaps.is_dir() else ():
            for p in _ggufs(snap):
                rel = p.relative_to(snap).as_posix()
                yield Found("huggingface", f"{repo} {rel}", p, hf=(repo, rel), extra={"revision": snap.name})


def lmstudio_models(home: Path) -> Iterator[Found]:
    for root in (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"):
        if root.is_dir():
            for p in _ggufs(root):
                yield Found("lmstudio", p.relative_to(root).as_posix(), p)


def ollama_roots(home: Path) -> list[Path]:
    roots = []
    if os.environ.get("OLLAMA_MODELS"):
        roots.append(Path(os.path.expanduser(os.environ["OLLAMA_MODELS"])))
    roots += [home / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]
    return roots


def ollama_models(home: Path) -> Iterator[Found]:
    """ollama keeps manifests (manifests/HOST/NAMESPACE/MODEL/TAG, JSON) that point at blobs
    (blobs/sha256-HEX); the layer of media type ...image.model is the GGUF file."""
    for root in ollama_roots(home):
        manifests = root / "manifests"
        if not manifests.is_dir():
            continue
        for mf in sorted(p for p in manifests.rglob("*") if p.is_file()):
            parts = mf.relative_to(manifests).parts
            if len(parts) != 4:
                continue
            host, namespace, model, tag = parts
            try:
                data = json.loads(mf.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            for layer in data.get("layers", []) if isinstance(data, dict) else []:
                if not isinstance(layer, dict) or layer.get("mediaType") != "application/vnd.ollama.image.model":
                    continue
                digest = str(layer.get("digest", ""))
                blob = root / "blobs" / digest.replace(":", "-")
                if not blob.is_file():
                    continue
                name = f"{model}:{tag}"
                if namespace != "library":
                    name = f"{namespace}/{name}"
                if host != "registry.ollama.ai":
                    name = f"{host}/{name}"
                yield Found("ollama", name, blob)


def llamacpp_cache(home: Path) -> Path:
    if os.environ.get("LLAMA_CACHE"):
        return Path(os.path.expanduser(os.environ["LLAMA_CACHE"]))
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "llama.cpp"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else home / ".cache") / "llama.cpp"


def configured(settings: Settings) -> Iterator[Found]:
    from codelsp.models.hub import cached_file
    from codelsp.models import demo

    for label, value in (("model", settings.model), ("instructModel", settings.instruct_model)):
        if value:
            yield Found("configured", label, Path(os.path.expanduser(value)))
    for label, repo, file in (
        ("hfRepo", settings.hf_repo, settings.hf_file),
        ("instructHfRepo", settings.instruct_hf_repo, settings.instruct_hf_file),
    ):
        if repo and file:
            path = cached_file(repo, file)
            if path is not None:
                yield Found("configured", f"{label} {repo} {file}", path, hf=(repo, file))
            else:
                yield Found("configured", f"{label} {repo} {file}", Path(file), hf=(repo, file),
                            extra={"notDownloaded": True})
    if demo.present():
        try:
            yield Found("demo", f"embedded default model {demo.DEMO.name}", demo.demo_model_path())
        except ModelError as exc:
            log.warning("%s", exc)


def find_models(settings: Settings, paths: Iterable[str] = (), home: Path | None = None) -> tuple[list[Found], list[str]]:
    """Every GGUF file found, first source first (a file found twice is listed once), and the
    places searched."""
    from codelsp.models.hub import hf_cache_dir

    home = home or Path.home()
    searched = []
    sources: list[Iterable[Found]] = [configured(settings)]
    for p in paths:
        path = Path(os.path.expanduser(p))
        searched.append(str(path))
        if path.is_dir():
            sources.append(Found("argument", f.relative_to(path).as_posix(), f) for f in _ggufs(path))
        else:
            sources.append([Found("argument", path.name, path)])
    hf = hf_cache_dir()
    searched.append(str(hf))
    sources.append(hf_models(hf))
    searched += [str(home / ".lmstudio" / "models"), str(home / ".cache" / "lm-studio" / "models")]
    sources.append(lmstudio_models(home))
    searched += [str(r) for r in ollama_roots(home)]
    sources.append(ollama_models(home))
    lc = llamacpp_cache(home)
    searched.append(str(lc))
    sources.append(Found("llama.cpp", p.relative_to(lc).as_posix(), p) for p in (_ggufs(lc) if lc.is_dir() else ()))
    seen: set[str] = set()
    out = []
    for source in sources:
        for f in source:
            if f.extra.get("notDownloaded"):
                out.append(f)
                continue
            try:
                key = str(f.path.resolve())
            except OSError:
                key = str(f.path)
            if key in seen:
                continue
            seen.add(key)
            out.append(f)
    return out, searched


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1 << 30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB"


def run_models(args: argparse.Namespace, options: dict[str, Any]) -> int:
    settings, problems = Settings().merged(options, "command line")
    for p in problems:
        print(f"codelsp: {p}", file=sys.stderr)
    found, searched = find_models(settings, args.paths)
    rows = []
    for f in found:
        if f.extra.get("notDownloaded"):
            d = {"source": f.source, "name": f.name, "path": None, "hfRepo": f.hf[0], "hfFile": f.hf[1],
                 "error": "not downloaded yet (codelsp downloads it on first use)", "family": None, "fim": False}
        elif not f.path.exists():
            d = {"source": f.source, "name": f.name, "path": str(f.path), "error": "file not found",
                 "family": None, "fim": False}
        else:
            d = f.describe()
        rows.append(d)
    if args.json:
        print(json.dumps({"models": rows, "searched": searched}, indent=2))
        return 0
    out = sys.stdout
    if not rows:
        print("no GGUF models found; searched:", file=out)
        for s in searched:
            print(f"  {s}", file=out)
        print("pass --model PATH, or --hf-repo OWNER/NAME --hf-file FILE.gguf to download one", file=out)
        return 0
    print(f"{'FAMILY':<10} {'FIM':<3} {'SIZE':>9} {'QUANT':<8} {'SOURCE':<11} NAME", file=out)
    for d in rows:
        if d.get("error"):
            print(f"{'?':<10} {'-':<3} {'-':>9} {'-':<8} {d['source']:<11} {d['name']}: {d['error']}", file=out)
        else:
            print(
                f"{d['family']:<10} {'yes' if d['fim'] else 'no':<3} {_size(d['sizeBytes']):>9} "
                f"{d['quantization']:<8} {d['source']:<11} {d['name']}",
                file=out,
            )
        if d.get("path"):
            print(f"{'':<45}{d['path']}", file=out)
    print("\nuse one with --model PATH (Hugging Face cache: --hf-repo OWNER/NAME --hf-file FILE); "
          "FIM 'no' models only continue the text before the cursor", file=out)
    return 0
