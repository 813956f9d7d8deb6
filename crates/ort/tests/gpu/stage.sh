#!/usr/bin/env bash
# Prepares, on this machine, everything a lent GPU machine (the `device` tool: H100/H200, no
# network, no Rust, 64 MiB carried per call) needs to run the CUDA tests and benchmarks:
#
#   .carry-gpu/provider-NN/  onnxruntime-gpu's CUDA provider library, xz, in parts of <= 56 MiB.
#                            Default: only sm_$KEEP_ARCH machine code kept (keep_one_gpu_arch.py),
#                            one part; FULL=1 keeps every GPU's code (about 4 parts).
#   .carry-gpu/rest/         the rest of the onnxruntime-gpu wheel (xz tar) and adanorm-bins.tar.xz:
#                            libadanorm_ort.so built with --features cuda, adanorm-cuda's GPU test
#                            and bench binaries, the release CLI; ort-fixtures.tar.xz: the zoo after fuse/rewrite.
# Each call carries the working tree too (about 12 MiB): one part plus the tree must stay <= 64 MiB.
#
# Then carry each provider part in its own call and the rest in the last, which runs the suite;
# the calls must follow each other closely (an idle machine goes back after ~30 s):
#   run(carry=[".carry-gpu/provider-00"], command="ls -la .carry-gpu")
#   run(carry=[".carry-gpu/rest"], command="bash crates/ort/tests/gpu/device-run.sh", timeout_s=540)
# device-run.sh writes its logs to $OUT. The device image has Python 3.12 and the CUDA 13 runtime
# libraries (cuBLAS, cuDNN, cuFFT, cuRAND) that onnxruntime-gpu's CUDA 13 build needs.
#
# Env: ORT_GPU_VERSION (default 1.31.1, CUDA 13), KEEP_ARCH (default 90: H100/H200), FULL=1.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
cd "$root"

version="${ORT_GPU_VERSION:-1.31.1}"
arch="${KEEP_ARCH:-90}"
out="$root/.carry-gpu"
work="$root/target/gpu-stage"
wheel_dir="$work/wheel"
mkdir -p "$wheel_dir"

say() { printf '\n==> %s\n' "$*"; }

say "onnxruntime-gpu $version (cp312, the device's Python)"
if ! ls "$wheel_dir"/onnxruntime_gpu-"$version"-*.whl >/dev/null 2>&1; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$wheel_dir" "onnxruntime-gpu==$version"
fi
wheel="$(ls "$wheel_dir"/onnxruntime_gpu-"$version"-*.whl | head -n1)"
rm -rf "$work/unpacked" "$out"
mkdir -p "$work/unpacked" "$out/rest"
python3 -m zipfile -e "$wheel" "$work/unpacked"
capi="$work/unpacked/onnxruntime/capi"
provider="$capi/libonnxruntime_providers_cuda.so"

say "the CUDA provider library"
if [ "${FULL:-0}" = 1 ]; then
    cp "$provider" "$work/provider.so"
else
    python3 "$here/keep_one_gpu_arch.py" "$provider" "$work/provider.so" "$arch"
fi
xz -T2 -6 -c "$work/provider.so" > "$work/provider.so.xz"
split -b 56M -d -a 2 "$work/provider.so.xz" "$work/provider.so.xz.part"
for part in "$work"/provider.so.xz.part*; do
    n="${part##*part}"
    mkdir -p "$out/provider-$n"
    mv "$part" "$out/provider-$n/"
done
# The Python bindings hold onnxruntime itself; the C API library and TensorRT stay behind.
rm -f "$provider" "$capi"/libonnxruntime.so* "$capi"/libonnxruntime_providers_tensorrt.so
tar -C "$work/unpacked" -cf - . | xz -T2 -6 > "$out/rest/onnxruntime-gpu.tar.xz"
echo "$version" > "$out/rest/onnxruntime-gpu.version"

say "libadanorm_ort with --features cuda, adanorm-cuda's GPU test and bench binaries"
eval "$("$root/crates/cuda/scripts/setup-cuda-build.sh")"
cargo build -p adanorm-ort --release --locked --features cuda --target-dir "$root/target/cuda-feature"
# Symbols stripped from the copies, and the three packed with xz: the carry limit (64 MiB with the
# working tree) counts every byte, and the embedded PTX text shrinks about sevenfold.
bin_dir="$work/bins"
rm -rf "$bin_dir" && mkdir -p "$bin_dir"
strip --strip-unneeded -o "$bin_dir/libadanorm_ort.so" "$root/target/cuda-feature/release/libadanorm_ort.so"
bins="$(cargo test -p adanorm-cuda --features cuda --release --locked --target-dir "$root/target/cuda-feature" \
    --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])
')"
cargo build -p adanorm-cuda --features cuda --release --locked --target-dir "$root/target/cuda-feature" \
    --bench gpu_bandwidth --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu_bandwidth":
        print(m["executable"])
' > "$work/bench.path"
strip --strip-all -o "$bin_dir/gpu-tests" "$bins"
strip --strip-all -o "$bin_dir/gpu-bandwidth" "$(cat "$work/bench.path")"
# The CLI, for bench_model_cuda.py's fuse of models exported on the device.
cargo build --release --locked --bin adanorm-onnx
strip --strip-all -o "$bin_dir/adanorm-onnx" "$root/target/release/adanorm-onnx"
tar -C "$bin_dir" -cf - libadanorm_ort.so gpu-tests gpu-bandwidth adanorm-onnx | xz -T2 -6 > "$out/rest/adanorm-bins.tar.xz"

say "the zoo after fuse and rewrite (scripts/build-ort-fixtures), for test_cuda.py's whole-model test"
cargo build --locked --bin adanorm-onnx
"$root/scripts/build-ort-fixtures" "$root/target/debug/adanorm-onnx" >/dev/null
tar -C "$root/target" -cf - ort-fixtures | xz -T2 -6 > "$out/rest/ort-fixtures.tar.xz"

say "staged (carry each provider-NN in its own call, rest last)"
du -sh "$out"/*
