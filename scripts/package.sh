#!/usr/bin/env bash
# Packages every publishable crate and builds each from its package alone
# (`cargo package` with verification), as crates.io would receive them.
#
# cargo verifies a crate against the packages of the workspace crates it
# depends on, through a local registry. It extracts a registry package once
# per name and version, and trusts a registry crate it has built once (no
# source files are tracked for it). Since our versions do not change from
# one run to the next, a later run would verify against an earlier run's
# es-core. So first forget those: the extracted sources, and the builds of
# our crates whose dependency info tracks no file (the registry builds; a
# build from a path tracks its sources).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
crates=(es-derive es-core es-postgres es-sqlite es-redis es-kafka es-admin)
for crate in "${crates[@]}"; do
  rm -rf "${CARGO_HOME:-${HOME:-/root}/.cargo}"/registry/src/*/"$crate"-[0-9]*
  for dir in "$target"/debug/.fingerprint/"$crate"-*; do
    [ -d "$dir" ] || continue
    for info in "$dir"/dep-lib-*; do
      # An empty dependency-info file is 14 bytes: a header and no paths.
      if [ -f "$info" ] && [ "$(stat -c %s "$info")" -le 14 ]; then rm -rf "$dir"; break; fi
    done
  done
done
cargo package --workspace --locked --exclude banking-example --exclude es-examples --exclude es-bench-plots
