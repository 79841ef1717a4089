#!/usr/bin/env bash
# The text-embedder on CUDA device 0 against the CPU, on one machine with an NVIDIA GPU: two hosts
# (one started with .venv-gpu/aifn-gpu.env from ./scripts/setup-gpu.sh, one without), the same
# spec asking for a GPU, wrk at 64 connections on each in turn. A few minutes; everything on
# 127.0.0.1 and bounded.
#
#   ./scripts/setup-gpu.sh && ./bench/gpu_embedder.sh [SECONDS_PER_RUN] [ROUNDS]   (default 10 s, 3 rounds)
#
# Writes bench/results/gpu_embedder.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-10}"
rounds="${2:-3}"
aifn=${AIFN_BIN:-target/release/aifn}
[ -f .venv-gpu/aifn-gpu.env ] || { echo "run ./scripts/setup-gpu.sh first" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $gpu_pid $cpu_pid 2>/dev/null || true; rm -rf "$work" functions/text-embedder/.bench-gpu.yaml' EXIT
sed 's/^    cpu: "2"$/    cpu: "2"\n    gpu: "1"/' functions/text-embedder/function.yaml > functions/text-embedder/.bench-gpu.yaml
export AIFN_LOG=warn AIFN_ADMIN_TOKEN=bench
(. .venv-gpu/aifn-gpu.env && start_host "$work/gpu" && echo "$host_pid $base $admin" > "$work/gpu.at"; wait) &
for _ in $(seq 1 400); do [ -s "$work/gpu.at" ] && break; sleep 0.05; done
read -r gpu_pid gpu gpu_admin < "$work/gpu.at"
start_host "$work/cpu"
cpu_pid=$host_pid cpu=$base cpu_admin=$admin
AIFN_HOST="$gpu_admin" $aifn deploy functions/text-embedder/.bench-gpu.yaml > /dev/null
AIFN_HOST="$cpu_admin" $aifn deploy functions/text-embedder/.bench-gpu.yaml > /dev/null
device=$(AIFN_HOST="$gpu_admin" $aifn status text-embedder | python3 -c 'import json, sys; p = json.load(sys.stdin)["placement"]; print(p["device"], p.get("note") or "")')
case "$device" in cuda*) ;; *) echo "the GPU host runs the model on: $device" >&2; exit 1 ;; esac
post_lua "$work/post.lua" '{"inputs": "The new movie is awesome"}'
for round in $(seq 1 "$rounds"); do
  echo "$round $(wrk_post "$gpu/v1/embeddings" 64 "$seconds" "$work/post.lua") $(wrk_post "$cpu/v1/embeddings" 64 "$seconds" "$work/post.lua")" >> "$work/runs"
done
mkdir -p bench/results
{
  echo "# text-embedder on the GPU vs the CPU ($(date -u +%Y-%m-%dT%H:%MZ), \`./bench/gpu_embedder.sh $seconds $rounds\`)"
  echo
  echo "GPU: $(nvidia-smi -L 2>/dev/null | head -1); placement: $device. CPU: $(nproc) cores. wrk -t2 -c64 -d${seconds}s, hosts alternating."
  echo
  echo "| round | GPU req/s | GPU p50 ms | GPU p99 ms | CPU req/s | CPU p50 ms | CPU p99 ms | GPU / CPU |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  awk '{ printf "| %d | %.0f | %.1f | %.1f | %.0f | %.1f | %.1f | %.2f |\n", $1, $2, $3 / 1000, $4 / 1000, $6, $7 / 1000, $8 / 1000, $2 / $6 }' "$work/runs"
} | tee bench/results/gpu_embedder.md
