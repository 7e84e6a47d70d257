"""What the client can do, read once from its initialize request."""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types


@dataclass(frozen=True)
class Client:
    """The client's capabilities that change codelsp's answers (all False before initialize)."""

    name: str = ""  # clientInfo.name, lower case ("helix", "neovim", …); "" when not given
    snippets: bool = False  # completion items may be snippets (textDocument.completion.completionItem)
    markdown: bool = False  # it renders completion documentation as markdown (documentationFormat)
    progress: bool = False  # it accepts window/workDoneProgress

    @classmethod
    def from_initialize(cls, params: types.InitializeParams) -> "Client":
        caps = params.capabilities
        try:
            snippets = bool(caps.text_document.completion.completion_item.snippet_support)
        except AttributeError:
            snippets = False
        formats = []
        try:
            formats = caps.text_document.completion.completion_item.documentation_format or []
        except AttributeError:
            pass
        return cls(
            name=((params.client_info.name if params.client_info else None) or "").lower(),
            snippets=snippets,
            markdown=types.MarkupKind.Markdown in formats,
            progress=bool(caps and caps.window and caps.window.work_done_progress),
        )
