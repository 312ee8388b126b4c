#!/usr/bin/env bash
# Runs the whole test suite: unit, property and API tests of the library, and
# the end-to-end tests that run the sample function binaries against a local
# Lambda Runtime API with a UDP listener as the X-Ray daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
# The SQS tests (tests/tests/sqs_moto.rs) run moto's server from .venv.
./scripts/setup-python.sh
# The end-to-end tests start the function binaries as child processes.
cargo build --workspace --bins
cargo test --workspace
