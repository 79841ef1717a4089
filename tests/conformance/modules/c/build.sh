#!/usr/bin/env bash
# Builds this language's conformance module into module.wasm (a component) with the C SDK.
set -euo pipefail
cd "$(dirname "$0")"
../../../../sdk/c/build.sh module.wasm conformance.c
