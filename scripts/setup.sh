#!/usr/bin/env bash
# Installs what dehvf needs on a fresh Debian/Ubuntu machine with Node >= 20.
# Idempotent: safe to run again. Nothing is downloaded at run time afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "dehvf needs Node.js >= 20 (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
echo "dehvf: setup done (node $(node --version))"
