"""The GPU path's CPU-side parts (issue 21): llama-server's command line follows codelsp's
settings, the random-weight shape writer, and the suite's load-variants step on the CPU build."""

from __future__ import annotations

from codelsp.tools.llamaserver import llama_vim_command


def _flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_llama_server_command_gpu_defaults():
    """nGpuLayers -1 (the default): every layer on the GPU, as codelsp's arm loads it."""
    cmd = llama_vim_command("/bin/llama-server", "m.gguf", 8080, {})
    assert _flag(cmd, "-ngl") == "999"
    assert _flag(cmd, "-c") == "5000"
    assert (_flag(cmd, "-b"), _flag(cmd, "-ub")) == ("512", "512")
    assert "-ctk" not in cmd and "-fa" not in cmd  # f16: llama.cpp's defaults, as for codelsp
    assert cmd.count("-ngl") == 1
    assert _flag(cmd, "--cache-reuse") == "256" and _flag(cmd, "-np") == "1"


def test_llama_server_command_cpu_and_settings():
    cmd = llama_vim_command("/bin/llama-server", "m.gguf", 8080,
                            {"nGpuLayers": 0, "contextSize": 8192, "nThreads": 3, "kvCacheType": "q8_0"})
    assert _flag(cmd, "-ngl") == "0"
    assert _flag(cmd, "-c") == "8192"
    assert (_flag(cmd, "-t"), _flag(cmd, "-tb")) == ("3", "3")
    assert (_flag(cmd, "-ctk"), _flag(cmd, "-ctv"), _flag(cmd, "-fa")) == ("q8_0", "q8_0", "on")


def test_llama_server_command_some_layers():
    cmd = llama_vim_command("/bin/llama-server", "m.gguf", 8080, {"nGpuLayers": 20, "kvCacheType": "f16"})
    assert _flag(cmd, "-ngl") == "20"
    assert "-fa" not in cmd


def test_tiny_shape_loads_and_generates(tmp_path, demo_model):
    """The shape writer's GGUF is a model llama.cpp loads, through codelsp's own load path."""
    import dataclasses

    from codelsp.engine.generation import SamplerParams
    from codelsp.engine.llama import load_model
    from codelsp.settings import Settings
    from codelsp.tools.shapes import SHAPES, read_vocab, write_model

    out = tmp_path / "tiny.gguf"
    info = write_model("tiny", demo_model, out)
    assert info["n_vocab"] == len(read_vocab(demo_model)["tokenizer.ggml.tokens"][2])
    assert info["layers"] == SHAPES["tiny"].layers and out.stat().st_size >= info["weights_bytes"]
    settings = dataclasses.replace(Settings(), context_size=256, prompt_cache_bytes=0, host_cache_bytes=0, n_threads=2)
    model = load_model(str(out), settings, gpu_layers=0)
    try:
        assert model.info.architecture == "qwen2" and model.info.n_layers == 2
        gen = model.generate("t", model.tokenize("def f():"), max_tokens=6, sampler=SamplerParams(0.0, 0, 1.0, 1.0, 0),
                             stop_texts=[])
        assert gen.stats.generated >= 1
    finally:
        model.close()


def test_vocab_dump_round_trip(tmp_path, demo_model):
    from codelsp.tools.shapes import dump_vocab, read_vocab

    dump = tmp_path / "vocab.json.gz"
    dump_vocab(demo_model, dump)
    a, b = read_vocab(demo_model), read_vocab(dump)
    assert a.keys() == b.keys()
    assert a["tokenizer.ggml.tokens"][2] == b["tokenizer.ggml.tokens"][2]


def test_suite_load_variants_on_cpu(tmp_path, demo_model):
    """`gpusuite --no-build --only load-variants` on the CPU build: every load path of codelsp,
    each in its own process, loads the tiny model (on the CUDA build one of them crashed)."""
    import json
    import subprocess
    import sys

    from codelsp.tools.loadcheck import VARIANTS

    r = subprocess.run([sys.executable, "-m", "codelsp.tools.gpusuite", "--no-build", "--only", "load-variants",
                        "--shapes", "tiny", "--vocab", str(demo_model), "--work", str(tmp_path / "w"),
                        "--out", str(tmp_path / "out"), "--variant-levels", "all", "--variant-timeout", "120",
                        "--budget", "400"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = summary["results"]["load_variants"]
    assert rows == [f"{v.name} ngl=all: ok" for v in VARIANTS], rows
    assert "load-variants" in summary["done"] and summary["models"]["tiny"]["bytes"]
    table = (tmp_path / "out" / "load-variants.txt").read_text()
    assert "complete" in table and "doctor" in table


def test_doctor_names_the_gpu_backend():
    from codelsp.models import memplan

    gpu = memplan.Device("NVIDIA H200", 100 * 2**30, 140 * 2**30, backend="CUDA")
    lines = memplan.describe_memory(memplan.Memory(True, (gpu,), "llama.cpp", 64 * 2**30, 0))
    assert lines[0].startswith("GPU              NVIDIA H200 (CUDA backend): 100.0 GiB free")
