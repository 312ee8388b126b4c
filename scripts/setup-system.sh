#!/usr/bin/env bash
# Installs the Debian packages the tests need, if they are missing: headless
# Chromium (the HTML waterfall test) and qemu-user (runs the other
# architecture's layer extension: arm64 on an x86_64 machine). Needs root (or sudo).
set -euo pipefail
packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
other=$([ "$(uname -m)" = aarch64 ] && echo x86_64 || echo aarch64)
if ! command -v "qemu-$other-static" >/dev/null 2>&1 && ! command -v "qemu-$other" >/dev/null 2>&1; then
  packages+=(qemu-user-static)
fi
[ ${#packages[@]} -gt 0 ] || exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing ${packages[*]} (Debian names) and no apt-get: install Chromium and qemu-user with your package manager" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"
