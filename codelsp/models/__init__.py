"""Model files: GGUF reading, FIM families, the demo model, Hugging Face, the memory plan, discovery.

Imports nothing of codelsp but settings: every other stage may build on it.
"""
