#!/usr/bin/env bash
# Transport benchmark: gRPC with raw tensors vs REST JSON, small (one churn customer) and large
# (43,690 customers, 1 MB of FP32) requests, at concurrency 1 and 64; and REST over TLS vs
# plaintext with connection reuse. Two hosts on 127.0.0.1 serve the same churn predictor (one
# plaintext, one TLS); every round measures every case in turn.
#
#   ./bench/transport.sh [SECONDS_PER_CASE] [ROUNDS]     (default 3 s, 3 rounds)
#
# Writes bench/results/transport.json and bench/results/transport.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
seconds=${1:-3}
rounds=${2:-3}
work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
pids=()
trap cleanup EXIT

cargo build --release -q -p aifn --bin aifn --example transport_bench
bench=target/release/examples/transport_bench
$bench certs "$work/pki"

# The churn predictor, its v2 route open to 65,536 rows so the large request fits.
spec=$work/churn.yaml
sed -e "s|path: model/|path: $PWD/functions/churn-predictor/model/|" \
    -e "s|path: module/|path: $PWD/functions/churn-predictor/module/|" \
    -e "s|reference: model/|reference: $PWD/functions/churn-predictor/model/|" \
    -e "s|max_shape: \[256, 6\]|max_shape: [65536, 6]|" \
    functions/churn-predictor/function.yaml > "$spec"
limits=(--max-body-bytes 16777216)

start_host "$work/plain" "${limits[@]}"
pids+=("$host_pid"); plain=${base#http://}; plain_admin=$admin; plain_pid=$host_pid
start_host "$work/tls" "${limits[@]}" --tls-cert "$work/pki/server.pem" --tls-key "$work/pki/server-key.pem"
pids+=("$host_pid"); tls=${base#https://}; tls_admin=$admin; tls_pid=$host_pid
target/release/aifn deploy "$spec" --host "$plain_admin" --token bench > /dev/null
target/release/aifn deploy "$spec" --host "$tls_admin" --token bench --ca-file "$work/pki/ca.pem" > /dev/null

mkdir -p bench/results
{
  echo "# ./bench/transport.sh $seconds $rounds   ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs)"
  AIFN_BENCH_PIDS="$plain_pid,$tls_pid" $bench "$plain" "$tls" "$work/pki/ca.pem" "$seconds" "$rounds" bench/results/transport.json 2>&1
} | tee bench/results/transport.txt
