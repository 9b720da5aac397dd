#!/usr/bin/env bash
# Checks that the publishable crates build with the minimum supported Rust
# version (`rust-version` in Cargo.toml) and the locked dependencies:
# installs that toolchain with rustup (minimal profile) when missing, then
# `cargo check`s the library crates with every feature, in a target
# directory of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$msrv" ] || { echo "error: no rust-version in Cargo.toml" >&2; exit 1; }
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  echo "installing Rust $msrv (minimal profile)"
  rustup toolchain install "$msrv" --profile minimal
fi
target="${CARGO_TARGET_DIR:-target}/msrv"
CARGO_TARGET_DIR="$target" cargo "+$msrv" check --locked --all-features \
  -p es-derive -p es-core -p es-postgres -p es-sqlite -p es-redis -p es-kafka -p es-admin
echo "the library crates build with Rust $msrv"
