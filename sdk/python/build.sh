#!/usr/bin/env bash
# Builds a Python function module into a WebAssembly component:
#
#   sdk/python/build.sh OUT.wasm APP.py
#
# APP.py defines preprocess(req) and optionally postprocess(req, outputs) (see aifn/__init__.py);
# other modules next to it can be imported. Needs componentize-py 0.25.1 (./scripts/setup.sh puts it
# in .venv; or `pip install componentize-py==0.25.1`).
set -euo pipefail
sdk=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 2 ] || { echo "usage: $0 OUT.wasm APP.py" >&2; exit 2; }
out=$1
app=$2
[ -f "$app" ] || { echo "error: $app does not exist" >&2; exit 1; }
componentize=$(command -v componentize-py || true)
[ -z "$componentize" ] && [ -x "$sdk/../../.venv/bin/componentize-py" ] && componentize="$sdk/../../.venv/bin/componentize-py"
if [ -z "$componentize" ]; then
  printf 'cannot build a Python module; missing:\n  - componentize-py (pip install componentize-py==0.25.1, or ./scripts/setup.sh)\n' >&2
  exit 1
fi
app_dir=$(cd "$(dirname "$app")" && pwd)
module=$(basename "$app" .py)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# componentize-py exports the class `WitWorld` of the module it is given: a generated entry module.
cat > "$work/aifn_entry.py" <<PY
import importlib
import aifn._world
WitWorld = aifn._world.world_of(importlib.import_module("$module"))
PY
"$componentize" -d "$sdk/../../spec/wit" -w function componentize \
  -p "$work" -p "$sdk" -p "$app_dir" aifn_entry -o "$out" > /dev/null
