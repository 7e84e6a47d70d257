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
-- logLevel, systemPrompt, extraContextTokens, repoContextTokens (context from other files: off by
-- default; the README's "Repository context"), and the rest of the README's settings.
-- Later wins: defaults < init_options < settings.codelsp < flags in cmd.

-- Opt-in (`send_definitions = true`, see editors/neovim/README.md): a second after the cursor
-- rests, ask the OTHER language servers of the buffer for the definitions of the identifiers
-- before the cursor and on the lines above it, and send a few lines of each definition to
-- codelsp (`codelsp/context`, the shape the VS Code extension sends) when they changed. codelsp
-- puts them before the file in the prompt (they need `repoContextTokens` > 0).
local CONTEXT = {
  delay_ms = 1000,   -- after the last cursor move
  lookback = 3,      -- lines above the cursor's line whose identifiers are looked up
  identifiers = 8,   -- identifiers looked up at most, nearest first
  lines = 12,        -- lines sent from each definition's first line
  snippets = 6,      -- definitions sent at most
  chars = 6000,      -- characters sent at most, all snippets together
  near = 100,        -- definitions in the current file this close to the cursor (lines) are skipped
}
local KEYWORDS = {}
for w in ([[and as assert async await break class const continue def del elif else except export
  false False finally for from function if import in is lambda let local new nil None nonlocal not
  null or pass raise return self then this true True try var while with yield]]):gmatch('%S+') do
  KEYWORDS[w] = true
end

-- The identifiers before the cursor on its line and on CONTEXT.lookback lines above, nearest
-- first, each name once, keywords left out, at most CONTEXT.identifiers: { row, col, name }
-- (0-based, col in bytes).
local function identifiers_near(bufnr, row, col)
  local out, seen = {}, {}
  for r = row, math.max(0, row - CONTEXT.lookback), -1 do
    local text = vim.api.nvim_buf_get_lines(bufnr, r, r + 1, false)[1] or ''
    local found = {}
    for at, name in (r == row and text:sub(1, col) or text):gmatch('()([%a_][%w_]*)') do
      table.insert(found, 1, { r, at - 1, name })
    end
    for _, f in ipairs(found) do
      if #out == CONTEXT.identifiers then return out end
      if not KEYWORDS[f[3]] and not seen[f[3]] then
        seen[f[3]] = true
        table.insert(out, f)
      end
    end
  end
  return out
end

-- CONTEXT.lines lines of the file `uri` from `line` (0-based): a loaded buffer's, else the
-- file's (read no further than needed); nil for another scheme or an unreadable file.
local function lines_at(uri, line)
  if not uri:match('^file:') then return nil end
  for _, b in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(b) and vim.uri_from_bufnr(b) == uri then
      return vim.api.nvim_buf_get_lines(b, line, line + CONTEXT.lines, false)
    end
  end
  local fname = vim.uri_to_fname(uri)
  if vim.fn.filereadable(fname) == 0 then return nil end
  return vim.list_slice(vim.fn.readfile(fname, '', line + CONTEXT.lines), line + 1)
end

-- One round: ask, gather the answers in the order of the identifiers, send what changed.
local function send_context(client, bufnr, state)
  if client:is_stopped() or vim.api.nvim_get_current_buf() ~= bufnr then return end
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  row = row - 1
  local uri, fname = vim.uri_from_bufnr(bufnr), vim.api.nvim_buf_get_name(bufnr)
  local spots = identifiers_near(bufnr, row, col)
  local servers = vim.tbl_filter(function(c)
    return c.id ~= client.id and c:supports_method('textDocument/definition', bufnr)
  end, vim.lsp.get_clients({ bufnr = bufnr }))
  state.round = state.round + 1
  local round, found, pending = state.round, {}, #spots * #servers

  local function finish()
    if round ~= state.round or client:is_stopped() then return end  -- a newer round runs
    local snippets, seen, total = {}, {}, 0
    for i = 1, #spots do
      for _, loc in ipairs(found[i] or {}) do
        local target = loc.targetUri or loc.uri or ''
        local range = loc.targetSelectionRange or loc.targetRange or loc.range
        local line = range and range.start and range.start.line or -1
        local here = target == uri or (target:match('^file:') and vim.uri_to_fname(target) == fname)
        local key = target .. ':' .. line
        if line >= 0 and not seen[key] and #snippets < CONTEXT.snippets
            and not (here and math.abs(line - row) <= CONTEXT.near) then
          seen[key] = true
          local text = table.concat(lines_at(target, line) or {}, '\n') .. '\n'
          if text:find('%S') and total + #text <= CONTEXT.chars then
            total = total + #text
            table.insert(snippets, { path = target, text = text })
          end
        end
      end
    end
    local json = vim.json.encode(snippets)
    if json ~= (state.sent or '[]') then   -- `{}` goes out as []: nothing, or clears what was sent
      state.sent = json
      client:notify('codelsp/context', { textDocument = { uri = uri }, snippets = snippets })
    end
  end

  if pending == 0 then return finish() end
  local function answered()
    pending = pending - 1
    if pending == 0 then finish() end
  end
  for _, server in ipairs(servers) do
    for i, spot in ipairs(spots) do
      local params = {
        textDocument = { uri = uri },
        position = { line = spot[1],
                     character = vim.lsp.util.character_offset(bufnr, spot[1], spot[2], server.offset_encoding) },
      }
      local sent = server:request('textDocument/definition', params, function(err, result)
        if not err and result then
          found[i] = found[i] or {}
          vim.list_extend(found[i], (result.uri or result.targetUri) and { result } or result)
        end
        answered()
      end, bufnr)
      if not sent then answered() end
    end
  end
end

-- Run a round CONTEXT.delay_ms after the cursor last moved in `bufnr` (or it came to the front).
local timer
local function context_on_rest(client, bufnr)
  local state, last = { round = 0 }, nil
  timer = timer or assert(vim.uv.new_timer())
  vim.api.nvim_create_autocmd({ 'BufEnter', 'CursorMoved', 'CursorMovedI' }, {
    group = vim.api.nvim_create_augroup('codelsp.context.' .. client.id .. '.' .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = function()
      timer:stop()
      timer:start(CONTEXT.delay_ms, 0, vim.schedule_wrap(function()
        if vim.api.nvim_get_current_buf() ~= bufnr then return end
        local here = vim.b[bufnr].changedtick .. ':' .. table.concat(vim.api.nvim_win_get_cursor(0), ':')
        if here ~= last then   -- moved or edited since the last round
          last = here
          send_context(client, bufnr, state)
        end
      end))
    end,
  })
end

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
  -- This file's own option, not a codelsp setting: send the definitions that the buffer's other
  -- language servers know for the identifiers near the cursor (codelsp/context; see CONTEXT).
  -- send_definitions = false,
  -- Tell the server which buffer you are in (codelsp's own `codelsp/didFocus` notification; LSP
  -- has no message for it): it evaluates that document's prompt at the cursor in the background,
  -- so the first keystroke after a buffer switch finds it ready. An on_attach of your own given
  -- through vim.lsp.config replaces this one: copy these lines into it.
  -- With `send_definitions = true` it also sends the definitions the other language servers
  -- know for the identifiers near the cursor (codelsp/context, see CONTEXT above).
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
    if client.config.send_definitions then context_on_rest(client, bufnr) end
  end,
}
