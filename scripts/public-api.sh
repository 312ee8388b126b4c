#!/usr/bin/env bash
# Checks the public API of the crates meant for crates.io (the library
# lambda-xray-tracing and the protocol crate lambda-xray-wire) against the
# committed snapshots (handler-wrapper/public-api.txt, wire/public-api.txt),
# so that a change to it is a decision, not an accident. `--bless` rewrites
# the snapshots.
#
# The snapshots come from rustdoc's JSON output (all features), which is
# still unstable: RUSTC_BOOTSTRAP=1 lets the stable toolchain produce it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(realpath "${CARGO_TARGET_DIR:-target}")
status=0
for entry in lambda-xray-tracing:handler-wrapper lambda-xray-wire:wire; do
  package=${entry%%:*}
  dir=${entry#*:}
  RUSTC_BOOTSTRAP=1 cargo rustdoc --quiet -p "$package" --all-features --lib -- -Z unstable-options --output-format json
  current=$(mktemp)
  python3 scripts/public_api.py "$target/doc/${package//-/_}.json" >"$current"
  if [ "${1:-}" = "--bless" ]; then
    cp "$current" "$dir/public-api.txt"
    echo "$package: public API snapshot written ($(wc -l <"$current") lines)"
  elif diff -u "$dir/public-api.txt" "$current"; then
    echo "$package: public API unchanged ($(wc -l <"$current") items)"
  else
    echo "The public API of $package changed (diff above: - snapshot, + now)." >&2
    echo "If that is intended, run ./scripts/public-api.sh --bless and commit the snapshot." >&2
    status=1
  fi
  rm -f "$current"
done
exit $status
