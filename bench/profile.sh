#!/usr/bin/env bash
# Where a request's CPU goes: samples the host (perf, DWARF call graphs) while wrk drives the
# churn predictor's module route, and then its v2 route, at 64 connections on 127.0.0.1, and sorts
# the samples into the stages of a request (bench/profile_stages.py). Stops by itself.
#
#   ./bench/profile.sh [SECONDS]     (default 6 per route; needs ./scripts/setup.sh first)
#
# Writes bench/results/profile.md (CPU per request by stage, both routes) and a flame graph per
# route, bench/results/profile-{module,v2}.svg. Needs perf (Debian: linux-perf); installs
# inferno (the flame graph tool, from crates.io) into cargo's bin directory when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-6}"
hz=499
aifn=${AIFN_BIN:-target/release/aifn}
[ -x "$aifn" ] || { echo "run ./scripts/setup.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || cargo install --locked inferno
perf record -o /dev/null -- true 2>/dev/null ||
  { echo "perf may not sample here: lower /proc/sys/kernel/perf_event_paranoid" >&2; exit 1; }

# KEEP_PROFILE=DIR keeps perf's data and the sorted samples in DIR.
work=${KEEP_PROFILE:-$(mktemp -d)}
mkdir -p "$work"
trap 'kill $host_pid 2>/dev/null || true; [ -n "${KEEP_PROFILE:-}" ] || rm -rf "$work"' EXIT
AIFN_LOG=warn start_host "$work/host"
AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench $aifn deploy functions/churn-predictor/function.yaml > /dev/null

body='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
v2='{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[42.5,12,1,0,0,1]}]}'
post_lua "$work/module.lua" "$body"
post_lua "$work/v2.lua" "$v2"

# profile NAME PATH: wrk for SECONDS + 2, perf attached for SECONDS after the first second.
# Prints the requests answered while perf sampled (wrk's rate times the sampled time).
profile() {
  wrk -t2 -c64 -d2s -s "$work/$1.lua" "$base$2" > /dev/null # warm-up
  wrk -t2 -c64 -d"$((seconds + 2))s" -s "$work/$1.lua" "$base$2" > "$work/$1.wrk" &
  local load=$!
  sleep 1
  perf record -q -F "$hz" --call-graph dwarf,16384 -p "$host_pid" -o "$work/$1.data" -- sleep "$seconds" 2> /dev/null
  wait $load
  perf script -i "$work/$1.data" --no-inline 2> /dev/null > "$work/$1.script"
  inferno-collapse-perf < "$work/$1.script" 2> /dev/null |
    inferno-flamegraph --title "aifn: $1 route of the churn predictor, c=64" > "bench/results/profile-$1.svg"
  awk -v s="$seconds" '/Requests\/sec/ { printf "%d\n", $2 * s }' "$work/$1.wrk"
}

mkdir -p bench/results
module_requests=$(profile module /v1/churn)
v2_requests=$(profile v2 /v2/models/churn-predictor/infer)
python3 bench/profile_stages.py "$work/module.script" "$hz" "$module_requests" > "$work/module.md"
python3 bench/profile_stages.py "$work/v2.script" "$hz" "$v2_requests" > "$work/v2.md"
rps() { awk '/Requests\/sec/ { printf "%.0f", $2 }' "$work/$1.wrk"; }
{
  echo "# Where a request's CPU goes ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, \`./bench/profile.sh $seconds\`)"
  echo
  echo "perf at ${hz} Hz with DWARF call graphs on the host process while wrk (-t2 -c64, on the same 2 cores)"
  echo "drives the churn predictor. Module route: $(rps module) requests/s; v2 route (no module): $(rps v2) requests/s."
  echo "\"CPU µs/request\" is the stage's samples divided by the rate and by the requests answered while perf sampled;"
  echo "\"kernel\" is the share of the stage's samples taken in the kernel. Flame graphs: profile-module.svg, profile-v2.svg."
  echo
  echo "## Module route (/v1/churn: WASM preprocess, model, WASM postprocess)"
  echo
  echo "| stage | host samples | kernel | CPU µs/request |"
  echo "| --- | --- | --- | --- |"
  cat "$work/module.md"
  echo
  echo "## v2 route (/v2/models/churn-predictor/infer: JSON tensors, model, JSON)"
  echo
  echo "| stage | host samples | kernel | CPU µs/request |"
  echo "| --- | --- | --- | --- |"
  cat "$work/v2.md"
} | tee bench/results/profile.md
