#!/usr/bin/env bash
# Runs every property test over outside input (trace headers, SQS
# AWSTraceHeader values, intake datagrams, control messages, Telemetry API
# bodies) with many cases, in release mode, and prints how long each took.
# Usage: scripts/fuzz.sh [cases per property, default 1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-1000000}
export LAMBDA_XRAY_FUZZ_CASES=$cases
run() {
  local started=$SECONDS
  echo "── $* ($cases cases per property)"
  cargo test --release -q "$@" -- --test-threads 2 2>&1 | grep -E "^test |test result" || return 1
  echo "   $((SECONDS - started)) s"
}
run -p lambda-xray-tracing --all-features --test fuzz
run -p lambda-xray-extension --bin lambda-xray-extension fuzz
