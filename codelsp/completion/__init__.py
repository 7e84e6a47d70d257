"""The completion path: document context -> FIM layout -> engine -> post-processing.

Each step is a plain function testable without a server (pipeline.complete() runs them in order).
May import engine, models and settings; never lsp, actions or tools.
"""
