"""Side-by-side GPU timings in ONNX Runtime's CUDAExecutionProvider: the ai.adanorm nodes against
ORT's own CUDA LayerNormalization and a copy floor. Needs onnxruntime-gpu, a GPU and
libadanorm_ort built with `--features cuda`.

Each variant is a chain of `--chain` identical nodes (Y_i = node(Y_{i-1})), so one run is many
kernels; runs replay as a CUDA graph (`enable_cuda_graph`, IO binding on device buffers) so the
host's per-node work is not timed, only the GPU's. Rounds interleave the variants; the table gives
the median per node and its bandwidth (X read + Y written).

  adanorm          AdaNorm(unbiased=1, eps_in_sqrt=0, c=1, k=0.1), no Scale/B (the paper's form)
  adanorm_affine   AdaNorm(defaults) with Scale and B
  simple_affine    LayerNormSimple with Scale and B: exactly LayerNormalization's arithmetic
  layernorm        ONNX LayerNormalization (opset 17) with Scale and B, ORT's CUDA kernel
  copy             Mul(X, -1): one read and one write, the memory-traffic floor (no overflow
                   along the chain, and not an identity the optimiser removes)

    python crates/ort/bench/bench_ort_cuda.py --lib target/cuda-feature/release/libadanorm_ort.so
"""

import argparse
import ctypes
import os
import platform
import statistics
import subprocess
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DOMAIN = "ai.adanorm"
ELEM = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
VARIANTS = ["adanorm", "adanorm_affine", "simple_affine", "layernorm", "copy"]


def chain_model(variant, dtype, hidden, length):
    np_dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((1 + 0.1 * rng.standard_normal(hidden)).astype(np_dtype), "Scale"),
             numpy_helper.from_array((0.1 * rng.standard_normal(hidden)).astype(np_dtype), "B"),
             numpy_helper.from_array(np.array(-1.0, np_dtype), "minus_one")]
    nodes = []
    for i in range(length):
        src = "X" if i == 0 else f"t{i}"
        dst = "Y" if i == length - 1 else f"t{i + 1}"
        name = f"{variant}{i}"
        if variant == "adanorm":
            nodes.append(helper.make_node("AdaNorm", [src], [dst], domain=DOMAIN, name=name,
                                          unbiased=1, eps_in_sqrt=0, c=1.0, k=0.1))
        elif variant == "adanorm_affine":
            nodes.append(helper.make_node("AdaNorm", [src, "Scale", "B"], [dst], domain=DOMAIN, name=name))
        elif variant == "simple_affine":
            nodes.append(helper.make_node("LayerNormSimple", [src, "Scale", "B"], [dst], domain=DOMAIN, name=name))
        elif variant == "layernorm":
            nodes.append(helper.make_node("LayerNormalization", [src, "Scale", "B"], [dst], name=name,
                                          axis=-1, epsilon=1e-5))
        else:
            nodes.append(helper.make_node("Mul", [src, "minus_one"], [dst], name=name))
    graph = helper.make_graph(nodes, variant, [helper.make_tensor_value_info("X", ELEM[dtype], None)],
                              [helper.make_tensor_value_info("Y", ELEM[dtype], None)], initializer=inits)
    return helper.make_model(graph, ir_version=8, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])


class Runner:
    """One CUDA session with X and Y bound to device buffers; replays a CUDA graph if it can."""

    def __init__(self, model, x, lib, cuda_graph):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.register_custom_ops_library(lib)
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        options = {"enable_cuda_graph": "1"} if cuda_graph else {}
        self.sess = ort.InferenceSession(model.SerializeToString(), so,
                                         providers=[("CUDAExecutionProvider", options)])
        self.x = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        self.y = ort.OrtValue.ortvalue_from_shape_and_type(x.shape, x.dtype, "cuda", 0)
        self.binding = self.sess.io_binding()
        self.binding.bind_ortvalue_input("X", self.x)
        self.binding.bind_ortvalue_output("Y", self.y)

    def once(self):
        t = time.perf_counter()
        self.sess.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()
        return time.perf_counter() - t


def bench(shape, dtype, lib, chain, rounds, warmup, cuda_graph):
    x = (np.random.default_rng(1).standard_normal(shape) + 3).astype(dtype)
    runners, notes = {}, {}
    for v in VARIANTS:
        try:
            runners[v] = Runner(chain_model(v, dtype, shape[-1], chain), x, lib, cuda_graph)
            for _ in range(warmup):
                runners[v].once()
        except Exception as e:
            notes[v] = str(e).splitlines()[0][:160]
            runners.pop(v, None)
    times = {v: [] for v in runners}
    for _ in range(rounds):
        for v, r in runners.items():
            times[v].append(r.once())
    return {v: statistics.median(t) / chain for v, t in times.items()}, notes


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lib", default=os.environ.get(
        "ADANORM_ORT_LIB", os.path.join(ROOT, "target", "cuda-feature", "release", "libadanorm_ort.so")))
    p.add_argument("--shapes", nargs="+", default=["64,128,768", "16,512,1024", "256,512,1024"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    p.add_argument("--chain", type=int, default=20)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-cuda-graph", action="store_true", help="time plain runs (host overhead included)")
    a = p.parse_args()

    dll = ctypes.CDLL(a.lib)
    dll.adanorm_ort_cuda_status.restype = ctypes.c_char_p
    status = dll.adanorm_ort_cuda_status().decode()
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem",
                              "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError:
        gpu = "nvidia-smi not found"
    print(f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())}), Python "
          f"{platform.python_version()}; GPU: {gpu}")
    print(f"libadanorm_ort: {status}")
    print(f"chains of {a.chain} nodes, {'plain runs' if a.no_cuda_graph else 'CUDA graph replay'}, "
          f"{a.rounds} interleaved rounds after {a.warmup} warm-up; median µs per node (GB/s)\n")
    if not status.startswith("registered"):
        raise SystemExit("the library's CUDA kernels are not registered here: nothing to measure")
    print("| shape | dtype | " + " | ".join(VARIANTS) + " | adanorm_affine/LN | simple_affine/LN | adanorm/copy |")
    print("|---" * (len(VARIANTS) + 5) + "|")
    for s in a.shapes:
        shape = tuple(int(d) for d in s.split(","))
        for dtype in a.dtypes:
            t, notes = bench(shape, dtype, a.lib, a.chain, a.rounds, a.warmup, not a.no_cuda_graph)
            moved = 2 * int(np.prod(shape)) * np.dtype(dtype).itemsize
            cells = [f"{t[v] * 1e6:.1f} ({moved / t[v] / 1e9:.0f})" if v in t else "n/a" for v in VARIANTS]

            def ratio(u, v):
                return f"{t[u] / t[v]:.2f}" if u in t and v in t else "n/a"
            print(f"| {list(shape)} | {dtype} | " + " | ".join(cells) + f" | {ratio('adanorm_affine', 'layernorm')} | "
                  f"{ratio('simple_affine', 'layernorm')} | {ratio('adanorm', 'copy')} |")
            for v, why in notes.items():
                print(f"|   | | {v}: {why} |")


if __name__ == "__main__":
    main()
