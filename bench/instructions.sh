#!/usr/bin/env bash
# Instructions the host executes per request, for two aifn builds: each serves the churn predictor
# under callgrind, instrumentation switched on only around N keep-alive requests at concurrency 1
# (after 50 warm-up requests), on the module route and the v2 route; the builds alternate, twice.
# Instruction counts do not depend on what else the machine does, unlike wrk's requests/s.
#
#   ./bench/instructions.sh A_AIFN B_AIFN [N]   (default 1000; needs valgrind: apt-get install valgrind)
#
# Writes bench/results/instructions.md.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1
b=$2
n="${3:-1000}"
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $host_pid 2>/dev/null || true; rm -rf "$work"' EXIT
export AIFN_LOG=warn
host_pid=

# requests PORT PATH COUNT: keep-alive POSTs at concurrency 1, each must answer 200.
requests() {
  python3 - "$@" <<'PY'
import http.client, sys
port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if path == "/v1/churn":
    body = '{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
else:
    body = '{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[42.5,12,1,0,0,1]}]}'
connection = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(count):
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
PY
}

# measure BIN LABEL PATH: prints instructions per request.
measure() {
  local bin=$1 dir="$work/$2" path=$3
  rm -rf "$dir"
  mkdir -p "$dir"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.out" \
    "$bin" serve --listen 127.0.0.1:0 --state-dir "$dir/state" --admin-token bench \
    > "$dir/out" 2> "$dir/log" &
  host_pid=$!
  base=
  for _ in $(seq 1 600); do
    base=$(sed -n 's/^aifn listening on //p' "$dir/out")
    [ -n "$base" ] && break
    sleep 0.5
  done
  [ -n "$base" ] || { cat "$dir/log" >&2; exit 1; }
  AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench "$bin" deploy functions/churn-predictor/function.yaml > /dev/null
  requests "${base##*:}" "$path" 50
  callgrind_control -i on "$host_pid" > /dev/null 2>&1
  requests "${base##*:}" "$path" "$n"
  callgrind_control -i off "$host_pid" > /dev/null 2>&1
  kill -INT "$host_pid"
  wait "$host_pid" || true
  host_pid=
  awk -v n="$n" '/^totals:/ { printf "%.0f\n", $2 / n; exit }' "$dir/cg.out"
}

mkdir -p bench/results
{
  echo "# Instructions per request, B against A ($(date -u +%Y-%m-%dT%H:%MZ), callgrind, $n requests at c=1)"
  echo
  echo "A: \`$a\`, B: \`$b\`; churn predictor; every thread of the host counted while the requests run."
  echo
  echo "| route | round | A instructions/request | B instructions/request | B/A |"
  echo "| --- | --- | --- | --- | --- |"
  for path in /v1/churn /v2/models/churn-predictor/infer; do
    for round in 1 2; do
      ia=$(measure "$a" A "$path")
      ib=$(measure "$b" B "$path")
      awk -v p="$path" -v r="$round" -v a="$ia" -v b="$ib" 'BEGIN { printf "| %s | %s | %d | %d | %.3f |\n", p, r, a, b, b / a }'
    done
  done
} | tee bench/results/instructions.md
