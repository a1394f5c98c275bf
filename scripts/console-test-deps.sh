#!/usr/bin/env bash
# Installs what the console's browser test (tests/tests/console_browser.rs) needs, when missing:
# Debian's chromium, node and npm, and the npm package playwright-core (no browser download) in
# tests/console/node_modules, exactly as tests/console/package-lock.json pins it. Idempotent: a
# second run installs nothing. npm's cache stays outside the clone (~/.npm); node_modules is
# git-ignored. `make test` runs it before the tests.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "$LOG_DIR"

console="$REPO_DIR/tests/console"
pkgs=()
[[ -x /usr/bin/chromium ]] || pkgs+=(chromium)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
if ((${#pkgs[@]})); then
  apt_install "${pkgs[@]}"
fi

# Installed, and the version the lock file names: nothing to do.
wanted="$(node -e 'const l = require(process.argv[1]); console.log(l.packages["node_modules/playwright-core"].version)' \
  "$console/package-lock.json")"
installed="$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("") }' \
  "$console/node_modules/playwright-core/package.json")"
if [[ "$installed" != "$wanted" ]]; then
  info "npm ci in tests/console (playwright-core $wanted; log: $LOG_DIR/npm.log)"
  (cd "$console" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 600 npm ci --no-audit --no-fund \
    >"$LOG_DIR/npm.log" 2>&1) || die "npm ci failed (see $LOG_DIR/npm.log)"
fi
info "console browser test: $(/usr/bin/chromium --version 2>/dev/null | head -n 1), node $(node --version), playwright-core $wanted"
