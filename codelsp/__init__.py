"""codelsp: local-LLM code completion for any editor, as a language server over llama.cpp."""

__version__ = "0.1.0"
