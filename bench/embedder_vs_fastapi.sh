#!/usr/bin/env bash
# The bundled text-embedder on aifn next to what a user would write by hand: FastAPI + uvicorn +
# onnxruntime (bench/fastapi_embedder.py) with the same model, tokenizer, request and response.
# Both serve on 127.0.0.1 and are loaded by wrk in the same run, alternating, each run bounded in
# time; raw in-process ONNX Runtime inference of the same tokens is the latency floor.
#
#   ./bench/embedder_vs_fastapi.sh [SECONDS_PER_RUN] [ROUNDS]   (default 10 s, 2 rounds; best round kept)
#
# Needs ./scripts/setup.sh first; installs bench/requirements.txt into .venv. Writes
# bench/results/embedder_vs_fastapi.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds="${1:-10}"
rounds="${2:-2}"
aifn=target/release/aifn
py=.venv/bin/python
[ -x "$aifn" ] && [ -f functions/text-embedder/model/model.onnx ] || { echo "run ./scripts/setup.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: run ./scripts/setup.sh" >&2; exit 1; }
if ! $py -c 'import fastapi, uvicorn, tokenizers' 2>/dev/null; then
  $py -m pip install -q --disable-pip-version-check -r bench/requirements.txt
fi

work=$(mktemp -d)
trap 'kill $host_pid $baseline_pid 2>/dev/null || true; rm -rf "$work"' EXIT
export AIFN_LOG=warn
start_host "$work/host"
port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$py bench/fastapi_embedder.py --port "$port" > "$work/baseline.log" 2>&1 &
baseline_pid=$!
baseline="http://127.0.0.1:$port"
for _ in $(seq 1 400); do
  curl -sf -o /dev/null -XPOST "$baseline/v1/embeddings" -H 'content-type: application/json' -d '{"inputs":"x"}' && break
  sleep 0.05
done
AIFN_HOST="$admin" AIFN_ADMIN_TOKEN=bench $aifn deploy functions/text-embedder/function.yaml > /dev/null

text="The restaurant was noisy but the food was excellent, and the staff were friendly."
body="{\"inputs\": \"$text\"}"
# Both must answer the same embedding before their speed means anything.
curl -sf -XPOST "$base/v1/embeddings" -d "$body" > "$work/aifn.json"
curl -sf -XPOST "$baseline/v1/embeddings" -H 'content-type: application/json' -d "$body" > "$work/baseline.json"
$py - "$work" "$text" <<'PY'
import json, sys
from pathlib import Path
from tokenizers import Tokenizer
work, text = Path(sys.argv[1]), sys.argv[2]
a = json.loads((work / "aifn.json").read_text())["embedding"]
b = json.loads((work / "baseline.json").read_text())["embedding"]
cosine = sum(x * y for x, y in zip(a, b))
assert cosine > 0.9999, f"aifn and the baseline disagree: cosine {cosine}"
t = Tokenizer.from_file("functions/text-embedder/model/tokenizer.json")
t.no_padding()
ids = t.encode(text).ids
n = len(ids)
inputs = [{"name": name, "shape": [1, n], "datatype": "INT64", "data": data}
          for name, data in [("input_ids", ids), ("attention_mask", [1] * n), ("token_type_ids", [0] * n)]]
(work / "v2.json").write_text(json.dumps({"inputs": inputs}))
print(f"same embedding from both (cosine {cosine:.6f}); {n} tokens", file=sys.stderr)
PY

# The raw floor runs with the threads the function's instance gets (its `resources.cpu`).
threads=$(sed -n 's/^ *cpu: "\([0-9]*\)".*/\1/p' functions/text-embedder/function.yaml)
raw() {
  cargo run --quiet --release -p aifn-model --example raw_onnx_latency -- \
    functions/text-embedder/model/model.onnx "$work/v2.json" 300 "${threads:-1}" | sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p'
}

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA
load() { wrk_post "$1/v1/embeddings" "$2" "$seconds" "$work/post.lua"; } # url connections
better() { # keep the round with more requests/s
  if [ -z "$1" ]; then echo "$2"; else awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); print (y[1] > x[1] ? b : a) }'; fi
}

raw_before=$(raw)
declare -A best
for c in 1 8 64; do
  for _ in $(seq 1 "$rounds"); do
    best[aifn$c]=$(better "${best[aifn$c]:-}" "$(load "$base" $c)")
    best[base$c]=$(better "${best[base$c]:-}" "$(load "$baseline" $c)")
  done
done
raw_after=$(raw)
# The same overhead measured in pairs (one raw inference, then one request, 300 times), which
# cancels the machine's drift; see runtime/cli/examples/paired_latency.rs.
paired=$(cargo run --quiet --release -p aifn --example paired_latency -- \
  functions/text-embedder/model/model.onnx "$work/v2.json" "$base/v1/embeddings" "$body" 300 "${threads:-1}")
paired_v2=$(cargo run --quiet --release -p aifn --example paired_latency -- \
  functions/text-embedder/model/model.onnx "$work/v2.json" "$base/v2/models/text-embedder/infer" "$(cat "$work/v2.json")" 300 "${threads:-1}")
raw_p50=$(awk -v a="$raw_before" -v b="$raw_after" 'BEGIN { print (a < b ? a : b) }')

mkdir -p bench/results
{
  echo "# text-embedder: aifn vs FastAPI + uvicorn + onnxruntime ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
  echo
  echo "\`./bench/embedder_vs_fastapi.sh $seconds $rounds\`: one sentence ($text), wrk on 127.0.0.1,"
  echo "${seconds}s per run, the two servers alternating, best of $rounds rounds each. Raw in-process ONNX Runtime"
  echo "inference of the same tokens (${threads:-1} intra-op threads, as the function's instance): p50 ${raw_before} us before the runs, ${raw_after} us after."
  echo
  echo "| clients | aifn req/s | baseline req/s | ratio | aifn p50 ms | baseline p50 ms | ratio | aifn p99 ms | baseline p99 ms | ratio | errors aifn/baseline |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for c in 1 8 64; do
    read -r ar ap5 ap9 ae <<< "${best[aifn$c]}"
    read -r br bp5 bp9 be <<< "${best[base$c]}"
    awk -v c=$c -v ar="$ar" -v br="$br" -v ap5="$ap5" -v bp5="$bp5" -v ap9="$ap9" -v bp9="$bp9" -v ae="$ae" -v be="$be" 'BEGIN {
      printf "| %d | %.0f | %.0f | %.2fx | %.2f | %.2f | %.2fx | %.2f | %.2f | %.2fx | %d/%d |\n",
        c, ar, br, ar / br, ap5 / 1000, bp5 / 1000, ap5 / bp5, ap9 / 1000, bp9 / 1000, ap9 / bp9, ae, be }'
  done
  read -r ar ap5 _ _ <<< "${best[aifn1]}"
  awk -v ap5="$ap5" -v raw="$raw_p50" 'BEGIN {
    printf "\naifn p50 at 1 client is %.2f ms over raw inference p50 (%.2f ms).\n", (ap5 - raw) / 1000, raw / 1000 }'
  echo
  echo "Paired (raw inference, then one request; median of 300 differences):"
  echo "- /v1/embeddings (WASM tokenizer + model + WASM pooling): $paired"
  echo "- /v2 infer of the same token ids (no WASM): $paired_v2"
} | tee bench/results/embedder_vs_fastapi.md
