"""FIM layout: arrange a request's prefix and suffix token ids in the model family's order.

A layout is built as token ids (never as a string that is re-tokenized), because special tokens
must be exactly the model's control-token ids. Which tokens a model has, and which orders its
family was trained on, is codelsp/models/families.py.
"""

from __future__ import annotations

from typing import Sequence

from codelsp.models.families import FimSpec


def layout(spec: FimSpec, prefix: Sequence[int], suffix: Sequence[int], near: Sequence[int] = (),
           before: Sequence[int] = ()) -> list[int]:
    """Arrange prefix and suffix token ids in the family's FIM layout.

    `before`: the repository context in the family's own format (completion/repo.py
    render_tokens), placed after BOS and before everything else, as the family was trained.

    `prefix` + `near` is the text before the cursor; `near` is its end (the current line's head
    and the lines typed just before it, see context.py). Order "psm-tail" puts `near` after the
    middle token, as llama.cpp's /infill does with its `prompt` field:
    `<pre> prefix <suf> suffix <mid> near` -- the model continues the near text, and typing,
    Enter and short moves down change only the end of the prompt. Suffix-first layouts (SPM,
    Codestral) also put the text that changes while the user types at the end of the prompt, so
    the cached prompt state covers everything before it.
    """
    head = ([spec.bos] if spec.bos is not None else []) + list(before)
    if spec.has_fim and spec.order == "psm-tail" and spec.family != "codestral":
        return head + [spec.pre] + list(prefix) + [spec.suf] + list(suffix) + [spec.mid] + list(near)
    prefix = list(prefix) + list(near)
    if not spec.has_fim:
        return head + list(prefix)
    if spec.family == "codestral":
        # [SUFFIX] suffix [PREFIX] prefix  -- the model continues the prefix
        return head + [spec.suf] + list(suffix) + [spec.pre] + list(prefix)
    if spec.order == "spm":
        # Code Llama's suffix-first layout: <PRE> <SUF> suffix <MID> prefix
        return head + [spec.pre, spec.suf] + list(suffix) + [spec.mid] + list(prefix)
    return head + [spec.pre] + list(prefix) + [spec.suf] + list(suffix) + [spec.mid]
