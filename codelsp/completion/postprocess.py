"""Post-processing: from raw model output to the text inserted at the cursor."""

from __future__ import annotations

from codelsp.completion.context import DocContext


def is_multiline(ctx: DocContext) -> bool:
    """A cursor with code to its right finishes the line; at the end of a line it may write more."""
    return ctx.line_suffix.strip() == ""


def _indent_width(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip(" "))


def early_stop(ctx: DocContext, multiline: bool) -> "callable":
    """A check for the engine: True once the text so far is complete enough to stop generating."""
    base = _indent_width(ctx.indent)  # the block the cursor is in

    def check(text: str) -> bool:
        if not multiline:
            return "\n" in text.lstrip("\n") if not ctx.line_prefix.strip() else "\n" in text
        lines = (ctx.line_prefix + text).split("\n")
        # a finished line (not the first) that is indented less than the cursor's line: the block
        # the user is writing has ended
        for line in lines[1:-1]:
            if line.strip() and _indent_width(line) < base:
                return True
        return False

    return check


def clean(raw: str, ctx: DocContext, multiline: bool) -> str:
    """The text to insert: cut to the line or block, without what already follows the cursor."""
    text = raw.replace("\r\n", "\n")
    if not multiline:
        if not ctx.line_prefix.strip():
            text = text.lstrip("\n")
        text = text.split("\n", 1)[0]
        text = text.rstrip()
        # do not repeat what already follows the cursor on this line (e.g. closing brackets)
        rest = ctx.line_suffix.rstrip()
        for k in range(min(len(rest), len(text)), 0, -1):
            if text.endswith(rest[:k]) and rest[:k].strip():
                text = text[: len(text) - k]
                break
        return text.rstrip()

    base = _indent_width(ctx.indent)  # the block the cursor is in
    lines = text.split("\n")
    kept = [lines[0]]
    for line in lines[1:]:
        if line.strip() and _indent_width(line) < base:
            break
        kept.append(line)
    # drop trailing lines that repeat the lines right after the cursor
    following = [ln.strip() for ln in ctx.suffix_text.replace("\r\n", "\n").split("\n") if ln.strip()]
    while kept and following:
        tail = [ln.strip() for ln in kept if ln.strip()]
        dropped = False
        for n in range(min(len(tail), len(following)), 0, -1):
            if tail[-n:] == following[:n]:
                # remove the last n non-empty lines
                count = 0
                while kept and count < n:
                    if kept[-1].strip():
                        count += 1
                    kept.pop()
                dropped = True
                break
        if not dropped:
            break
    text = "\n".join(kept).rstrip()
    return text
