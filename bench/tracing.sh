#!/usr/bin/env bash
# Tracing's cost: requests/s at concurrency 64 on the bundled churn predictor with tracing off,
# with 1/1000 head sampling, and with every request traced, exported over OTLP/HTTP to a receiver
# that decodes every span (examples/otlp_sink.rs). Three hosts on 127.0.0.1 serve the same
# function; every round measures each in turn, and each round's ratio is against tracing off in
# that round. (Failures and requests over the function's 20 ms target are exported at any rate.)
#
#   ./bench/tracing.sh [SECONDS_PER_RUN] [ROUNDS]     (default 8 s, 3 rounds; needs ./scripts/setup.sh)
#
# Writes bench/results/tracing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
seconds=${1:-8}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export AIFN_LOG=warn

cargo build --release -q -p aifn --bin aifn --example otlp_sink
target/release/examples/otlp_sink > "$work/sink.out" &
pids+=($!)
for _ in $(seq 1 100); do
  sink=$(sed -n 's/^otlp sink on //p' "$work/sink.out")
  [ -n "$sink" ] && break
  sleep 0.05
done

declare -A url pid
# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_s=$(getconf CLK_TCK)
for setup in off 0.001 1; do
  args=()
  [ "$setup" = off ] || args=(--otlp-endpoint "$sink" --trace-sample-rate "$setup")
  start_host "$work/$setup" "${args[@]}"
  pids+=("$host_pid")
  AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench target/release/aifn deploy functions/churn-predictor/function.yaml > /dev/null
  url[$setup]="$base/v1/churn"
  pid[$setup]=$host_pid
done
post_lua "$work/post.lua" '{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
# Warm every host (instances, caches) before measuring.
for setup in off 0.001 1; do wrk_post "${url[$setup]}" 64 2 "$work/post.lua" > /dev/null; done

spans_before=$(curl -s "$sink/count")
rows=()
declare -a ratio_sampled ratio_all cpu_sampled cpu_all
for round in $(seq 1 "$rounds"); do
  declare -A rps cpu
  for setup in off 0.001 1; do
    before=$(cpu_ticks "${pid[$setup]}")
    read -r r p50 p99 errors <<< "$(wrk_post "${url[$setup]}" 64 "$seconds" "$work/post.lua")"
    after=$(cpu_ticks "${pid[$setup]}")
    rps[$setup]=$r
    # The host's own CPU per request, in microseconds (the receiver and wrk not counted).
    cpu[$setup]=$(awk -v t=$((after - before)) -v hz="$ticks_per_s" -v r="$r" -v s="$seconds" 'BEGIN { printf "%.1f", t / hz * 1e6 / (r * s) }')
    rows+=("| $round | $setup | $r | $p50 | $p99 | $errors | ${cpu[$setup]} |")
  done
  ratio_sampled+=("$(awk -v a="${rps[0.001]}" -v b="${rps[off]}" 'BEGIN { printf "%.3f", a / b }')")
  ratio_all+=("$(awk -v a="${rps[1]}" -v b="${rps[off]}" 'BEGIN { printf "%.3f", a / b }')")
  cpu_sampled+=("$(awk -v a="${cpu[0.001]}" -v b="${cpu[off]}" 'BEGIN { printf "%.3f", a / b }')")
  cpu_all+=("$(awk -v a="${cpu[1]}" -v b="${cpu[off]}" 'BEGIN { printf "%.3f", a / b }')")
done
sleep 1 # the last export batch
spans=$(( $(curl -s "$sink/count") - spans_before ))
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

mkdir -p bench/results
{
  echo "# Tracing's cost on the churn predictor, concurrency 64 ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, ${seconds}s per run)"
  echo
  echo "\`./bench/tracing.sh $seconds $rounds\`: three hosts (tracing off; 1/1000 head sampling; every request), OTLP/HTTP to a local receiver that decodes every span. The receiver and wrk share the machine with the hosts."
  echo
  echo "| round | sample rate | requests/s | p50 us | p99 us | errors | host CPU us/request |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "| round | throughput 1/1000 vs off | throughput all vs off | host CPU/request 1/1000 vs off | host CPU/request all vs off |"
  echo "| --- | --- | --- | --- | --- |"
  for i in $(seq 0 $((rounds - 1))); do echo "| $((i + 1)) | ${ratio_sampled[$i]} | ${ratio_all[$i]} | ${cpu_sampled[$i]} | ${cpu_all[$i]} |"; done
  echo
  echo "Median throughput ratio: 1/1000 sampling **$(median "${ratio_sampled[@]}")** (target ≥ 0.97), every request traced **$(median "${ratio_all[@]}")** (target ≥ 0.90). Host CPU per request against tracing off (medians): 1/1000 **$(median "${cpu_sampled[@]}")**, all **$(median "${cpu_all[@]}")**. Spans the receiver decoded during the measured runs: $spans."
} | tee bench/results/tracing.md
