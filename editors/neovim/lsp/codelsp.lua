-- codelsp: local-LLM code completion (a GGUF model through llama.cpp) as a language server.
--
-- Neovim 0.11+ reads this file from `lsp/codelsp.lua` on the 'runtimepath'; turn it on with
--   vim.lsp.enable('codelsp')
-- Ghost text (Neovim 0.12: vim.lsp.inline_completion) and the completion menu (0.11) need a few
-- lines of keymaps: see editors/neovim/README.md.
-- and override any field with vim.lsp.config('codelsp', { ... }) (tables are merged).
-- nvim-lspconfig users can use the same file. See editors/neovim/README.md.
--
-- Settings use the camelCase keys of codelsp (the same as its command-line flags):
-- model, instructModel, nGpuLayers, contextSize, maxTokens, candidates, promptCache, promptCacheBytes,
-- temperature, topK, topP, repeatPenalty, seed, fimTemplate, fimOrder, timeoutMs, nThreads,
-- logLevel, systemPrompt. Later wins: defaults < init_options < settings.codelsp < flags in cmd.

---@type vim.lsp.Config
return {
  -- `codelsp` must be on $PATH (e.g. `pipx install codelsp`), or give the full path:
  --   cmd = { '/path/to/venv/bin/codelsp', 'serve' },
  -- Flags work too: { 'codelsp', 'serve', '--model', '/models/qwen2.5-coder-1.5b-q8_0.gguf' }
  cmd = { 'codelsp', 'serve' },
  filetypes = {
    'c', 'cpp', 'cs', 'cuda', 'dart', 'elixir', 'erlang', 'go', 'haskell', 'html', 'java',
    'javascript', 'javascriptreact', 'julia', 'kotlin', 'lua', 'ocaml', 'php', 'python', 'r',
    'ruby', 'rust', 'scala', 'sh', 'bash', 'zsh', 'sql', 'swift', 'typescript',
    'typescriptreact', 'vue', 'svelte', 'zig',
  },
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'Cargo.toml', 'go.mod' },
  -- Read once when the server starts, before the model is loaded: put the model here so it is
  -- loaded only once. Commented values are the defaults.
  init_options = {
    -- model = vim.fn.expand('~/models/qwen2.5-coder-1.5b-instruct-q8_0.gguf'), -- default: the embedded demo model
    -- instructModel = nil,   -- model for code actions; default: the base model
    -- nGpuLayers = -1,       -- -1: every layer on the GPU when llama.cpp was built with one
    -- contextSize = 5000,    -- tokens of context per request
    -- maxTokens = 64,        -- completion length cap, in tokens
    -- candidates = 1,        -- ghost-text suggestions to cycle through (0.12: vim.lsp.inline_completion.select)
    -- promptCache = true,    -- keep and reuse the prompt (KV) state per document
    -- temperature = 0.01,
    -- fimTemplate = nil,     -- override the detected FIM family: codellama, starcoder, deepseek,
    --                        -- qwen, codegemma, codestral, none
    -- timeoutMs = 5000,      -- wall-clock budget for one completion
    -- logLevel = 'info',     -- logs appear in :LspLog
  },
  -- Sent right after start and again on every change (workspace/didChangeConfiguration); wins
  -- over init_options. Same keys, inside a `codelsp` table, for example:
  --   settings = { codelsp = { maxTokens = 32, temperature = 0.2 } },
  -- (An empty `codelsp = {}` would be sent as a JSON array: leave it out, or use vim.empty_dict().)
  settings = {},
  -- Tell the server which buffer you are in (codelsp's own `codelsp/didFocus` notification; LSP
  -- has no message for it): it evaluates that document's prompt at the cursor in the background,
  -- so the first keystroke after a buffer switch finds it ready. An on_attach of your own given
  -- through vim.lsp.config replaces this one: copy these lines into it.
  on_attach = function(client, bufnr)
    local function focus()
      if vim.api.nvim_get_current_buf() == bufnr and not client:is_stopped() then
        client:notify('codelsp/didFocus', vim.lsp.util.make_position_params(0, client.offset_encoding))
      end
    end
    vim.api.nvim_create_autocmd('BufEnter', {
      group = vim.api.nvim_create_augroup('codelsp.focus.' .. client.id .. '.' .. bufnr, { clear = true }),
      buffer = bufnr,
      callback = focus,
    })
    focus()   -- the buffer it attached to is usually the one in front
  end,
}
