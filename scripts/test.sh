#!/usr/bin/env bash
# Runs the whole test suite: unit, property and API tests of the library, the
# extension's and the layer's tests, and the end-to-end tests that run the
# sample functions and the extension on a local Lambda platform with a UDP
# listener as the X-Ray daemon (and moto as SQS).
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium for the HTML waterfall test.
./scripts/setup-system.sh
# moto's server (the SQS tests, tests/tests/sqs_moto.rs), zig and cargo-zigbuild (the layer) into .venv.
./scripts/setup-python.sh
# The Rust targets of the layer (static musl, x86_64 and arm64).
./scripts/setup-rust.sh
# The end-to-end tests start the function binaries as child processes.
cargo build --workspace --bins
# Both layer zips (static musl builds of the extension); layer-build's tests read them.
cargo run --quiet -p layer-build -- --arch x86_64
cargo run --quiet -p layer-build -- --arch arm64
cargo test --workspace --all-features
