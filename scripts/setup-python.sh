#!/usr/bin/env bash
# Creates .venv at the repository root with the Python tools of
# requirements-dev.txt: moto's server (a local SQS for the tests), zig and
# cargo-zigbuild (the glibc-2.34 layer build), cfn-lint (template checks).
# Idempotent: does nothing when the pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null; then
  echo "python3 is required for the SQS tests (moto): install it (e.g. apt-get install python3 python3-venv)" >&2
  exit 1
fi
stamp=.venv/.requirements-dev.txt
if [ -x .venv/bin/moto_server ] && [ -x .venv/bin/cargo-zigbuild ] && [ -f "$stamp" ] && cmp -s requirements-dev.txt "$stamp"; then
  exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
cp requirements-dev.txt "$stamp"
