"""Memory plan: will the models fit, and how many layers go on the GPU.

Before anything is handed to llama.cpp, codelsp estimates what the models will need — weights
(from the GGUF tensor table), KV cache (the same `kv_plan` the loader uses: one pool of cells
shared by the cached documents, at `kvCacheType`) and llama.cpp's compute buffers — and compares
it with free GPU memory (llama.cpp's own device list, or `nvidia-smi`) and the system's available
memory.

- `promptCacheBytes` unset: the KV pool gets what is free where the KV lives (the GPU when every
  layer is offloaded, system memory on a CPU-only build) after the weights and compute buffers of
  both models, less a reserve; `hostCacheBytes` unset: a share of the system memory left after
  that (`resolve_cache_budgets`).

- `nGpuLayers` -1 asks for every layer; when they do not all fit in free GPU memory, as many
  layers as fit are offloaded (the last ones, as llama.cpp does) and the rest run on the CPU.
- A model that clearly cannot fit in memory at all is refused with one line before loading.

Everything here is plain data and arithmetic: `probe_memory()` is the only part that asks the
machine, and every other function takes its answer as an argument, so it can be tested without a
GPU or a server.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from codelsp.models.gguf import GGUFInfo
from codelsp.models.errors import ModelError
from codelsp.models.modelfile import MAX_SEQS, KVPlan, kv_plan
from codelsp.settings import Settings

log = logging.getLogger(__name__)

N_BATCH = 512  # llama.py's batch size
GPU_RESERVE_MIN = 256 << 20  # left free on each GPU for the driver, other buffers, fragmentation
GPU_RESERVE_FRACTION = 0.05

KV_RESERVE_FRACTION = 0.10  # of the memory free after the models, left out of the automatic KV pool
CPU_POOL_CONTEXTS = 2  # automatic KV pool on the CPU: at most this many full contexts (see README, KV pool)
HOST_FRACTION = 0.25  # automatic hostCacheBytes: this share of the system memory left after the models
HOST_CAP = 16 << 30  # ... and at most this much
HOST_UNKNOWN = 1 << 30  # ... or this much where the system does not say how much memory it has
TYPICAL_DOCUMENT_TOKENS = 1500  # what doctor counts documents in (the bench sample is about this long)

_LAYER_RE = re.compile(r"^blk\.(\d+)\.")


# --- what the machine has ---------------------------------------------------------------
@dataclass(frozen=True)
class Device:
    name: str
    free: int
    total: int
    integrated: bool = False  # shares system memory (Apple silicon, integrated GPUs)
    backend: str = ""  # llama.cpp's backend for it: "CUDA", "Metal", "Vulkan", "ROCm" ... ("" unknown)


@dataclass(frozen=True)
class Memory:
    """Free memory as seen now. `gpu_offload`: the llama.cpp build can offload layers at all."""

    gpu_offload: bool
    gpus: tuple[Device, ...] = ()
    gpu_source: str = ""  # "llama.cpp", "nvidia-smi" or "" (unknown)
    ram_available: int | None = None
    swap_free: int | None = None

    @property
    def gpu_free(self) -> int | None:
        """Free bytes over all GPUs (llama.cpp splits layers across them), or None: unknown."""
        if not self.gpus:
            return None
        return sum(d.free for d in self.gpus)

    @property
    def gpu_budget(self) -> int | None:
        """What codelsp plans to use of the free GPU memory: a reserve stays free on each GPU."""
        if not self.gpus:
            return None
        return sum(max(0, d.free - max(GPU_RESERVE_MIN, int(d.total * GPU_RESERVE_FRACTION))) for d in self.gpus)


def meminfo(path: str = "/proc/meminfo") -> tuple[int | None, int | None]:
    """(MemAvailable, SwapFree) in bytes; None where the system does not say (macOS, Windows)."""
    avail = swap = None
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                elif line.startswith("SwapFree:"):
                    swap = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return avail, swap


def _llama_devices() -> list[Device] | None:
    """GPU devices from llama.cpp's ggml backend registry (CUDA, Metal, Vulkan, ROCm, SYCL …):
    the devices this build would actually use, with their free memory. None: not available."""
    try:
        from llama_cpp import llama_cpp as bindings

        lib = bindings._lib
        count = lib.ggml_backend_dev_count
        get = lib.ggml_backend_dev_get
        memory = lib.ggml_backend_dev_memory
        dev_type = lib.ggml_backend_dev_type
        describe = lib.ggml_backend_dev_description
    except (ImportError, AttributeError, OSError):
        return None
    try:  # the backend's name (CUDA, Metal, Vulkan ...), for doctor; older builds may lack them
        reg_of, reg_name = lib.ggml_backend_dev_backend_reg, lib.ggml_backend_reg_name
        reg_of.restype, reg_of.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
        reg_name.restype, reg_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    except AttributeError:
        reg_of = reg_name = None
    count.restype = ctypes.c_size_t
    count.argtypes = []
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.c_size_t]
    memory.restype = None
    memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    dev_type.restype = ctypes.c_int
    dev_type.argtypes = [ctypes.c_void_p]
    describe.restype = ctypes.c_char_p
    describe.argtypes = [ctypes.c_void_p]
    devices = []
    for i in range(count()):
        dev = get(i)
        kind = dev_type(dev)
        if kind not in (1, 2):  # GGML_BACKEND_DEVICE_TYPE_GPU, _IGPU (CPU = 0, ACCEL = 3)
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        memory(dev, ctypes.byref(free), ctypes.byref(total))
        name = (describe(dev) or b"GPU").decode("utf-8", errors="replace")
        backend = (reg_name(reg_of(dev)) or b"").decode("utf-8", errors="replace") if reg_of else ""
        devices.append(Device(name, int(free.value), int(total.value), integrated=kind == 2, backend=backend))
    return devices


def _nvidia_smi_devices() -> list[Device] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.free,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    wanted = None
    if visible is not None and all(p.strip().isdigit() for p in visible.split(",") if p.strip()):
        wanted = {p.strip() for p in visible.split(",") if p.strip()}
    devices = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            continue
        if wanted is not None and parts[0] not in wanted:
            continue
        devices.append(Device(parts[1], int(parts[2]) << 20, int(parts[3]) << 20))
    return devices


def gpu_offload_supported() -> bool:
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except (ImportError, AttributeError, OSError):
        return False


def probe_memory() -> Memory:
    """Ask this machine: can the build offload, which GPUs with how much free memory, how much RAM."""
    avail, swap = meminfo()
    if not gpu_offload_supported():
        return Memory(False, ram_available=avail, swap_free=swap)
    devices, source = _llama_devices(), "llama.cpp"
    if not devices:
        devices, source = _nvidia_smi_devices(), "nvidia-smi"
    if not devices:
        return Memory(True, ram_available=avail, swap_free=swap)
    return Memory(True, tuple(devices), source, avail, swap)


# --- what a model needs -------------------------------------------------------------------
@dataclass(frozen=True)
class Footprint:
    """Bytes of one model, split the way llama.cpp places them."""

    n_layers: int
    layer_weights: tuple[int, ...]  # per repeating layer (blk.N.*)
    input_weights: int  # token embeddings: always in system memory
    output_weights: int  # output norm + head: on the GPU only when every layer is
    tied_output: int  # tied embeddings: llama.cpp copies token_embd to the GPU for the head
    kv_bytes: int  # the whole KV pool, all layers
    compute_bytes: int  # llama.cpp's compute buffers (an estimate)
    kv_slots: int  # full-context documents the pool holds
    context: int
    kv: "KVPlan | None" = None  # the pool itself (cells, type, system-memory tier)

    @property
    def weights(self) -> int:
        return sum(self.layer_weights) + self.input_weights + self.output_weights

    @property
    def total(self) -> int:
        return self.weights + self.kv_bytes + self.compute_bytes

    def gpu_bytes(self, gpu_layers: int) -> int:
        """GPU memory with `gpu_layers` offloaded (llama.cpp counts the output layer as layer
        n_layers + 1 and offloads the *last* layers first)."""
        if gpu_layers <= 0:
            return 0
        n = min(gpu_layers, self.n_layers)
        layers = sum(self.layer_weights[self.n_layers - n:]) if n else 0
        kv = self.kv_bytes * n // max(self.n_layers, 1)
        out = self.output_weights + self.tied_output if gpu_layers > self.n_layers else 0
        return layers + kv + out + self.compute_bytes

    def cpu_bytes(self, gpu_layers: int) -> int:
        tied = self.tied_output if gpu_layers > self.n_layers else 0
        return self.total + tied - self.gpu_bytes(gpu_layers)

    def total_at(self, gpu_layers: int) -> int:
        return self.gpu_bytes(gpu_layers) + self.cpu_bytes(gpu_layers)


def footprint(info: GGUFInfo, settings: Settings, *, instruct: bool = False) -> Footprint:
    """What `info` will need with these settings (instruct models get one KV slot, as loaded)."""
    n_layers = int(info.n_layers or 0)
    layer = [0] * n_layers
    unknown: list[tuple[str, int]] = []  # tensors of a type the table does not size (IQ quants)
    sized: dict[str, int] = {}
    for t in info.tensors:
        nb = t.n_bytes
        if nb is None:
            unknown.append((t.name, t.n_elements))
        else:
            sized[t.name] = nb
    if unknown:
        # share what the file holds beyond the sized tensors among the others, by element count
        rest = max(0, info.file_size - sum(sized.values()))
        elements = sum(n for _, n in unknown) or 1
        for name, n in unknown:
            sized[name] = rest * n // elements
    input_w = output_w = other = tied = 0
    for name, nb in sized.items():
        m = _LAYER_RE.match(name)
        if m and int(m.group(1)) < n_layers:
            layer[int(m.group(1))] += nb
        elif name.startswith("token_embd"):
            input_w += nb
        elif name.startswith("output"):
            output_w += nb
        else:
            other += nb
    if "output.weight" not in sized and "token_embd.weight" in sized:
        tied = sized["token_embd.weight"]
    output_w += other
    if not info.tensors:  # nothing to go by but the file size
        if n_layers:
            layer = [info.file_size // n_layers] * n_layers
        else:
            input_w = info.file_size
    kv = kv_plan(info, settings, cache=not instruct)
    return Footprint(
        n_layers=n_layers,
        layer_weights=tuple(layer),
        input_weights=input_w,
        output_weights=output_w,
        tied_output=tied,
        kv_bytes=kv.total_bytes,
        compute_bytes=compute_estimate(info, kv.cells),
        kv_slots=kv.slots,
        context=kv.context,
        kv=kv,
    )


def compute_estimate(info: GGUFInfo, n_ctx: int) -> int:
    """llama.cpp's compute buffers for one batch of N_BATCH tokens: activations, the attention
    scores over `n_ctx` cells (the unified pool: a decode spans the cells in use, masking other
    documents'; without flash attention) and the logits. An upper estimate."""
    n_embd = int(info.arch_value("embedding_length", 0) or 0)
    n_ff = info.arch_value("feed_forward_length", 4 * n_embd) or 4 * n_embd
    if isinstance(n_ff, list):
        n_ff = max(n_ff)
    elif not isinstance(n_ff, int):
        n_ff = 4 * n_embd
    n_head = info.arch_value("attention.head_count", 1) or 1
    if isinstance(n_head, list):
        n_head = max(n_head)
    elif not isinstance(n_head, int):
        n_head = 1
    tokens = info.metadata.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens) if tokens is not None else 32000
    b = N_BATCH
    activations = b * (4 * n_embd + 2 * int(n_ff)) * 4
    scores = b * n_ctx * int(n_head) * 4
    logits = b * n_vocab * 4
    return activations + scores + logits


# --- the plan -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelPlan:
    path: str
    role: str  # "model" or "instruct model"
    fp: Footprint
    requested: int  # layers asked for, as llama.cpp counts them (n_layers + 1 = all)
    gpu_layers: int  # what will be passed to llama.cpp
    note: str = ""  # why gpu_layers is less than requested

    @property
    def all_layers(self) -> int:
        return self.fp.n_layers + 1

    @property
    def gpu_bytes(self) -> int:
        return self.fp.gpu_bytes(self.gpu_layers)

    @property
    def cpu_bytes(self) -> int:
        return self.fp.cpu_bytes(self.gpu_layers)

    @property
    def total_bytes(self) -> int:
        return self.fp.total_at(self.gpu_layers)

    def describe_layers(self) -> str:
        n = min(self.gpu_layers, self.all_layers)
        return f"{n} of {self.all_layers} layers on the GPU, {self.all_layers - n} on the CPU"


@dataclass(frozen=True)
class MemPlan:
    models: tuple[ModelPlan, ...]
    memory: Memory
    problems: tuple[str, ...] = field(default=())
    release_first: bool = False  # free the models loaded now before loading these
    settings: Settings | None = None  # with promptCacheBytes/hostCacheBytes as planned (never None)

    @property
    def host_bytes(self) -> int:
        """The system-memory tier of the prompt cache (filled as documents leave the KV)."""
        return sum(m.fp.kv.host_bytes for m in self.models if m.fp.kv is not None)

    @property
    def gpu_bytes(self) -> int:
        return sum(m.gpu_bytes for m in self.models)

    @property
    def cpu_bytes(self) -> int:
        return sum(m.cpu_bytes for m in self.models)

    @property
    def total_bytes(self) -> int:
        return sum(m.total_bytes for m in self.models)

    @property
    def ram_limit(self) -> int | None:
        if self.memory.ram_available is None:
            return None
        return self.memory.ram_available + (self.memory.swap_free or 0)

    @property
    def fits(self) -> bool:
        """False when the system memory clearly cannot hold what stays on the CPU side (the
        system-memory tier is not counted: it only fills up to what is free)."""
        limit = self.ram_limit
        return limit is None or self.cpu_bytes <= limit

    @property
    def swaps(self) -> bool:
        avail = self.memory.ram_available
        return avail is not None and self.fits and self.cpu_bytes > avail

    def gpu_layers_for(self, path: str, role: str = "model") -> int | None:
        for m in self.models:
            if m.role == role and m.path == path:
                return m.gpu_layers
        return None

    def error(self) -> str:
        """The one-line refusal for a plan that does not fit."""
        names = " + ".join(os.path.basename(m.path) for m in self.models)
        parts = []
        for m in self.models:
            parts.append(
                f"weights {gib(m.fp.weights)} + KV {gib(m.fp.kv_bytes)} + compute {gib(m.fp.compute_bytes)}"
            )
        gpu = f", {gib(self.gpu_bytes)} of it on the GPU" if self.gpu_bytes else ""
        return (
            f"{names} does not fit in memory: it needs {gib(self.cpu_bytes)} of system memory "
            f"({'; '.join(parts)}{gpu}) and {gib(self.ram_limit or 0)} is available; "
            "choose a smaller model or quantization, or lower contextSize / promptCacheBytes"
        )

    def summary(self) -> str:
        """One line for the log."""
        bits = []
        for m in self.models:
            bits.append(f"{os.path.basename(m.path)}: {m.describe_layers()}, {gib(m.total_bytes)}")
        total = f"total {gib(self.total_bytes)} (GPU {gib(self.gpu_bytes)}, system {gib(self.cpu_bytes)})"
        kv = self.models[0].fp.kv if self.models else None
        cache = ""
        if kv is not None:
            cache = (f"; prompt cache: KV pool {gib(kv.total_bytes)} ({kv.cells:,} cells, {kv.cache_type}), "
                     f"system-memory tier up to {gib(kv.host_bytes)}")
        return "memory plan: " + "; ".join(bits) + "; " + total + cache


def resolve_cache_budgets(models: Sequence[tuple[GGUFInfo, bool]], settings: Settings, memory: Memory) -> Settings:
    """`settings` with `promptCacheBytes` and `hostCacheBytes` decided where they are None.

    KV pool: the base model's KV lives on the GPU when all its layers are offloaded, in system
    memory when none are (then at most CPU_POOL_CONTEXTS full contexts: on a CPU each decode
    attends over the pool's cells in use, so a bigger pool makes every keystroke slower); with a
    partial offload it stays at one context (more KV would push layers off the GPU). What is free
    there after both models at one context each (weights, compute buffers), less
    KV_RESERVE_FRACTION, goes to the pool; each cell also widens the attention scores of the
    compute buffer, which is counted. System-memory tier: HOST_FRACTION of the system memory left
    after everything the models keep there, at most HOST_CAP (HOST_UNKNOWN if unknown)."""
    pcb, hcb = settings.prompt_cache_bytes, settings.host_cache_bytes
    if pcb is not None and hcb is not None:
        return settings
    base = next((info for info, instruct in models if not instruct), None)
    if base is None or not settings.prompt_cache:
        return replace(settings, prompt_cache_bytes=pcb or 0, host_cache_bytes=hcb or 0)
    if pcb is None:
        one = replace(settings, prompt_cache_bytes=0, host_cache_bytes=0)
        p0 = _plan(models, one, memory)
        kv = kv_plan(base, one)
        m0 = p0.models[0]
        n_head = base.arch_value("attention.head_count", 1)
        n_head = max(n_head) if isinstance(n_head, list) else int(n_head or 1)
        per_cell = kv.bytes_per_token + N_BATCH * n_head * 4
        cap = MAX_SEQS * kv.slot_cells
        if m0.gpu_layers >= m0.all_layers and memory.gpu_budget is not None:
            free = memory.gpu_budget - p0.gpu_bytes
        elif m0.gpu_layers == 0 and memory.ram_available is not None:
            free = memory.ram_available - p0.cpu_bytes
            cap = CPU_POOL_CONTEXTS * kv.slot_cells
        else:
            free = 0
        extra = max(0, int(free * (1 - KV_RESERVE_FRACTION))) // per_cell
        pcb = min(cap, (kv.slot_cells + extra) // 256 * 256) * kv.bytes_per_token  # llama.cpp pads to 256
    if hcb is None:
        p1 = _plan(models, replace(settings, prompt_cache_bytes=pcb, host_cache_bytes=0), memory)
        if memory.ram_available is None:
            hcb = HOST_UNKNOWN
        else:
            hcb = int(min(HOST_CAP, max(0, memory.ram_available - p1.cpu_bytes) * HOST_FRACTION))
    return replace(settings, prompt_cache_bytes=pcb, host_cache_bytes=hcb)


def plan(
    models: Sequence[tuple[GGUFInfo, bool]],
    settings: Settings,
    memory: Memory,
) -> MemPlan:
    """Plan `models` [(header, is_instruct)] together: the GPU budget is shared, first come first
    served (the base model first: completion latency matters most). Automatic cache budgets are
    decided first (resolve_cache_budgets); the plan's `settings` carry them."""
    settings = resolve_cache_budgets(models, settings, memory)
    return _plan(models, settings, memory)


def _plan(models: Sequence[tuple[GGUFInfo, bool]], settings: Settings, memory: Memory) -> MemPlan:
    budget = memory.gpu_budget
    plans = []
    problems = []
    for info, instruct in models:
        fp = footprint(info, settings, instruct=instruct)
        role = "instruct model" if instruct else "model"
        all_layers = fp.n_layers + 1
        requested = all_layers if settings.n_gpu_layers < 0 else min(settings.n_gpu_layers, all_layers)
        gpu_layers, note = requested, ""
        if requested > 0 and not memory.gpu_offload:
            gpu_layers, note = 0, "this llama.cpp build is CPU-only"
        elif requested > 0 and budget is not None:
            gpu_layers = requested
            while gpu_layers > 0 and fp.gpu_bytes(gpu_layers) > budget:
                gpu_layers -= 1
            if gpu_layers < requested:
                note = (
                    f"{requested} layers need {gib(fp.gpu_bytes(requested))} of GPU memory and "
                    f"{gib(max(budget, 0))} is free to use"
                )
                problems.append(
                    f"{os.path.basename(info.path)}: only {gpu_layers} of {requested} layers fit on the GPU "
                    f"({note}); the other {all_layers - gpu_layers} run on the CPU"
                )
            budget -= fp.gpu_bytes(gpu_layers)
        elif requested > 0 and budget is None:
            note = "free GPU memory unknown"
        plans.append(ModelPlan(info.path, role, fp, requested, gpu_layers, note))
    return MemPlan(tuple(plans), memory, tuple(problems), settings=settings)


def released(memory: Memory, gpu_bytes: int) -> Memory:
    """`memory` as it will be once models holding `gpu_bytes` of GPU memory are freed."""
    if not memory.gpus or gpu_bytes <= 0:
        return memory
    first, *rest = memory.gpus
    more = Device(first.name, min(first.total, first.free + gpu_bytes), first.total, first.integrated)
    return replace(memory, gpus=(more, *rest))


def gpu_layers_total(p: MemPlan) -> int:
    return sum(m.gpu_layers for m in p.models)


def plan_load(
    models: Iterable[tuple[GGUFInfo, bool]],
    settings: Settings,
    memory: Memory | None = None,
    held_gpu: int = 0,
) -> MemPlan:
    """The plan the loader follows: logs it, warns about partial offload, and raises ModelError
    (one line) when the models cannot fit in memory — before llama.cpp allocates anything.

    `held_gpu`: GPU bytes of the models loaded now. The new models are planned beside them (the
    old ones keep serving until the new ones are ready); when that costs GPU layers, the plan
    says `release_first`: free the old models before loading, so that a reload gets the same
    offload as a fresh start."""
    models = list(models)
    memory = memory or probe_memory()
    p = plan(models, settings, memory)
    if held_gpu > 0 and p.problems:
        freed = plan(models, p.settings, released(memory, held_gpu))
        if gpu_layers_total(freed) > gpu_layers_total(p):
            p = replace(freed, release_first=True)
    if not p.fits:
        raise ModelError(p.error())
    log.info("%s", p.summary())
    for problem in p.problems:
        log.warning("%s", problem)
    if p.swaps:
        log.warning(
            "the models need %s of system memory and %s is available without swap: expect slow completions",
            gib(p.cpu_bytes), gib(p.memory.ram_available or 0),
        )
    return p


def gib(n: float) -> str:
    if abs(n) >= 1 << 30:
        return f"{n / 2**30:,.1f} GiB"
    return f"{n / 2**20:,.0f} MiB"


def describe_memory(memory: Memory) -> list[str]:
    """Lines for `codelsp doctor`: the GPUs and the system memory."""
    lines = []
    if not memory.gpu_offload:
        lines.append("GPU              none used: this llama-cpp-python build is CPU-only")
    elif not memory.gpus:
        lines.append("GPU              offload supported; free GPU memory unknown (no device reported it)")
    for d in memory.gpus:
        lines.append(
            f"GPU              {d.name}" + (f" ({d.backend} backend)" if d.backend else "")
            + f": {gib(d.free)} free of {gib(d.total)}"
            + (" (shares system memory)" if d.integrated else "") + f" [{memory.gpu_source}]"
        )
    if memory.ram_available is not None:
        swap = f" (+ {gib(memory.swap_free)} swap)" if memory.swap_free else ""
        lines.append(f"system memory    {gib(memory.ram_available)} available{swap}")
    else:
        lines.append("system memory    unknown (no /proc/meminfo)")
    return lines
