#!/usr/bin/env bash
# Builds this language's conformance module into module.wasm (a component) with the AssemblyScript SDK.
set -euo pipefail
cd "$(dirname "$0")"
../../../../sdk/assemblyscript/build.sh module.wasm conformance.ts
