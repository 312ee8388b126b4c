#!/usr/bin/env bash
# Runs the whole test suite: unit, property and API tests of the library, the
# extension's and the layer's tests, and the end-to-end tests that run the
# sample functions and the extension on a local Lambda platform with a UDP
# listener as the X-Ray daemon (and moto as SQS).
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium for the HTML waterfall test, qemu-user for the arm64 extension.
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
# The library's public API against its committed snapshot.
./scripts/public-api.sh
# The crates.io packages (the protocol crate and the library) build on their own.
cargo package --quiet -p lambda-xray-wire -p lambda-xray-tracing --allow-dirty
# The layers' extensions (the static musl release builds in the zips) through
# the extension's end-to-end tests: the machine's own architecture natively,
# the other under qemu-user (scripts/setup-system.sh installs it).
target=$(realpath "${CARGO_TARGET_DIR:-target}")
for cpu in x86_64 aarch64; do
  extension=$target/$cpu-unknown-linux-musl/release/lambda-xray-extension
  # end_of_invocation.rs measures the extension's RSS: natively only (qemu's
  # own memory would be in the figure).
  tests=(--test e2e --test end_of_invocation)
  if [ "$(uname -m)" != "$cpu" ]; then
    tests=(--test e2e)
    qemu=$(command -v "qemu-$cpu-static" || command -v "qemu-$cpu")
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$qemu" "$extension" >"$extension-qemu"
    chmod +x "$extension-qemu"
    extension=$extension-qemu
  fi
  LAMBDA_XRAY_TEST_EXTENSION=$extension cargo test -p lambda-xray-extension "${tests[@]}"
done
