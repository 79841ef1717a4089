#!/usr/bin/env bash
# HTTP latency of the bundled churn predictor next to raw in-process ONNX Runtime inference of the
# same model, measured in the same run. Everything runs on 127.0.0.1 and stops by itself.
#
#   ./bench/http.sh [SECONDS_PER_RUN]     (default 10; needs ./scripts/setup.sh first)
#
# Prints a table and writes it to bench/results/http.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-10}"
aifn=target/release/aifn
[ -x "$aifn" ] || { echo "run ./scripts/setup.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $host_pid 2>/dev/null || true; rm -rf "$work"' EXIT
export AIFN_LOG=warn
start_host "$work/host"
AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench $aifn deploy functions/churn-predictor/function.yaml > /dev/null

body='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
v2='{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[42.5,12,1,0,0,1]}]}'
lua() {
  cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$1'
wrk.headers["Content-Type"] = "application/json"
LUA
}
run() { # name path body connections threads
  lua "$3"
  out=$(wrk -t"$5" -c"$4" -d"${seconds}s" --latency -s "$work/post.lua" "$base$2")
  p50=$(to_us "$(echo "$out" | awk '$1 == "50%" { print $2 }')")
  p99=$(to_us "$(echo "$out" | awk '$1 == "99%" { print $2 }')")
  rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  errors=$(echo "$out" | awk '/Non-2xx/ { print $NF }')
  printf '| %s | %s | %.0f | %.1f | %.1f | %s |\n' "$1" "$4" "$rps" "$p50" "$p99" "${errors:-0}"
}

echo "$v2" > "$work/v2.json"
raw=$(cargo run --quiet --release -p aifn-model --example raw_onnx_latency -- \
  functions/churn-predictor/model/churn.onnx "$work/v2.json" 20000)
raw_p50=$(echo "$raw" | sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p')
raw_p99=$(echo "$raw" | sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p')

mkdir -p bench/results
{
  echo "# churn-predictor over HTTP vs raw ONNX Runtime ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${seconds}s per run)"
  echo
  echo "Raw in-process ONNX Runtime (same model, same features): p50 ${raw_p50} us, p99 ${raw_p99} us"
  echo
  echo "| route | connections | requests/s | p50 us | p99 us | non-2xx |"
  echo "| --- | --- | --- | --- | --- | --- |"
  run "/v1/churn (WASM pre+post)" /v1/churn "$body" 1 1
  run "/v1/churn (WASM pre+post)" /v1/churn "$body" 64 2
  run "/v2 infer (no WASM)" /v2/models/churn-predictor/infer "$v2" 1 1
  run "/v2 infer (no WASM)" /v2/models/churn-predictor/infer "$v2" 64 2
} | tee bench/results/http.md
awk -v raw="$raw_p50" -F'|' '/^\| \/v1\/churn/ && $3+0 == 1 { printf "\nHTTP + WASM p50 at concurrency 1 is %.1fx raw inference p50 (%.0f us over raw)\n", $5/raw, $5-raw }' bench/results/http.md | tee -a bench/results/http.md
