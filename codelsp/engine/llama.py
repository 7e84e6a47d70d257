"""The model in memory: llama.cpp through llama-cpp-python's low-level bindings.

One `LoadedModel` holds a llama.cpp model and context. It is NOT thread-safe: only the engine's
worker thread touches it (see engine/worker.py).

Prompt state is kept per document in llama.cpp *sequences* of one unified KV pool, each document
taking the cells its prompt needs, with a second tier in system memory for documents evicted
from the pool (engine/kvcache.py). A request reuses the longest common token prefix with what its
document's slot already holds and evaluates only the rest.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import llama_cpp

from codelsp.engine.generation import Cancelled, GenStats, Generation, SamplerParams, complete_text, cut_at
from codelsp.engine.kvcache import HostTier, KVPool, Slot
from codelsp.engine.reuse import reuse_cached
from codelsp.engine.speculative import DraftSource, greedy_pick, speculation
from codelsp.models.families import FAMILIES, REPO_TOKENS, FimSpec, choose_order, detect_family, resolve_ids, stop_texts
from codelsp.models.errors import ModelError
from codelsp.models.gguf import KV_CACHE_TYPES, GGUFInfo
from codelsp.models.modelfile import check_model, kv_plan
from codelsp.settings import Settings

if TYPE_CHECKING:  # a type only: the engine does not depend on the code-action stage
    from codelsp.actions.chat import ChatPrompt

log = logging.getLogger(__name__)

N_BATCH = 512

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            # llama-cpp-python installs a log callback that prints to stderr; keep llama.cpp's
            # chatter out of the user's way unless they asked for debug logs.
            logging.getLogger("llama-cpp-python").setLevel(
                logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.ERROR
            )
            llama_cpp.llama_backend_init()
            _backend_ready = True


_Slot = Slot  # a document's sequence and tokens (engine/kvcache.py)


def load_model(path_str: str, settings: Settings, *, instruct: bool = False, gpu_layers: int | None = None,
               role: str = "") -> "LoadedModel":
    """Load a GGUF file. Raises ModelError with a one-line reason. `gpu_layers`: what the memory
    plan (memplan.py) found fits on the GPU; None: as `nGpuLayers` says. `role` names it in the
    load log line ("draft model": "loaded draft model PATH (...)")."""
    return LoadedModel(check_model(Path(path_str)), settings, instruct=instruct, gpu_layers=gpu_layers, role=role)


class LoadedModel:
    """A `Model` (engine/generation.py) in process: llama.cpp's model, context and KV pool."""

    remote = False
    backend = "local"

    def __init__(self, info: GGUFInfo, settings: Settings, *, instruct: bool = False, gpu_layers: int | None = None,
                 role: str = ""):
        _init_backend()
        self.info = info
        self.path = info.path
        self.settings = settings
        self._closed = False

        mparams = llama_cpp.llama_model_default_params()
        if gpu_layers is None:
            gpu_layers = 0x7FFFFFFF if settings.n_gpu_layers < 0 else settings.n_gpu_layers
        self.gpu_layers = gpu_layers
        self.planned_gpu_bytes = 0  # GPU memory the memory plan gave it (set by the engine)
        self.told_shared = False  # code actions said once that they use this base model (instruct.py)
        self.no_system_role = False  # only a chat server refuses a system message (remote.py)
        self.draft: DraftSource | None = None  # draftModel, for speculative "draft" (set by the worker: engine/draft.py)
        mparams.n_gpu_layers = gpu_layers
        t0 = time.perf_counter()
        model = llama_cpp.llama_model_load_from_file(info.path.encode(), mparams)
        if not model:
            raise ModelError(f"llama.cpp could not load {info.path} (run with --log-level debug for its log)")
        self.model = model
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(model)
        plan = kv_plan(info, settings, cache=not instruct)
        if plan.context != settings.context_size:
            log.info(
                "contextSize %d is more than %s was trained for; using %d",
                settings.context_size, os.path.basename(info.path), plan.context,
            )
            settings = dataclasses.replace(settings, context_size=plan.context)
            self.settings = settings
        self.kv = plan
        self.n_slots = plan.slots
        self.kv_bytes = plan.total_bytes
        if plan.note:
            log.warning("%s: using an f16 KV cache", plan.note)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = plan.cells
        cparams.n_batch = N_BATCH
        cparams.n_ubatch = N_BATCH
        cparams.n_seq_max = plan.n_seq + 2  # the last two spare: parking for reuse.py
        cparams.kv_unified = True  # one pool of cells: a document takes what its prompt needs
        ggml_type = KV_CACHE_TYPES[plan.cache_type][0]
        cparams.type_k = ggml_type
        cparams.type_v = ggml_type
        if plan.cache_type != "f16":  # llama.cpp quantizes the V cache only with flash attention
            cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        threads = settings.n_threads or os.cpu_count() or 1
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ModelError(
                f"llama.cpp could not create a context of {cparams.n_ctx} tokens ({plan.cache_type} KV) for {info.path} "
                "(out of memory? lower contextSize or promptCacheBytes, or set kvCacheType q8_0)"
            )
        self.ctx = ctx
        self.mem = llama_cpp.llama_get_memory(ctx)
        self.load_ms = (time.perf_counter() - t0) * 1000
        self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        flops = 2.0 * llama_cpp.llama_model_n_params(model)  # per evaluated token, about
        self.pool = KVPool(ctx, self.mem, llama_cpp.llama_n_ctx(ctx), plan.n_seq, HostTier(plan.host_bytes), flops)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._spm = llama_cpp.llama_vocab_type(self.vocab) == llama_cpp.LLAMA_VOCAB_TYPE_SPM
        self.fim = self._fim_spec(settings)
        # the sections of a FIM prompt (reuse.py moves cached runs only within their own section)
        self.fim_controls = frozenset(t for t in (self.fim.pre, self.fim.suf, self.fim.mid) if t is not None)
        if not self.fim.has_fim and not instruct:
            log.warning(
                "%s has no FIM tokens: completions continue the prefix only (prefix-only) and "
                "ignore the code after the cursor; a FIM model such as codellama-7b does better",
                os.path.basename(info.path),
            )
        self.chat_template = self._chat_template()
        self._specials: dict[str, int] | None = None  # special-token text -> id (chat_tokens)
        self._special_re: re.Pattern[str] | None = None
        self.stop_texts = tuple(stop_texts(self.fim.family))  # as a remote backend sends them
        self._logits_of: tuple[int, int] | None = None  # (seq, tokens in it) of the last logits
        log.info(
            "loaded %s%s (%s, %s layers on the GPU requested, KV pool of %d cells (%d full contexts of %d tokens), "
            "%s, %.0f MiB; system-memory tier %.0f MiB) in %.0f ms",
            f"{role} " if role else "", info.path, info.architecture, "all" if gpu_layers >= 0x7FFFFFFF else gpu_layers, self.pool.cells,
            self.n_slots, settings.context_size, plan.cache_type, self.kv_bytes / 2**20, plan.host_bytes / 2**20,
            self.load_ms,
        )

    @property
    def context_size(self) -> int:
        """Tokens one request may use: contextSize, capped at the model's trained context."""
        return self.settings.context_size

    @property
    def name(self) -> str:
        """The GGUF file's name."""
        return os.path.basename(self.path)

    # --- a remote backend's side of `Model`: never called on a local model (callers check `remote`)
    def ready(self, cancel: threading.Event | None = None, deadline: float | None = None) -> None:
        raise NotImplementedError("a local model has no server to ask")

    def prompt(self, prefix: Sequence[str], suffix: Sequence[str], near: Sequence[str] = ()) -> dict:
        raise NotImplementedError("a local model's prompt is token ids (completion/fim.py layout)")

    def chat(self, messages: list[dict], max_tokens: int, cancel: threading.Event | None = None,
             on_token: Callable[[int], None] | None = None) -> str:
        raise NotImplementedError("a local model's chats run in steps on the engine (actions/instruct.py)")

    # --- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)

    # --- vocabulary ---------------------------------------------------------------------
    def _raw_tokenize(self, data: bytes, parse_special: bool = False) -> list[int]:
        n_max = len(data) + 8
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, False, parse_special)
        if n < 0:
            buf = (llama_cpp.llama_token * -n)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, -n, False, parse_special)
        return list(buf[:n])

    def tokenize(self, text: str, first: bool = True, special: bool = False) -> list[int]:
        """Token ids of plain text (special-token text in the document stays plain text).

        `first=False` tokenizes a continuation: SentencePiece vocabularies would otherwise put a
        word-start space in front of it. `special=True` parses special-token text (chat
        templates only, never document text).
        """
        data = text.encode("utf-8", errors="replace")
        if first or not self._spm:
            return self._raw_tokenize(data, special)
        base = self._raw_tokenize(b"\n")
        toks = self._raw_tokenize(b"\n" + data, special)
        if toks[: len(base)] == base:
            return toks[len(base):]
        return self._raw_tokenize(data, special)

    def chat_tokens(self, prompt: "ChatPrompt") -> list[int]:
        """Token ids of a rendered chat: exactly the tokens of its whole text, with special-token
        text (`<|im_start|>`, `<s>`, `[INST]` where the vocabulary has it as a control token)
        parsed only in the template's parts, never in message contents.

        The text between two special tokens is tokenized in one piece, template and message text
        together, as the model saw it in training: tokenizing the parts apart would make the
        space in `[INST] You…` a token of its own. BOS is added where the vocabulary asks for it.
        """
        runs: list[int | str] = []  # special token ids and plain text between them
        for seg in prompt.segments:
            parts = self._split_special(seg.text) if seg.special else [seg.text]
            for part in parts:
                if isinstance(part, str) and runs and isinstance(runs[-1], str):
                    runs[-1] += part
                elif part != "":
                    runs.append(part)
        out: list[int] = []
        for run in runs:
            if isinstance(run, int):
                out.append(run)
            else:  # llama.cpp's own rule: a text after a special token is tokenized as a start
                out += self._raw_tokenize(run.encode("utf-8", errors="replace"))
        bos = llama_cpp.llama_vocab_bos(self.vocab)
        if llama_cpp.llama_vocab_get_add_bos(self.vocab) and bos >= 0 and (not out or out[0] != bos):
            out.insert(0, bos)
        return out

    def _split_special(self, text: str) -> list[int | str]:
        """`text` cut at the texts of the vocabulary's control and user-defined tokens (longest
        first, as llama.cpp's tokenizer matches them): ids for those, strings between."""
        if self._specials is None:
            found: dict[str, int] = {}
            mask = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
            for tok in range(self.n_vocab):
                if llama_cpp.llama_vocab_get_attr(self.vocab, tok) & mask:
                    t = self.token_text(tok)
                    if t and t not in found:
                        found[t] = tok
            self._specials = found
            self._special_re = re.compile("|".join(re.escape(t) for t in sorted(found, key=len, reverse=True))) if found else None
        if self._special_re is None:
            return [text]
        out: list[int | str] = []
        pos = 0
        for m in self._special_re.finditer(text):
            out += [text[pos:m.start()], self._specials[m.group()]]
            pos = m.end()
        out.append(text[pos:])
        return out

    def special_text(self, which: str) -> str:
        """Text of the BOS or EOS token ("" when the vocabulary has none), for chat templates."""
        tok = llama_cpp.llama_vocab_bos(self.vocab) if which == "bos" else llama_cpp.llama_vocab_eos(self.vocab)
        return self.token_text(tok) if tok >= 0 else ""

    def piece(self, token: int) -> bytes:
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of generated tokens; an incomplete character at the end is dropped."""
        return complete_text(b"".join(self.piece(t) for t in tokens))

    def token_text(self, token: int) -> str:
        raw = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def lookup_control(self, text: str) -> int | None:
        """Id of the special token whose text is exactly `text`, if the vocabulary has one."""
        toks = self._raw_tokenize(text.encode(), parse_special=True)
        if len(toks) == 1 and self.token_text(toks[0]) == text:
            attr = llama_cpp.llama_vocab_get_attr(self.vocab, toks[0])
            if attr & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED):
                return toks[0]
        return None

    def is_stop(self, token: int) -> bool:
        return (
            bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
            or token in self.fim.stop_ids
            or bool(llama_cpp.llama_vocab_is_control(self.vocab, token))
        )

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = llama_cpp.llama_model_meta_val_str(self.model, key.encode(), buf, 4096)
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def _chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def _fim_spec(self, settings: Settings) -> FimSpec:
        v = self.vocab
        api = {
            "pre": llama_cpp.llama_vocab_fim_pre(v),
            "suf": llama_cpp.llama_vocab_fim_suf(v),
            "mid": llama_cpp.llama_vocab_fim_mid(v),
        }
        if settings.fim_template:
            family, how = settings.fim_template, "setting fimTemplate"
        else:
            family, how = detect_family(self.token_text, self.lookup_control, api["pre"], self.info.architecture)
        pre, suf, mid, stops = resolve_ids(family, self.lookup_control)
        if how == "llama.cpp vocab":
            pre = api["pre"] if api["pre"] >= 0 else pre
            suf = api["suf"] if api["suf"] >= 0 else suf
            mid = api["mid"] if api["mid"] >= 0 else mid
        fam = FAMILIES[family]
        missing = [n for n, tid, need in (("prefix", pre, fam.pre), ("suffix", suf, fam.suf), ("middle", mid, fam.mid)) if need and tid is None]
        if missing:
            log.warning(
                "model %s has no %s token for FIM family %s; falling back to prefix-only completion",
                self.path, "/".join(missing), family,
            )
            family, how, pre, suf, mid = "none", how + " (tokens missing)", None, None, None
        bos = llama_cpp.llama_vocab_bos(v) if llama_cpp.llama_vocab_get_add_bos(v) else None
        if bos is not None and bos < 0:
            bos = None
        repo = [self.lookup_control(t) for t in REPO_TOKENS.get(family, ("", ""))[:2]]  # both, or neither
        repo = repo if None not in repo else [None, None]
        return FimSpec(family=family, pre=pre, suf=suf, mid=mid, order=choose_order(family, settings.fim_order),
                       bos=bos, stop_ids=frozenset(stops), detected_by=how, repo_name=repo[0], file_sep=repo[1])

    # --- KV slots (engine/kvcache.py) -----------------------------------------------------
    def cached_tokens(self, key: str) -> int:
        """Tokens of `key`'s prompt state in the KV pool."""
        return self.pool.cached_tokens(key)

    def host_tokens(self, key: str) -> int:
        """Tokens of `key`'s prompt state saved in system memory."""
        return self.pool.host_tokens(key)

    def cache_stats(self) -> dict[str, int | str]:
        """The two tiers now, for `codelsp/stats`: cells and bytes, documents, saves/restores."""
        host = self.pool.host
        return {
            "kvCacheType": self.kv.cache_type, "kvBytesPerToken": self.kv.bytes_per_token,
            "poolCells": self.pool.cells, "poolUsed": self.pool.used, "poolDocuments": len(self.pool),
            "hostBytes": host.nbytes, "hostBudget": host.budget, "hostDocuments": len(host),
            "saves": host.saved, "restores": host.restored, "hostDropped": host.dropped,
            "evictions": self.pool.evictions,
        }

    def state_bytes(self, key: str) -> int:
        """Bytes llama.cpp's state of `key`'s sequence takes (llama_state_seq_get_size_ext); 0
        when the document is not in the pool."""
        slot = self.pool.slot_of(key)
        return int(llama_cpp.llama_state_seq_get_size_ext(self.ctx, slot.seq, 0)) if slot else 0

    def forget(self, key: str) -> None:
        """Drop a document's prompt state (document closed), in both tiers."""
        self.pool.forget(key)

    def _decode(self, slot: _Slot, tokens: Sequence[int], all_logits: bool = False) -> None:
        self.pool.reserve(slot, len(tokens))  # evicts other documents when the pool is full
        b = self._batch
        start = len(slot.tokens)
        for i, tok in enumerate(tokens):
            b.token[i] = tok
            b.pos[i] = start + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = slot.seq
            b.logits[i] = 1 if all_logits or i == len(tokens) - 1 else 0
        b.n_tokens = len(tokens)
        self._logits_of = None
        rc = llama_cpp.llama_decode(self.ctx, b)
        if rc != 0:
            # leave the slot in a known state: drop whatever this call may have written
            llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, start, -1)
            raise RuntimeError(f"llama_decode failed with code {rc}")
        slot.tokens.extend(tokens)
        self._logits_of = (slot.seq, len(slot.tokens))

    def _verify(self, slot: _Slot, tok: int, drafts: list[int], pick: Callable[[int], int]) -> list[int]:
        """Evaluate `tok` and the `drafts` after it in one batch and pick the model's token at each
        position, in order, up to the first pick that differs from its draft: the picks (the
        accepted drafts, then the model's own token). The slot keeps `tok` and the accepted
        drafts; the KV is rolled back over the rejected ones."""
        self._decode(slot, [tok, *drafts], all_logits=True)
        picked: list[int] = []
        for i in range(len(drafts) + 1):
            picked.append(pick(i))
            if i == len(drafts) or picked[-1] != drafts[i]:
                break
        self._truncate(slot, len(slot.tokens) - len(drafts) + len(picked) - 1)
        return picked

    def _truncate(self, slot: _Slot, n: int) -> None:
        """Drop the slot's tokens (and their KV cells) from position `n` on."""
        if n < len(slot.tokens):
            llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, n, -1)
            del slot.tokens[n:]
            self._logits_of = None

    # --- generation -----------------------------------------------------------------------
    def generate(
        self,
        key: str,
        prompt: Sequence[int],
        *,
        max_tokens: int,
        sampler: SamplerParams,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
        check: Callable[[str], bool] | None = None,
        reuse: bool = True,
        pause: Callable[[], bool] | None = None,
        stop_texts: Sequence[str] | None = None,
    ) -> Generation:
        """Evaluate `prompt` in `key`'s KV slot (reusing its common prefix) and sample.

        Stops at an end-of-generation/control token, at `max_tokens`, at `deadline`
        (time.monotonic()), when `check(text_so_far)` returns True, or raises Cancelled when
        `cancel` is set (checked between batches and between tokens).

        `pause()` is asked between batches and tokens too: when it returns True, generation
        returns early with reason "paused" and everything evaluated so far left in the slot, so
        calling again with `prompt + tokens` resumes at the cost of one token (how a long code
        action lets a keystroke's completion run first).

        `stop_texts` (default: the FIM family's end texts, `self.stop_texts`, the same list a
        remote backend sends as `stop`): generation also stops where the text contains one of
        them written as ordinary tokens, and the text ends right before it (reason "stop").

        An empty prompt generates nothing (reason "stop"): there are no logits of its own to
        sample from. A prompt of contextSize tokens or more raises ModelError (it is never cut
        from the front); `max_tokens` is capped at the room the prompt leaves.
        """
        stats = GenStats()
        n_ctx = self.settings.context_size
        prompt = list(prompt)
        if not prompt:
            # nothing to condition on (a model without BOS, at the start of a file): sampling
            # would read logits another request left behind, or abort in llama.cpp without any
            return Generation("", [], "stop", stats)
        if len(prompt) >= n_ctx:
            # callers build prompts that fit (context.py, actions); never cut one from the front,
            # which would drop the layout's control tokens
            raise ModelError(f"a prompt of {len(prompt)} tokens does not fit the context of {n_ctx} tokens")
        max_tokens = min(max_tokens, n_ctx - len(prompt))
        got = self.pool.acquire(key, prompt if reuse else [])
        t0 = time.perf_counter()  # prompt time includes text evaluated between moved runs (reuse.py)
        slot = got.slot
        stats.restored = got.restored
        if not reuse:
            self.pool.clear(slot)
        common = 0
        if reuse:
            moving = self.settings.move_runs  # runs past new text (settings.py; on by default)
            got_back = reuse_cached(self.mem, self.pool, slot, prompt, spare=(self.kv.n_seq, self.kv.n_seq + 1) if moving else None,
                                    decode=(lambda t: [self._decode(slot, t[i:i + N_BATCH]) for i in range(0, len(t), N_BATCH)])
                                    if moving else None,
                                    controls=self.fim_controls)
            common, stats.shifted = got_back.kept, got_back.shifted
            stats.evaluated = got_back.evaluated
        stats.reused = common - stats.evaluated
        rest = prompt[common:]
        stats.evaluated += len(rest)
        for i in range(0, len(rest), N_BATCH):
            if cancel is not None and cancel.is_set():
                stats.prompt_ms = (time.perf_counter() - t0) * 1000
                raise Cancelled("cancelled during prompt evaluation")
            if i and pause is not None and pause():
                stats.prompt_ms = (time.perf_counter() - t0) * 1000
                stats.evaluated -= len(rest) - i  # only what was: the call that goes on counts the rest
                return Generation("", [], "paused", stats)
            self._decode(slot, rest[i:i + N_BATCH])
        spec = speculation(sampler.speculative, key, prompt, self.draft, stats, cancel, pause)  # a draft model catches up
        t1 = time.perf_counter()
        stats.prompt_ms = (t1 - t0) * 1000

        if self._logits_of != (slot.seq, len(slot.tokens)):
            raise RuntimeError("no logits of this prompt to sample from")  # never reached: a guard
        chain = self._make_sampler(sampler)

        def pick(i: int) -> int:  # the token the model gives at output `i` of the last batch
            if chain is None:
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
                return greedy_pick(logits, stats.logprobs)  # the argmax; its log-probability kept
            return llama_cpp.llama_sampler_sample(chain, self.ctx, i)

        base = len(slot.tokens)  # the prompt
        ready: list[int] = []  # tokens the last verify batch picked, not yet taken
        passed = 0  # tokens of `out` that went through the decode step (plain decoding: in the KV)
        stops = [t.encode("utf-8") for t in (self.stop_texts if stop_texts is None else stop_texts) if t]
        out: list[int] = []
        data = b""
        reason = "length"
        try:
            while len(out) < max_tokens:
                tok = ready.pop(0) if ready else pick(-1)
                if self.is_stop(tok):
                    reason = "stop"
                    break
                out.append(tok)
                piece = self.piece(tok)
                data += piece
                if stops and any(st in data[-(len(st) + len(piece)):] for st in stops):
                    data = cut_at(data, stops)
                    reason = "stop"
                    break
                if check is not None and check(complete_text(data)):
                    reason = "check"
                    break
                if len(out) >= max_tokens:
                    break
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled during generation")
                if deadline is not None and time.monotonic() > deadline:
                    reason = "time"
                    break
                if len(slot.tokens) < base + len(out):  # not in the KV yet (an accepted draft is)
                    # drafts only where they fit: within maxTokens, the context and the pool's free
                    # cells (a draft never evicts another document)
                    room = min(max_tokens - len(out), n_ctx - len(slot.tokens), self.pool.free) - 1
                    drafts = spec.draft(out, room) if spec is not None else []
                    if drafts:
                        ready = self._verify(slot, tok, drafts, pick)
                        spec.verified(out + ready[:-1], len(drafts), len(ready) - 1)
                    else:
                        self._decode(slot, [tok])
                passed += 1
                if pause is not None and pause():
                    reason = "paused"
                    break
        finally:
            # accepted drafts the loop never reached (it stopped first): plain decoding never
            # evaluated them, so the slot does not keep them either
            self._truncate(slot, base + passed)
            if chain is not None:
                llama_cpp.llama_sampler_free(chain)
            if spec is not None:
                stats.drafted, stats.accepted, stats.verifies = spec.drafted, spec.accepted, spec.batches
            stats.generated, stats.logprobs[:] = len(out), stats.logprobs[:len(stats.logprobs) - len(ready)]  # untaken picks dropped
            stats.gen_ms = (time.perf_counter() - t1) * 1000
        return Generation(complete_text(data), out, reason, stats)

    def next_tokens(self, key: str, prompt: Sequence[int], n: int) -> tuple[list[int], GenStats]:
        """The `n` most likely tokens after `prompt`, best first, end-of-generation tokens left out,
        and the cost of evaluating the prompt.

        Evaluates `prompt` in `key`'s slot like `generate()` (after a generation from the same
        prompt that is the last prompt token only: 1 token) and reads the raw logits, before any
        sampler. Used for the extra inline candidates (completion/pipeline.py `alternatives`).
        """
        stats = self.generate(key, prompt, max_tokens=0, sampler=SamplerParams(0.0, 0, 1.0, 1.0, 0)).stats
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
        out: list[int] = []
        for tok in np.argsort(-logits, kind="stable")[: n + 16]:
            if not self.is_stop(int(tok)):
                out.append(int(tok))
                if len(out) == n:
                    break
        return out, stats

    def _make_sampler(self, p: SamplerParams):
        if p.temperature <= 0:
            return None  # greedy: argmax of the logits, no sampler state at all
        sp = llama_cpp.llama_sampler_chain_default_params()
        chain = llama_cpp.llama_sampler_chain_init(sp)
        if p.repeat_penalty != 1.0:
            llama_cpp.llama_sampler_chain_add(
                chain, llama_cpp.llama_sampler_init_penalties(64, p.repeat_penalty, 0.0, 0.0)
            )
        if p.top_k > 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(p.top_k))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(p.temperature))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(p.seed))
        return chain

