#!/usr/bin/env bash
# What monitoring costs: the churn predictor with `spec.monitoring` (its four request fields and
# its outputs, 10 bins) against the same function without it, on one host at 64 connections on
# 127.0.0.1, alternating within each round. Then how long a drifted stream takes to raise the
# alert. Bounded in time; stops by itself.
#
#   ./bench/monitoring.sh [SECONDS_PER_RUN] [ROUNDS]     (default 10 s, 3 rounds; needs ./scripts/setup.sh first)
#
# Writes bench/results/monitoring.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-10}"
rounds="${2:-3}"
aifn=${AIFN_BIN:-target/release/aifn}
[ -x "$aifn" ] || { echo "run ./scripts/setup.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $host_pid 2>/dev/null || true; rm -rf "$work" functions/churn-predictor/.bench-*.yaml' EXIT
AIFN_LOG=warn start_host "$work/host" --rollout-tick-ms 100
export AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench
# "on": the bundled spec, with alerts that only record (one body sent over and over is drift, and
# the fallback must not take over mid-run). "off": the same function without `monitoring`.
spec=functions/churn-predictor/function.yaml
sed "s/action: fallback/action: alert/${BENCH_ON_EDIT:-}" "$spec" > functions/churn-predictor/.bench-on.yaml
python3 - "$spec" functions/churn-predictor/.bench-off.yaml <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r"\n  # Drift of the four.*?(?=\n  endpoints:)", "", text, flags=re.S)
text = text.replace("name: churn-predictor", "name: churn-unmonitored").replace("route: /v1/churn", "route: /v1/churn-unmonitored")
assert "monitoring" not in text
open(sys.argv[2], "w").write(text)
PY
$aifn deploy functions/churn-predictor/.bench-on.yaml > /dev/null
$aifn deploy functions/churn-predictor/.bench-off.yaml > /dev/null

body='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
post_lua "$work/post.lua" "$body"
wrk_post "$base/v1/churn" 64 3 "$work/post.lua" > /dev/null # warm-up
wrk_post "$base/v1/churn-unmonitored" 64 3 "$work/post.lua" > /dev/null
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then
    on=$(wrk_post "$base/v1/churn" 64 "$seconds" "$work/post.lua")
    off=$(wrk_post "$base/v1/churn-unmonitored" 64 "$seconds" "$work/post.lua")
  else
    off=$(wrk_post "$base/v1/churn-unmonitored" 64 "$seconds" "$work/post.lua")
    on=$(wrk_post "$base/v1/churn" 64 "$seconds" "$work/post.lua")
  fi
  echo "$round $on $off" >> "$work/runs"
done
report=$($aifn monitor churn-predictor --json)

# Time to alert: a host with a 10 s window evaluated every second (the defaults' proportions,
# scaled down), normal customers for 12 s, then every spend doubled.
kill $host_pid
AIFN_LOG=warn start_host "$work/host2" --rollout-tick-ms 100
export AIFN_HOST="$admin"
sed 's/window: 10m/window: 10s/' "$spec" > functions/churn-predictor/.bench-drift.yaml
$aifn deploy functions/churn-predictor/.bench-drift.yaml > /dev/null
drift=$(.venv/bin/python bench/drift_stream.py "$base/v1/churn" "$admin" bench churn-predictor)

mkdir -p bench/results
{
  echo "# Monitoring on vs off ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, \`./bench/monitoring.sh $seconds $rounds\`)"
  echo
  echo "The churn predictor's module route at 64 connections (wrk -t2, ${seconds} s per run), with \`spec.monitoring\`"
  echo "(4 request fields + 3 output columns, 10 bins, alerts recording only) and without, on one host; the two"
  echo "alternate within each round, and which goes first alternates too."
  echo
  echo "| round | on req/s | off req/s | throughput on/off | on p99 µs | off p99 µs | p99 on/off | non-2xx |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  awk '{ printf "| %d | %.0f | %.0f | %.3f | %d | %d | %.2f | %d |\n", $1, $2, $6, $2 / $6, $4, $8, $4 / $8, $5 + $9 }' "$work/runs"
  echo
  python3 - "$work/runs" "$report" <<'PY'
import json, statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
throughput = statistics.median(float(r[1]) / float(r[5]) for r in rows)
p99 = statistics.median(float(r[3]) / float(r[7]) for r in rows)
drift = json.loads(sys.argv[2])["versions"][0]["drift"]
print(f"Median throughput on/off **{throughput:.3f}×** (target at least 0.95×); median p99 on/off **{p99:.2f}×** (target at most 1.10×).")
print(f"The monitor took {drift['recorded']} samples of {drift['requests_seen']} requests (without `labels` it samples at most 1,000 a second; 1 in {drift['sampling_one_in']} at the end) and dropped {drift['dropped']} (its queue holds 8,192).")
PY
  echo
  echo "$drift"
} | tee bench/results/monitoring.md
