"""The engine: the one worker thread that owns the models, llama.cpp and its KV state, remote backends.

May import models and settings; never lsp, completion, actions or tools.
"""
