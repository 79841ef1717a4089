#!/usr/bin/env bash
# Builds this language's conformance module into module.wasm (a component) with the Python SDK.
set -euo pipefail
cd "$(dirname "$0")"
../../../../sdk/python/build.sh module.wasm conformance.py
