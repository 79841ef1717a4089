#!/usr/bin/env bash
# The text-embedder at 64 connections against its floor: in-process ONNX Runtime running batches of
# 16 of the same sentence with 2 intra-op threads (the whole machine, as the host may use it), no
# HTTP, no WASM. The two alternate over the rounds; everything runs on 127.0.0.1 and is bounded.
#
#   ./bench/embedder_floor.sh [SECONDS_PER_RUN] [ROUNDS]     (default 10 s, 3 rounds)
#
# Needs ./scripts/setup.sh first; installs bench/requirements.txt into .venv (the reference
# tokenizer, for the floor's token ids). Writes bench/results/embedder_floor.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-10}"
rounds="${2:-3}"
aifn=${AIFN_BIN:-target/release/aifn}
py=.venv/bin/python
[ -x "$aifn" ] && [ -f functions/text-embedder/model/model.onnx ] || { echo "run ./scripts/setup.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }
if ! $py -c 'import tokenizers' 2>/dev/null; then
  $py -m pip install -q --disable-pip-version-check -r bench/requirements.txt
fi
cargo build --quiet --release -p aifn-model --example raw_onnx_latency

work=$(mktemp -d)
trap 'kill $host_pid 2>/dev/null || true; rm -rf "$work"' EXIT
AIFN_LOG=warn start_host "$work/host"
AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench $aifn deploy functions/text-embedder/function.yaml > /dev/null
latency_ms=$(sed -n 's/^ *target_latency: \([0-9]*\)ms.*/\1/p' functions/text-embedder/function.yaml)

text="The new movie is awesome"
body="{\"inputs\": \"$text\"}"
$py - "$work/batch16.json" "$text" <<'PY'
import json, sys
from tokenizers import Tokenizer
t = Tokenizer.from_file("functions/text-embedder/model/tokenizer.json")
t.no_padding()
ids = t.encode(sys.argv[2]).ids
n, batch = len(ids), 16
inputs = [{"name": name, "shape": [batch, n], "datatype": "INT64", "data": data * batch}
          for name, data in [("input_ids", ids), ("attention_mask", [1] * n), ("token_type_ids", [0] * n)]]
open(sys.argv[1], "w").write(json.dumps({"inputs": inputs}))
PY
post_lua "$work/post.lua" "$body"
# Sentences per second of the floor: 16 per batch over the batch's p50.
floor() {
  target/release/examples/raw_onnx_latency functions/text-embedder/model/model.onnx "$work/batch16.json" 300 2 |
    sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' | awk '{ printf "%.0f", 16e6 / $1 }'
}
wrk_post "$base/v1/embeddings" 64 3 "$work/post.lua" > /dev/null # warm-up
for round in $(seq 1 "$rounds"); do
  echo "$round $(floor) $(wrk_post "$base/v1/embeddings" 64 "$seconds" "$work/post.lua")" >> "$work/runs"
done

mkdir -p bench/results
{
  echo "# text-embedder at 64 connections vs in-process ONNX Runtime at batch 16 ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
  echo
  echo "\`./bench/embedder_floor.sh $seconds $rounds\`: \"$text\" through /v1/embeddings (wrk -t2 -c64, ${seconds} s), alternating"
  echo "with raw_onnx_latency running batches of 16 of its token ids on 2 intra-op threads (300 batches; sentences/s = 16 / p50)."
  echo
  echo "| round | floor sentences/s | aifn requests/s | ratio | aifn p50 ms | aifn p99 ms | non-2xx |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  awk '{ printf "| %d | %d | %.0f | %.2f | %.1f | %.1f | %d |\n", $1, $2, $3, $3 / $2, $4 / 1000, $5 / 1000, $6 }' "$work/runs"
  echo
  python3 - "$work/runs" "$latency_ms" <<'PY'
import statistics, sys
runs = [line.split() for line in open(sys.argv[1])]
ratio = statistics.median(float(r[2]) / float(r[1]) for r in runs)
p99 = statistics.median(float(r[4]) / 1000 for r in runs)
target = 3 * int(sys.argv[2])
print(f"Median ratio: **{ratio:.2f}×** the floor (target at least 0.9×); median p99 {p99:.0f} ms "
      f"(target under target_latency × 3 = {target} ms).")
PY
} | tee bench/results/embedder_floor.md
