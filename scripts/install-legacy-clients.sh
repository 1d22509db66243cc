#!/usr/bin/env bash
# Installs the real legacy Nacos 1.x clients used by tests/legacy_clients.rs:
#   - Python: nacos-sdk-python 0.1.x  -> compat/python/.venv
#   - Node:   nacos 2.x (nacos-naming) -> compat/node/node_modules (from package-lock.json)
# Idempotent: re-running only (re)installs what is missing or at the wrong version.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY_PIN="nacos-sdk-python==0.1.17"
PY_VERSION="0.1.17"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/compat/python/.venv"

echo "== legacy clients: python ($PY_PIN)"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("nacos-sdk-python"))' 2>/dev/null || true)"
if [ "$installed" != "$PY_VERSION" ]; then
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "$PY_PIN"
fi
"$VENV/bin/python" -c 'import nacos, importlib.metadata as m; print("nacos-sdk-python", m.version("nacos-sdk-python"))'

echo "== legacy clients: node (compat/node/package-lock.json)"
cd "$ROOT/compat/node"
if [ -f node_modules/.package-lock.json ] && cmp -s <(node -e 'const l=require("./package-lock.json");console.log(JSON.stringify(l.packages["node_modules/nacos"]))') \
        <(node -e 'const l=require("./node_modules/.package-lock.json");console.log(JSON.stringify((l.packages||{})["node_modules/nacos"]))' 2>/dev/null); then
    echo "node_modules up to date"
else
    npm ci --no-audit --no-fund --loglevel=error
fi
node -e 'console.log("nacos", require("nacos/package.json").version, "nacos-naming", require("nacos-naming/package.json").version)'
