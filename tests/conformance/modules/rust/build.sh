#!/usr/bin/env bash
# Builds this language's conformance module into module.wasm (a wasm32-wasip2 component).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --quiet --release --target wasm32-wasip2
cp target/wasm32-wasip2/release/conformance_rust.wasm module.wasm
