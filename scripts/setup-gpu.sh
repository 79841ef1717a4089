#!/usr/bin/env bash
# Opt-in, never run by ./scripts/setup.sh: ONNX Runtime with its CUDA execution provider, for
# functions whose spec asks for a GPU (`resources.gpu`). Installs the `onnxruntime-gpu` wheel of the
# version the project uses, with the CUDA and cuDNN libraries it needs (PyPI's `nvidia-*` wheels,
# a few GB), into .venv-gpu, and writes .venv-gpu/aifn-gpu.env, which points the host at them:
#
#   ./scripts/setup-gpu.sh
#   . .venv-gpu/aifn-gpu.env && target/release/aifn serve ...
#
# The host then runs such functions on CUDA device 0 (`aifn status`: placement.device cuda:0); where
# it cannot (no NVIDIA driver or device, say), they run on the CPU and the placement says why.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^onnxruntime==//p' scripts/requirements.txt)
[ -x .venv-gpu/bin/python ] || python3 -m venv .venv-gpu
.venv-gpu/bin/pip install -q --disable-pip-version-check "onnxruntime-gpu[cuda,cudnn]==$version"
capi=$(.venv-gpu/bin/python -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')
dylib=$(ls "$capi"/libonnxruntime.so.* | head -1)
# The CUDA provider finds its libraries through the loader's path, fixed when the process starts.
nvidia=$(.venv-gpu/bin/python -c 'import glob, site; print(":".join(sorted(glob.glob(site.getsitepackages()[0] + "/nvidia/*/lib"))))')
cat > .venv-gpu/aifn-gpu.env <<ENV
export ORT_DYLIB_PATH=$dylib
export LD_LIBRARY_PATH=$nvidia\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
ENV
echo "ONNX Runtime $version with CUDA: $dylib"
.venv-gpu/bin/python -c 'import onnxruntime as o; print("execution providers:", ", ".join(o.get_available_providers()))'
if command -v nvidia-smi > /dev/null; then nvidia-smi -L; else echo "no NVIDIA driver here (nvidia-smi is missing): GPU functions will run on the CPU"; fi
echo "next: . .venv-gpu/aifn-gpu.env, then start the host"
