#!/usr/bin/env bash
# The quick start: set everything up, start a host, deploy the bundled churn predictor with the CLI,
# call it, and stop the host.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

export AIFN_LISTEN="${AIFN_LISTEN:-127.0.0.1:8080}"
# The control plane has its own listener; the CLI finds it (and may send the admin token to it)
# through the address the host records in its state directory.
export AIFN_ADMIN_LISTEN="${AIFN_ADMIN_LISTEN:-127.0.0.1:8081}"
export AIFN_STATE_DIR="${AIFN_STATE_DIR:-$PWD/.aifn}"
data="http://$AIFN_LISTEN"
aifn=target/release/aifn

echo "==> starting the host on $data, control plane on http://$AIFN_ADMIN_LISTEN (state in $AIFN_STATE_DIR, log in .aifn-host.log)"
$aifn serve > .aifn-host.log 2>&1 &
host_pid=$!
trap 'kill $host_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "$data/readyz" >/dev/null 2>&1 && break
  if ! kill -0 $host_pid 2>/dev/null; then cat .aifn-host.log; exit 1; fi
  sleep 0.1
done

echo "==> aifn deploy functions/churn-predictor/function.yaml"
$aifn deploy functions/churn-predictor/function.yaml

request='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
echo "==> POST $data/v1/churn  $request"
curl -sS -X POST "$data/v1/churn" -H 'content-type: application/json' -d "$request"
echo
echo "==> aifn ls"
$aifn ls
echo "==> done. Run a host yourself with: target/release/aifn up functions/churn-predictor/function.yaml"
