#!/usr/bin/env bash
# What each guest language costs per request: the same preprocessing (the conformance suite's,
# tests/conformance) built from source in every SDK language, run in the host's guest engine.
#
#   ./bench/languages.sh [ITERATIONS] [ROUNDS]
#
# Per language: build from source (s), compile by wasmtime (ms), load after a restart from the
# compiled-artifact cache (ms), instantiate (µs, p50), instantiate + preprocess + drop (µs, p50 and
# p99), and that against the Rust module measured in the same run. Python is also measured with
# `module.isolation: instance` (instances reused). The languages take turns, ROUNDS times, and the
# best round of each is kept (this machine's noise is larger than some differences). Writes
# bench/results/languages.md.
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-5000}
rounds=${2:-3}
body='text:The model is very good'
variants=(rust:request c:request zig:request assemblyscript:request python:request python:instance)
cargo build --release --quiet -p aifn-guest --example call_overhead

declare -A build_s best
for variant in "${variants[@]}"; do
  language=${variant%%:*}
  [ -n "${build_s[$language]:-}" ] && continue
  started=$(date +%s.%N)
  tests/conformance/modules/$language/build.sh > /dev/null 2>&1
  build_s[$language]=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
done
for round in $(seq 1 "$rounds"); do
  for variant in "${variants[@]}"; do
    language=${variant%%:*}
    result=$(target/release/examples/call_overhead "tests/conformance/modules/$language/module.wasm" \
      "$body" "$iterations" "${variant##*:}" | tr '\n' ' ')
    p50=$(echo "$result" | tr ' ' '\n' | sed -n 's/^total_p50_us=//p')
    previous=$(echo "${best[$variant]:-}" | tr ' ' '\n' | sed -n 's/^total_p50_us=//p')
    if [ -z "$previous" ] || awk -v a="$p50" -v b="$previous" 'BEGIN { exit !(a < b) }'; then
      best[$variant]=$result
    fi
  done
done

out=bench/results/languages.md
{
  echo "# Guest languages: per-request cost of the same preprocessing"
  echo
  echo "\`./bench/languages.sh $iterations $rounds\` on $(nproc) cores, $(date -u +%F): body \`$body\`, $iterations calls after 1000 warm-up, best of $rounds interleaved rounds."
  echo "\"call\" = instantiate + preprocess + drop (what a request adds); \"vs Rust\" compares call p50 with the Rust module's in the same run."
  echo "\"build s\" is \`tests/conformance/modules/LANG/build.sh\` with the toolchain's caches warm (Rust: cargo's incremental build)."
  echo
  echo "| language | isolation | module KiB | build s | compile ms | cached load ms | instantiate p50 µs | call p50 µs | call p99 µs | vs Rust | target |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  rust_p50=$(echo "${best[rust:request]}" | tr ' ' '\n' | sed -n 's/^total_p50_us=//p')
  for variant in "${variants[@]}"; do
    language=${variant%%:*}
    get() { echo "${best[$variant]}" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    target="< 50 µs"
    [ "$language" = python ] && target="< 2000 µs"
    printf '| %s | %s | %d | %s | %s | %s | %s | %s | %s | %.2f× | %s |\n' "$language" "${variant##*:}" \
      $(( $(stat -c %s "tests/conformance/modules/$language/module.wasm") / 1024 )) "${build_s[$language]}" \
      "$(get compile_ms)" "$(get cached_load_ms)" "$(get instantiate_p50_us)" "$(get total_p50_us)" \
      "$(get total_p99_us)" "$(awk -v a="$(get total_p50_us)" -v b="$rust_p50" 'BEGIN { print a / b }')" "$target"
  done
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
