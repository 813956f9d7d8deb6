"""Side-by-side timings in ONNX Runtime (CPU) of a post-LN residual block's norm: the
`ai.adanorm` version-2 node that absorbs the residual against the same work done as separate ops.

Variants, per shape and element type (inputs X, Skip; outputs Y and the sum S):
  v2           LayerNormSimple(X, Scale, B, Skip, Bias) -> Y, Sum: one node, one pass over X/Skip
  v1_adds      Add(X, Bias), Add(., Skip) -> S, then LayerNormSimple(S, Scale, B) (version 1)
  ort_best     Add(X, Bias), Add(., Skip) -> S, then LayerNormalization(S, Scale, B): ONNX
               Runtime fuses this into its own SkipLayerNormalization (ORT_ENABLE_ALL)
Every session: all graph optimisations, the given intra-op threads, inter-op 1, IO binding with
preallocated outputs. Rounds interleave the variants; the table gives median (min) in ms.

    python crates/ort/bench/bench_residual.py [--threads 1 2] [--shapes 64,128,768] [--rounds 30]
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DOMAIN = "ai.adanorm"
ELEM = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


def model(nodes, elem, inits, version, shape, with_sum):
    # Declared shapes: ORT's SkipLayerNormalization fusion needs them.
    outputs = ["Y", "S"] if with_sum else ["Y"]
    graph = helper.make_graph(
        nodes, "bench",
        [helper.make_tensor_value_info("X", elem, list(shape)),
         helper.make_tensor_value_info("Skip", elem, list(shape))],
        [helper.make_tensor_value_info(o, elem, list(shape)) for o in outputs],
        initializer=inits)
    return helper.make_model(graph, ir_version=8, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, version)])


def models(dtype, shape, with_sum):
    """The three variants; `with_sum`: the sum is read again (pre-LN), else only Y (post-LN)."""
    hidden = shape[-1]
    rng = np.random.default_rng(0)
    np_dtype = np.dtype(dtype)
    inits = [numpy_helper.from_array((1 + 0.1 * rng.standard_normal(hidden)).astype(np_dtype), "Scale"),
             numpy_helper.from_array((0.1 * rng.standard_normal(hidden)).astype(np_dtype), "B"),
             numpy_helper.from_array((0.1 * rng.standard_normal(hidden)).astype(np_dtype), "Bias")]
    elem = ELEM[dtype]
    adds = [helper.make_node("Add", ["X", "Bias"], ["XB"]), helper.make_node("Add", ["XB", "Skip"], ["S"])]
    return {
        "v2": model([helper.make_node("LayerNormSimple", ["X", "Scale", "B", "Skip", "Bias"],
                                      ["Y", "", "", "S"] if with_sum else ["Y"], domain=DOMAIN, name="ln")], elem, inits, 2, shape, with_sum),
        "v1_adds": model(adds + [helper.make_node("LayerNormSimple", ["S", "Scale", "B"], ["Y"],
                                                  domain=DOMAIN, name="ln")], elem, inits, 1, shape, with_sum),
        "ort_best": model(adds + [helper.make_node("LayerNormalization", ["S", "Scale", "B"], ["Y"],
                                                   axis=-1, epsilon=1e-5)], elem, inits, 1, shape, with_sum),
    }


class Runner:
    def __init__(self, m, feeds, threads, lib, with_sum):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.register_custom_ops_library(lib)
        self.sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.binding = self.sess.io_binding()
        self.values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in feeds.items()}
        for k, v in self.values.items():
            self.binding.bind_ortvalue_input(k, v)
        x = feeds["X"]
        self.outputs = {k: ort.OrtValue.ortvalue_from_shape_and_type(x.shape, x.dtype)
                        for k in (("Y", "S") if with_sum else ("Y",))}
        for k, v in self.outputs.items():
            self.binding.bind_ortvalue_output(k, v)

    def once(self):
        t = time.perf_counter()
        self.sess.run_with_iobinding(self.binding)
        return time.perf_counter() - t


def op_types(m, threads, lib):
    """What ORT runs after its own optimisations (to show that ort_best became SkipLayerNorm)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.register_custom_ops_library(lib)
    so.log_severity_level = 3
    path = os.path.join("/tmp", f"bench_residual_{os.getpid()}.onnx")
    so.optimized_model_filepath = path
    ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    import onnx
    types = [n.op_type for n in onnx.load(path).graph.node]
    os.remove(path)
    return types


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lib", default=os.environ.get("ADANORM_ORT_LIB", os.path.join(ROOT, "target", "release", "libadanorm_ort.so")))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--shapes", nargs="+", default=["64,128,768"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()
    print(f"onnxruntime {ort.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{a.rounds} interleaved rounds after {a.warmup} warm-up; median (min) in ms\n")
    names = ["v2", "v1_adds", "ort_best"]
    print("| sum read | shape | dtype | threads | " + " | ".join(names) + " | v2/v1_adds | v2/ort_best |")
    print("|---" * (len(names) + 6) + "|")
    for with_sum, shape, dtype in [(w, tuple(int(d) for d in s.split(",")), t)
                                   for w in (False, True) for s in a.shapes for t in a.dtypes]:
        if True:
            rng = np.random.default_rng(1)
            feeds = {"X": rng.standard_normal(shape).astype(dtype),
                     "Skip": rng.standard_normal(shape).astype(dtype)}
            ms = models(dtype, shape, with_sum)
            for threads in a.threads:
                runners = {k: Runner(m, feeds, threads, a.lib, with_sum) for k, m in ms.items()}
                # The same work: Sum equal everywhere, Y within the f16/f32 tolerance.
                for r in runners.values():
                    r.once()
                s = {k: r.outputs["S"].numpy() for k, r in runners.items() if with_sum}
                y = {k: r.outputs["Y"].numpy().astype(np.float64) for k, r in runners.items()}
                tol = 2e-2 if dtype == "float16" else 1e-4
                for k in names[1:]:
                    assert np.max(np.abs(y[k] - y["v2"])) <= tol * max(1, np.max(np.abs(y["v2"]))), k
                    if dtype == "float32" and with_sum:
                        assert np.array_equal(s[k], s["v2"]), k
                for _ in range(a.warmup):
                    for r in runners.values():
                        r.once()
                times = {k: [] for k in names}
                for _ in range(a.rounds):
                    for k in names:
                        times[k].append(runners[k].once())
                med = {k: statistics.median(v) for k, v in times.items()}
                cells = [f"{med[k] * 1e3:.2f} ({min(times[k]) * 1e3:.2f})" for k in names]
                print(f"| {'yes' if with_sum else 'no'} | {list(shape)} | {dtype} | {threads} | " + " | ".join(cells) +
                      f" | {med['v2'] / med['v1_adds']:.2f}x | {med['v2'] / med['ort_best']:.2f}x |")
    shape = tuple(int(d) for d in a.shapes[0].split(","))
    for dtype, with_sum in [(t, w) for t in a.dtypes for w in (False, True)]:
        print(f"\nort_best as ONNX Runtime runs it ({dtype}, sum read: {with_sum}):",
              op_types(models(dtype, shape, with_sum)["ort_best"], 1, a.lib))


if __name__ == "__main__":
    main()
