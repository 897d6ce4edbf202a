#!/usr/bin/env bash
# dehvf on this machine's GPU, in one screen and a few minutes: the adapter; the WebGPU
# kernel tests (every generated kernel kind against the float64 interpreter); the matmul and
# layer benches against TF.js on the same device; one frozen LLaMA-7B layer's forward with
# per-kernel times, f32 and f16 weights (where the device binds less than its 172 MiB FFN
# weights, lavapipe's 128 MiB, they run split into row blocks); the paper-size plans. Full
# logs in $OUT (default out/gpu-check).
#   bash scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu-check}"
mkdir -p "$OUT"
summary=()
step() { # name, log file, command…
  local name="$1" log="$OUT/$2"
  shift 2
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  summary+=("$(printf '%-36s %-6s %4ss' "$name" "$([ $rc -eq 0 ] && echo ok || echo "rc $rc")" $((SECONDS - t0)))")
  return $rc
}

step "adapter" info.txt npx dehvf info
step "kernel tests (WebGPU vs interpreter)" kernels.txt node --import tsx --test spec/webgpu.test.ts spec/matmul-kernel.test.ts spec/texture-matmul.test.ts
step "matmul bench (vs TF.js)" matmul.txt npm run bench -- matmul --quick
step "layer bench (vs TF.js)" layer.txt npm run bench -- layer --quick
step "LLaMA-7B layer forward, B=1 T=512" layer7b.txt npx dehvf run models/bench/llama7b-layer.dehvf --batch 1 --seq 512 --profile
step "the same with f16 weights" layer7b-f16.txt npx dehvf run models/bench/llama7b-layer.dehvf --batch 1 --seq 512 --weights f16
step "paper-size plans" plans.txt npx tsx scripts/plan-sizes.ts

echo "== dehvf gpu-check ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)) =="
grep -m3 -iE "adapter|device|description" "$OUT/info.txt"
printf '%s\n' "${summary[@]}"
echo "-- kernel tests:  $(grep -E '^# (pass|fail)' "$OUT/kernels.txt" | tr '\n' ' ')"
echo "-- matmul bench:"; grep -E "^\|" "$OUT/matmul.txt" | head -8
echo "-- layer bench:"; sed -n "/^contender/,/^# ours vs tfjs-wasm/p" "$OUT/layer.txt"
echo "-- 7B layer:"; grep -E "total|ms|error" "$OUT/layer7b.txt" | head -4
echo "-- 7B layer, f16 weights:"; grep -E "kernels|error" "$OUT/layer7b-f16.txt" | head -2
echo "-- plans:"; sed -E 's/ \(.*\);/;/' "$OUT/plans.txt"
echo "(logs in $OUT)"
