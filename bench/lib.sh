# Shared by the bench scripts (source it from the repository root).

# start_host DIR [SERVE_ARGS...]: `aifn serve` (AIFN_BIN, default target/release/aifn) on a free 127.0.0.1 port, state in DIR/state, admin
# token `bench`, output in DIR/host.{out,log}. Sets host_pid, base (the data plane, http://127.0.0.1:PORT) and
# admin (the control plane, on its own free port).
start_host() {
  local dir=$1
  shift
  mkdir -p "$dir"
  local bin=${AIFN_BIN:-target/release/aifn} admin_listen=()
  # Builds from before the control plane had its own listener serve it on the data port.
  if [[ $("$bin" serve --help) == *--admin-listen* ]]; then admin_listen=(--admin-listen 127.0.0.1:0); fi
  "$bin" serve --listen 127.0.0.1:0 "${admin_listen[@]}" --state-dir "$dir/state" --admin-token bench "$@" \
    > "$dir/host.out" 2> "$dir/host.log" &
  host_pid=$!
  base=
  for _ in $(seq 1 200); do
    base=$(sed -n 's/^aifn listening on //p' "$dir/host.out")
    admin=$(sed -n 's/^aifn control plane on //p' "$dir/host.out")
    [ ${#admin_listen[@]} -eq 0 ] && admin=$base
    [ -n "$base" ] && [ -n "$admin" ] && return 0
    sleep 0.05
  done
  cat "$dir/host.log" >&2
  exit 1
}

# post_lua FILE BODY [API_KEY]: a wrk script that POSTs BODY as JSON (with X-API-Key when given).
post_lua() {
  {
    echo 'wrk.method = "POST"'
    echo "wrk.body = '$2'"
    echo 'wrk.headers["Content-Type"] = "application/json"'
    [ -z "${3:-}" ] || echo "wrk.headers[\"X-API-Key\"] = \"$3\""
  } > "$1"
}

# to_us LATENCY: wrk prints latencies like 95.00us, 1.20ms or 1.01s; this prints microseconds.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else print n * 1000000 }'; }

# wrk_post URL CONNECTIONS SECONDS LUA: a bounded wrk run (POSTs as LUA says); prints
# "requests/s p50_us p99_us errors", errors counting non-2xx answers and socket errors.
wrk_post() {
  local threads=2 out errors
  [ "$2" -eq 1 ] && threads=1
  out=$(wrk -t"$threads" -c"$2" -d"$3s" --timeout 10s --latency -s "$4" "$1")
  errors=$(echo "$out" | awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }')
  echo "$(echo "$out" | awk '/Requests\/sec/ { print $2 }') $(to_us "$(echo "$out" | awk '$1 == "50%" { print $2 }')") $(to_us "$(echo "$out" | awk '$1 == "99%" { print $2 }')") $errors"
}
