#!/usr/bin/env bash
# Builds this language's conformance module into module.wasm (a component) with the Zig SDK.
set -euo pipefail
cd "$(dirname "$0")"
../../../../sdk/zig/build.sh module.wasm conformance.zig
