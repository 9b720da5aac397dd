#!/usr/bin/env bash
# Builds the book (docs/, see docs/book.toml) with mdBook into target/book,
# then checks it: every relative link and #anchor of docs/**/*.md and
# README.md resolves, book pages link only inside the book or to public
# sites, every page is in SUMMARY.md, and every Rust snippet is an include
# of compiled code (examples/tests/doc_links.rs). Fails on any of these.
#
# mdBook is installed (pinned, from crates.io) under the cargo target
# directory the first time, unless that version is already on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.4.52
target=${CARGO_TARGET_DIR:-target}
tools="$target/mdbook-$MDBOOK_VERSION"
if mdbook --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; then
  mdbook=mdbook
else
  mdbook="$tools/bin/mdbook"
  if ! "$mdbook" --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; then
    echo "installing mdbook $MDBOOK_VERSION into $tools"
    # Its own build directory (removed after), without the live-reload server.
    CARGO_TARGET_DIR="$tools/build" cargo install mdbook --locked --quiet --version "$MDBOOK_VERSION" \
      --no-default-features --features search --root "$tools"
    rm -rf "$tools/build"
  fi
fi

"$mdbook" build docs
cargo test --quiet -p es-examples --test doc_links
echo "book: target/book/index.html"
