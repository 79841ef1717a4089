#!/usr/bin/env bash
# The host's resident memory with the three bundled functions loaded (churn-predictor,
# text-embedder, sentiment-analyzer): after a warm-up, after 10 s at 64 connections on each, and
# around one oversized request (32 long texts to the text-embedder). Then what a second replica
# of a model adds: the same function deployed alone with min_replicas 1 and then 2, on fresh hosts.
# Everything runs on 127.0.0.1 and stops by itself.
#
#   ./bench/memory.sh [SECONDS_PER_LOAD]     (default 10; needs ./scripts/setup.sh first)
#
# Writes bench/results/memory.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-10}"
aifn=${AIFN_BIN:-target/release/aifn}
[ -x "$aifn" ] || { echo "run ./scripts/setup.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $host_pid 2>/dev/null || true; rm -rf "$work" functions/*/.bench-replicas.yaml' EXIT
rss_mb() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$host_pid/status"; }
export AIFN_ADMIN_TOKEN=bench AIFN_LOG=warn

churn='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
sentence='{"inputs": "The new movie is awesome"}'

# --- Three functions on one host -----------------------------------------------------------
start_host "$work/all"
AIFN_HOST="$admin"
export AIFN_HOST
for f in churn-predictor text-embedder sentiment-analyzer; do $aifn deploy "functions/$f/function.yaml" > /dev/null; done
key=$($aifn keys create --function sentiment-analyzer 2>/dev/null)
post_lua "$work/churn.lua" "$churn"
post_lua "$work/embed.lua" "$sentence"
post_lua "$work/sentiment.lua" "$sentence" "$key"
loaded=$(rss_mb)
routes=("churn /v1/churn" "embed /v1/embeddings" "sentiment /v1/sentiment")
for route in "${routes[@]}"; do
  set -- $route
  wrk -t1 -c4 -d2s -s "$work/$1.lua" "$base$2" > /dev/null
done
warm=$(rss_mb)
load_rows=()
for route in "${routes[@]}"; do
  set -- $route
  result=$(wrk_post "$base$2" 64 "$seconds" "$work/$1.lua")
  load_rows+=("| $2 | ${result%% *} | $(echo "$result" | awk '{ print $4 }') | $(rss_mb) |")
done
loaded_after=$(rss_mb)

# One request of the largest batch the text-embedder takes: 32 texts of about 250 tokens.
long=$(python3 -c 'import json; print(json.dumps({"inputs": [" ".join(["word%d" % (i * 7 + j) for j in range(120)]) for i in range(32)]}))')
status=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$base/v1/embeddings" -d "$long")
[ "$status" = 200 ] || { echo "the oversized request was answered $status" >&2; exit 1; }
after_big=$(rss_mb)
peak=$(awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$host_pid/status")
# Its outputs still held part of ONNX Runtime's arena when its run ended; the next run frees that.
curl -sf -o /dev/null -XPOST "$base/v1/embeddings" -d "$sentence"
# Memory an inference freed may go back to the kernel a moment later; wait for it (bounded).
settled=$after_big
for _ in $(seq 1 50); do
  settled=$(rss_mb)
  [ "$settled" -le $((loaded_after * 110 / 100)) ] && break
  sleep 0.1
done
kill $host_pid
wait $host_pid 2>/dev/null || true

# --- What one more replica adds ---------------------------------------------------------------
replica_rss() { # function replicas -> RSS KB after a warm-up
  local f=$1 n=$2
  sed "s/min_replicas: [0-9]*/min_replicas: $n/" "functions/$f/function.yaml" > "functions/$f/.bench-replicas.yaml"
  start_host "$work/$f-$n"
  AIFN_HOST="$admin" $aifn deploy "functions/$f/.bench-replicas.yaml" > /dev/null
  local header=()
  [ "$f" = sentiment-analyzer ] && header=(-H "X-API-Key: $(AIFN_HOST="$admin" $aifn keys create --function "$f" 2>/dev/null)")
  local body=$sentence route=/v1/embeddings
  [ "$f" = churn-predictor ] && body=$churn route=/v1/churn
  [ "$f" = sentiment-analyzer ] && route=/v1/sentiment
  for _ in $(seq 1 50); do curl -sf -o /dev/null -XPOST "$base$route" "${header[@]}" -d "$body"; done
  awk '/^VmRSS/ { print $2 }' "/proc/$host_pid/status" # KB
  kill $host_pid
  wait $host_pid 2>/dev/null || true
}
replica_rows=()
for f in sentiment-analyzer churn-predictor; do
  model=$(ls -l functions/$f/model/*.onnx | awk '{ s += $5 } END { printf "%.3f", s / 1048576 }')
  one=$(replica_rss "$f" 1)
  two=$(replica_rss "$f" 2)
  replica_rows+=("| $f | $model | $((one / 1024)) | $((two / 1024)) | $(awk -v a="$one" -v b="$two" -v m="$model" 'BEGIN { printf "%.1f (%.0f%% of the model)", (b - a) / 1024, 100 * (b - a) / 1024 / m }') |")
done

mkdir -p bench/results
{
  echo "# Resident memory ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, \`./bench/memory.sh $seconds\`)"
  echo
  echo "VmRSS of the host process (MB). Three functions deployed: churn-predictor (2 replicas), text-embedder (1),"
  echo "sentiment-analyzer (2); the text-embedder and the sentiment analyzer carry the same MiniLM encoder."
  echo
  echo "| moment | RSS MB |"
  echo "| --- | --- |"
  echo "| deployed | $loaded |"
  echo "| warm (2 s at 4 connections on each route) | $warm |"
  echo "| after ${seconds} s at 64 connections on each route | $loaded_after |"
  echo "| right after one oversized request (32 texts of ~250 tokens) | $after_big (peak of the process: $peak) |"
  echo "| after one more ordinary request (waiting 5 s at most) | $settled |"
  echo
  echo "| route under load (64 connections, ${seconds} s) | requests/s | non-2xx | RSS MB after |"
  echo "| --- | --- | --- | --- |"
  printf '%s\n' "${load_rows[@]}"
  echo
  echo "A second replica, each function alone on a fresh host after 50 requests:"
  echo
  echo "| function | model MB | 1 replica RSS MB | 2 replicas RSS MB | the second adds MB |"
  echo "| --- | --- | --- | --- | --- |"
  printf '%s\n' "${replica_rows[@]}"
  echo
  echo "Targets: at most 250 MB with the three functions after the load; a second replica adds at most 10% of"
  echo "its model's size; after the oversized request, back within 10% of the figure before it."
} | tee bench/results/memory.md
