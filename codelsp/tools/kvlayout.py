"""Per-token decode cost of the two KV layouts llama.cpp offers for several documents, on this machine.

`python -m codelsp.tools.kvlayout MODEL.gguf [TOKENS] [FLASH_ATTN]`: two contexts each hold four
documents of TOKENS tokens (default 1,500) — one with a KV stream per sequence (`kv_unified`
False, a fixed slot per document), one with a unified pool (`kv_unified` True, what codelsp uses,
engine/kvcache.py) — and one decoded token in document 0 is timed in each (min over interleaved
rounds, so load from other work hits both alike; 1 thread). Then the pool's other documents are
removed and document 0 is timed alone. FLASH_ATTN: llama.cpp's flash_attn_type (0 off, 1 on).
Prints ms per decoded token; a measurement for the README, not a test.
"""

import sys
import time

import llama_cpp


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    path = argv[0]
    fill = int(argv[1]) if len(argv) > 1 else 1500
    fa = int(argv[2]) if len(argv) > 2 else 0
    NSEQ, NDEC, ROUNDS = 4, 16, 6
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(path.encode(), llama_cpp.llama_model_default_params())
    nv = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))

    def make(unified):
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = NSEQ * 2048
        cp.n_batch = cp.n_ubatch = 512
        cp.n_seq_max = NSEQ
        cp.kv_unified = unified
        cp.n_threads = cp.n_threads_batch = 1
        cp.flash_attn_type = fa
        ctx = llama_cpp.llama_init_from_model(model, cp)
        b = llama_cpp.llama_batch_init(512, 0, 1)
        return ctx, b

    def dec(ctx, b, seq, start, toks):
        for i, t in enumerate(toks):
            b.token[i] = t; b.pos[i] = start + i; b.n_seq_id[i] = 1; b.seq_id[i][0] = seq
            b.logits[i] = i == len(toks) - 1
        b.n_tokens = len(toks)
        assert llama_cpp.llama_decode(ctx, b) == 0

    def filled(unified):
        ctx, b = make(unified)
        for s in range(NSEQ):
            for i in range(0, fill, 512):
                n = min(512, fill - i)
                dec(ctx, b, s, i, [(100 + s * 7 + i + j) % nv for j in range(n)])
        return ctx, b

    def per_token(ctx, b):
        t0 = time.perf_counter()
        for k in range(NDEC):
            dec(ctx, b, 0, fill + k, [(5 + k) % nv])
        dt = (time.perf_counter() - t0) / NDEC * 1000
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), 0, fill, -1)
        return dt

    streams, pool = filled(False), filled(True)
    best = {"streams, 4 docs": 1e9, "pool, 4 docs": 1e9}
    for _ in range(ROUNDS):
        best["streams, 4 docs"] = min(best["streams, 4 docs"], per_token(*streams))
        best["pool, 4 docs"] = min(best["pool, 4 docs"], per_token(*pool))
    mem = llama_cpp.llama_get_memory(pool[0])
    for s in range(1, NSEQ):
        llama_cpp.llama_memory_seq_rm(mem, s, -1, -1)
    best["pool, 1 doc"] = 1e9
    for _ in range(ROUNDS):
        best["streams, 4 docs"] = min(best["streams, 4 docs"], per_token(*streams))
        best["pool, 1 doc"] = min(best["pool, 1 doc"], per_token(*pool))
    for k, v in best.items():
        print(f"flash_attn={fa} {k:<16} {fill} tokens/doc: {v:.2f} ms per decoded token", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
