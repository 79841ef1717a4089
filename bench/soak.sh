#!/usr/bin/env bash
# A soak: one host on 127.0.0.1 serving a mix of functions, loaded with at least REQUESTS requests
# at CONCURRENCY connections spread over kinds of request, each kind with the statuses it may get.
# Counts every status per kind, samples the host's VmRSS every second, and checks that no status
# falls outside its kind's list, that the host is still alive, and that RSS after warm-up stays
# flat. Stops by itself: at REQUESTS, or at the time cap (SOAK_MAX_SECONDS, default 1800 s).
#
#   ./bench/soak.sh [REQUESTS] [CONCURRENCY]     (defaults 1000000 and 64; needs ./scripts/setup.sh)
#
# Load: wrk (as the other bench scripts), one wrk per kind, with bench/soak/kind.lua counting the
# statuses. Environment: AIFN_BIN (default target/release/aifn), SOAK_MAX_SECONDS (time cap),
# SOAK_LOOP_DELAY_MS (pause between looping requests, default 100), SOAK_EMBED_DELAY_MS (default 10).
# Writes bench/results/soak.md and bench/results/soak-rss.csv; exits 1 if a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
requests="${1:-1000000}"
concurrency="${2:-64}"
max_seconds="${SOAK_MAX_SECONDS:-1800}"
loop_delay="${SOAK_LOOP_DELAY_MS:-100}"
embed_delay="${SOAK_EMBED_DELAY_MS:-10}"
warmup_pct=10
aifn="${AIFN_BIN:-target/release/aifn}"
command="./bench/soak.sh $*"
[ -x "$aifn" ] || { echo "$aifn is missing: run ./scripts/setup.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }
hostile_wasm=$PWD/tests/guests/hostile/target/wasm32-wasip2/release/hostile_guest.wasm
for f in "$hostile_wasm" functions/text-embedder/model/model.onnx \
  functions/churn-predictor/module/target/wasm32-wasip2/release/churn_preprocess.wasm \
  functions/text-embedder/module/target/wasm32-wasip2/release/text_embedder.wasm; do
  [ -f "$f" ] || { echo "$f is missing: run ./scripts/setup.sh first" >&2; exit 1; }
done

# The kinds: name, connections (a share of CONCURRENCY, the small ones fixed), pause between a
# connection's requests (ms), allowed statuses, and the requests (PATH<TAB>BODY lines, in turn).
kinds="good bad cached limited looping v2 embed"
[ "$concurrency" -ge 7 ] || { echo "CONCURRENCY must be at least 7 (one connection per kind)" >&2; exit 1; }
declare -A conns delay allowed about
conns[looping]=1 conns[embed]=2
rest=$((concurrency - 3))
conns[v2]=$((rest * 25 / 100)) conns[bad]=$((rest * 10 / 100)) conns[cached]=$((rest * 10 / 100))
conns[limited]=$((rest * 10 / 100))
for k in v2 bad cached limited; do [ "${conns[$k]}" -ge 1 ] || conns[$k]=1; done
conns[good]=$((concurrency - conns[looping] - conns[embed] - conns[v2] - conns[bad] - conns[cached] - conns[limited]))
for k in $kinds; do delay[$k]=0; done
delay[looping]=$loop_delay delay[embed]=$embed_delay
allowed[good]="200" allowed[bad]="400" allowed[cached]="200" allowed[limited]="200 429"
allowed[looping]="504" allowed[v2]="200" allowed[embed]="200"
about[good]="churn-predictor (WASM + ONNX), valid customers"
about[bad]="malformed JSON to the churn module, the v2 route and the embedder"
about[cached]="churn-predictor endpoint with a response cache (one body: hits)"
about[limited]="churn-predictor endpoint with a rate limit (300/s, burst 50)"
about[looping]="hostile module that loops, module.timeout 20ms"
about[v2]="v2 inference protocol, no WASM"
about[embed]="text-embedder (WASM tokenizer + MiniLM), two texts"

work=$(mktemp -d)
host_pid= wrk_pids=()
cleanup() {
  for p in "${wrk_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
tab=$'\t'
customer='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
customer2='{"avg_monthly_spend": 15.0, "days_since_last_purchase": 120, "support_tickets_last_30d": 4, "subscription_tier": "basic"}'
v2='{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[42.5,12,1,0,0,1]}]}'
v2b='{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[15,120,4,1,0,0]}]}'
printf '%s\n' "/v1/churn$tab$customer" "/v1/churn$tab$customer2" > "$work/good.req"
printf '%s\n' "/v1/churn$tab{\"avg_monthly_spend\": 42.5," "/v2/models/churn-predictor/infer$tab{\"inputs\":[{\"name\"" \
  "/v1/embeddings$tab{\"inputs\": [\"unterminated" > "$work/bad.req"
printf '%s\n' "/v1/churn-cached$tab$customer" > "$work/cached.req"
printf '%s\n' "/v1/churn-limited$tab$customer" > "$work/limited.req"
printf '%s\n' "/v1/hostile${tab}loop" > "$work/looping.req"
printf '%s\n' "/v2/models/churn-predictor/infer$tab$v2" "/v2/models/churn-predictor/infer$tab$v2b" > "$work/v2.req"
printf '%s\n' "/v1/embeddings$tab{\"inputs\": \"the soak test keeps the host busy\"}" \
  "/v1/embeddings$tab{\"inputs\": \"a longer sentence, so that texts of different lengths are padded when the replica batches them together\"}" \
  > "$work/embed.req"
routes() { cut -f1 "$work/$1.req" | sort -u | sed 's/.*/`&`/' | paste -sd, - | sed 's/,/, /g'; }

# Specs: the bundled ones with absolute paths, the churn predictor with two more endpoints, and the
# hostile module in the churn predictor's place (as tests/support hostile_spec does).
absolute() { sed -e "s#path: model/#path: $PWD/functions/$1/model/#; s#path: module/#path: $PWD/functions/$1/module/#" "functions/$1/function.yaml"; }
{
  absolute churn-predictor
  cat <<'YAML'
    - route: /v1/churn-cached
      method: POST
      auth: none
      cache: {ttl: 1h}
    - route: /v1/churn-limited
      method: POST
      auth: none
      rate_limit: {requests_per_second: 300, burst: 50}
YAML
} > "$work/churn.yaml"
absolute churn-predictor | sed -e 's#name: churn-predictor#name: hostile#; s#route: /v1/churn$#route: /v1/hostile#' \
  -e "s#path: .*churn_preprocess.wasm#path: $hostile_wasm#; s#timeout: 100ms#timeout: 20ms#" \
  -e 's#min_replicas: 2#min_replicas: 1#; s#max_replicas: 8#max_replicas: 1#' > "$work/hostile.yaml"
absolute text-embedder > "$work/embed.yaml"

AIFN_LOG=warn start_host "$work/host"
case "$base" in http://127.0.0.1:*) ;; *) echo "host is not on 127.0.0.1: $base" >&2; exit 1 ;; esac
deploy() { "$aifn" deploy --host "$admin" --token bench "$1" > /dev/null; }
for spec in churn hostile embed; do deploy "$work/$spec.yaml"; done
rss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$host_pid/status" 2>/dev/null || true; }
rss_idle=$(rss)

echo "soak: $requests requests at $concurrency connections on $base (cap ${max_seconds}s); RSS every second"
csv=bench/results/soak-rss.csv
mkdir -p bench/results
echo "elapsed_s,requests,rss_kb" > "$csv"
start=$EPOCHREALTIME
for k in $kinds; do
  SOAK_REQUESTS="$work/$k.req" SOAK_PROGRESS="$work/$k.progress" SOAK_DELAY_MS="${delay[$k]}" \
    wrk -t1 -c"${conns[$k]}" -d"$((max_seconds + 5))s" --timeout 10s -s bench/soak/kind.lua "$base" > "$work/$k.wrk" 2>&1 &
  wrk_pids+=($!)
done
elapsed() { awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f", n - s }'; }
stop_reason=
last_report=0 next_sample=1
while :; do
  sleep 0.2
  sent=$(cat "$work"/*.progress 2>/dev/null | awk '{ n += $1 } END { print n + 0 }')
  t=$(elapsed)
  now=$(rss)
  if [ -z "$now" ]; then echo "$t,$sent," >> "$csv"; stop_reason="host died"; break; fi
  if [ "${t%.*}" -ge "$next_sample" ]; then
    echo "$t,$sent,$now" >> "$csv"
    next_sample=$((${t%.*} + 1))
  fi
  if [ "$sent" -ge "$requests" ]; then stop_reason="requests reached"; break; fi
  if awk -v t="$t" -v m="$max_seconds" 'BEGIN { exit !(t >= m) }'; then stop_reason="time cap reached"; break; fi
  alive=0
  for p in "${wrk_pids[@]}"; do if kill -0 "$p" 2>/dev/null; then alive=$((alive + 1)); fi; done
  if [ "$alive" -lt "${#wrk_pids[@]}" ]; then stop_reason="a load generator stopped early"; break; fi
  if [ "${t%.*}" -ge $((last_report + 10)) ]; then
    last_report=${t%.*}
    echo "  ${t}s: $sent requests, VmRSS $now kB"
  fi
done
for p in "${wrk_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for _ in $(seq 1 100); do
  alive=0
  for p in "${wrk_pids[@]}"; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
  [ "$alive" -eq 0 ] && break
  sleep 0.1
done
for p in "${wrk_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
wrk_pids=()
duration=$(elapsed)

# The host: still running (a dead child is a zombie without VmRSS), answering /healthz, no panics.
final_rss=$(rss)
health=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/healthz" || true)
panics=$(grep -c 'panicked' "$work/host/host.log" || true)
if [ -n "$final_rss" ] && [ "$health" = 200 ]; then alive=yes crashes=0; else alive=no crashes=1; fi

# Per kind: statuses from wrk's done(), socket errors (never an allowed outcome).
total=0 outside_total=0 rows=
for k in $kinds; do
  out="$work/$k.wrk"
  statuses=$(awk '$1 == "SOAK" && $2 == "status" { print $3, $4 }' "$out" | sort -n)
  read -r e_connect e_read e_write e_timeout < <(awk '$1 == "SOAK" && $2 == "errors" { print $3, $4, $5, $6 }' "$out") || true
  [ -n "${e_connect:-}" ] || { echo "wrk for $k printed no summary:" >&2; cat "$out" >&2; e_connect=0 e_read=0 e_write=0 e_timeout=0; }
  n=$(echo "$statuses" | awk '{ n += $2 } END { print n + 0 }')
  errors=$((e_connect + e_read + e_write + e_timeout))
  outside=$(echo "$statuses" | awk -v ok=" ${allowed[$k]} " 'NF && index(ok, " " $1 " ") == 0 { n += $2 } END { print n + 0 }')
  outside=$((outside + errors))
  list=$(echo "$statuses" | awk 'NF { printf "%s%s: %s", sep, $1, $2; sep = ", " }')
  if [ "$errors" -gt 0 ]; then list="$list; socket errors connect $e_connect, read $e_read, write $e_write, timeout $e_timeout"; fi
  extra=
  if [ "$k" = cached ]; then
    extra=" (X-Cache hit $(awk '$2 == "cache" && $3 == "hit" { print $4 }' "$out"), miss $(awk '$2 == "cache" && $3 == "miss" { print $4 }' "$out"))"
  fi
  lat=$(awk '$2 == "latency_us" { printf "%.1f / %.1f", $4 / 1000, $6 / 1000 }' "$out")
  total=$((total + n + errors)) outside_total=$((outside_total + outside))
  c="${conns[$k]}"
  if [ "${delay[$k]}" -gt 0 ]; then c="$c, ${delay[$k]} ms apart"; fi
  rows+="| $k | $(routes "$k") | $c | $((n + errors)) | ${list:-none}$extra | ${allowed[$k]// / or } | $outside | ${lat:-} |"$'\n'
done
rps=$(awk -v n="$total" -v t="$duration" 'BEGIN { printf "%.0f", n / t }')

# RSS after warm-up: samples once the first warmup_pct% of REQUESTS were answered.
read -r samples first last min max < <(awk -F, -v from=$((requests * warmup_pct / 100)) \
  'NR > 1 && $3 != "" && $2 >= from { n++; if (n == 1) { first = $3; min = $3; max = $3 } last = $3; if ($3 < min) min = $3; if ($3 > max) max = $3 }
   END { print n + 0, first + 0, last + 0, min + 0, max + 0 }' "$csv")
spread=$(awk -v a="$min" -v b="$max" 'BEGIN { if (a > 0) printf "%.1f", 100 * (b - a) / a; else print "n/a" }')
growth=$(awk -v a="$first" -v b="$last" 'BEGIN { if (a > 0) printf "%+.1f", 100 * (b - a) / a; else print "n/a" }')
if [ "$samples" -lt 2 ]; then flat="no (fewer than 2 samples after warm-up)"
elif awk -v a="$min" -v b="$max" 'BEGIN { exit !(b <= 1.10 * a) }'; then flat=yes; else flat=no; fi
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

verdict=PASS
[ "$stop_reason" = "requests reached" ] && [ "$total" -ge "$requests" ] || verdict=FAIL
[ "$outside_total" -eq 0 ] && [ "$alive" = yes ] && [ "$panics" -eq 0 ] && [ "$flat" = yes ] || verdict=FAIL

{
  echo "# Soak ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $requests requests at $concurrency connections)"
  echo
  echo "Command: \`$command\` (${aifn}, $("$aifn" --version 2>/dev/null || echo '?'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- 2>/dev/null || echo ', with uncommitted changes'))"
  echo
  echo "**$verdict**: $total requests in ${duration}s ($rps requests/s), stopped because: $stop_reason;" \
    "statuses outside the allowed lists: $outside_total; host alive: $alive (crashes: $crashes, /healthz $health," \
    "$panics panics in its log); RSS after warm-up flat within 10%: $flat."
  echo
  echo "One host on 127.0.0.1 (functions churn-predictor with three endpoints, hostile, text-embedder), one wrk per kind."
  echo
  echo "| kind | routes | connections | requests | statuses | allowed | outside allowed | p50 / p99 ms |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s' "$rows"
  echo "| total | | $concurrency | $total | | | $outside_total | |"
  echo
  for k in $kinds; do echo "- $k: ${about[$k]}"; done
  echo
  echo "Resident memory (VmRSS of the host, every second: \`$csv\`): $(mib "$rss_idle") after deploy, before load."
  echo "After warm-up (the first ${warmup_pct}% of the requests excluded; $samples samples):" \
    "first $(mib "$first"), last $(mib "$last") ($growth%), min $(mib "$min"), max $(mib "$max")" \
    "(max $spread% over min); flat within 10%: $flat."
} | tee bench/results/soak.md
[ "$verdict" = PASS ]
