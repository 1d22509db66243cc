#!/usr/bin/env bash
# THE test command: installs the pinned test runner and legacy Nacos clients (Python nacos-sdk-python 0.1.x,
# Node nacos 2.x) used by tests/legacy_clients.rs, Debian's chromium and playwright-core for the
# console's browser tests, checks the Prometheus alert rules with
# promtool (Debian's `prometheus` package, pinned) and the Kubernetes manifests with
# kubernetes-validate (PyPI, pinned), then runs every test of the workspace.
# Extra arguments go to `cargo nextest run` (e.g. a test filter).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The test runner, pinned; installed from crates.io when missing (a fresh machine may lack it).
NEXTEST_VERSION=0.9.143
if ! cargo nextest --version 2>/dev/null | grep -q "cargo-nextest $NEXTEST_VERSION"; then
    cargo install cargo-nextest --version "$NEXTEST_VERSION" --locked
fi

bash scripts/install-legacy-clients.sh
# Debian's chromium and playwright-core, for the web console's browser tests (tests/console.rs).
bash scripts/install-browser.sh

# The alert rules under deploy/prometheus: valid, and each alert fires on the series its test
# gives it (promtool from Debian's prometheus package, pinned).
PROMETHEUS_DEB_VERSION=2.42.0+ds-5+deb12u1
if ! command -v promtool >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "prometheus=$PROMETHEUS_DEB_VERSION" >/dev/null
fi
(cd deploy/prometheus && promtool check rules nacre-alerts.yml && promtool test rules nacre-alerts.test.yml)

# The Kubernetes manifests against the Kubernetes schemas, strictly (unknown fields fail):
# kubernetes-validate from PyPI, pinned; it carries the schemas, so the check needs no cluster
# and no network.
KV_VERSION=1.37.0
KV_VENV="$ROOT/compat/kubernetes/.venv"
if ! "$KV_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KV_VERSION')" 2>/dev/null; then
    python3 -m venv "$KV_VENV"
    "$KV_VENV/bin/python" -m pip install --disable-pip-version-check --quiet "kubernetes-validate==$KV_VERSION"
fi
"$KV_VENV/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml

# nextest does not run doc tests. Run them first so that nextest's summary is the last word.
doc_status=0
cargo test --workspace --doc || doc_status=$?

cargo nextest run --workspace --no-fail-fast "$@"

if [ "$doc_status" -ne 0 ]; then
    echo "doc tests failed (exit $doc_status)" >&2
    exit "$doc_status"
fi
