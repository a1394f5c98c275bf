#!/usr/bin/env bash
# Install the tansu Kafka-API broker (pinned version, SQLite/libsql storage) into the build cache outside the clone:
#   $MEMBER_CACHE_DIR/tansu-<version>/bin/tansu   (default cache: $HOME/.cache/member-stack)
# Idempotent: does nothing when that binary exists and reports the pinned version. A lock in the cache directory
# makes concurrent runs (two clones, CI jobs) wait for one build instead of building twice.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

tansu_installed() {
  local out
  [[ -x "$TANSU_BIN" ]] || return 1
  out="$(timeout 10 "$TANSU_BIN" --version 2>/dev/null)" || return 1
  [[ "$out" == *" $TANSU_VERSION"* ]]
}

if tansu_installed; then
  info "tansu: $TANSU_VERSION already installed at $TANSU_BIN"
  exit 0
fi

ensure_dirs
mkdir -p "$CACHE_DIR"

CARGO="$(command -v cargo || true)"
if [[ -z "$CARGO" && -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
  CARGO="${HOME:-/root}/.cargo/bin/cargo"
fi
[[ -n "$CARGO" ]] || die "tansu: cargo not found; install the Rust toolchain (https://rustup.rs) and retry"

# A C compiler is needed for the bundled SQLite (libsql).
ensure_cmd cc build-essential
ensure_cmd pkg-config pkg-config

LOCK_FILE="$CACHE_DIR/tansu-$TANSU_VERSION.lock"
exec 8>"$LOCK_FILE"
if ! flock -n 8; then
  info "tansu: another process is building tansu $TANSU_VERSION; waiting for it (lock $LOCK_FILE, up to ${TANSU_BUILD_TIMEOUT}s)"
  flock -w "$TANSU_BUILD_TIMEOUT" 8 || die "tansu: timed out waiting for the build lock $LOCK_FILE"
fi

# The other process may have finished the build while we waited.
if tansu_installed; then
  info "tansu: $TANSU_VERSION installed at $TANSU_BIN (built by another process)"
  exit 0
fi

info "tansu: building $TANSU_VERSION with cargo install; the first build takes several minutes (5-10 on 2 cores), later runs reuse $TANSU_ROOT (log: $TANSU_BUILD_LOG)"
started=$SECONDS
# --locked is required: without it the dependency resolution picks versions that do not compile.
if ! timeout "$TANSU_BUILD_TIMEOUT" "$CARGO" install tansu --locked --version "$TANSU_VERSION" \
  --features libsql,dynostore --root "$TANSU_ROOT" </dev/null >"$TANSU_BUILD_LOG" 2>&1; then
  tail -n 30 "$TANSU_BUILD_LOG" >&2 || true
  die "tansu: cargo install failed or exceeded ${TANSU_BUILD_TIMEOUT}s (full log: $TANSU_BUILD_LOG)"
fi
tansu_installed || die "tansu: build finished but $TANSU_BIN does not report version $TANSU_VERSION"
info "tansu: built $TANSU_VERSION in $((SECONDS - started))s at $TANSU_BIN"
