#!/usr/bin/env bash
# Installs aifn for the current user, so that it works from any directory, and keeps working when
# this checkout moves or is deleted:
#
#   PREFIX/bin/aifn                  the command (PREFIX/bin must be on PATH)
#   PREFIX/share/aifn/sdk            the SDKs of the five module languages and `aifn new`'s templates
#   PREFIX/share/aifn/spec/wit       the WIT world the modules are built against
#   PREFIX/share/aifn/.venv          ONNX Runtime (the host loads its libonnxruntime.so) and the
#                                    Python and Zig guest toolchains (componentize-py, ziglang)
#   PREFIX/share/aifn/install.json   what the install recorded: where ONNX Runtime is, and from
#                                    which checkout and commit it was installed
#
#   ./scripts/install.sh [--prefix DIR]      (default: ~/.local)
#
# Runs ./scripts/setup.sh first when this checkout is not built. The Rust and C toolchains (cargo,
# clang, wit-bindgen, wasm-tools) and node stay where setup put them, and are found on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

prefix="${HOME:?HOME is not set}/.local"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (usage: $0 [--prefix DIR])" >&2; exit 2 ;;
  esac
done

if [ ! -x target/release/aifn ] || [ ! -f sdk/c/wasi_snapshot_preview1.reactor.wasm ] \
   || [ ! -x sdk/assemblyscript/node_modules/.bin/asc ]; then
  log "this checkout is not built yet: ./scripts/setup.sh"
  ./scripts/setup.sh
fi

mkdir -p "$prefix/bin" "$prefix/share/aifn"
prefix=$(cd "$prefix" && pwd)
share="$prefix/share/aifn"

# The install's own virtualenv, made where it stays (a virtualenv cannot be moved), with the
# packages pinned as scripts/requirements.txt pins them. Only their files are needed: the host
# loads libonnxruntime.so and never imports the onnxruntime package, so no dependencies.
pins=$(grep -E '^(onnxruntime|componentize-py|ziglang)==' scripts/requirements.txt | tr '\n' ' ')
if [ ! -x "$share/.venv/bin/python" ] || [ "$(cat "$share/.venv/aifn-installed" 2> /dev/null)" != "$pins" ]; then
  log "python3 -m venv $share/.venv; pip install $pins"
  rm -rf "$share/.venv"
  python3 -m venv "$share/.venv"
  # shellcheck disable=SC2086  # one word per pin
  "$share/.venv/bin/pip" install -q --disable-pip-version-check --no-deps $pins
  printf '%s' "$pins" > "$share/.venv/aifn-installed"
fi
onnxruntime=$(ls "$share"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | sort | tail -1)

# The SDKs and the WIT world, replaced whole: copied beside the old ones, then swapped in.
log "copying the SDKs, templates and WIT world to $share"
staging=$(mktemp -d "$share/.staging.XXXXXX")
trap 'rm -rf "$staging"' EXIT
tar -c --exclude=target --exclude=__pycache__ --exclude=sdk/c/adapter sdk spec/wit | tar -x -C "$staging"
for part in sdk spec; do
  rm -rf "$staging/$part.old"
  if [ -d "$share/$part" ]; then mv "$share/$part" "$staging/$part.old"; fi
  mv "$staging/$part" "$share/$part"
done

commit=$(git rev-parse HEAD 2> /dev/null || echo unknown)
python3 - "$share/install.json" "$onnxruntime" "$commit" "$PWD" "$(target/release/aifn --version)" << 'PY'
import json, os, sys
path, onnxruntime, commit, checkout, version = sys.argv[1:]
record = {"version": version.split()[-1], "commit": commit, "onnxruntime": onnxruntime,
          "installed_from": checkout}
with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
    f.write("\n")
os.replace(path + ".tmp", path)
PY

install -m 0755 target/release/aifn "$prefix/bin/.aifn.new"
mv "$prefix/bin/.aifn.new" "$prefix/bin/aifn"
log "installed $("$prefix/bin/aifn" --version) to $prefix/bin/aifn"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "    $prefix/bin is not on your PATH; add it, e.g.: echo 'export PATH=\"$prefix/bin:\$PATH\"' >> ~/.profile" ;;
esac
echo "    try: aifn new --lang python my-fn && aifn serve   (then, in another shell: cd my-fn && aifn deploy)"
