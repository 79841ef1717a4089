#!/usr/bin/env bash
# Builds an AssemblyScript function module into a WebAssembly component:
#
#   sdk/assemblyscript/build.sh OUT.wasm MAIN.ts
#
# MAIN.ts exports `preprocess` (and optionally `postprocess`) and imports the SDK as "aifn".
# Needs node/npm with the pinned compiler installed here (`npm ci` in sdk/assemblyscript;
# ./scripts/setup.sh does it) and wasm-tools (cargo install --locked wasm-tools).
set -euo pipefail
sdk=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 2 ] || { echo "usage: $0 OUT.wasm MAIN.ts" >&2; exit 2; }
out=$1
main=$2
[ -f "$main" ] || { echo "error: $main does not exist" >&2; exit 1; }
missing=()
command -v node > /dev/null || missing+=("node and npm (apt-get install nodejs npm)")
[ -x "$sdk/node_modules/.bin/asc" ] || missing+=("the AssemblyScript compiler (cd $sdk && npm ci, or ./scripts/setup.sh)")
command -v wasm-tools > /dev/null || missing+=("wasm-tools (cargo install --locked wasm-tools)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'cannot build an AssemblyScript module; missing:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
user=$(realpath --relative-to="$work" "${main%.ts}")
post=null
grep -Eq '^export function postprocess\b' "$main" && post=userPostprocess
# The entry exports the world's functions with their canonical-ABI signatures, through the SDK.
cat > "$work/entry.ts" <<TS
import { runPreprocess, runPostprocess, cabiRealloc } from "aifn";
import { preprocess as userPreprocess$([ $post = null ] || echo ", postprocess as userPostprocess") } from "./$user";

export function preprocess(a: usize, b: usize, c: usize, d: usize, e: usize, f: usize, g: usize, h: usize): usize {
  return runPreprocess(a, b, c, d, e, f, g, h, userPreprocess);
}

export function postprocess(a: usize, b: usize, c: usize, d: usize, e: usize, f: usize, g: usize, h: usize, i: usize, j: usize): usize {
  return runPostprocess(a, b, c, d, e, f, g, h, i, j, $post);
}

export function cabi_realloc(old: usize, oldSize: usize, align: usize, newSize: usize): usize {
  return cabiRealloc(old, oldSize, align, newSize);
}
TS
# --runtime stub: a bump allocator and no collector (the instance lives for one request);
# abort (a failed assert) becomes a trap, which the host reports naming the function.
"$sdk/node_modules/.bin/asc" "$work/entry.ts" --lib "$sdk/lib" -O3 --runtime stub --use abort= \
  --outFile "$work/core.wasm"
wasm-tools component embed "$sdk/../../spec/wit" --world function "$work/core.wasm" -o "$work/embedded.wasm"
wasm-tools component new "$work/embedded.wasm" -o "$out"
