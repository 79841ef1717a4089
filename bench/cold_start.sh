#!/usr/bin/env bash
# Cold start of a function scaled to zero (`min_replicas: 0`): the first request after the pool
# emptied waits for the autoscaler's next tick (250 ms at most) and for an instance to load its
# model; a warm request follows for comparison. Churn predictor and text-embedder, 3 times each,
# on 127.0.0.1.
#
#   ./bench/cold_start.sh          (needs ./scripts/setup.sh first; writes bench/results/cold_start.md)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
aifn=target/release/aifn
[ -x "$aifn" ] || { echo "run ./scripts/setup.sh first" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $host_pid 2>/dev/null || true; rm -rf "$work"' EXIT
export AIFN_LOG=warn
start_host "$work/host" --autoscale-window-secs 1 --scale-down-delay-secs 0.5
instances() { curl -sf -H 'Authorization: Bearer bench' "$admin/admin/v1/functions/$1" | sed -n 's/.*"load":{"instances":\([0-9]*\).*/\1/p'; }
ms() { curl -s -o /dev/null -w '%{time_total}' -XPOST "$base$1" -H 'content-type: application/json' -d "$2" | awk '{ printf "%.1f", $1 * 1000 }'; }

run() { # name route body
  local name=$1 route=$2 body=$3
  sed -e "s#path: model/#path: $PWD/functions/$name/model/#" -e "s#path: module/#path: $PWD/functions/$name/module/#" \
      -e 's/min_replicas: [0-9]*/min_replicas: 0/' "functions/$name/function.yaml" > "$work/$name.yaml"
  AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench $aifn deploy "$work/$name.yaml" > /dev/null
  ms "$route" "$body" > /dev/null
  for i in 1 2 3; do
    for _ in $(seq 1 100); do [ "$(instances "$name")" = "0" ] && break; sleep 0.1; done
    cold=$(ms "$route" "$body")
    warm=$(ms "$route" "$body")
    echo "| $name | $i | $cold | $warm |"
  done
}
mkdir -p bench/results
{
  echo "# Cold start from zero instances ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
  echo
  echo "\`./bench/cold_start.sh\`: curl's total time of the first request after the pool scaled to zero, then of a warm one."
  echo
  echo "| function | run | cold ms | warm ms |"
  echo "| --- | --- | --- | --- |"
  run churn-predictor /v1/churn '{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
  run text-embedder /v1/embeddings '{"inputs": "A man is eating food."}'
} | tee bench/results/cold_start.md
