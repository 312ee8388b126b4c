#!/usr/bin/env bash
# Checks the public API of the library (lambda-xray) against the committed
# snapshot handler-wrapper/public-api.txt, so that a change to it is a
# decision, not an accident. `--bless` rewrites the snapshot.
#
# The snapshot comes from rustdoc's JSON output (all features), which is
# still unstable: RUSTC_BOOTSTRAP=1 lets the stable toolchain produce it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(realpath "${CARGO_TARGET_DIR:-target}")
RUSTC_BOOTSTRAP=1 cargo rustdoc --quiet -p lambda-xray-tracing --all-features --lib -- -Z unstable-options --output-format json
current=$(mktemp)
trap 'rm -f "$current"' EXIT
python3 scripts/public_api.py "$target/doc/lambda_xray_tracing.json" >"$current"
if [ "${1:-}" = "--bless" ]; then
  cp "$current" handler-wrapper/public-api.txt
  echo "public API snapshot written: $(wc -l <"$current") lines"
  exit 0
fi
if ! diff -u handler-wrapper/public-api.txt "$current"; then
  echo "The public API of lambda-xray changed (diff above: - snapshot, + now)." >&2
  echo "If that is intended, run ./scripts/public-api.sh --bless and commit the snapshot." >&2
  exit 1
fi
echo "public API unchanged ($(wc -l <"$current") items)"
