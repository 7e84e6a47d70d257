"""Models from the Hugging Face Hub: `--hf-repo REPO --hf-file FILE`.

Downloads go through huggingface_hub (the optional `hf` extra: `pip install 'codelsp[hf]'`) into
the standard Hugging Face cache, so the file is shared with every other tool that uses it. Once a
file is in the cache codelsp uses it without contacting the Hub (no network at every editor start);
with `HF_HUB_OFFLINE=1` it never contacts the Hub at all.

The cache lookup is our own (the cache layout is a documented format:
`models--OWNER--NAME/refs/REVISION` holds a commit hash, and
`models--OWNER--NAME/snapshots/COMMIT/FILE` the file), so a cached model also works where
huggingface_hub is not installed.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

from codelsp.models.errors import ModelError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'codelsp[hf]'"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

# progress(message, percentage or None)
Progress = Callable[[str, "int | None"], None]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE"))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved as huggingface_hub resolves it."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second is the older name
        if os.environ.get(name):
            return Path(os.path.expanduser(os.environ[name]))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def repo_folder(repo: str, cache: Path | None = None) -> Path:
    return (cache or hf_cache_dir()) / ("models--" + repo.replace("/", "--"))


def cached_file(repo: str, filename: str, revision: str = "main", cache: Path | None = None) -> Path | None:
    """The cached copy of REPO/FILE at `revision` (a branch, tag or commit), or None."""
    folder = repo_folder(repo, cache)
    commit = revision if _COMMIT_RE.match(revision) else None
    if commit is None:
        try:
            commit = (folder / "refs" / revision).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
    candidate = folder / "snapshots" / commit / filename
    return candidate if candidate.is_file() else None


def check_names(repo: str | None, filename: str | None, what: str = "") -> tuple[str, str]:
    prefix = f"{what} " if what else ""
    flag = "--instruct-hf" if what else "--hf"
    if not repo:
        raise ModelError(f"{prefix}{flag}-file {filename} needs {flag}-repo OWNER/NAME (setting {'instructHfRepo' if what else 'hfRepo'})")
    if not filename:
        listing = ""
        snapshots = repo_folder(repo) / "snapshots"
        cached = sorted({p.name for p in snapshots.glob("*/*.gguf")}) if snapshots.is_dir() else []
        if cached:
            listing = f"; cached: {', '.join(cached)}"
        raise ModelError(
            f"{prefix}{flag}-repo {repo} needs {flag}-file: the .gguf file in the repository to use "
            f"(setting {'instructHfFile' if what else 'hfFile'}){listing}"
        )
    if not _REPO_RE.match(repo) or ".." in repo:
        raise ModelError(f"{prefix}Hugging Face repository {repo!r} is not a repository id (expected OWNER/NAME)")
    if filename.startswith("/") or ".." in Path(filename).parts:
        raise ModelError(f"{prefix}Hugging Face file {filename!r} must be a path inside the repository")
    return repo, filename


def hf_model_path(
    repo: str | None,
    filename: str | None,
    *,
    progress: Progress | None = None,
    what: str = "",
) -> Path:
    """The local path of REPO/FILE: from the cache, or downloaded into it. Raises ModelError.

    `progress(message, percent)` receives download progress (for the editor's $/progress); without
    it a progress bar is drawn on stderr when stderr is a terminal, and a line is logged every
    10 % otherwise.
    """
    repo, filename = check_names(repo, filename, what)
    cache = hf_cache_dir()
    cached = cached_file(repo, filename, cache=cache)
    if cached is not None:
        log.debug("using %s/%s from the Hugging Face cache: %s", repo, filename, cached)
        return cached
    if offline():
        raise ModelError(
            f"HF_HUB_OFFLINE is set and {repo} {filename} is not in the Hugging Face cache ({cache}); "
            "unset HF_HUB_OFFLINE to download it"
        )
    try:
        import huggingface_hub
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise ModelError(
            f"downloading {repo} {filename} needs huggingface_hub: {INSTALL_HINT} "
            "(or download the file yourself and pass --model PATH)"
        ) from None
    log.info("downloading %s %s from %s into %s", repo, filename, _endpoint(), cache)
    kwargs: dict[str, Any] = {}
    if "tqdm_class" in inspect.signature(huggingface_hub.hf_hub_download).parameters:  # 1.1 and later
        kwargs["tqdm_class"] = _progress_class(f"{repo} {filename}", progress)
    elif progress is not None:
        progress(f"downloading {repo} {filename} (update huggingface_hub for progress figures)", None)
    try:
        path = huggingface_hub.hf_hub_download(
            repo_id=repo, filename=filename, cache_dir=str(cache), library_name="codelsp", **kwargs
        )
    except hf_errors.GatedRepoError:
        raise ModelError(
            f"{repo} is gated: accept its licence on the Hub, then log in with `hf auth login` (or set HF_TOKEN)"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelError(
            f"Hugging Face repository {repo} not found (a private repository needs `hf auth login` or HF_TOKEN)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise ModelError(f"{repo} has no revision main") from None
    except hf_errors.LocalEntryNotFoundError as exc:
        raise ModelError(f"cannot download {repo} {filename} (no connection to {_endpoint()}?): {_one_line(exc)}") from None
    except hf_errors.EntryNotFoundError:
        raise ModelError(f"Hugging Face repository {repo} has no file {filename}") from None
    except (OSError, ValueError, hf_errors.HfHubHTTPError) as exc:
        raise ModelError(f"downloading {repo} {filename} failed: {_one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - network stacks raise their own types (httpx …)
        raise ModelError(f"downloading {repo} {filename} failed: {type(exc).__name__}: {_one_line(exc)}") from None
    log.info("downloaded %s %s to %s", repo, filename, path)
    return Path(path)


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _size(n: float) -> str:
    if n >= 1 << 30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB"


def _progress_class(label: str, progress: Progress | None) -> type:
    """A tqdm class for huggingface_hub: a bar on a terminal, `progress` callbacks in the editor."""
    from tqdm import tqdm

    terminal = progress is None and sys.stderr.isatty()

    class DownloadProgress(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["file"] = sys.stderr
            kwargs["disable"] = not terminal
            kwargs["desc"] = label
            self._done = int(kwargs.get("initial") or 0)
            self._total = kwargs.get("total")
            self._last_pct = -1
            self._last_time = 0.0
            super().__init__(*args, **kwargs)
            self._report(force=True)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            self._report()
            return super().update(n)

        def close(self) -> None:
            if not getattr(self, "_closed_report", False):
                self._closed_report = True
                self._report(force=True)
            super().close()

        def _report(self, force: bool = False) -> None:
            total = self._total
            pct = int(self._done * 100 / total) if total else None
            now = time.monotonic()
            if progress is not None:
                # at most one message per percent and per 0.2 s: $/progress is for humans
                if force or (pct != self._last_pct and now - self._last_time >= 0.2):
                    self._last_pct, self._last_time = pct if pct is not None else -1, now
                    size = f"{_size(self._done)} of {_size(total)}" if total else _size(self._done)
                    progress(f"downloading {label}: {size}", pct)
            elif not terminal and pct is not None and (force or pct // 10 != self._last_pct // 10):
                self._last_pct = pct
                log.info("downloading %s: %d%% (%s of %s)", label, pct, _size(self._done), _size(total or 0))

    return DownloadProgress
