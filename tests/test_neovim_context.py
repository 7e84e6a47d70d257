"""Neovim's `send_definitions` (editors/neovim/lsp/codelsp.lua): a second after the cursor rests,
the definitions that the buffer's OTHER language servers know for the identifiers near the
cursor go to codelsp with `codelsp/context`, and codelsp puts them in the prompt.

The other server is a small pygls server written by the test: it answers textDocument/definition
for `area` with a Location and for `Square` with a LocationLink in lib/shapes.py (outside the
workspace, so only the editor's snippets can bring it into the prompt), and for `local_helper`
with a place in the current file near the cursor, which is not sent. Runs in Neovim 0.11 (the
test extra's wheel) and 0.12 (the team's tarball, skipped without it; see test_neovim012.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from support import run_neovim
from test_neovim012 import EPILOGUE, PRELUDE, nvim012  # noqa: F401 (a fixture)

DOC = (
    "from shapes import Square, area\n\n\n"
    "def local_helper(x):\n    return x\n\n\n"
    "def total(w, h):\n    s = Square(w)\n    return area(w, h) + local_helper(w)\n"
)
SHAPES = "".join([
    'def area(w, h):\n    """The area of a w by h rectangle, in square units."""\n    return w * h\n\n\n',
    "class Square:\n    def __init__(self, side):\n        self.side = side\n\n",
    "    def area(self):\n        return area(self.side, self.side)\n\n",
    "    def grow(self, by):\n        return Square(self.side + by)\n",
] * 2)
SQUARE_LINE = 5  # `class Square:` in SHAPES

FAKE_SERVER = r'''
import sys
from lsprotocol import types
from pygls.lsp.server import LanguageServer

shapes = sys.argv[1]
server = LanguageServer("fakedef", "1")


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
def definition(ls, params):
    word = ls.workspace.get_text_document(params.text_document.uri).word_at_position(params.position)
    at = lambda line: types.Range(types.Position(line, 0), types.Position(line, 3))
    if word == "area":
        return types.Location(shapes, at(0))
    if word == "Square":
        return [types.LocationLink(shapes, at(%(square)d), at(%(square)d))]
    if word == "local_helper":
        return types.Location(params.text_document.uri, at(3))
    return None


server.start_io()
'''

BODY = r"""
local fake_cmd = vim.json.decode([==[%(fake_cmd)s]==])
vim.lsp.config('fakedef', { cmd = fake_cmd, filetypes = { 'python' }, root_markers = { 'pyproject.toml' } })
vim.lsp.enable('fakedef')
results.notified, results.asked = {}, {}
vim.api.nvim_create_autocmd('LspNotify', { callback = function(ev)
  if ev.data.method == 'codelsp/context' then table.insert(results.notified, ev.data.params) end
end })
vim.api.nvim_create_autocmd('LspRequest', { callback = function(ev)
  local r = ev.data.request
  if r.method == 'textDocument/definition' and r.type == 'complete' then
    local name = vim.lsp.get_client_by_id(ev.data.client_id).name
    results.asked[name] = (results.asked[name] or 0) + 1
  end
end })

local function ask(method, params)   -- a request to codelsp, without blocking this coroutine
  local got
  client:request(method, params, function(err, result) got = { err = err, result = result } end, buf)
  return wait_for(method, function() return got end).result
end

function main()
  attach()
  wait_for('the other server', function() return vim.lsp.get_clients({ bufnr = buf, name = 'fakedef' })[1] end)
  results.config_kept = client.config.send_definitions or false
  vim.api.nvim_win_set_cursor(0, { 10, #line(10) - 1 })        -- on the last `)`
  if %(wait)s then
    wait_for('codelsp/context', function() return #results.notified == 1 end)
    local asked = results.asked.fakedef
    vim.api.nvim_win_set_cursor(0, { 10, #line(10) - 2 })       -- the same definitions: nothing sent
    wait_for('a second round', function() return (results.asked.fakedef or 0) == 2 * asked end)
    vim.api.nvim_win_set_cursor(0, { 1, 0 })                    -- no identifiers: [] clears them
    wait_for('the cleared context', function() return #results.notified == 2 end)
    vim.api.nvim_win_set_cursor(0, { 10, #line(10) - 1 })       -- back: sent again
    wait_for('codelsp/context again', function() return #results.notified == 3 end)
  end
  local uri = vim.uri_from_bufnr(buf)
  ask('textDocument/completion', { textDocument = { uri = uri }, position = { line = 9, character = #line(10) } })
  results.last = ask('codelsp/stats', { uri = uri }).last
  stop()
end
"""


@pytest.fixture(params=["0.11", "0.12"])
def any_nvim(request) -> Path:
    return request.getfixturevalue("nvim" if request.param == "0.11" else "nvim012")


def run(nvim: Path, tmp_path: Path, model, on: bool) -> dict:
    lib = tmp_path / "lib"
    lib.mkdir(parents=True)
    (lib / "shapes.py").write_text(SHAPES)
    (tmp_path / "fakedef.py").write_text(FAKE_SERVER % {"square": SQUARE_LINE})
    fake_cmd = json.dumps([sys.executable, str(tmp_path / "fakedef.py"), (lib / "shapes.py").as_uri()])
    config = {"init_options": {"repoContextTokens": 2000, "promptCache": False}}
    if on:
        config["send_definitions"] = True
    body = BODY % {"fake_cmd": fake_cmd, "wait": "true" if on else "false"}
    return run_neovim(nvim, tmp_path, model, PRELUDE + body + EPILOGUE, text=DOC, config=config,
                      startup="-S", timeout=120, own_home=True, log_tail=4000)


def test_the_definitions_of_other_servers_reach_the_prompt(any_nvim, tmp_path, model_factory):
    model = model_factory("starcoder", "return a + b", default="answer")
    off = run(any_nvim, tmp_path / "off", model, on=False)
    on = run(any_nvim, tmp_path / "on", model, on=True)
    shapes = (tmp_path / "on" / "lib" / "shapes.py")
    lines = shapes.read_text().splitlines()
    expected = [  # nearest identifier first: `area` on the cursor's line, `Square` above it
        {"path": shapes.as_uri(), "text": "\n".join(lines[0:12]) + "\n"},
        {"path": shapes.as_uri(), "text": "\n".join(lines[SQUARE_LINE:SQUARE_LINE + 12]) + "\n"},
    ]
    doc_uri = (tmp_path / "on" / "project" / "add.py").as_uri()
    assert on["config_kept"] is True and off["config_kept"] is False
    assert on["notified"][0] == {"textDocument": {"uri": doc_uri}, "snippets": expected}
    assert on["notified"][1]["snippets"] == [] and on["notified"][2] == on["notified"][0]
    assert "codelsp" not in on["asked"] and on["asked"]["fakedef"] > 0
    assert not off["notified"] and not off["asked"]
    # promptCache off: each completion evaluates its whole prompt; the snippets are in it
    assert off["last"]["source"] == on["last"]["source"] == "model", (off["last"], on["last"])
    assert on["last"]["evaluated"] > off["last"]["evaluated"] + 100, (off["last"], on["last"])
    assert "codelsp WARNING" not in on["lsp_log"] and "codelsp ERROR" not in on["lsp_log"]
