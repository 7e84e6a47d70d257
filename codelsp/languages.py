"""Language facts: which language a document is in, and how its comments are written.

The one place for per-language tables: the completion path (the comment line that names a
neighbouring file, lsp/server.py) and the code actions (Explain's and Document's comments,
actions/targets.py and actions/edits.py) both read them. Imports nothing of codelsp.
"""

from __future__ import annotations

_LANG_BY_EXT = {
    "py": "python", "pyi": "python", "js": "javascript", "mjs": "javascript", "ts": "typescript",
    "tsx": "typescriptreact", "jsx": "javascriptreact", "c": "c", "h": "c", "cc": "cpp", "cpp": "cpp",
    "hpp": "cpp", "rs": "rust", "go": "go", "java": "java", "kt": "kotlin", "swift": "swift",
    "rb": "ruby", "sh": "shellscript", "bash": "shellscript", "lua": "lua", "sql": "sql",
    "hs": "haskell", "cs": "csharp", "php": "php", "scala": "scala", "zig": "zig",
    "el": "lisp", "clj": "clojure", "lisp": "lisp", "r": "r", "jl": "julia", "pl": "perl",
    "yaml": "yaml", "yml": "yaml", "toml": "toml", "ex": "elixir", "exs": "elixir",
    "css": "css", "html": "html", "htm": "html", "xml": "xml", "md": "markdown", "json": "json",
    "ps1": "powershell", "ml": "ocaml", "vue": "vue",
}
_HASH = {"python", "ruby", "shellscript", "perl", "r", "julia", "yaml", "toml", "elixir", "makefile",
         "dockerfile", "powershell", "cmake", "nix", "coffeescript", "graphql", "tcl", "awk", "fish", "zsh"}
_DASHES = {"lua", "sql", "haskell", "ada", "elm"}
_SEMI = {"lisp", "clojure", "scheme", "ini", "asm", "racket"}
# languages without line comments: Explain writes a block comment (or nothing, for JSON)
BLOCK_COMMENTS = {
    "css": ("/*", "*/"), "html": ("<!--", "-->"), "xml": ("<!--", "-->"), "markdown": ("<!--", "-->"),
    "svg": ("<!--", "-->"), "vue": ("<!--", "-->"), "ocaml": ("(*", "*)"),
}
NO_COMMENTS = {"json", "plaintext", "text"}


def language_of(language_id: str | None, uri: str) -> str:
    if language_id:
        return language_id.lower()
    ext = uri.rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
    return _LANG_BY_EXT.get(ext, "text")


def comment_prefix(language: str) -> str:
    if language in _HASH:
        return "#"
    if language in _DASHES:
        return "--"
    if language in _SEMI:
        return ";"
    return "//"
