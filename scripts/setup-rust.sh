#!/usr/bin/env bash
# Installs the Rust targets the builds need, with rustup: the static musl
# targets of the layer's extension (both architectures) and the glibc targets
# of the sample functions (`sam build` for x86_64 or arm64).
# Idempotent and offline when they are already installed.
set -euo pipefail
targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
if ! command -v rustup >/dev/null; then
  echo "rustup is required to add the Rust targets ${targets[*]}: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
installed=$(rustup target list --installed)
missing=()
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$installed" || missing+=("$t")
done
[ ${#missing[@]} -eq 0 ] || rustup target add "${missing[@]}"
