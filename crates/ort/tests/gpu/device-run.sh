#!/usr/bin/env bash
# Runs on a lent GPU machine, after stage.sh's parts were carried (see stage.sh): unpacks
# onnxruntime-gpu into /tmp, then runs and logs to $OUT
#   1. adanorm-cuda's GPU tests (the kernels against the reference, no ONNX Runtime), once more
#      with the Turing (compute_75) PTX,
#   2. crates/ort/tests/python/test_cuda.py through onnxruntime-gpu's CUDAExecutionProvider,
#   3. compute-sanitizer (memcheck, racecheck, synccheck) over the edge-case kernel tests,
#   4. bench_ort_cuda.py (ours vs ORT's CUDA LayerNormalization), the kernels' bandwidth bench and
#      bench_model_cuda.py (BERT-base and GPT-2 before and after fuse).
# Every step runs even if an earlier one failed; the exit status is the first failure's.
# ADANORM_REQUIRE_GPU=1: a GPU is expected here, so a test or bench that finds none fails instead
# of skipping.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
carry="$root/.carry-gpu"
out="${OUT:-/tmp/adanorm-gpu-out}"
site=/tmp/onnxruntime-gpu-site
bins=/tmp/adanorm-bins
mkdir -p "$out"
export PYTHONUNBUFFERED=1 RUST_BACKTRACE=0 ADANORM_REQUIRE_GPU=1
status=0
# STEPS="a b": run only the named steps (unpack always runs), e.g. to rerun one in a second call.
step() {
    local name=$1
    shift
    if [ -n "${STEPS:-}" ] && [ "$name" != unpack ] && [[ " $STEPS " != *" $name "* ]]; then
        return 0
    fi
    printf '\n==> %s\n' "$name" | tee -a "$out/summary.txt"
    # One log for all steps: at most 8 files come back from $OUT.
    printf '\n==> %s\n' "$name" >> "$out/steps.log"
    "$@" 2>&1 | tee -a "$out/steps.log"
    local rc=${PIPESTATUS[0]}
    echo "$name: exit $rc" | tee -a "$out/summary.txt"
    [ "$rc" -eq 0 ] || [ "$status" -ne 0 ] || status=$rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

unpack() {
    rm -rf "$site" && mkdir -p "$site"
    python3 - "$carry" "$site" <<'EOF'
import glob, lzma, os, sys, tarfile
carry, site = sys.argv[1:]
with lzma.open(os.path.join(carry, "rest", "onnxruntime-gpu.tar.xz")) as f:
    tarfile.open(fileobj=f).extractall(site)
parts = sorted(glob.glob(os.path.join(carry, "provider-*", "provider.so.xz.part*")),
               key=lambda p: p.rsplit("part", 1)[1])
if not parts:
    sys.exit("no provider parts under .carry-gpu: carry each provider-NN first")
data = b"".join(open(p, "rb").read() for p in parts)
target = os.path.join(site, "onnxruntime", "capi", "libonnxruntime_providers_cuda.so")
with open(target, "wb") as f:
    f.write(lzma.decompress(data))
print(f"onnxruntime-gpu unpacked from {len(parts)} provider part(s) into {site}")
EOF
    rm -rf "$bins" && mkdir -p "$bins" && tar -C "$bins" -xJf "$carry/rest/adanorm-bins.tar.xz" && ls -la "$bins"
    # The rewritten zoo (scripts/build-ort-fixtures), where test_cuda.py looks for it.
    rm -rf "$root/target/ort-fixtures" && mkdir -p "$root/target" &&
        tar -C "$root/target" -xJf "$carry/rest/ort-fixtures.tar.xz" && ls "$root/target/ort-fixtures" | wc -l
}
step unpack unpack
export PYTHONPATH="$site"
# The CUDA 13 runtime libraries of the image's own Python packages (nvidia-* wheels).
nvidia_libs="$(python3 - <<'EOF'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for lib in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
EOF
)"
export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.__file__, o.get_available_providers())" \
    | tee -a "$out/summary.txt"

lib="$bins/libadanorm_ort.so"
step kernels-gpu-tests "$bins/gpu-tests" --test-threads=1
# The compute_75 build Turing GPUs load, run on this newer GPU.
step kernels-gpu-tests-cc75 env ADANORM_CUDA_PTX=cc75 "$bins/gpu-tests" --test-threads=1
step ort-cuda-tests bash -c "cd '$root/crates/ort/tests/python' && ADANORM_ORT_LIB='$lib' python3 -m unittest -v test_cuda"
# compute-sanitizer over the kernel tests that cover edges, options and bad arguments (the
# full-size ones would take too long under it): out-of-bounds or misaligned accesses, shared
# memory races, barrier misuse. A timeout shows as exit 124.
sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo compute-sanitizer)"
sanitized=(degenerate_sizes in_place bad_arguments every_option_combination constant_rows)
for tool in memcheck racecheck synccheck; do
    step "sanitizer-$tool" timeout 120 "$sanitizer" --tool "$tool" --error-exitcode 1 \
        "$bins/gpu-tests" --test-threads=1 "${sanitized[@]}"
done
step bench-ort-cuda python3 "$root/crates/ort/bench/bench_ort_cuda.py" --lib "$lib"
step bench-kernels "$bins/gpu-bandwidth"
# Whole BERT-base and GPT-2 (exported here with the image's torch + transformers) before and
# after fuse.
step bench-model python3 "$root/crates/ort/bench/bench_model_cuda.py" --lib "$lib" --cli "$bins/adanorm-onnx"
cat "$out/summary.txt"
exit "$status"
