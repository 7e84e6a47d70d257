"""Code actions: what applies at the cursor, the chat prompt, running it on the engine, the edit.

targets.py finds the functions and the actions that fit at a position, prompts.py builds an
action's chat, chat.py renders it in the model's template, instruct.py runs it on the engine, and
edits.py turns the answer into a text edit. Language facts (comment syntax, file extensions) are
in codelsp/languages.py, shared with the completion path.
May import languages, engine, models and settings; never lsp, completion or tools.
"""
