#!/usr/bin/env bash
# THE test command: installs the pinned legacy Nacos clients (Python 0.1.x, Node nacos 2.x)
# used by tests/legacy_clients.rs, then runs every test of the workspace.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/install-legacy-clients.sh

cargo nextest run --workspace --no-fail-fast "$@"

# nextest does not run doc tests; run them only if some crate has a doc test.
if grep -rqE '^\s*//[!/]\s*```' --include='*.rs' src ring config registry testkit 2>/dev/null; then
    cargo test --workspace --doc
fi
