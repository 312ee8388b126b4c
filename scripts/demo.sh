#!/usr/bin/env bash
# Runs the demo: the sample function against a local Lambda Runtime API, with a
# local UDP listener as the X-Ray daemon; prints every trace received. Then the
# SQS samples against moto's server (installed into .venv, as the test command does).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-python.sh
cargo build --quiet --workspace --bins
exec cargo run --quiet -p lambda-xray-e2e --bin demo
