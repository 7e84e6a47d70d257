"""Ghost text in a real Neovim 0.12 (`vim.lsp.inline_completion`), set up exactly as
editors/neovim/README.md says: its Lua block runs verbatim, with the shipped lsp/codelsp.lua.

The Neovim is the relocatable 0.12.4 tarball of the team's shared folder (`shared/neovim/` beside
the repository, or inside it; $CODELSP_NVIM012 names a tarball or an unpacked `nvim` instead),
unpacked once per test session into a temporary folder. Without it the tests are skipped, unless
$CODELSP_REQUIRE_NVIM012 is set (CI sets it).

Neovim 0.12 asks for inline completions only in insert mode, 200 ms after InsertEnter,
CursorMovedI or TextChangedP, and drops answers that arrive after insert mode ended. So each test
is a coroutine resumed by a timer every 20 ms: it feeds keys (processed by Neovim's main loop
between two resumptions) and waits, polling, for what a user would see: the ghost-text extmark in
the namespace `nvim.lsp.inline_completion` and the buffer's lines.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support import NEOVIM_DIR, ROOT, _nvim_version, run_neovim
README = NEOVIM_DIR / "README.md"
DOC = "def add(a, b):\n    \n"
ANSWER = "return a + b"
SECOND = "raise ValueError"


def readme_block() -> str:
    """The Lua block of editors/neovim/README.md that the tests run verbatim."""
    text = README.read_text()
    marker = "<!-- tests/test_neovim012.py runs this block verbatim"
    assert marker in text, "editors/neovim/README.md lost its Neovim 0.12 block"
    return re.search(r"```lua\n(.*?)\n```", text.split(marker, 1)[1], re.S).group(1)


def _tarballs() -> list[Path]:
    found: list[Path] = []
    env = os.environ.get("CODELSP_NVIM012")
    if env:
        found.append(Path(env))
    for shared in (ROOT / "shared", ROOT.parent / "shared"):
        found += sorted((shared / "neovim").glob("nvim-0.1[2-9]*-linux-x64.tar.gz"))
    return found


@pytest.fixture(scope="session")
def nvim012(tmp_path_factory) -> Path:
    for candidate in _tarballs():
        if candidate.is_file() and candidate.name.endswith(".tar.gz"):
            dest = tmp_path_factory.mktemp("nvim012")
            subprocess.run(["tar", "-xzf", str(candidate), "-C", str(dest)], check=True, timeout=120)
            found = sorted(dest.glob("*/bin/nvim"))
            nvim = found[0] if found else None
        else:
            nvim = candidate
        if nvim is not None and nvim.is_file() and (_nvim_version(nvim) or (0,)) >= (0, 12, 0):
            return nvim
    why = "no Neovim 0.12 tarball in shared/neovim beside or inside the repository (or $CODELSP_NVIM012)"
    if os.environ.get("CODELSP_REQUIRE_NVIM012"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def model(model_factory):
    info = model_factory("starcoder", ANSWER, second=SECOND, default="answer")
    assert info.completion == ANSWER and info.second_completion == SECOND
    return info


# P (from Python): rtp, cmd, timeout_ms, config, doc. The test defines main(), run in a coroutine.
PRELUDE = r"""
local P = vim.json.decode(PARAMS)
local function out(s) io.stdout:write(s, '\n'); io.stdout:flush() end
local results = { requests = {} }

vim.opt.runtimepath:prepend(P.rtp)
local exited = nil
vim.lsp.config('codelsp', vim.tbl_deep_extend('force', P.config or {}, {
  cmd = P.cmd,
  on_exit = function(code, signal) exited = { code = code, signal = signal } end,
}))
vim.lsp.enable('codelsp')
vim.api.nvim_create_autocmd('LspRequest', { callback = function(ev)
  local r = ev.data.request
  if r.type == 'pending' then table.insert(results.requests, r.method) end
end })

local function wait_for(what, cond)
  local deadline = vim.uv.now() + P.timeout_ms
  while true do
    local v = cond()
    if v then return v end
    if vim.uv.now() > deadline then
      error(('timed out waiting for %s; buffer %s, ghost %s, mode %s'):format(what,
        vim.inspect(vim.api.nvim_buf_get_lines(buf or 0, 0, -1, false)), vim.inspect(ghost and ghost()),
        vim.api.nvim_get_mode().mode), 2)
    end
    coroutine.yield()
  end
end

local client, buf, ghost
local function attach()
  vim.cmd.edit(vim.fn.fnameescape(P.doc))
  buf = vim.api.nvim_get_current_buf()
  client = wait_for('codelsp to attach', function()
    local c = vim.lsp.get_clients({ bufnr = buf, name = 'codelsp' })[1]
    return c and c.initialized and c
  end)
end

local function stop()
  client:stop()
  wait_for('the server to exit', function() return exited end)
  results.exit = exited
end

-- keys as typed (mappings apply)
local function keys(k) vim.api.nvim_feedkeys(vim.keycode(k), 'm', false) end

local ns = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')
-- The ghost text as shown: the text after the cursor, its further lines, and the (i/n) hint.
function ghost()
  local marks = vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })
  if #marks == 0 then return nil end
  local d = marks[1][4]
  local text, hint = {}, nil
  for _, chunk in ipairs(d.virt_text or {}) do
    if chunk[2] == 'ComplHintMore' then hint = chunk[1] else table.insert(text, chunk[1]) end
  end
  local s = table.concat(text)
  for _, line in ipairs(d.virt_lines or {}) do
    local parts = {}
    for _, chunk in ipairs(line) do
      if chunk[2] == 'ComplHintMore' then hint = chunk[1] else table.insert(parts, chunk[1]) end
    end
    s = s .. '\n' .. table.concat(parts)
  end
  return { text = s, hint = hint, row = marks[1][2], col = marks[1][3] }
end

local function ghost_is(text, hint)
  return function()
    local g = ghost()
    return g and g.text == text and (hint == nil or g.hint == hint) and g
  end
end

local function line(row) return vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1] end
local function line_is(row, text) return function() return line(row) == text end end
"""

EPILOGUE = r"""
vim.api.nvim_create_autocmd('VimEnter', { nested = true, once = true, callback = function()
  local co = coroutine.create(function() return xpcall(main, debug.traceback) end)
  local timer = assert(vim.uv.new_timer())
  local function finish(ok, err)
    timer:stop()
    timer:close()
    out('RESULTS ' .. vim.json.encode(results))
    out(ok and 'PASS' or ('FAIL ' .. tostring(err)))
    vim.cmd('qa!')
  end
  timer:start(0, 20, vim.schedule_wrap(function()
    if coroutine.status(co) == 'dead' then return end
    local resumed, ok, err = coroutine.resume(co)
    if not resumed then finish(false, ok)
    elseif coroutine.status(co) == 'dead' then finish(ok, err) end
  end))
end })
"""


def run_nvim012(nvim: Path, tmp_path: Path, body: str, model, config: dict | None = None) -> dict:
    lua = PRELUDE + "\n-- editors/neovim/README.md, verbatim:\n" + readme_block() + "\n" + body + EPILOGUE
    return run_neovim(nvim, tmp_path, model, lua, text=DOC, config=config,
                      startup="-S", timeout=120, own_home=True, log_tail=4000)


def test_typing_shows_the_ghost_text_and_tab_accepts_it(nvim012, tmp_path, model):
    body = r"""
function main()
  attach()
  results.inline_supported = client:supports_method('textDocument/inlineCompletion', buf)
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  keys('A')                                     -- insert mode at the end of "    "
  results.first = wait_for('the ghost text', ghost_is('return a + b'))
  results.mode = vim.api.nvim_get_mode().mode
  keys('re')                                    -- typing what it shows keeps showing the rest
  results.typed = wait_for('the rest of the ghost text', function()
    return line(2) == '    re' and ghost_is('turn a + b')()
  end)
  keys('<Tab>')
  wait_for('the accepted line', line_is(2, '    return a + b'))
  results.cursor = vim.api.nvim_win_get_cursor(0)
  results.lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  keys('<Esc>')
  wait_for('normal mode', function() return vim.api.nvim_get_mode().mode == 'n' end)
  results.ghost_after_esc = ghost() or vim.NIL
  stop()
end
"""
    r = run_nvim012(nvim012, tmp_path, body, model)
    assert r["inline_supported"] is True
    assert r["mode"] == "i"
    assert r["first"]["row"] == 1 and r["first"]["col"] == 4 and r["first"].get("hint") is None
    assert r["typed"]["col"] == 6
    assert r["lines"] == ["def add(a, b):", "    return a + b"]
    assert r["cursor"] == [2, len("    return a + b")]
    assert r["ghost_after_esc"] is None
    assert set(r["requests"]) == {"textDocument/inlineCompletion"}
    assert r["exit"] == {"code": 0, "signal": 0}
    assert "codelsp WARNING" not in r["lsp_log"] and "codelsp ERROR" not in r["lsp_log"]


def test_accept_a_word_then_the_rest_of_the_line(nvim012, tmp_path, model):
    body = r"""
function main()
  attach()
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  keys('A')
  wait_for('the ghost text', ghost_is('return a + b'))
  keys('<M-w>')                                 -- one word
  wait_for('one word', line_is(2, '    return'))
  results.after_word = line(2)
  results.rest = wait_for('the rest as ghost text', ghost_is(' a + b'))
  keys('<M-w>')
  wait_for('the next word', line_is(2, '    return a'))
  wait_for('the rest as ghost text', ghost_is(' + b'))
  keys('<M-l>')                                 -- the rest of the line
  wait_for('the line', line_is(2, '    return a + b'))
  results.lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  keys('<Esc>')
  stop()
end
"""
    r = run_nvim012(nvim012, tmp_path, body, model)
    assert r["after_word"] == "    return"
    assert r["rest"]["col"] == len("    return")
    assert r["lines"] == ["def add(a, b):", "    return a + b"]


def test_cycling_shows_the_second_candidate(nvim012, tmp_path, model):
    body = r"""
function main()
  attach()
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  keys('A')
  results.first = wait_for('the ghost text', ghost_is('return a + b'))
  keys('<M-]>')
  results.second = wait_for('the second candidate', ghost_is('raise ValueError', ' (2/2)'))
  keys('<M-]>')
  results.wrapped = wait_for('the first again', ghost_is('return a + b', ' (1/2)'))
  keys('<M-[>')
  wait_for('the second again', ghost_is('raise ValueError', ' (2/2)'))
  keys('<Tab>')
  wait_for('the second accepted', line_is(2, '    raise ValueError'))
  results.lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  keys('<Esc>')
  stop()
end
"""
    r = run_nvim012(nvim012, tmp_path, body, model, config={"init_options": {"candidates": 2}})
    assert r["first"].get("hint") is None
    assert r["lines"] == ["def add(a, b):", "    raise ValueError"]
    assert "codelsp WARNING" not in r["lsp_log"]


def test_the_block_does_nothing_on_neovim_011(nvim, tmp_path, model):
    """The README's 0.12 block is safe in a 0.11 config: no error, no ghost-text keymaps."""
    from test_editors import run_nvim

    body = readme_block() + r"""
function main()
  results.version = vim.version().minor
  results.tab = vim.fn.maparg('<Tab>', 'i', false, true).desc or ''
  results.word = vim.fn.maparg('<M-w>', 'i')
end
"""
    r = run_nvim(nvim, tmp_path, body, model)
    if r["version"] >= 12:
        pytest.skip("the Neovim of the 0.11 tests is newer")
    assert "codelsp" not in r["tab"] and r["word"] == ""


def test_a_multi_line_suggestion_is_shown_and_accepted_as_the_model_wrote_it(nvim012, tmp_path, model_factory):
    multi = "if a:\n        raise ValueError\n    return b"
    body = r"""
function main()
  attach()
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  keys('A')
  results.ghost = wait_for('the ghost text', ghost_is('if a:\n        raise ValueError\n    return b'))
  keys('<Tab>')
  wait_for('the accepted block', line_is(4, '    return b'))
  results.lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  results.cursor = vim.api.nvim_win_get_cursor(0)
  keys('<Esc>')
  stop()
end
"""
    r = run_nvim012(nvim012, tmp_path, body, model_factory("starcoder", multi, default="answer"))
    assert r["ghost"]["row"] == 1 and r["ghost"]["col"] == 4
    assert r["lines"] == ["def add(a, b):", "    if a:", "        raise ValueError", "    return b"]
    assert r["cursor"] == [4, len("    return b")]


def test_switching_buffers_tells_the_server_which_document_is_in_front(nvim012, tmp_path, model):
    """lsp/codelsp.lua sends codelsp/didFocus on attach and on BufEnter: the server warms the
    document you come back to (background prompt evaluation at the cursor)."""
    body = r"""
function main()
  attach()
  local first = vim.uri_from_bufnr(buf)
  local other = vim.fs.joinpath(vim.fs.dirname(P.doc), 'other.py')
  vim.fn.writefile({ 'x = 1', 'y = 2' }, other)
  vim.cmd.edit(vim.fn.fnameescape(other))
  local obuf = vim.api.nvim_get_current_buf()
  wait_for('codelsp on other.py', function() return vim.lsp.buf_is_attached(obuf, client.id) end)
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  vim.cmd.buffer(buf)                            -- back to add.py
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  local function totals()  -- codelsp/stats, asked without blocking this coroutine
    local got
    client:request('codelsp/stats', { uri = first }, function(_, result) got = result or {} end, buf)
    return wait_for('codelsp/stats', function() return got end).totals
  end
  for _ = 1, 200 do
    results.totals = totals()
    if results.totals.focused >= 3 and results.totals.warmed > 0 then break end
  end
  stop()
end
"""
    r = run_nvim012(nvim012, tmp_path, body, model)
    # add.py on attach, other.py, add.py again: each switch told once
    assert r["totals"]["focused"] == 3, r["totals"]
    assert r["totals"]["model"] == 0 and r["totals"]["warmed"] > 0, r["totals"]
    assert "codelsp WARNING" not in r["lsp_log"] and "codelsp ERROR" not in r["lsp_log"]
