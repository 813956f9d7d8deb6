"""Side-by-side timings in ONNX Runtime (CPU): one `ai.adanorm` node against ORT's own
LayerNormalization, the decomposed AdaNorm subgraph PyTorch exports, and a copy floor.

Variants, per shape and element type (each a one-node or one-subgraph model, X -> Y):
  adanorm         AdaNorm(unbiased=1, eps_in_sqrt=0, c=1, k=0.1), no Scale/B: the math of the
                  exported subgraph below
  adanorm_affine  AdaNorm(defaults) with Scale and B: the same work as LayerNormalization plus
                  the AdaNorm factor
  layernorm       ONNX LayerNormalization (opset 17) with Scale and B
  decomposed      the 28 nodes `/blocks.0/norm1/*` of fixtures/zoo/adanorm_legacy_op14/model.onnx
                  (PyTorch legacy export of AdaNorm, opset 14), ORT_ENABLE_ALL optimisations
  copy            Mul(X, 2) - reads X and writes Y once: the memory-traffic floor

Every session runs with all graph optimisations, the given intra-op threads, inter-op 1, and IO
binding with preallocated outputs, so only the session's own work is timed. Rounds interleave the
variants (one run of each per round) so machine noise hits them alike; the table gives medians.

    python crates/ort/bench/bench_ort.py                      # the BENCHMARKS.md set
    python crates/ort/bench/bench_ort.py --write-models DIR   # only write the .onnx files
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
ZOO = os.path.join(ROOT, "fixtures", "zoo", "adanorm_legacy_op14", "model.onnx")
ZOO_PREFIX = "/blocks.0/norm1/"
DOMAIN = "ai.adanorm"
ELEM = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


def model(nodes, x_elem, inits=(), extra_inputs=(), opset=17):
    graph = helper.make_graph(
        nodes, "bench",
        [helper.make_tensor_value_info("X", x_elem, None)] + list(extra_inputs),
        [helper.make_tensor_value_info("Y", x_elem, None)],
        initializer=list(inits))
    return helper.make_model(graph, ir_version=8, opset_imports=[
        helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)])


def decomposed_adanorm(dtype):
    """The exported AdaNorm subgraph, node for node, with its input renamed X and output Y."""
    zoo = onnx.load(ZOO)
    nodes = [n for n in zoo.graph.node if n.name.startswith(ZOO_PREFIX)]
    consumed = {i for n in nodes for i in n.input}
    produced = {o for n in nodes for o in n.output}
    (outside,) = {i for i in consumed - produced if i}
    (last,) = [o for o in produced if not any(o in n.input for n in nodes)]
    rename = {outside: "X", last: "Y"}
    out = []
    for n in nodes:
        n = onnx.NodeProto.FromString(n.SerializeToString())
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
        if dtype == "float16" and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        if dtype == "float16" and n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to":
                    a.i = TensorProto.FLOAT16
        out.append(n)
    return model(out, ELEM[dtype], opset=14)


def models(dtype, hidden):
    np_dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    scale = numpy_helper.from_array((1 + 0.1 * rng.standard_normal(hidden)).astype(np_dtype), "Scale")
    bias = numpy_helper.from_array((0.1 * rng.standard_normal(hidden)).astype(np_dtype), "B")
    two = numpy_helper.from_array(np.array(2.0, np_dtype), "two")
    elem = ELEM[dtype]
    return {
        "adanorm": model([helper.make_node("AdaNorm", ["X"], ["Y"], domain=DOMAIN, name="ada",
                                           unbiased=1, eps_in_sqrt=0, c=1.0, k=0.1)], elem),
        "adanorm_affine": model([helper.make_node("AdaNorm", ["X", "Scale", "B"], ["Y"], domain=DOMAIN,
                                                  name="ada")], elem, [scale, bias]),
        "layernorm": model([helper.make_node("LayerNormalization", ["X", "Scale", "B"], ["Y"], axis=-1,
                                             epsilon=1e-5)], elem, [scale, bias]),
        "decomposed": decomposed_adanorm(dtype),
        "copy": model([helper.make_node("Mul", ["X", "two"], ["Y"])], elem, [two]),
    }


class Runner:
    """One session with IO binding: X bound once, Y preallocated."""

    def __init__(self, onnx_model, x, threads, lib):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.register_custom_ops_library(lib)
        self.sess = ort.InferenceSession(onnx_model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.x = ort.OrtValue.ortvalue_from_numpy(x)
        self.y = ort.OrtValue.ortvalue_from_shape_and_type(x.shape, x.dtype)
        self.binding = self.sess.io_binding()
        self.binding.bind_ortvalue_input("X", self.x)
        self.binding.bind_ortvalue_output("Y", self.y)

    def once(self):
        t = time.perf_counter()
        self.sess.run_with_iobinding(self.binding)
        return time.perf_counter() - t

    def output(self):
        return self.y.numpy()


def bench(shape, dtype, threads, lib, rounds, warmup):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype) + np.asarray(3, dtype)
    runners, skipped = {}, {}
    for name, m in models(dtype, shape[-1]).items():
        try:
            runners[name] = Runner(m, x, threads, lib)
            runners[name].once()
        except Exception as e:  # an op without a kernel for this type on this CPU EP
            skipped[name] = str(e).splitlines()[0][:120]
            runners.pop(name, None)
    # The fused op and the subgraph must agree before their times mean anything.
    if "decomposed" in runners:
        a, d = runners["adanorm"].output(), runners["decomposed"].output()
        tol = 1e-4 if dtype == "float32" else 5e-2
        err = float(np.max(np.abs(a.astype(np.float64) - d.astype(np.float64))))
        assert err <= tol, f"adanorm vs decomposed differ by {err}"
    copy_np = np.empty_like(x)
    for _ in range(warmup):
        for r in runners.values():
            r.once()
    times = {name: [] for name in runners}
    times["numpy_copy"] = []
    for _ in range(rounds):
        for name, r in runners.items():
            times[name].append(r.once())
        t = time.perf_counter()
        np.copyto(copy_np, x)
        times["numpy_copy"].append(time.perf_counter() - t)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}, skipped


def fmt_ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "n/a"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lib", default=os.environ.get("ADANORM_ORT_LIB", os.path.join(ROOT, "target", "release", "libadanorm_ort.so")))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--shapes", nargs="+", default=["64,128,768", "16,512,1024"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--write-models", metavar="DIR", help="write the benchmark models and exit")
    a = p.parse_args()
    shapes = [tuple(int(d) for d in s.split(",")) for s in a.shapes]

    if a.write_models:
        os.makedirs(a.write_models, exist_ok=True)
        for dtype in a.dtypes:
            for hidden in sorted({s[-1] for s in shapes}):
                for name, m in models(dtype, hidden).items():
                    onnx.save(m, os.path.join(a.write_models, f"{name}_{dtype}_h{hidden}.onnx"))
        return

    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"library {a.lib}; {a.rounds} interleaved rounds after {a.warmup} warm-up; medians in ms (min)\n")
    cols = ["adanorm", "adanorm_affine", "layernorm", "decomposed", "copy", "numpy_copy"]
    print("| shape | dtype | threads | " + " | ".join(cols) + " | affine/LN | decomposed/adanorm | adanorm/copy |")
    print("|---" * (len(cols) + 6) + "|")
    results = {}
    for shape in shapes:
        for dtype in a.dtypes:
            for threads in a.threads:
                t, skipped = bench(shape, dtype, threads, a.lib, a.rounds, a.warmup)
                results[(shape, dtype, threads)] = t
                cells = [f"{t[c][0] * 1e3:.2f} ({t[c][1] * 1e3:.2f})" if c in t else "n/a" for c in cols]
                med = {c: t[c][0] if c in t else None for c in cols}
                print(f"| {list(shape)} | {dtype} | {threads} | " + " | ".join(cells) + " | "
                      f"{fmt_ratio(med['adanorm_affine'], med['layernorm'])} | "
                      f"{fmt_ratio(med['decomposed'], med['adanorm'])} | "
                      f"{fmt_ratio(med['adanorm'], med['copy'])} |")
                for name, why in skipped.items():
                    print(f"|   | | | {name} skipped: {why} |", file=sys.stderr)
    if 1 in a.threads and 2 in a.threads:
        print("\nScaling, 1 -> 2 intra-op threads (median time at 1 / at 2):\n")
        print("| shape | dtype | adanorm | adanorm_affine | layernorm |")
        print("|---|---|---|---|---|")
        for shape in shapes:
            for dtype in a.dtypes:
                one, two = results[(shape, dtype, 1)], results[(shape, dtype, 2)]
                cells = [fmt_ratio(one[c][0], two[c][0]) if c in one and c in two else "n/a"
                         for c in ["adanorm", "adanorm_affine", "layernorm"]]
                print(f"| {list(shape)} | {dtype} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
