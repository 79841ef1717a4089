#!/usr/bin/env bash
# The autoscaler under a step load: 1 -> 8 -> 64 -> 1 concurrent clients on the text-embedder
# (one ONNX thread per instance, so a 2-core host can run 2; batching on), each step bounded in
# time, all on 127.0.0.1. A sampler records replicas, running/queued requests and p95 every
# 250 ms; then a sweep of fixed replica counts (min = max) at 64 clients gives the best fixed
# configuration to compare the autoscaled throughput with.
#
#   ./bench/autoscale.sh [SECONDS_PER_STEP] [text-embedder|slow] [ROUNDS]   (default 10 text-embedder 3)
#
# Each round runs the step load and then the fixed counts, so the autoscaled and the fixed figures
# of a round come from the same stretch of time; the ratio is reported for every round, and the
# detailed tables are the last round's.
#
# `slow` runs the same steps on the churn predictor's module with a deliberately slow synthetic
# model (tests/fixtures/models/slow.onnx, ~2.5 ms per row, target_latency 10ms, no batching).
# Needs ./scripts/setup.sh first. Writes bench/results/autoscale[-slow].{md,csv,svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-10}"
model="${2:-text-embedder}"
rounds="${3:-3}"
case "$model" in
  text-embedder) suffix=""; target=50 ;;
  slow) suffix="-slow"; target=10 ;;
  *) echo "usage: $0 [SECONDS_PER_STEP] [text-embedder|slow]" >&2; exit 2 ;;
esac
aifn=target/release/aifn
py=.venv/bin/python
[ -x "$aifn" ] && [ -f functions/text-embedder/model/model.onnx ] || { echo "run ./scripts/setup.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $host_pid $sampler_pid 2>/dev/null || true; rm -rf "$work"' EXIT
sampler_pid=
export AIFN_LOG=info

serve() { start_host "$work/$1" --autoscale-window-secs 10 --scale-down-delay-secs 5; } # name
spec() { # min max -> a copy of the function's spec with one thread per instance
  if [ "$model" = text-embedder ]; then
    sed -e 's#path: model/#path: '"$PWD"'/functions/text-embedder/model/#' \
        -e 's#path: module/#path: '"$PWD"'/functions/text-embedder/module/#' \
        -e 's/cpu: "2"/cpu: "1"/' -e "s/min_replicas: 1/min_replicas: $1/" -e "s/max_replicas: 4/max_replicas: $2/" \
        functions/text-embedder/function.yaml > "$work/spec-$1-$2.yaml"
  else
    sed -e 's#path: model/churn.onnx#path: '"$PWD"'/tests/fixtures/models/slow.onnx#' \
        -e 's#path: module/#path: '"$PWD"'/functions/churn-predictor/module/#' \
        -e 's/id: churn_logreg_v1/id: slow_synthetic/' -e 's/target_latency: 20ms/target_latency: 10ms/' \
        -e "s/min_replicas: 2/min_replicas: $1/" -e "s/max_replicas: 8/max_replicas: $2/" \
        functions/churn-predictor/function.yaml > "$work/spec-$1-$2.yaml"
  fi
  echo "$work/spec-$1-$2.yaml"
}
if [ "$model" = text-embedder ]; then
  route=/v1/embeddings name=text-embedder
  body='{"inputs": "The restaurant was noisy but the food was excellent, and the staff were friendly."}'
else
  route=/v1/churn name=churn-predictor
  body='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
  [ -f tests/fixtures/models/slow.onnx ] || $py tests/fixtures/models/make.py > /dev/null
fi
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA
# sample FILE: the function's status every 250 ms (time, clients, JSON), with only curl, so that
# sampling costs the host's cores little; the same sampler runs beside the fixed configurations.
sample() {
  while true; do
    s=$(curl -sf -H 'Authorization: Bearer bench' "$admin/admin/v1/functions/$name" | tr -d '\n' || true)
    [ -n "$s" ] && echo "$(date +%s.%N) $(cat "$work/clients") $s" >> "$1"
    sleep 0.25
  done
}
load() { # connections -> "rps p50_ms p99_ms errors"
  wrk_post "$base$route" "$1" "$seconds" "$work/post.lua" | awk '{ print $1, $2 / 1000, $3 / 1000, $4 }'
}

for round in $(seq 1 "$rounds"); do
# 1. The step load, autoscaled (1 to 4 replicas asked; the host's cores cap it).
serve auto
AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench $aifn deploy "$(spec 1 4)" > /dev/null
echo 0 > "$work/clients"
t0=$(date +%s.%N)
sample "$work/samples.raw" &
sampler_pid=$!
unset step
declare -A step
for c in 1 8 64 1; do
  echo "$c" > "$work/clients"
  step[$c]="${step[$c]:+${step[$c]}; }$(load "$c")"
done
# Quiet: the stable window and the scale-down delay pass, and the pool shrinks back.
echo 0 > "$work/clients"
sleep 20
kill $sampler_pid 2>/dev/null || true
$py - "$work/samples.raw" "$t0" > "$work/samples.csv" <<'PY'
import json, sys
print("seconds,clients,replicas,running,queued,p95_ms")
for line in open(sys.argv[1]):
    at, clients, status = line.split(" ", 2)
    s = json.loads(status)
    load = s["load"]
    p95 = "" if s["p95_ms"] is None else "%.1f" % s["p95_ms"]
    print("%.2f,%s,%d,%d,%d,%s" % (float(at) - float(sys.argv[2]), clients, load["instances"], load["running"], load["queued"], p95))
PY
rm -f "$work/samples.raw"
ceiling=$(curl -sf -H 'Authorization: Bearer bench' "$admin/admin/v1/functions/$name" | $py -c 'import json,sys; print(json.load(sys.stdin)["scaling"]["ceiling"])')
auto64=$(echo "${step[64]}" | awk '{ print $1 }')
grep -c "scaling:" "$work/auto/host.log" > "$work/decisions" || true
grep "scaling:" "$work/auto/host.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -20 > "$work/decision-log"
kill $host_pid 2>/dev/null || true
wait $host_pid 2>/dev/null || true

# 2. Fixed replica counts at 64 clients: the best fixed configuration.
unset fixed
declare -A fixed
best=0
for n in $(seq 1 "$ceiling"); do
  serve "fixed$n"
  AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench $aifn deploy "$(spec "$n" "$n")" > /dev/null
  echo 64 > "$work/clients"
  sample /dev/null &
  sampler_pid=$!
  fixed[$n]=$(load 64)
  kill $sampler_pid 2>/dev/null || true
  best=$(awk -v a="$best" -v b="${fixed[$n]%% *}" 'BEGIN { print (b > a ? b : a) }')
  kill $host_pid 2>/dev/null || true
  wait $host_pid 2>/dev/null || true
done
echo "$round $auto64 $best" >> "$work/rounds"
rm -rf "$work/auto" "$work"/fixed*
done

mkdir -p bench/results
cp "$work/samples.csv" "bench/results/autoscale$suffix.csv"
$py bench/plot_autoscale.py "bench/results/autoscale$suffix.csv" "bench/results/autoscale$suffix.svg" "$target"
{
  echo "# Autoscaling under a step load ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
  echo
  if [ "$model" = text-embedder ]; then
    echo "\`./bench/autoscale.sh $seconds text-embedder $rounds\`: text-embedder with \`cpu: \"1\"\`, min_replicas 1, max_replicas 4 (ceiling on this"
    echo "host: $ceiling), target_latency 50ms, max_batch_size 16;"
  else
    echo "\`./bench/autoscale.sh $seconds slow\`: the churn module with a synthetic slow model (~2.5 ms per row), \`cpu: \"1\"\`,"
    echo "min_replicas 1, max_replicas 8 (ceiling on this host: $ceiling), target_latency 10ms, no batching;"
  fi
  echo "host with \`--autoscale-window-secs 10 --scale-down-delay-secs 5\`; wrk on 127.0.0.1, ${seconds}s per step."
  echo "Samples every 250 ms: bench/results/autoscale$suffix.csv; plot: autoscale$suffix.svg."
  echo
  echo "| clients | req/s | p50 ms | p99 ms | errors |"
  echo "| --- | --- | --- | --- | --- |"
  for c in 1 8 64; do
    echo "${step[$c]}" | tr ';' '\n' | while read -r r p5 p9 e; do
      [ -n "$r" ] && printf '| %s | %.0f | %.1f | %.1f | %s |\n' "$c" "$r" "$p5" "$p9" "$e"
    done
  done
  echo
  echo "Fixed replicas at 64 clients (min = max):"
  echo
  echo "| replicas | req/s | p50 ms | p99 ms | errors |"
  echo "| --- | --- | --- | --- | --- |"
  for n in $(seq 1 "$ceiling"); do
    read -r r p5 p9 e <<< "${fixed[$n]}"
    printf '| %s | %.0f | %.1f | %.1f | %s |\n' "$n" "$r" "$p5" "$p9" "$e"
  done
  echo
  echo "Autoscaled throughput at 64 clients against the best fixed configuration, every round:"
  echo
  echo "| round | autoscaled req/s | best fixed req/s | ratio |"
  echo "| --- | --- | --- | --- |"
  awk '{ printf "| %d | %.0f | %.0f | %.2f |\n", $1, $2, $3, $2 / $3 }' "$work/rounds"
  echo
  $py -c 'import statistics, sys; r = [float(l.split()[1]) / float(l.split()[2]) for l in open(sys.argv[1])]; print(f"Median: **{statistics.median(r):.2f}×** the best fixed configuration (target at least 0.95×).")' "$work/rounds"
  $py - "bench/results/autoscale$suffix.csv" "$target" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
target = float(sys.argv[2])
segments = []  # (start, end, clients, rows)
for r in rows:
    if not segments or segments[-1][2] != r["clients"]:
        segments.append([float(r["seconds"]), None, r["clients"], []])
    segments[-1][3].append(r)
for i, seg in enumerate(segments):
    seg[1] = segments[i + 1][0] if i + 1 < len(segments) else float(seg[3][-1]["seconds"])
print()
print("| step | from s | replicas at start -> end | replicas reached after | p95 ms, second half of the step | first p95 under target after |")
print("| --- | --- | --- | --- | --- | --- |")
for start, end, clients, rs in segments:
    reps = [int(r["replicas"]) for r in rs]
    final = reps[-1]
    reached = next((float(r["seconds"]) - start for r in rs if int(r["replicas"]) == final), 0.0)
    late = [float(r["p95_ms"]) for r in rs if r["p95_ms"] and float(r["seconds"]) >= (start + end) / 2]
    p95 = f"{statistics.median(late):.0f}" if late else "-"
    under = next((float(r["seconds"]) - start for r in rs if r["p95_ms"] and float(r["p95_ms"]) <= target), None)
    under = f"{under:.1f} s" if under is not None else "never (over capacity)"
    print(f"| {clients} clients | {start:.1f} | {reps[0]} -> {final} | {reached:.1f} s | {p95} | {under if clients != '0' else '-'} |")
PY
  echo
  echo "Scaling decisions logged by the host: $(cat "$work/decisions") (last ones below)."
  echo
  echo '```'
  cut -c1-220 "$work/decision-log"
  echo '```'
} | tee "bench/results/autoscale$suffix.md"
