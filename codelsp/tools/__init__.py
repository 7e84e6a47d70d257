"""Commands around the server: `codelsp bench` and `codelsp doctor`.

May import any stage.
"""
