#!/usr/bin/env bash
# The whole test suite: setup, formatting, lints, then every test (unit, spec table, end to end
# against a real host with real wasmtime and ONNX Runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
cargo test --release --workspace
