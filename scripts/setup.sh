#!/usr/bin/env bash
# Installs what dehvf needs on a fresh Debian/Ubuntu machine with Node >= 20:
# npm dependencies, and a WebGPU adapter: when Dawn finds none, Mesa's lavapipe
# (software Vulkan) from bookworm-backports (Debian 12's own Mesa 22 is too old).
# Idempotent: safe to run again. Nothing is downloaded at run time afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "dehvf needs Node.js >= 20 (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_install() {
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "$@"
}

if ! node scripts/probe-adapter.mjs 2>/dev/null; then
  if ! command -v apt-get >/dev/null; then
    echo "no WebGPU adapter and no apt-get: install Mesa >= 24 lavapipe (mesa-vulkan-drivers) and libvulkan1 by hand" >&2
    exit 1
  fi
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = "bookworm" ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "adding bookworm-backports to apt sources (for Mesa 25)"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' | $SUDO tee /etc/apt/sources.list.d/dehvf-backports.sources >/dev/null
  fi
  $SUDO apt-get update -q
  if [ "${VERSION_CODENAME:-}" = "bookworm" ]; then
    apt_install -t bookworm-backports mesa-vulkan-drivers libvulkan1
  else
    apt_install mesa-vulkan-drivers libvulkan1
  fi
  node scripts/probe-adapter.mjs || { echo "still no WebGPU adapter after installing lavapipe" >&2; exit 1; }
fi

# Real images for the default data (issue: training on Fashion-MNIST composites).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  $SUDO apt-get update -q || true
  apt_install dataset-fashion-mnist || echo "warning: could not install dataset-fashion-mnist" >&2
fi

# A real browser for the web page's test (spec/web-page.test.ts): Debian's chromium, which
# runs WebGPU headless on SwiftShader (../shared/notes/browser-webgpu.md). Optional: the
# test says so and skips where it is missing.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  $SUDO apt-get update -q || true
  apt_install --no-install-recommends chromium || echo "warning: could not install chromium (the browser test will be skipped)" >&2
fi

echo "dehvf: setup done (node $(node --version))"
