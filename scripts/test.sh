#!/usr/bin/env bash
# Runs the whole test suite: unit, property and API tests of the library, the
# extension's and the layer's tests, and the end-to-end tests that run the
# sample functions and the extension on a local Lambda platform with a UDP
# listener as the X-Ray daemon (and moto as SQS).
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium for the HTML waterfall test.
./scripts/setup-system.sh
# The SQS tests (tests/tests/sqs_moto.rs) run moto's server from .venv.
./scripts/setup-python.sh
# The end-to-end tests start the function binaries as child processes.
cargo build --workspace --bins
# The layer zip (glibc 2.34 build of the extension); layer-build's tests check it.
cargo run --quiet -p layer-build
cargo test --workspace --all-features
