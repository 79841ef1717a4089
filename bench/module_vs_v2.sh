#!/usr/bin/env bash
# The churn predictor's WASM module route against its own v2 route (same host, same model, no
# module) and against FastAPI + uvicorn + onnxruntime doing the same job in Python
# (bench/fastapi_churn.py), at 1 and 64 connections. A bare hyper handler answering the same bytes
# is the floor of a request's latency on this machine. Everything runs on 127.0.0.1, the servers
# alternate within each round, and every run is bounded in time.
#
#   ./bench/module_vs_v2.sh [SECONDS_PER_RUN] [ROUNDS]     (default 5 s, 3 rounds)
#
# Needs ./scripts/setup.sh first; installs bench/requirements.txt into .venv. Writes
# bench/results/module_vs_v2.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-5}"
rounds="${2:-3}"
aifn=${AIFN_BIN:-target/release/aifn}
py=.venv/bin/python
[ -x "$aifn" ] || { echo "run ./scripts/setup.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }
if ! $py -c 'import fastapi, uvicorn' 2>/dev/null; then
  $py -m pip install -q --disable-pip-version-check -r bench/requirements.txt
fi
cargo build --quiet --release -p aifn-host --example bare_hyper

work=$(mktemp -d)
trap 'kill $host_pid $fastapi_pid $bare_pid 2>/dev/null || true; rm -rf "$work"' EXIT
wait_for() { for _ in $(seq 1 200); do v=$(sed -n "s/^$2//p" "$1"); [ -n "$v" ] && { echo "$v"; return; }; sleep 0.05; done; exit 1; }
AIFN_LOG=warn start_host "$work/host"
AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench $aifn deploy functions/churn-predictor/function.yaml > /dev/null
port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$py bench/fastapi_churn.py --port "$port" > "$work/fastapi.log" 2>&1 &
fastapi_pid=$!
fastapi="http://127.0.0.1:$port"

body='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
v2='{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[42.5,12,1,0,0,1]}]}'
for _ in $(seq 1 400); do
  curl -sf -o /dev/null -XPOST "$fastapi/v1/churn" -H 'content-type: application/json' -d "$body" && break
  sleep 0.05
done
# Both must give the same answer before their speed means anything.
ours=$(curl -sf -XPOST "$base/v1/churn" -H 'content-type: application/json' -d "$body")
theirs=$(curl -sf -XPOST "$fastapi/v1/churn" -H 'content-type: application/json' -d "$body")
$py - "$ours" "$theirs" <<'PY'
import json, sys
a, b = (json.loads(s) for s in sys.argv[1:3])
assert a["will_churn"] == b["will_churn"] and abs(a["churn_probability"] - b["churn_probability"]) < 1e-6, (a, b)
PY
target/release/examples/bare_hyper "$ours" > "$work/bare.out" &
bare_pid=$!
bare=$(wait_for "$work/bare.out" "listening on ")

post_lua "$work/module.lua" "$body"
post_lua "$work/v2.lua" "$v2"
# name url lua
targets=(
  "module $base/v1/churn module"
  "v2 $base/v2/models/churn-predictor/infer v2"
  "fastapi $fastapi/v1/churn module"
  "bare $bare/ module"
)
for target in "${targets[@]}"; do
  set -- $target
  wrk_post "$2" 64 2 "$work/$3.lua" > /dev/null # warm-up
done
for round in $(seq 1 "$rounds"); do
  for connections in 64 1; do
    for target in "${targets[@]}"; do
      set -- $target
      # The bare handler is the latency floor only; its throughput says nothing of a model server.
      [ "$1" = bare ] && [ "$connections" = 64 ] && continue
      echo "$round $connections $1 $(wrk_post "$2" "$connections" "$seconds" "$work/$3.lua")" >> "$work/runs"
    done
  done
done

mkdir -p bench/results
{
  echo "# Churn predictor: WASM module route vs v2 route vs FastAPI ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
  echo
  echo "\`./bench/module_vs_v2.sh $seconds $rounds\`: wrk on 127.0.0.1 (-t2 at 64 connections, -t1 at 1), ${seconds} s per run, $rounds rounds;"
  echo "within a round the servers alternate. Same customer JSON on the module route and FastAPI, the same six"
  echo "features as v2 tensors on the v2 route. Medians of the rounds, every round in brackets."
  echo
  $py - "$work/runs" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)  # (connections, server) -> [(rps, p50, p99, errors)]
for line in open(sys.argv[1]):
    _, connections, server, rps, p50, p99, errors = line.split()
    runs[(int(connections), server)].append((float(rps), float(p50), float(p99), int(errors)))
def med(connections, server, i):
    return statistics.median(r[i] for r in runs[(connections, server)])
def each(connections, server, i, fmt):
    return ", ".join(fmt.format(r[i]) for r in runs[(connections, server)])
def ratio(connections, a, b, i):
    rounds = [x[i] / y[i] for x, y in zip(runs[(connections, a)], runs[(connections, b)])]
    return statistics.median(rounds), ", ".join(f"{r:.2f}" for r in rounds)
names = {"module": "/v1/churn (WASM pre + post)", "v2": "/v2 infer (no module)",
         "fastapi": "FastAPI + uvicorn + onnxruntime", "bare": "bare hyper, same bytes (floor)"}
print("| server | c=64 requests/s | c=1 p50 µs | c=1 p99 µs | non-2xx |")
print("| --- | --- | --- | --- | --- |")
for server in ["module", "v2", "fastapi", "bare"]:
    c64 = f"{med(64, server, 0):.0f} ({each(64, server, 0, '{:.0f}')})" if runs[(64, server)] else "-"
    errors = sum(r[3] for k, v in runs.items() if k[1] == server for r in v)
    print(f"| {names[server]} | {c64} | {med(1, server, 1):.0f} ({each(1, server, 1, '{:.0f}')}) | {med(1, server, 2):.0f} | {errors} |")
print()
m, r = ratio(64, "module", "v2", 0)
print(f"- module route / v2 route, c=64 requests/s: **{m:.2f}×** (rounds: {r}); target at least 0.67×")
m, r = ratio(64, "module", "fastapi", 0)
print(f"- module route / FastAPI, c=64 requests/s: **{m:.1f}×** (rounds: {r}); target at least 10×")
m, r = ratio(1, "module", "bare", 1)
print(f"- module route c=1 p50: {med(1, 'module', 1):.0f} µs, {m:.2f}× the bare handler's (rounds: {r}); target at most 100 µs")
m, r = ratio(1, "v2", "bare", 1)
print(f"- v2 route c=1 p50: {med(1, 'v2', 1):.0f} µs, {m:.2f}× the bare handler's (rounds: {r})")
PY
} | tee bench/results/module_vs_v2.md
