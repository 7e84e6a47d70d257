"""Getting a model and fitting it in memory: `codelsp models`, Hugging Face downloads and the
cache, the memory plan (GPU offload that fits, models that do not fit at all)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dataclasses import replace
from lsprotocol import types

from codelsp.models import demo, memplan
from codelsp.models.gguf import read_gguf
from codelsp.settings import Settings
from support import complete_at, lsp_server, open_doc, run_cli

ADD = "def add(a, b):\n    \n"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
GiB = 1 << 30


@pytest.fixture
def add_py(tmp_path):
    path = tmp_path / "add.py"
    path.write_text(ADD)
    return path


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A home of our own: nothing from the developer's real caches leaks into the listing."""
    env = {
        "HOME": str(tmp_path / "home"),
        "HF_HOME": str(tmp_path / "hf"),
        "XDG_CACHE_HOME": str(tmp_path / "home" / ".cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_CACHE": "",
        "HUGGINGFACE_HUB_CACHE": "",
        "HF_HUB_OFFLINE": "",
        "OLLAMA_MODELS": "",
        "LLAMA_CACHE": "",
        # the default model as a user has it after its first use: assembled in codelsp's cache
        "CODELSP_CACHE_DIR": str(demo.demo_model_path().parent),
    }
    env.update(extra)
    return env


def hf_cache_layout(hf_home: Path, repo: str, filename: str, source: Path, commit: str = COMMIT) -> Path:
    """Lay out the Hugging Face cache as huggingface_hub does: blob, snapshot symlink, refs/main."""
    folder = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    blob = folder / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, blob)
    snap = folder / "snapshots" / commit / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snap


# --- codelsp models ----------------------------------------------------------------------
def test_models_lists_every_place_with_family_and_fim(model_factory, tmp_path):
    home = tmp_path / "home"
    env = clean_env(tmp_path)
    codellama = model_factory("codellama")
    qwen = model_factory("qwen")
    starcoder = model_factory("starcoder", fim_metadata=True)
    plain = model_factory("none")
    deepseek = model_factory("deepseek")
    hf_cache_layout(tmp_path / "hf", "someone/CodeLlama-GGUF", "codellama.Q8_0.gguf", codellama.path)
    lms = home / ".lmstudio" / "models" / "lmstudio-community" / "Qwen-Coder-GGUF" / "qwen.gguf"
    lms.parent.mkdir(parents=True)
    shutil.copyfile(qwen.path, lms)
    # ollama: a manifest naming the model layer's digest; the blob is a GGUF without extension
    data = starcoder.path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    blobs = home / ".ollama" / "models" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"sha256-{digest}").write_bytes(data)
    manifest = home / ".ollama" / "models" / "manifests" / "registry.ollama.ai" / "library" / "starcoder2" / "3b"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64},
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": len(data)},
    ]}))
    extra_dir = tmp_path / "mine"
    extra_dir.mkdir()
    shutil.copyfile(deepseek.path, extra_dir / "deepseek.gguf")
    (extra_dir / "notes.gguf").write_text("not a model")

    proc = run_cli("models", "--json", "--model", str(plain.path), str(extra_dir), env=env)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["models"]
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)

    (configured,) = by_source["configured"]
    assert configured["path"] == str(plain.path) and configured["family"] == "none" and not configured["fim"]
    (hf,) = by_source["huggingface"]
    assert (hf["hfRepo"], hf["hfFile"], hf["family"], hf["fim"]) == ("someone/CodeLlama-GGUF", "codellama.Q8_0.gguf", "codellama", True)
    assert hf["sizeBytes"] == codellama.path.stat().st_size and hf["revision"] == COMMIT
    (lm,) = by_source["lmstudio"]
    assert lm["name"] == "lmstudio-community/Qwen-Coder-GGUF/qwen.gguf" and lm["family"] == "qwen"
    (ol,) = by_source["ollama"]
    assert ol["name"] == "starcoder2:3b" and ol["family"] == "starcoder" and ol["fimDetectedBy"] == "GGUF metadata"
    assert ol["path"].endswith(f"sha256-{digest}")
    args = {Path(r["path"]).name: r for r in by_source["argument"]}
    assert args["deepseek.gguf"]["family"] == "deepseek" and args["deepseek.gguf"]["architecture"] == "llama"
    assert "not a GGUF file" in args["notes.gguf"]["error"]
    for row in rows:
        if not row.get("error"):
            assert row["quantization"] and row["layers"] == (24 if row["source"] == "demo" else 1)
    (default,) = by_source["demo"]
    assert default["family"] == "qwen" and default["fim"] and default["sizeBytes"] == demo.DEMO.size

    table = run_cli("models", "--model", str(plain.path), env=env)
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if "starcoder2:3b" in ln)
    assert line.split()[:2] == ["starcoder", "yes"] and "ollama" in line
    assert any(ln.split()[:2] == ["none", "no"] and "configured" in ln for ln in table.stdout.splitlines())


@pytest.mark.parametrize("family", ["codellama", "starcoder", "deepseek", "qwen", "codegemma", "codestral", "none"])
def test_models_family_matches_what_the_loader_detects(model_factory, tmp_path, family):
    model = model_factory(family)
    listed = json.loads(run_cli("models", "--json", str(model.path), env=clean_env(tmp_path)).stdout)
    (row,) = [r for r in listed["models"] if r["path"] == str(model.path)]
    doctor = run_cli("doctor", "--model", str(model.path))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    fim_line = next(ln for ln in doctor.stdout.splitlines() if ln.startswith("  FIM"))
    loaded = "none" if "no FIM tokens" in fim_line else fim_line.split()[1]
    assert row["family"] == loaded == family


def test_models_with_nothing_found_says_where_it_looked(tmp_path):
    shadow = tmp_path / "shadow"  # empty packages hide the default model's pieces
    for pkg, _ in demo.DEMO.parts:
        (shadow / pkg).mkdir(parents=True)
        (shadow / pkg / "__init__.py").write_text("")
    proc = run_cli("models", env=clean_env(tmp_path, PYTHONPATH=str(shadow), CODELSP_CACHE_DIR=str(tmp_path / "empty")))
    assert proc.returncode == 0, proc.stderr
    assert "no GGUF models found" in proc.stdout
    assert str(tmp_path / "hf" / "hub") in proc.stdout and str(tmp_path / "home" / ".lmstudio" / "models") in proc.stdout


# --- Hugging Face: the cache ---------------------------------------------------------------
def test_hf_repo_resolves_from_the_cache_offline(model_factory, tmp_path, add_py):
    model = model_factory("starcoder")
    hf_cache_layout(tmp_path / "hf", "someone/Star-GGUF", "star.Q4_K_M.gguf", model.path)
    env = clean_env(tmp_path, HF_HUB_OFFLINE="1")
    proc = run_cli("complete", f"{add_py}:2:5", "--hf-repo", "someone/Star-GGUF", "--hf-file", "star.Q4_K_M.gguf", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "return a + b\n"
    doctor = run_cli("doctor", "--hf-repo", "someone/Star-GGUF", "--hf-file", "star.Q4_K_M.gguf", env=env)
    assert doctor.returncode == 0, doctor.stdout
    assert f"snapshots/{COMMIT}/star.Q4_K_M.gguf" in doctor.stdout


def test_hf_cached_model_works_without_huggingface_hub(model_factory, tmp_path, add_py):
    model = model_factory("qwen")
    hf_cache_layout(tmp_path / "hf", "someone/Qwen-GGUF", "q.gguf", model.path)
    env = clean_env(tmp_path, PYTHONPATH=str(_no_huggingface_hub(tmp_path)))
    proc = run_cli("complete", f"{add_py}:2:5", "--hf-repo", "someone/Qwen-GGUF", "--hf-file", "q.gguf", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "return a + b\n"


def _no_huggingface_hub(tmp_path: Path) -> Path:
    """A path entry whose huggingface_hub fails to import, as when the extra is not installed."""
    root = tmp_path / "nohub"
    (root / "huggingface_hub").mkdir(parents=True, exist_ok=True)
    (root / "huggingface_hub" / "__init__.py").write_text("raise ImportError('No module named huggingface_hub')\n")
    return root


@pytest.mark.parametrize(
    "args, extra_env, expect",
    [
        (["--hf-repo", "someone/Missing-GGUF", "--hf-file", "m.gguf"], {"HF_HUB_OFFLINE": "1"},
         "HF_HUB_OFFLINE is set and someone/Missing-GGUF m.gguf is not in the Hugging Face cache"),
        (["--hf-repo", "someone/Missing-GGUF", "--hf-file", "m.gguf"], "nohub",
         "needs huggingface_hub: pip install 'codelsp[hf]'"),
        (["--hf-repo", "someone/Missing-GGUF"], {}, "--hf-repo someone/Missing-GGUF needs --hf-file"),
        (["--hf-file", "m.gguf"], {}, "--hf-file m.gguf needs --hf-repo"),
        (["--hf-repo", "someone/X", "--hf-file", "../../etc/passwd"], {}, "must be a path inside the repository"),
    ],
    ids=["offline-not-cached", "extra-not-installed", "no-file", "no-repo", "path-escape"],
)
def test_hf_problems_are_one_clear_line(tmp_path, add_py, args, extra_env, expect):
    env = clean_env(tmp_path)
    if extra_env == "nohub":
        env["PYTHONPATH"] = str(_no_huggingface_hub(tmp_path))
    else:
        env.update(extra_env)
    proc = run_cli("complete", f"{add_py}:2:5", *args, env=env)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expect in lines[0]


# --- Hugging Face: downloads from a hub on 127.0.0.1 ----------------------------------------
class FakeHub:
    """A local server that answers like the Hub's resolve endpoint: HEAD with X-Repo-Commit /
    ETag / Content-Length, GET with Range support. `cut_first_get_at` cuts the first transfer
    after that many bytes, as a flaky network does."""

    def __init__(self, files: dict[str, bytes], cut_first_get_at: int | None = None):
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut = cut_first_get_at
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                rng = self.headers.get("Range")
                hub.requests.append((self.command, self.path, rng))
                m = re.match(r"^/(.+?)/resolve/main/(.+)$", self.path)
                key = f"{m.group(1)}/{m.group(2)}" if m else None
                if key not in hub.files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = hub.files[key]
                start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                body = data[start:]
                if hub.cut is not None and not start:
                    self.wfile.write(body[: hub.cut])
                    hub.cut = None
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_hf_download_resumes_and_then_runs_from_the_cache(model_factory, tmp_path, add_py):
    pytest.importorskip("huggingface_hub")
    model = model_factory("codellama")
    data = model.path.read_bytes()
    repo, name = "someone/CodeLlama-7B-GGUF", "codellama-7b.Q5_K_M.gguf"
    # cut after 12 MiB: huggingface_hub writes in 10 MiB chunks, so it has one to keep
    cut = 12 << 20
    assert len(data) > cut
    with FakeHub({f"{repo}/{name}": data}, cut_first_get_at=cut) as hub:
        env = clean_env(tmp_path, HF_ENDPOINT=hub.url)
        proc = run_cli("complete", f"{add_py}:2:5", "--hf-repo", repo, "--hf-file", name, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "return a + b\n"
        gets = [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]
        # the transfer was cut; the client asked for the rest only
        assert len(gets) == 2 and gets[0][2] is None, hub.requests
        start = int(re.fullmatch(r"bytes=(\d+)-", gets[1][2] or "").group(1))
        assert 0 < start <= cut
        assert f"downloading {repo} {name}: 100%" in proc.stderr
        cached = tmp_path / "hf" / "hub" / "models--someone--CodeLlama-7B-GGUF"
        assert (cached / "snapshots" / COMMIT / name).read_bytes() == data
        assert (cached / "refs" / "main").read_text() == COMMIT
        before = len(hub.requests)
        again = run_cli("complete", f"{add_py}:2:5", "--hf-repo", repo, "--hf-file", name, env=env)
        assert again.returncode == 0 and again.stdout == "return a + b\n", again.stderr
        assert len(hub.requests) == before  # a cached model costs no request to the hub

        missing = run_cli("complete", f"{add_py}:2:5", "--hf-repo", repo, "--hf-file", "nope.gguf", env=env)
        assert missing.returncode == 1
        assert f"Hugging Face repository {repo} has no file nope.gguf" in missing.stderr
        assert "Traceback" not in missing.stderr

    listed = json.loads(run_cli("models", "--json", env=env).stdout)["models"]
    assert any(r.get("hfRepo") == repo and r["family"] == "codellama" for r in listed)


async def test_hf_download_shows_progress_in_the_editor(model_factory, tmp_path):
    pytest.importorskip("huggingface_hub")
    model = model_factory("starcoder")
    repo, name = "someone/Star-GGUF", "star.gguf"
    with FakeHub({f"{repo}/{name}": model.path.read_bytes()}) as hub:
        env = clean_env(tmp_path, HF_ENDPOINT=hub.url)
        async with lsp_server(init_options={"hfRepo": repo, "hfFile": name}, env=env) as (client, _):
            open_doc(client, "file:///tmp/add.py", ADD)
            for _ in range(200):
                reports = [r for v in client.progress_reports.values() for r in v]
                if reports and isinstance(reports[-1], types.WorkDoneProgressEnd):
                    break
                await asyncio.sleep(0.05)
            assert isinstance(reports[0], types.WorkDoneProgressBegin)
            assert f"downloading {repo} {name}" in reports[0].message
            downloads = [r for r in reports[1:-1] if isinstance(r, types.WorkDoneProgressReport) and "downloading" in r.message]
            assert downloads and downloads[-1].percentage == 100
            assert any(isinstance(r, types.WorkDoneProgressReport) and r.message == f"loading {name}" for r in reports)
            assert isinstance(reports[-1], types.WorkDoneProgressEnd) and "ready" in reports[-1].message
            result = await complete_at(client, "file:///tmp/add.py", 1, 4)
            assert result.items[0].text_edit.new_text == "return a + b"


# --- the memory plan ------------------------------------------------------------------------
def write_sparse_model(path: Path, layers: int = 64, layer_shape=(65536, 131072), vocab: int = 32000, embd: int = 8192,
                       heads: int = 64, kv_heads: int = 8) -> Path:
    """A GGUF whose header describes a huge llama model; the weights are a hole in a sparse file
    (no disk used). Tensors are F16: `layer_shape` elements x 2 bytes per layer."""

    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [
        (s("general.architecture"), 8, s("llama")),
        (s("llama.block_count"), 4, struct.pack("<I", layers)),
        (s("llama.context_length"), 4, struct.pack("<I", 4096)),
        (s("llama.embedding_length"), 4, struct.pack("<I", embd)),
        (s("llama.attention.head_count"), 4, struct.pack("<I", heads)),
        (s("llama.attention.head_count_kv"), 4, struct.pack("<I", kv_heads)),
    ]
    tensors = [("token_embd.weight", (embd, vocab)), ("output.weight", (embd, vocab))]
    tensors += [(f"blk.{i}.ffn_up.weight", layer_shape) for i in range(layers)]
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for key, vtype, value in kv:
        head += key + struct.pack("<I", vtype) + value
    offset = 0
    for name, shape in tensors:
        head += s(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        head += struct.pack("<IQ", 1, offset)
        offset += shape[0] * shape[1] * 2
    head += b"\0" * (-len(head) % 32)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + offset)
    return path


@pytest.fixture
def huge_model(tmp_path) -> Path:
    """64 layers of 16 GiB: 1 TiB of weights, more than any machine running the tests has."""
    return write_sparse_model(tmp_path / "huge-1T.gguf")


def test_a_model_that_cannot_fit_is_refused_before_loading(huge_model, add_py):
    avail, swap = memplan.meminfo()
    if avail is None:
        pytest.skip("no /proc/meminfo: system memory unknown")
    assert huge_model.stat().st_size > avail + (swap or 0)
    proc = run_cli("complete", f"{add_py}:2:5", "--model", str(huge_model))
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "huge-1T.gguf does not fit in memory: it needs 1,0" in lines[0]
    assert "GiB is available" in lines[0] and "smaller model or quantization" in lines[0]

    doctor = run_cli("doctor", "--model", str(huge_model))
    assert doctor.returncode == 1
    assert "DOES NOT FIT" in doctor.stdout and "(model not loaded)" in doctor.stdout
    assert "  memory         weights 1,0" in doctor.stdout and "65 layers" in doctor.stdout


def _gpu(free_gib: float, total_gib: float = 80) -> memplan.Memory:
    return memplan.Memory(
        True, (memplan.Device("Test GPU", int(free_gib * GiB), int(total_gib * GiB)),), "test", 2048 * GiB, 0
    )


def test_offload_plan_puts_as_many_layers_on_the_gpu_as_fit(tmp_path):
    # 32 layers of 1 GiB each
    info = read_gguf(write_sparse_model(tmp_path / "m.gguf", layers=32, layer_shape=(16384, 32768)))
    settings = Settings(context_size=4096, prompt_cache_bytes=0)
    fp = memplan.footprint(info, settings)
    assert fp.layer_weights == (GiB,) * 32 and fp.n_layers == 32

    everything = memplan.plan([(info, False)], settings, _gpu(79))
    (m,) = everything.models
    assert m.gpu_layers == m.requested == 33 and not everything.problems
    assert everything.cpu_bytes == fp.input_weights  # token embeddings stay in system memory

    partial = memplan.plan([(info, False)], settings, _gpu(20))
    (m,) = partial.models
    budget = _gpu(20).gpu_budget
    assert 0 < m.gpu_layers < 33
    assert fp.gpu_bytes(m.gpu_layers) <= budget < fp.gpu_bytes(m.gpu_layers + 1)
    assert f"only {m.gpu_layers} of 33 layers fit on the GPU" in partial.problems[0]
    assert partial.fits and partial.total_bytes == everything.total_bytes

    assert memplan.plan([(info, False)], Settings(n_gpu_layers=5), _gpu(79)).models[0].gpu_layers == 5
    assert memplan.plan([(info, False)], Settings(n_gpu_layers=0), _gpu(79)).models[0].gpu_layers == 0
    cpu_only = memplan.Memory(False, ram_available=2048 * GiB)
    (m,) = memplan.plan([(info, False)], settings, cpu_only).models
    assert m.gpu_layers == 0 and "CPU-only" in m.note


def test_base_and_instruct_models_share_the_gpu_budget(tmp_path):
    info = read_gguf(write_sparse_model(tmp_path / "m.gguf", layers=32, layer_shape=(16384, 32768)))
    settings = Settings(context_size=4096)
    both = memplan.plan([(info, False), (info, True)], settings, _gpu(50))
    base, instruct = both.models
    assert base.gpu_layers == 33  # completion latency first
    assert 0 < instruct.gpu_layers < 33
    assert both.gpu_bytes == base.gpu_bytes + instruct.gpu_bytes <= _gpu(50).gpu_budget
    assert both.total_bytes == base.total_bytes + instruct.total_bytes
    assert instruct.fp.kv_slots == 1 and base.fp.kv_slots >= 1


def _codellama_7b_shape(path: Path) -> Path:
    """Code Llama 7B's shape: 32 layers of ~400 MiB F16, n_embd 4096, 32 heads, no GQA (512 KiB of
    f16 KV per token), trained context 4096 here."""
    return write_sparse_model(path, layers=32, layer_shape=(4096, 49152), vocab=32016, embd=4096, heads=32, kv_heads=32)


def test_the_automatic_kv_pool_takes_what_the_gpu_has_free(tmp_path):
    info = read_gguf(_codellama_7b_shape(tmp_path / "cl7b.gguf"))
    assert info.kv_bytes_per_token() == 512 << 10
    settings = Settings(context_size=4096)  # promptCacheBytes and hostCacheBytes unset
    one_context = memplan.plan([(info, False)], replace(settings, prompt_cache_bytes=0), _gpu(24, 24))
    roomy = memplan.plan([(info, False)], settings, _gpu(24, 24))  # a 24 GiB card, 12.6 GiB of weights
    kv = roomy.models[0].fp.kv
    assert roomy.models[0].gpu_layers == 33 and not roomy.problems
    assert roomy.settings.prompt_cache_bytes == kv.total_bytes and kv.cells > kv.slot_cells
    # all of it fits on the GPU, with the reserve: at most 90 % of what one context left free
    assert roomy.gpu_bytes <= _gpu(24, 24).gpu_budget
    assert kv.total_bytes - one_context.models[0].fp.kv_bytes <= 0.9 * (_gpu(24, 24).gpu_budget - one_context.gpu_bytes)
    in_kv, in_host = kv.documents(1500)
    assert in_kv == kv.cells // 1500 >= 6  # documents of 1,500 tokens on the GPU, not one slot of 4,096
    # the system-memory tier: a quarter of what the models leave of system memory, at most 16 GiB
    assert roomy.settings.host_cache_bytes == min(16 << 30, (2048 * GiB - roomy.cpu_bytes) // 4)
    # q8_0 KV: 17/32 of the bytes per token, so (with the same compute buffer per cell) 1.7x the documents
    q8 = memplan.plan([(info, False)], replace(settings, kv_cache_type="q8_0"), _gpu(24, 24)).models[0].fp.kv
    assert q8.bytes_per_token * 32 == kv.bytes_per_token * 17 and q8.documents(1500)[0] >= 1.6 * in_kv
    # a partial offload keeps one context of KV (more would push layers off the GPU)
    tight = memplan.plan([(info, False)], settings, _gpu(10, 12))
    assert tight.models[0].gpu_layers < 33 and tight.models[0].fp.kv.cells == kv.slot_cells
    # a CPU-only build: at most two contexts (each decode attends over the pool's cells in use)
    cpu = memplan.plan([(info, False)], settings, memplan.Memory(False, ram_available=2048 * GiB))
    assert cpu.models[0].fp.kv.cells == 2 * kv.slot_cells


def test_doctor_counts_documents_per_tier(tmp_path):
    from codelsp.tools.doctor import describe_cache

    info = read_gguf(_codellama_7b_shape(tmp_path / "cl7b.gguf"))
    settings = Settings(context_size=4096, prompt_cache_bytes=4 << 30, host_cache_bytes=8 << 30)
    kv = memplan.plan([(info, False)], settings, _gpu(24, 24)).models[0].fp.kv
    assert kv.cells == 8192
    line = describe_cache(kv, on_gpu=True)
    # 8,192 cells hold five documents of 1,500 tokens; 8 GiB of saved states about ten more
    assert line.startswith("prompt cache: 5 documents of 1,500 tokens on the GPU (2 of a full 4,096-token context) + 10 in system memory"), line


def test_doctor_shows_the_memory_plan_of_both_models(model_factory):
    base, instruct = model_factory("starcoder"), model_factory("qwen")
    proc = run_cli("doctor", "--model", str(base.path), "--instruct-model", str(instruct.path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"^  memory +weights \d+ MiB \+ KV \d+ MiB \([\d,]+ cells of f16, 128 bytes per token\) \+ compute \d+ MiB = \d+ MiB$", out, re.M), out
    assert re.search(r"^ +prompt cache: \d+ documents of 1,500 tokens in the KV \(system memory\) \(\d+ of a full 4,096-token context\) "
                     r"\+ \d+ in system memory \(\d+ full; hostCacheBytes [\d.,]+ [MG]iB\)$", out, re.M), out
    assert re.search(r"^  instruct mem\. +weights .* \(4,096 cells of f16, ", out, re.M), out
    assert "prompt cache: none (one request at a time in 4,096 cells)" in out
    assert re.search(r"^  total +\d+ MiB for both models: GPU \d+ MiB, system \d+ MiB", out, re.M), out
    assert "layers on the GPU" in out and f"instruct model   {instruct.path}" in out
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        assert "this llama-cpp-python build is CPU-only" in out and "-DGGML_CUDA=on" in out
        assert "0 of 2 layers on the GPU" in out


def test_same_file_for_base_and_instruct_is_loaded_once(model_factory):
    base = model_factory("starcoder")
    proc = run_cli("doctor", "--model", str(base.path), "--instruct-model", str(base.path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "instruct model   the base model (same file: one copy serves both)" in proc.stdout
    assert "for both models" not in proc.stdout


def test_hf_download_draws_a_progress_bar_on_a_terminal(model_factory, tmp_path, add_py):
    pytest.importorskip("huggingface_hub")
    import fcntl
    import pty
    import subprocess
    import termios
    import sys

    model = model_factory("starcoder")
    repo, name = "someone/Star-GGUF", "star.gguf"
    with FakeHub({f"{repo}/{name}": model.path.read_bytes()}) as hub:
        env = dict(os.environ, **clean_env(tmp_path, HF_ENDPOINT=hub.url))
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
        proc = subprocess.Popen(
            [sys.executable, "-m", "codelsp", "complete", f"{add_py}:2:5", "--hf-repo", repo, "--hf-file", name],
            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env,
        )
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            err += chunk
        out = proc.stdout.read()
        assert proc.wait(timeout=120) == 0, err.decode(errors="replace")
        os.close(master)
    text = err.decode(errors="replace")
    assert out == b"return a + b\n"
    # tqdm redraws the bar in place with carriage returns; the last drawing is complete
    bars = [b for b in re.split(r"[\r\n]", text) if b.startswith(f"{repo} {name}:")]
    assert bars and "100%" in bars[-1] and "MB" in bars[-1], text


def test_models_lists_a_configured_hf_model_not_downloaded_yet(tmp_path):
    proc = run_cli("models", "--json", "--hf-repo", "someone/Later-GGUF", "--hf-file", "later.gguf", env=clean_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (row,) = [r for r in json.loads(proc.stdout)["models"] if r["source"] == "configured"]
    assert (row["hfRepo"], row["hfFile"], row["path"]) == ("someone/Later-GGUF", "later.gguf", None)
    assert "not downloaded yet" in row["error"]


def test_a_reload_frees_the_previous_model_when_it_would_cost_gpu_layers(tmp_path):
    info = read_gguf(write_sparse_model(tmp_path / "m.gguf", layers=32, layer_shape=(16384, 32768)))
    settings = Settings(context_size=4096, prompt_cache_bytes=0)
    fresh = memplan.plan_load([(info, False)], settings, _gpu(60))
    assert fresh.models[0].gpu_layers == 33 and not fresh.release_first
    # the same model loaded already holds its GPU memory: side by side, they do not both fit
    held = fresh.gpu_bytes
    now = _gpu(60 - held / GiB)
    reload = memplan.plan_load([(info, False)], settings, now, held_gpu=held)
    assert reload.release_first and reload.models[0].gpu_layers == 33
    # nothing held: nothing to free, the partial offload stands
    beside = memplan.plan_load([(info, False)], settings, now)
    assert not beside.release_first and beside.models[0].gpu_layers < 33


def test_free_gpu_memory_from_nvidia_smi(tmp_path, monkeypatch):
    # where llama.cpp's device list gives nothing, `nvidia-smi` does (this one prints what the
    # real one prints for --query-gpu=index,name,memory.free,memory.total --format=csv,noheader,nounits)
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\nprintf '0, NVIDIA H100 80GB HBM3, 80000, 81559\\n1, NVIDIA H100 80GB HBM3, 1000, 81559\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    both = memplan._nvidia_smi_devices()
    assert [(d.name, d.free >> 20, d.total >> 20) for d in both] == [
        ("NVIDIA H100 80GB HBM3", 80000, 81559), ("NVIDIA H100 80GB HBM3", 1000, 81559)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    (only,) = memplan._nvidia_smi_devices()
    assert only.free == 1000 << 20
    mem = memplan.Memory(True, (only,), "nvidia-smi", 64 * GiB, 0)
    assert mem.gpu_budget == 0  # less free than the reserve: nothing to plan with
