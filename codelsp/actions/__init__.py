"""Code actions: what applies at the cursor, the chat prompt, running it on the engine, the edit.

May import languages, engine, models and settings; never lsp, completion or tools.
"""
