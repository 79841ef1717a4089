#!/usr/bin/env bash
# A cache hit on an `api_key` + rate-limited endpoint, against a bare hyper handler returning the
# same bytes (and one returning the same headers too), in one run on 127.0.0.1 (wrk, 64
# connections). Stops by itself.
#
#   ./bench/cache_hit.sh [SECONDS_PER_RUN] [ROUNDS]    (default 10 s, 3 rounds; needs ./scripts/setup.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-10}"
rounds="${2:-3}"
aifn=target/release/aifn
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }
cargo build --quiet --release -p aifn-host --example bare_hyper

work=$(mktemp -d)
bare_pid= same_pid=
trap 'kill $host_pid $bare_pid $same_pid 2>/dev/null || true; rm -rf "$work"' EXIT
wait_for() { for _ in $(seq 1 200); do v=$(sed -n "s/^$2//p" "$1"); [ -n "$v" ] && { echo "$v"; return; }; sleep 0.05; done; exit 1; }

AIFN_LOG=warn start_host "$work/host"
sed 's#      auth: none#      auth: api_key\n      rate_limit: {requests_per_second: 1000000, burst: 1000000}\n      cache: {ttl: 10m}#' \
  functions/churn-predictor/function.yaml > functions/churn-predictor/.bench-cached.yaml
trap 'kill $host_pid $bare_pid $same_pid 2>/dev/null || true; rm -rf "$work" functions/churn-predictor/.bench-cached.yaml' EXIT
export AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench
$aifn deploy functions/churn-predictor/.bench-cached.yaml > /dev/null
key=$($aifn keys create --function churn-predictor 2>/dev/null)

body='{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}'
answer=$(curl -s -X POST "$base/v1/churn" -H "x-api-key: $key" -d "$body")
# The cache hit's own headers (hyper adds date and content-length itself), for the second baseline.
mapfile -t hit_headers < <(curl -s -o /dev/null -D - -X POST "$base/v1/churn" -H "x-api-key: $key" -d "$body" |
  tr -d '\r' | sed -n '2,$p' | grep -viE '^(date|content-length|content-type):|^$')
target/release/examples/bare_hyper "$answer" > "$work/bare.out" &
bare_pid=$!
target/release/examples/bare_hyper "$answer" "${hit_headers[@]}" > "$work/same.out" &
same_pid=$!
bare=$(wait_for "$work/bare.out" "listening on ")
same=$(wait_for "$work/same.out" "listening on ")

post_lua "$work/post.lua" "$body" "$key"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# run URL PID: requests/s, and the server's CPU per request in µs (user + system, from /proc).
run() {
  local before after
  before=$(cpu_ticks "$2")
  wrk -t2 -c64 -d"${seconds}s" -s "$work/post.lua" "$1" > "$work/wrk.out"
  after=$(cpu_ticks "$2")
  awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" -v s="$seconds" \
    '/requests in/ { n = $1 } /Requests\/sec/ { r = $2 } END { printf "%s %.1f\n", r, ticks / hz * 1e6 / n }' "$work/wrk.out"
}
hit=$(curl -s -o /dev/null -D - -X POST "$base/v1/churn" -H "x-api-key: $key" -d "$body" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" { print $2 }')
[ "$hit" = hit ] || { echo "expected a cache hit, got X-Cache: $hit" >&2; exit 1; }
for url in "$bare/" "$same/" "$base/v1/churn"; do run "$url" "$host_pid" > /dev/null; done # warm-up
# The three servers take turns within each round, in an order that rotates from round to round, so
# drift on a shared machine hits all alike; the ratios are taken within each round.
servers=("bare $bare/ $bare_pid" "same $same/ $same_pid" "aifn $base/v1/churn $host_pid")
for round in $(seq 1 "$rounds"); do
  for i in 0 1 2; do
    read -r name url pid <<< "${servers[$(((i + round) % 3))]}"
    echo "$round $name $(run "$url" "$pid")" >> "$work/runs"
  done
done
mkdir -p bench/results
{
  echo "# Cache hit vs bare hyper ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, \`./bench/cache_hit.sh $seconds $rounds\`)"
  echo
  echo "wrk -t2 -c64 -d${seconds}s on 127.0.0.1 against three servers, which take turns in each round:"
  echo "- **bare**: a bare hyper handler returning the same body (the target's baseline);"
  echo "- **same answer**: the same handler returning the same body *and* the cache hit's headers (\`${hit_headers[*]}\`), so that both send the same bytes;"
  echo "- **aifn**: the churn predictor behind \`api_key\`, a rate limit and the response cache, answered from the cache."
  echo
  echo "CPU is the server process's user + system time over the run, divided by the requests it answered (wrk runs on the same 2 cores)."
  echo
  python3 - "$work/runs" <<'PY'
import collections, statistics, sys
rounds = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r, name, rps, cpu = line.split()
    rounds[int(r)][name] = (float(rps), float(cpu))
print("| round | bare req/s | same answer req/s | aifn req/s | aifn / bare | aifn / same answer | CPU µs/request: bare, same answer, aifn |")
print("| --- | --- | --- | --- | --- | --- | --- |")
vs_bare, vs_same, cpu = [], [], collections.defaultdict(list)
for r in sorted(rounds):
    b, s, a = (rounds[r][n] for n in ("bare", "same", "aifn"))
    vs_bare.append(a[0] / b[0]); vs_same.append(a[0] / s[0])
    for n, v in (("bare", b), ("same", s), ("aifn", a)):
        cpu[n].append(v[1])
    print(f"| {r} | {b[0]:.0f} | {s[0]:.0f} | {a[0]:.0f} | {100 * vs_bare[-1]:.0f}% | {100 * vs_same[-1]:.0f}% | {b[1]}, {s[1]}, {a[1]} |")
med = {n: statistics.median(v) for n, v in cpu.items()}
print()
print(f"aifn keeps a median **{100 * statistics.median(vs_bare):.0f}%** of the bare handler's requests/s (target: at least 90%), "
      f"and **{100 * statistics.median(vs_same):.0f}%** of the handler that sends the same answer.")
print(f"Median server CPU per request: bare {med['bare']:.1f} µs, same answer {med['same']:.1f} µs, aifn {med['aifn']:.1f} µs.")
PY
} | tee bench/results/cache_hit.md
