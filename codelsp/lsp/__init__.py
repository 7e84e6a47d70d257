"""LSP handlers: the server's thin face to the editor.

Documents exactly as the client has them, settings, progress, the JSON-RPC answers pygls does not
give, and the code-action commands. Each handler delegates to completion/, actions/ or engine/.
May import every other stage; no other stage imports lsp.
"""
