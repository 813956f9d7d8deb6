#!/usr/bin/env bash
# Tests of libadanorm_ort against real ONNX Runtime builds, oldest and newest supported.
#
# 1. Python environments (created once, reused; safe to rerun):
#      .venv             onnxruntime + numpy + onnx pinned by scripts/python-constraints.txt (scripts/python-env)
#      .venv-ort-oldest  onnxruntime 1.17.3 (the oldest supported) + numpy 1.26.4 + onnx 1.17.0,
#                        pinned here (exact versions: a new release changes nothing under us)
#      .venv-ort-oldest/ort-1.16.3  onnxruntime 1.16.3 alone (--target), to check the refusal
# 2. cargo build -p adanorm-ort --release  ->  target/release/libadanorm_ort.so
# 3. Rust host tests (`ort` crate, load-dynamic) on the newest wheel's libonnxruntime.so
#    (the 1.17 wheel has no separate libonnxruntime.so, so Python covers the oldest).
# 4. Python tests (crates/ort/tests/python) on the newest and on the oldest onnxruntime.
# 5. onnxruntime 1.16.3 must get a clear error from register_custom_ops_library, not a crash.
# 6. The `cuda` feature build (NVRTC from PyPI, crates/cuda/scripts/setup-cuda-build.sh) into
#    target/cuda-feature: on this machine's CPU-only onnxruntime it must load, run the CPU
#    numerics, and (test_cuda.py) run its GPU tests or skip them naming the reason.
#
# Needs only python3 (with venv) and the Rust toolchain; pip reaches PyPI. Cargo honours
# CARGO_BUILD_JOBS. Extra arguments go to the Python unittest runs (e.g. -k Errors).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$ROOT"

OLDEST_ORT=1.17.3
TOO_OLD_ORT=1.16.3
NEWEST_VENV="$ROOT/.venv"
OLDEST_VENV="$ROOT/.venv-ort-oldest"
TOO_OLD_DIR="$OLDEST_VENV/ort-$TOO_OLD_ORT"
PY_TESTS="$ROOT/crates/ort/tests/python"
LIB="$ROOT/target/release/libadanorm_ort.so"

say() { printf '\n==> %s\n' "$*"; }

# ensure_venv DIR CHECK_PYTHON_CODE PIP_ARGS...: creates DIR and installs PIP_ARGS unless CHECK
# already succeeds there.
ensure_venv() {
    local dir=$1 check=$2
    shift 2
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" >/dev/null 2>&1; then
        return 0
    fi
    say "installing $* into $dir"
    [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet "$@"
    "$dir/bin/python" -c "$check"
}

say "Python environments"
# The newest: the project's own environment (scripts/python-env, shared with the other tests).
"$ROOT/scripts/python-env" >/dev/null
ensure_venv "$NEWEST_VENV" "import onnxruntime, onnx, numpy" -c "$ROOT/scripts/python-constraints.txt" onnxruntime numpy onnx
ensure_venv "$OLDEST_VENV" "import onnxruntime, onnx, numpy; assert onnxruntime.__version__ == '$OLDEST_ORT'" \
    "onnxruntime==$OLDEST_ORT" "numpy==1.26.4" "onnx==1.17.0"
for venv in "$NEWEST_VENV" "$OLDEST_VENV"; do
    "$venv/bin/python" -c "import onnxruntime as o, onnx, numpy, sys; print(f'{sys.argv[1]}: onnxruntime {o.__version__}, onnx {onnx.__version__}, numpy {numpy.__version__}')" "$venv"
done

say "cargo build -p adanorm-ort --release"
cargo build -p adanorm-ort --release --locked
test -f "$LIB"

NEWEST_ORT_SO="$(ls "$NEWEST_VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* | head -n 1)"
say "Rust host tests (ort crate) on $NEWEST_ORT_SO"
ADANORM_ORT_ONNXRUNTIME="$NEWEST_ORT_SO" ADANORM_ORT_LIB="$LIB" \
    cargo test -p adanorm-ort --release --locked

run_python() {
    local venv=$1
    shift
    say "Python tests on $("$venv/bin/python" -c 'import onnxruntime; print("onnxruntime", onnxruntime.__version__)')"
    # RUST_BACKTRACE=0: the deliberate test panics print one line each, not a backtrace.
    (cd "$PY_TESTS" && RUST_BACKTRACE=0 ADANORM_ORT_LIB="$LIB" "$venv/bin/python" -m unittest discover -s . -p 'test_*.py' "$@")
}
run_python "$NEWEST_VENV" "$@"
run_python "$OLDEST_VENV" "$@"

say "onnxruntime $TOO_OLD_ORT must refuse the library cleanly"
if [ ! -d "$TOO_OLD_DIR/onnxruntime" ]; then
    "$OLDEST_VENV/bin/python" -m pip install --quiet --no-deps --target "$TOO_OLD_DIR" "onnxruntime==$TOO_OLD_ORT" \
        || echo "SKIPPED: no onnxruntime $TOO_OLD_ORT wheel for this Python"
fi
if [ -d "$TOO_OLD_DIR/onnxruntime" ]; then
    PYTHONPATH="$TOO_OLD_DIR" ADANORM_ORT_LIB="$LIB" "$OLDEST_VENV/bin/python" - <<'EOF'
import os
import onnxruntime as ort
assert ort.__version__ == "1.16.3", ort.__version__
so = ort.SessionOptions()
try:
    so.register_custom_ops_library(os.environ["ADANORM_ORT_LIB"])
except Exception as e:
    message = str(e)
    assert "needs ONNX Runtime >= 1.17" in message and "1.16.3" in message, message
    print("refused as expected:", message)
else:
    raise SystemExit("onnxruntime 1.16.3 accepted the library")
EOF
fi

say "the cuda feature build on CPU-only onnxruntime"
eval "$("$ROOT/crates/cuda/scripts/setup-cuda-build.sh")"
cargo build -p adanorm-ort --release --locked --features cuda --target-dir "$ROOT/target/cuda-feature"
CUDA_LIB="$ROOT/target/cuda-feature/release/libadanorm_ort.so"
(cd "$PY_TESTS" && RUST_BACKTRACE=0 ADANORM_ORT_LIB="$CUDA_LIB" "$NEWEST_VENV/bin/python" -m unittest test_numerics test_cuda "$@")

say "libadanorm_ort: all tests passed"
