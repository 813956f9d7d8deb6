#!/usr/bin/env bash
# Creates (idempotently) a Python venv holding the three PyPI wheels that build the `cuda`
# feature without a CUDA toolkit or a GPU:
#   nvidia-cuda-nvrtc-cu12    libnvrtc.so.12   CUDA C++ -> PTX, loaded by build.rs with dlopen
#   nvidia-cuda-runtime-cu12  include/         cuda_fp16.h, cuda_bf16.h for NVRTC
#   nvidia-cuda-nvcc-cu12     bin/ptxas        PTX -> SASS, for the register/spill check
# and prints the environment build.rs reads. build.rs also finds <workspace>/.venv-cuda on its
# own, so the exports are only needed for a venv elsewhere.
#
# Usage: crates/cuda/scripts/setup-cuda-build.sh [VENV_DIR]   (default <workspace>/.venv-cuda)
# Env:   CUDA_WHEEL_VERSION (default 12.9.*), PYTHON (default python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${1:-$root/.venv-cuda}"
version="${CUDA_WHEEL_VERSION:-12.9.*}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# pip is quick when everything is already installed at the asked version.
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
    "nvidia-cuda-nvrtc-cu12==$version" \
    "nvidia-cuda-runtime-cu12==$version" \
    "nvidia-cuda-nvcc-cu12==$version"

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
nvrtc="$(ls "$site"/nvidia/cuda_nvrtc/lib/libnvrtc.so.* | grep -v builtins | grep -v alt | head -n1)"
include="$site/nvidia/cuda_runtime/include"
ptxas="$site/nvidia/cuda_nvcc/bin/ptxas"
for f in "$nvrtc" "$include/cuda_fp16.h" "$include/cuda_bf16.h" "$ptxas"; do
    [ -e "$f" ] || { echo "setup-cuda-build: missing $f after install" >&2; exit 1; }
done
chmod +x "$ptxas"

echo "export ADANORM_NVRTC_LIB=$nvrtc"
echo "export ADANORM_CUDA_INCLUDE=$include"
echo "export ADANORM_PTXAS=$ptxas"
