"""CMake flags for building llama-cpp-python so that it runs on this CPU.

Run standalone before codelsp is installed:  CMAKE_ARGS="$(python3 codelsp/engine/buildflags.py)" pip install ...

llama.cpp's default native build uses AMX on CPUs that have it; on virtual machines that do not
grant the AMX tile state to its worker threads, the first evaluation of any quantized model dies
with a general protection fault (ldtilecfg in ggml_backend_amx_mul_mat). On such CPUs this prints
a non-native x86 build with every other SIMD feature the CPU has; elsewhere it prints nothing (the
default native build is right), and a CMAKE_ARGS already set by the user is kept as it is.
"""

from __future__ import annotations

import os
import platform

# llama.cpp CMake option -> /proc/cpuinfo flag it needs
X86_FEATURES = (
    ("GGML_AVX", "avx"),
    ("GGML_AVX2", "avx2"),
    ("GGML_FMA", "fma"),
    ("GGML_F16C", "f16c"),
    ("GGML_BMI2", "bmi2"),
    ("GGML_AVX512", "avx512f"),
    ("GGML_AVX512_VBMI", "avx512vbmi"),
    ("GGML_AVX512_VNNI", "avx512_vnni"),
    ("GGML_AVX512_BF16", "avx512_bf16"),
)
AMX_FLAGS = {"amx_tile", "amx_int8", "amx_bf16"}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def safe_cmake_args(flags: set[str] | None = None) -> str:
    """A non-native build with the CPU's SIMD features but without AMX."""
    flags = cpu_flags() if flags is None else flags
    opts = ["-DGGML_NATIVE=OFF"] + [f"-D{opt}=ON" for opt, flag in X86_FEATURES if flag in flags]
    return " ".join(opts)


def cmake_args() -> str:
    if os.environ.get("CMAKE_ARGS"):
        return os.environ["CMAKE_ARGS"]
    if platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64"):
        flags = cpu_flags()
        if flags & AMX_FLAGS:
            return safe_cmake_args(flags)
    return ""


if __name__ == "__main__":
    print(cmake_args())
