#!/usr/bin/env bash
# Installs what tests/console.rs drives the web console with:
#   - Debian's chromium (headless), pinned; installed with apt-get when /usr/bin/chromium is
#     missing (needs root, as CI runs)
#   - playwright-core (no bundled browser) -> compat/browser/node_modules, from package-lock.json
# Idempotent: re-running only installs what is missing or at the wrong version.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHROMIUM_DEB_VERSION="156.0.8078.114-1~deb12u1"

echo "== browser: chromium ($CHROMIUM_DEB_VERSION)"
if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "chromium=$CHROMIUM_DEB_VERSION" >/dev/null; then
        # Debian's security archive keeps only the newest chromium: once a fix supersedes the
        # pin, the pinned build cannot be installed any more. Say so and take the current one.
        echo "chromium $CHROMIUM_DEB_VERSION is no longer in the archive; installing the current Debian 12 build" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
fi
/usr/bin/chromium --version

echo "== browser: playwright-core (compat/browser/package-lock.json)"
cd "$ROOT/compat/browser"
want="$(node -e 'console.log(require("./package-lock.json").packages["node_modules/playwright-core"].version)')"
have="$(node -e 'console.log(require("playwright-core/package.json").version)' 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
node -e 'console.log("playwright-core", require("playwright-core/package.json").version)'
