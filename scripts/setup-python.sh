#!/usr/bin/env bash
# Creates .venv at the repository root with the Python test tools of
# requirements-dev.txt (moto's server, which the SQS tests run as a local SQS).
# Idempotent: does nothing when the pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null; then
  echo "python3 is required for the SQS tests (moto): install it (e.g. apt-get install python3 python3-venv)" >&2
  exit 1
fi
stamp=.venv/.requirements-dev.txt
if [ -x .venv/bin/moto_server ] && [ -f "$stamp" ] && cmp -s requirements-dev.txt "$stamp"; then
  exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
cp requirements-dev.txt "$stamp"
