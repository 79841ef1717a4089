#!/usr/bin/env bash
# Builds a Zig function module into a WebAssembly component:
#
#   sdk/zig/build.sh OUT.wasm MAIN.zig
#
# MAIN.zig defines `pub fn preprocess` (and optionally `postprocess`) and imports the SDK as
# `@import("aifn")`. Needs Zig 0.17 (`pip install ziglang==0.17.1`; ./scripts/setup.sh puts it in
# .venv) and wasm-tools (cargo install --locked wasm-tools).
set -euo pipefail
sdk=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 2 ] || { echo "usage: $0 OUT.wasm MAIN.zig" >&2; exit 2; }
out=$1
main=$2
[ -f "$main" ] || { echo "error: $main does not exist" >&2; exit 1; }
zig=()
if command -v zig > /dev/null; then zig=(zig)
elif [ -x "$sdk/../../.venv/bin/python" ] && "$sdk/../../.venv/bin/python" -c 'import ziglang' 2> /dev/null; then
  zig=("$sdk/../../.venv/bin/python" -m ziglang)
fi
missing=()
[ ${#zig[@]} -gt 0 ] || missing+=("zig 0.17 (pip install ziglang==0.17.1, or ./scripts/setup.sh)")
command -v wasm-tools > /dev/null || missing+=("wasm-tools (cargo install --locked wasm-tools)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'cannot build a Zig module; missing:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
cache=${ZIG_CACHE_DIR:-${HOME:-/tmp}/.cache/aifn-zig}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The entry exports the user's functions through the SDK's canonical-ABI glue.
printf 'comptime {\n    @import("aifn").exportFunction(@import("user"));\n}\n' > "$work/entry.zig"
# A freestanding core module (no libc, no WASI imports), then the component type from spec/wit.
"${zig[@]}" build-exe -target wasm32-freestanding -fno-entry -rdynamic -O ReleaseSmall \
  --cache-dir "$cache" --global-cache-dir "$cache" \
  --dep aifn --dep user -Mroot="$work/entry.zig" --dep aifn -Muser="$main" -Maifn="$sdk/aifn.zig" \
  -femit-bin="$work/core.wasm"
wasm-tools component embed "$sdk/../../spec/wit" --world function "$work/core.wasm" -o "$work/embedded.wasm"
wasm-tools component new "$work/embedded.wasm" -o "$out"
