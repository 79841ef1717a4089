#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS_PER_TARGET (default 600), one after another,
# then prints one summary line per target: runs, seconds, crashes.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Works on a stable toolchain. By default the targets are built with `--sanitizer none`, which
# needs no nightly flag (libFuzzer's coverage instrumentation is stable `-C` flags). The fuzz crate's
# allocator (src/lib.rs) aborts on any single allocation over AIFN_FUZZ_MAX_ALLOC_MB (default 256),
# which libFuzzer's -malloc_limit_mb cannot do without a sanitizer's malloc hooks; -rss_limit_mb
# bounds the whole process. SANITIZER=address builds with AddressSanitizer instead: on stable that
# takes RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Zsanitizer), which this script then sets.
#
# Corpora: fuzz/corpus/<target> (committed seeds are seed-*; what libFuzzer adds is ignored by
# git). The spec corpus is also seeded from the repository's specs (functions/*/function.yaml,
# examples/*.yaml, tests/spec_errors/*.yaml), copied in as repo-*. Crashes are written to
# fuzz/artifacts/<target>/ and each run's log to fuzz/logs/<target>.log.
#
# Environment: SANITIZER (none|address, default none), JOBS (cargo build jobs), KEEP_GOING=1 (fork
# mode: keep fuzzing after a crash, counting them), FUZZ_ARGS (more libFuzzer flags).
set -euo pipefail

SECONDS_PER_TARGET=${1:-600}
shift || true
TARGETS=(spec_parse v2_decode batch_merge)
if [ $# -gt 0 ]; then TARGETS=("$@"); fi
SANITIZER=${SANITIZER:-none}

cd "$(dirname "$0")"
FUZZ_DIR=$(pwd)
REPO=$(cd .. && pwd)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

build_env=()
if [ "$SANITIZER" != none ] && ! rustc --version | grep -q nightly; then
    build_env=(env RUSTC_BOOTSTRAP=1)
fi
build_flags=(--sanitizer "$SANITIZER")
# Each sanitizer builds everything differently: keep them apart so switching rebuilds nothing.
if [ "$SANITIZER" != none ]; then build_flags+=(--target-dir "target/sanitizer-$SANITIZER"); fi
if [ -n "${JOBS:-}" ]; then build_flags+=(--jobs "$JOBS"); fi

# Seeds from the repository's own specs.
mkdir -p corpus/spec_parse corpus/v2_decode corpus/batch_merge artifacts logs
for spec in "$REPO"/functions/*/function.yaml "$REPO"/examples/*.yaml "$REPO"/tests/spec_errors/*.yaml; do
    [ -f "$spec" ] || continue
    rel=${spec#"$REPO"/}
    cp "$spec" "corpus/spec_parse/repo-${rel//\//-}"
done

declare -A DICT=([spec_parse]=dicts/spec.dict [v2_decode]=dicts/v2.dict)
declare -A MAX_LEN=([spec_parse]=16384 [v2_decode]=8192 [batch_merge]=4096)

echo "== building ${TARGETS[*]} (sanitizer: $SANITIZER)"
for target in "${TARGETS[@]}"; do
    "${build_env[@]}" cargo fuzz build "${build_flags[@]}" "$target"
done

summary=()
failed=0
for target in "${TARGETS[@]}"; do
    mkdir -p "artifacts/$target"
    before=$(find "artifacts/$target" -type f | sort)
    flags=(
        -max_total_time="$SECONDS_PER_TARGET"
        -rss_limit_mb=2048
        -malloc_limit_mb=512
        -timeout=10
        -max_len="${MAX_LEN[$target]}"
        -print_final_stats=1
        -artifact_prefix="$FUZZ_DIR/artifacts/$target/"
    )
    if [ -n "${DICT[$target]:-}" ]; then flags+=(-dict="${DICT[$target]}"); fi
    if [ "${KEEP_GOING:-0}" = 1 ]; then
        flags+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
    fi
    # shellcheck disable=SC2206
    flags+=(${FUZZ_ARGS:-})
    echo "== fuzzing $target for ${SECONDS_PER_TARGET}s (log: fuzz/logs/$target.log)"
    start=$(date +%s)
    set +e
    "${build_env[@]}" cargo fuzz run "${build_flags[@]}" "$target" "corpus/$target" -- "${flags[@]}" \
        >"logs/$target.log" 2>&1
    rc=$?
    set -e
    elapsed=$(($(date +%s) - start))
    new=$(comm -13 <(printf '%s\n' "$before") <(find "artifacts/$target" -type f | sort) | sed '/^$/d')
    crashes=$(printf '%s' "$new" | grep -c . || true)
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$target.log" | tail -1 | grep -o '[0-9]*$' || true)
    if [ -z "$runs" ]; then
        # Fork mode and crashes print no final stats: take the last status line's count.
        runs=$(grep -oE '^#[0-9]+' "logs/$target.log" | tail -1 | tr -d '#' || true)
    fi
    corpus=$(find "corpus/$target" -type f | wc -l)
    line="$target: runs=${runs:-?} time=${elapsed}s crashes=$crashes corpus=$corpus exit=$rc"
    if [ "$crashes" -gt 0 ] || [ "$rc" -ne 0 ]; then
        failed=1
        # (head reads a here-string: piping into it could end the writer with SIGPIPE under pipefail)
        if [ -n "$new" ]; then line+=" first: $(head -3 <<<"$new" | sed "s|^|fuzz/|" | tr '\n' ' ')"; fi
        grep -m1 -E "panicked at|ERROR: libFuzzer|==aifn-fuzz==|deadly signal|out-of-memory" "logs/$target.log" | sed 's/^/    /' || true
        # The first frame in this repository's code, for a panic inside the standard library.
        grep -m1 -E "at (/.*)?/(runtime|fuzz_targets)/[^ ]*\.rs:[0-9]+" "logs/$target.log" | sed 's/^ *at /    at: /' || true
    fi
    summary+=("$line")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
