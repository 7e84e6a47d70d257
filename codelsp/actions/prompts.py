"""The chat for one code action: a user message with the code it is about and its surroundings.

The targets come from targets.py; the model's answer becomes an edit in edits.py.
"""

from __future__ import annotations

from codelsp.actions.targets import DOCUMENT, EXPLAIN, WRITE_FUNCTION, Target

CONTEXT_LINES = 40


def _fence(language: str) -> str:
    return "" if language == "text" else language


def _around(lines: list[str], start: int, end: int, n: int = CONTEXT_LINES) -> str:
    return "\n".join(lines[max(start - n, 0): min(end + n, len(lines))])


def messages(target: Target, text: str, language: str, system: str) -> list[dict[str, str]]:
    """The chat (system + user message) for one action."""
    lines = text.split("\n")
    lang = _fence(language)
    code = "\n".join(lines[target.start: target.end])
    context = _around(lines, target.start, target.end)
    fn = target.function
    if target.command == WRITE_FUNCTION and fn is not None:
        head_end = fn.doc[1] if fn.doc else fn.body_start
        header = "\n".join(lines[fn.start: head_end])
        user = (
            f"Here is some {language} code:\n```{lang}\n{context}\n```\n\n"
            f"Write the body of the function `{fn.name}` below so that it does what its name, "
            f"signature and documentation say. Reply with the complete function in one ```{lang} "
            f"code block and nothing else.\n```{lang}\n{header}\n```"
        )
    elif target.command == WRITE_FUNCTION:
        comment = "\n".join(lines[target.comment[0]: target.comment[1]]) if target.comment else code
        user = (
            f"Here is some {language} code:\n```{lang}\n{context}\n```\n\n"
            f"Write the {language} code that this comment describes. Reply with the code in one "
            f"```{lang} code block and nothing else.\n```{lang}\n{comment}\n```"
        )
    elif target.command == EXPLAIN:
        user = (
            f"Explain what this {language} code does, briefly and precisely, for a programmer "
            f"reading it. Use a short paragraph or a few bullet points; do not repeat the code.\n"
            f"```{lang}\n{code}\n```"
        )
    elif target.command == DOCUMENT:
        style = "a docstring" if language == "python" else "a documentation comment"
        user = (
            f"Write {style} for the {language} function `{fn.name if fn else ''}` below: one summary "
            f"line, then its parameters and return value if any. Reply with only the text of the "
            f"documentation, without quotes, comment markers or code.\n```{lang}\n{code}\n```"
        )
    else:  # FIX
        problems = "\n".join(f"- {d}" for d in target.diagnostics)
        user = (
            f"This {language} code has these problems:\n{problems}\n\n```{lang}\n{code}\n```\n\n"
            f"Reply with the corrected code, all of it, in one ```{lang} code block and nothing else."
        )
    out = [{"role": "system", "content": system}] if system else []
    out.append({"role": "user", "content": user})
    return out
