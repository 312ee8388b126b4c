#!/usr/bin/env bash
# What tracing costs per invocation, on the local Lambda platform:
# - post_runtime: the extension's time after the function's response (billed,
#   and the environment takes no new request meanwhile), with and without the
#   extension; Lambda-like telemetry buffering (no event sooner than 25 ms);
# - function_cpu: the function process's CPU per invocation, traced minus
#   untraced, 30,000 invocations per mode, the modes side by side in
#   alternating blocks on one CPU (see tests/benches/function_cpu.rs).
# The extension is the one the x86_64 layer ships (static musl build).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-python.sh
./scripts/setup-rust.sh
cargo run --quiet --release -p layer-build -- --arch x86_64
cargo build --release --workspace --bins
target=$(realpath "${CARGO_TARGET_DIR:-target}")
export LAMBDA_XRAY_TEST_EXTENSION=$target/x86_64-unknown-linux-musl/release/lambda-xray-extension
cargo bench -p lambda-xray-e2e --bench post_runtime
cargo bench -p lambda-xray-e2e --bench function_cpu
