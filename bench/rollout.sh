#!/usr/bin/env bash
# What a rollout costs callers: the churn predictor over HTTP with no rollout, during a 50% canary
# (every request picks a version; both versions' answers are counted for judging), and during a
# shadow (every request is also run by the candidate, after the caller got its answer). Measured in
# the same run, alternating, best of ROUNDS. Everything runs on 127.0.0.1 and stops by itself.
#
#   ./bench/rollout.sh [SECONDS_PER_RUN] [ROUNDS]     (default 8 and 2; needs ./scripts/setup.sh)
#
# Prints a table and writes it to bench/results/rollout.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-8}"
rounds="${2:-2}"
aifn=target/release/aifn
[ -x "$aifn" ] || { echo "run ./scripts/setup.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $host_pid 2>/dev/null || true; rm -rf "$work"' EXIT
export AIFN_LOG=warn
start_host "$work/host"
export AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench
cli() { $aifn "$@" > /dev/null; }

# v1 is the bundled spec; v2 the same function with another label (another digest) and a rollout
# that holds its first step and never judges the candidate bad, so the phase lasts the whole run.
function_dir="$PWD/functions/churn-predictor"
sed -e "s|path: model/|path: $function_dir/model/|" -e "s|path: module/|path: $function_dir/module/|" \
  "$function_dir/function.yaml" > "$work/v1.yaml"
sed -e 's|domain: retention|domain: retention\n    tag: candidate|' \
  -e 's|^  endpoints:|  rollout:\n    steps: [50, 100]\n    step_duration: 1h\n    max_error_rate_increase: 1\n    max_latency_ratio: 1000\n  endpoints:|' \
  "$work/v1.yaml" > "$work/v2.yaml"
cli deploy "$work/v1.yaml"

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
wrk.headers["Content-Type"] = "application/json"
LUA

# phase MODE: puts the function in MODE (none, canary, shadow).
phase() {
  $aifn abort churn-predictor > /dev/null 2>&1 || true
  case $1 in
    canary) cli deploy "$work/v2.yaml" --canary ;;
    shadow) cli deploy "$work/v2.yaml" --shadow ;;
  esac
}

declare -A best
for round in $(seq 1 "$rounds"); do
  for mode in none canary shadow; do
    phase "$mode"
    for c in 1 64; do
      read -r rps p50 p99 errors <<< "$(wrk_post "$base/v1/churn" "$c" "$seconds" "$work/post.lua")"
      key="$mode/$c"
      if [ -z "${best[$key]:-}" ] || awk -v a="$rps" -v b="${best[$key]%% *}" 'BEGIN { exit !(a > b) }'; then
        best[$key]="$rps $p50 $p99 $errors"
      fi
    done
  done
done
phase none

mkdir -p bench/results
{
  echo "# What a rollout costs callers: churn-predictor over HTTP ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${seconds}s per run, best of $rounds, alternating)"
  echo
  echo "| phase | connections | requests/s | vs none | p50 us | p99 us | non-2xx |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for c in 1 64; do
    read -r base_rps _ <<< "${best[none/$c]}"
    for mode in none canary shadow; do
      read -r rps p50 p99 errors <<< "${best[$mode/$c]}"
      printf '| %s | %s | %.0f | %.2fx | %.0f | %.0f | %s |\n' "$mode" "$c" "$rps" \
        "$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { print a / b }')" "$p50" "$p99" "$errors"
    done
  done
  echo
  echo "none: one version (the bundled spec: min_replicas 2). canary: half the requests go to a second version with its own instances (2 more), so at 64 connections more instances share the two cores, and at 1 connection requests alternate between two pools' caches. shadow: every request also runs on the candidate after the caller got its answer, so the host does twice the work."
} | tee bench/results/rollout.md
