#!/usr/bin/env bash
# Prints the Lambda architecture (x86_64 or arm64) to build the template
# resource $1 for; the Makefile's targets call it.
#
# `sam build` tells make nothing but ARTIFACTS_DIR (<build dir>/<LogicalId>)
# and the target name. It resolves each resource's architecture (the
# template's `Architecture` parameter, through Architectures and
# BuildArchitecture) into build.toml, beside the build directory, before it
# runs make: that is read here. Outside sam build (no build.toml), the make or
# environment variable ARCHITECTURE says, else x86_64. Both given and
# different: an error, rather than a binary for the wrong CPU.
set -euo pipefail
id=${1:?usage: sam-architecture.sh <LogicalId>}
toml=""
if [ -n "${ARTIFACTS_DIR:-}" ]; then
  # <sam dir>/build/<LogicalId> -> <sam dir>/build.toml
  toml=$(dirname "$(dirname "$ARTIFACTS_DIR")")/build.toml
fi
from_sam=""
if [ -n "$toml" ] && [ -f "$toml" ]; then
  # A table lists the resource (functions = [..., "Id", ...] or layer = "Id")
  # and its architecture = "...".
  from_sam=$(awk -v id="\"$id\"" '
    function done() { if (hit && arch != "") { print arch; found = 1; exit } hit = 0; arch = "" }
    /^\[/ { done(); next }
    /^architecture *=/ { arch = $3; gsub(/"/, "", arch) }
    /^functions *=/ && index($0, id) { hit = 1 }
    /^layer *=/ && $3 == id { hit = 1 }
    END { if (!found) done() }' "$toml")
fi
arch=${from_sam:-${ARCHITECTURE:-x86_64}}
if [ -n "$from_sam" ] && [ -n "${ARCHITECTURE:-}" ] && [ "$ARCHITECTURE" != "$from_sam" ]; then
  echo "sam build resolved $id to $from_sam but ARCHITECTURE=$ARCHITECTURE: pass --parameter-overrides Architecture=$ARCHITECTURE to sam build instead" >&2
  exit 1
fi
case $arch in
  x86_64 | arm64) echo "$arch" ;;
  *) echo "unknown architecture $arch for $id: use x86_64 or arm64" >&2; exit 1 ;;
esac
