#!/usr/bin/env bash
# Unused dependencies: `cargo machete` over the workspace. Installs cargo-machete once into the
# cache ($MEMBER_CACHE_DIR, default ~/.cache/member-stack) when it is missing; idempotent.
#
# A dependency that is used only through a macro or a feature can be declared used in its
# crate's Cargo.toml:
#   [package.metadata.cargo-machete]
#   ignored = ["name"]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MACHETE_VERSION="0.9.2"
CACHE_DIR="${MEMBER_CACHE_DIR:-${HOME:-/root}/.cache/member-stack}"
[[ "$CACHE_DIR" == /* ]] || CACHE_DIR="$PWD/$CACHE_DIR"
ROOT="$CACHE_DIR/cargo-machete-$MACHETE_VERSION"
BIN="$ROOT/bin/cargo-machete"
BUILD_TIMEOUT="${MEMBER_MACHETE_BUILD_TIMEOUT:-1800}"

if [[ ! -x "$BIN" ]]; then
  mkdir -p "$CACHE_DIR"
  echo "[lint-deps] installing cargo-machete $MACHETE_VERSION into $ROOT (once)" >&2
  # Its own target dir: never the workspace's, never left half-installed in $ROOT.
  build_dir="$(mktemp -d)"
  trap 'rm -rf "$build_dir"' EXIT
  timeout "$BUILD_TIMEOUT" cargo install cargo-machete --locked --version "$MACHETE_VERSION" \
    --root "$build_dir/root" --target-dir "$build_dir/target" >&2
  mkdir -p "$ROOT/bin"
  mv "$build_dir/root/bin/cargo-machete" "$BIN"
fi

echo "[lint-deps] cargo machete (unused dependencies)" >&2
"$BIN"
