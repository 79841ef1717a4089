#!/usr/bin/env bash
# The request path of two aifn builds side by side: the churn predictor's module route and its v2
# route at concurrency 1 and 64, the two binaries interleaved (their order alternating) over
# ROUNDS rounds in one run. Reports every round and the median ratio B/A of requests/s.
# Everything runs on 127.0.0.1 and stops by itself.
#
#   ./bench/http_compare.sh A_AIFN B_AIFN [SECONDS_PER_RUN] [ROUNDS]   (defaults 5 and 3)
#
# e.g. build the commit before a change into /tmp/aifn-before and compare it with
# target/release/aifn. Writes bench/results/http_compare.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
a=$1
b=$2
seconds="${3:-5}"
rounds="${4:-3}"
[ "$rounds" -ge 3 ] || { echo "at least 3 rounds" >&2; exit 1; }
work=$(mktemp -d)
# The bundled spec without its `v2` block, next to it (its paths are relative), for older builds.
old_spec=functions/churn-predictor/.bench-without-v2.yaml
awk '/^  v2:/ { skip = 1; next } skip && /^    / { next } { skip = 0; print }' \
  functions/churn-predictor/function.yaml > "$old_spec"
trap 'kill $host_pid 2>/dev/null || true; rm -rf "$work" "$old_spec"' EXIT
export AIFN_LOG=warn
host_pid=

body='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
v2='{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[42.5,12,1,0,0,1]}]}'
for name in body v2; do
  printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' \
    "'${!name}'" > "$work/$name.lua"
done

# measure BIN ROUND: one host of BIN, every route and concurrency once; lines to $work/results.
measure() {
  local bin=$1 label=$2 round=$3
  AIFN_BIN=$bin start_host "$work/$label-$round"
  local spec=functions/churn-predictor/function.yaml
  # Builds from before `spec.v2` serve v2 for every function, and refuse the field.
  if [[ $("$bin" serve --help) != *--admin-listen* ]]; then spec=$old_spec; fi
  AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench "$bin" deploy "$spec" > /dev/null
  for route in "/v1/churn body" "/v2/models/churn-predictor/infer v2"; do
    set -- $route
    for c in 1 64; do
      read -r rps p50 p99 errors < <(wrk_post "$base$1" "$c" "$seconds" "$work/$2.lua")
      echo "$round $label $1 $c $rps $p50 $p99 $errors" >> "$work/results"
    done
  done
  kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=
}

for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
  for label in $order; do
    if [ "$label" = A ]; then measure "$a" A "$round"; else measure "$b" B "$round"; fi
  done
done

mkdir -p bench/results
{
  echo "# Request path: B against A ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${seconds}s per run, $rounds rounds interleaved)"
  echo
  echo "A: \`$a\`, B: \`$b\`; churn predictor, wrk on 127.0.0.1."
  echo
  echo "| round | route | connections | A req/s | B req/s | B/A | A p50 us | B p50 us | non-2xx A/B |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  awk '{ key = $1 " " $3 " " $4; rps[key, $2] = $5; p50[key, $2] = $6; err[key, $2] = $8; keys[key] = 1 }
       END { for (k in keys) { split(k, f, " "); printf "| %s | %s | %s | %.0f | %.0f | %.3f | %.1f | %.1f | %s/%s |\n", f[1], f[2], f[3], rps[k, "A"], rps[k, "B"], rps[k, "B"] / rps[k, "A"], p50[k, "A"], p50[k, "B"], err[k, "A"], err[k, "B"] } }' \
    "$work/results" | sort -t'|' -k3,3 -k4,4n -k2,2n
  echo
  echo "Median B/A of requests/s over the rounds:"
  echo
  awk '{ key = $3 " c=" $4; rps[$1, key, $2] = $5; keys[key] = 1; rounds[$1] = 1 }
       END { for (k in keys) { n = 0; for (r in rounds) ratios[++n] = rps[r, k, "B"] / rps[r, k, "A"];
               for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (ratios[j] < ratios[i]) { t = ratios[i]; ratios[i] = ratios[j]; ratios[j] = t }
               median = (n % 2) ? ratios[(n + 1) / 2] : (ratios[n / 2] + ratios[n / 2 + 1]) / 2;
               printf "- %s: %.3f\n", k, median } }' "$work/results" | sort
} | tee bench/results/http_compare.md
