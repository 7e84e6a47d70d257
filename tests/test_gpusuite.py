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
