"""Next-edit suggestions: the user's recent edits (history.py), the prompt and the answer's
edits (predict.py), served as Copilot's `textDocument/copilotInlineEdit` (lsp/nextedit.py)."""
