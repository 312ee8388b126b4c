#!/usr/bin/env bash
# Creates .venv at the repository root with the Python tools of
# requirements-dev.txt: moto's server (a local SQS for the tests and the demo),
# zig and cargo-zigbuild (the layer's musl builds, the Makefile's glibc builds),
# cfn-lint (template checks). Needs python3 with its venv module, and PyPI.
# Idempotent: does nothing when the pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null; then
  echo "python3 is required (moto for the SQS tests and demo, zig for the layer): install it (e.g. apt-get install python3 python3-venv)" >&2
  exit 1
fi
stamp=.venv/.requirements-dev.txt
if [ -x .venv/bin/moto_server ] && [ -x .venv/bin/cargo-zigbuild ] && [ -f "$stamp" ] && cmp -s requirements-dev.txt "$stamp"; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "python3's venv module is missing: install it (e.g. apt-get install python3-venv), then rerun" >&2
    exit 1
  fi
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
cp requirements-dev.txt "$stamp"
