#!/usr/bin/env bash
# A cache hit on an `api_key` + rate-limited endpoint, against a bare hyper handler returning the
# same bytes, in one run on 127.0.0.1 (wrk, 64 connections). Stops by itself.
#
#   ./bench/cache_hit.sh [SECONDS_PER_RUN] [ROUNDS]    (default 10 s, 3 rounds; needs ./scripts/setup.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-10}"
rounds="${2:-3}"
aifn=target/release/aifn
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }
cargo build --quiet --release -p aifn-host --example bare_hyper

work=$(mktemp -d)
trap 'kill $host_pid $bare_pid 2>/dev/null || true; rm -rf "$work"' EXIT
wait_for() { for _ in $(seq 1 200); do v=$(sed -n "s/^$2//p" "$1"); [ -n "$v" ] && { echo "$v"; return; }; sleep 0.05; done; exit 1; }

AIFN_LOG=warn start_host "$work/host"
sed 's#      auth: none#      auth: api_key\n      rate_limit: {requests_per_second: 1000000, burst: 1000000}\n      cache: {ttl: 10m}#' \
  functions/churn-predictor/function.yaml > functions/churn-predictor/.bench-cached.yaml
trap 'kill $host_pid $bare_pid 2>/dev/null || true; rm -rf "$work" functions/churn-predictor/.bench-cached.yaml' EXIT
export AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench
$aifn deploy functions/churn-predictor/.bench-cached.yaml > /dev/null
key=$($aifn keys create --function churn-predictor 2>/dev/null)

body='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
answer=$(curl -s -X POST "$base/v1/churn" -H "x-api-key: $key" -d "$body")
target/release/examples/bare_hyper "$answer" > "$work/bare.out" &
bare_pid=$!
bare=$(wait_for "$work/bare.out" "listening on ")

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "$key"
LUA
rps() { wrk -t2 -c64 -d"${seconds}s" --latency -s "$work/post.lua" "$1" | awk '/Requests\/sec/ { print $2 }'; }
hit=$(curl -s -o /dev/null -D - -X POST "$base/v1/churn" -H "x-api-key: $key" -d "$body" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" { print $2 }')
[ "$hit" = hit ] || { echo "expected a cache hit, got X-Cache: $hit" >&2; exit 1; }
# The two servers alternate within each round (which goes first alternates too), so drift on a shared
# machine hits both alike; the ratio is taken within each round.
rps "$bare/" > /dev/null
rps "$base/v1/churn" > /dev/null # warm-up
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then b=$(rps "$bare/"); a=$(rps "$base/v1/churn"); else a=$(rps "$base/v1/churn"); b=$(rps "$bare/"); fi
  echo "$round $b $a" >> "$work/runs"
done
mkdir -p bench/results
{
  echo "# Cache hit vs bare hyper ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, \`./bench/cache_hit.sh $seconds $rounds\`)"
  echo
  echo "wrk -t2 -c64 -d${seconds}s on 127.0.0.1; in each round both servers run once, alternating which goes first."
  echo
  echo "| round | bare hyper handler, same bytes (req/s) | aifn: api_key + rate limit + cache hit (req/s) | aifn / bare |"
  echo "| --- | --- | --- | --- |"
  awk '{ printf "| %d | %.0f | %.0f | %.0f%% |\n", $1, $2, $3, 100 * $3 / $2 }' "$work/runs"
  echo
  python3 - "$work/runs" <<'PY'
import statistics, sys
ratios = [float(a) / float(b) for _, b, a in (line.split() for line in open(sys.argv[1]))]
print(f"aifn keeps a median **{100 * statistics.median(ratios):.0f}%** of the bare handler's requests/s (target: at least 90%)")
PY
} | tee bench/results/cache_hit.md
