#!/usr/bin/env bash
# Builds a C function module into a WebAssembly component:
#
#   sdk/c/build.sh OUT.wasm SOURCE.c [SOURCE.c ...] [-- CFLAGS...]
#
# Needs clang with wasi-libc for wasm32-wasi, wit-bindgen 0.46 and wasm-tools, and the WASI
# preview-1 reactor adapter in sdk/c/ (./scripts/setup.sh installs them all).
set -euo pipefail
sdk=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 OUT.wasm SOURCE.c [SOURCE.c ...] [-- CFLAGS...]" >&2; exit 2; }
out=$1
shift
sources=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do sources+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
missing=()
command -v clang > /dev/null || missing+=("clang (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)")
[ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=("wasi-libc (apt-get install wasi-libc libclang-rt-14-dev-wasm32)")
command -v wit-bindgen > /dev/null || missing+=("wit-bindgen (cargo install --locked wit-bindgen-cli@0.46.0)")
command -v wasm-tools > /dev/null || missing+=("wasm-tools (cargo install --locked wasm-tools)")
adapter="$sdk/wasi_snapshot_preview1.reactor.wasm"
[ -f "$adapter" ] || missing+=("the WASI adapter $adapter (./scripts/setup.sh fetches it)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'cannot build a C module; missing:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wit-bindgen c "$sdk/../../spec/wit" --out-dir "$work" > /dev/null 2>&1
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -Wall -Werror \
  -Wno-unused-function -I"$work" -I"$sdk" "$@" \
  "$work/function.c" "$sdk/aifn.c" "${sources[@]}" "$work/function_component_type.o" \
  -Wl,--strip-all -o "$work/core.wasm"
wasm-tools component new "$work/core.wasm" --adapt "wasi_snapshot_preview1=$adapter" -o "$out"
