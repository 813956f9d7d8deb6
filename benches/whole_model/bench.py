"""Whole-model timings in ONNX Runtime (CPU): each exported model as it is against the same model
after `adanorm-onnx fuse` (residuals absorbed: ai.adanorm version 2) and after
`fuse --no-residual` (version 1), side by side in one process.

Models come from `benches/whole_model/export.py` (PyTorch, legacy exporter, [8, 128, 768]):
  bert_postln    post-LN BERT-base-like encoder (4 layers, 12 heads, FFN 3072)
  gpt2_preln     pre-LN GPT-2-like stack (the residual stream goes on past every norm)
  bert_adanorm   bert_postln with the paper's AdaNorm in place of every LayerNorm; its partner
                 is bert_postln as ORT runs it (its own fused LayerNorms): "the same network with
                 ORT's own fused LayerNorms"

Every session: ORT_ENABLE_ALL, CPUExecutionProvider, the given intra-op threads, inter-op 1, IO
binding with preallocated outputs. Outputs are checked against the original before anything is
timed. Rounds interleave every variant of every model (one run each per round), so machine noise
hits them alike; the table gives median and minimum in ms and the ratios of medians.

    python benches/whole_model/bench.py [--models DIR] [--cli target/release/adanorm-onnx]
        [--lib target/release/libadanorm_ort.so] [--threads 1 2] [--rounds 20]
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def fuse(cli, src, dst, *flags):
    if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
        subprocess.run([cli, "fuse", src, "-o", dst, "--force", *flags], check=True,
                       stdout=subprocess.DEVNULL)
    return dst


def ops(path):
    m = onnx.load(path, load_external_data=False)
    counts = {}
    for n in m.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


class Runner:
    def __init__(self, path, x, threads, lib):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.register_custom_ops_library(lib)
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.binding = self.sess.io_binding()
        self.x = ort.OrtValue.ortvalue_from_numpy(x)
        self.binding.bind_ortvalue_input(self.sess.get_inputs()[0].name, self.x)
        out = self.sess.get_outputs()[0]
        self.y = ort.OrtValue.ortvalue_from_shape_and_type(x.shape, x.dtype)
        self.binding.bind_ortvalue_output(out.name, self.y)

    def once(self):
        t = time.perf_counter()
        self.sess.run_with_iobinding(self.binding)
        return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=os.path.join(ROOT, "target", "whole-models"))
    p.add_argument("--cli", default=os.path.join(ROOT, "target", "release", "adanorm-onnx"))
    p.add_argument("--lib", default=os.path.join(ROOT, "target", "release", "libadanorm_ort.so"))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()

    names = [n for n in ("bert_postln", "gpt2_preln", "bert_adanorm", "bert_paperform")
             if os.path.exists(os.path.join(a.models, f"{n}.onnx"))]
    if not names:
        sys.exit(f"no models in {a.models}: run benches/whole_model/export.py first")
    variants = {}
    for n in names:
        src = os.path.join(a.models, f"{n}.onnx")
        variants[(n, "original")] = src
        variants[(n, "fused")] = fuse(a.cli, src, os.path.join(a.models, f"{n}.fused.onnx"))
        variants[(n, "fused v1")] = fuse(a.cli, src, os.path.join(a.models, f"{n}.fused-v1.onnx"),
                                         "--no-residual")
    print(f"onnxruntime {ort.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}")
    for (n, v), path in variants.items():
        c = ops(path)
        ours = {k: c[k] for k in ("AdaNorm", "LayerNormSimple", "Add") if k in c}
        print(f"  {n} {v}: {sum(c.values())} nodes {ours}")
    print(f"{a.rounds} interleaved rounds after {a.warmup} warm-up; median (min) in ms\n")

    def inputs(n):
        own = os.path.join(a.models, f"{n}.inputs.npz")
        return np.load(own if os.path.exists(own) else os.path.join(a.models, "inputs.npz"))["x"]

    x = {n: inputs(n) for n in names}
    has_ada = "bert_adanorm" in names or "bert_paperform" in names
    print("| model | threads | original | fused (v2) | fused --no-residual (v1) | v2/original | v1/original |"
          + (" adanorm v2 / bert_postln original |" if has_ada else ""))
    print("|---" * (7 + has_ada) + "|")
    for threads in a.threads:
        runners = {k: Runner(path, x[k[0]], threads, a.lib) for k, path in variants.items()}
        # Same function first: every variant's output against its original's.
        for (n, v), r in runners.items():
            r.once()
            want = runners[(n, "original")].y.numpy().astype(np.float64)
            got = r.y.numpy().astype(np.float64)
            err = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))
            assert err <= 1e-4, f"{n} {v}: differs from the original by {err}"
        for _ in range(a.warmup):
            for r in runners.values():
                r.once()
        times = {k: [] for k in runners}
        for _ in range(a.rounds):
            for k, r in runners.items():
                times[k].append(r.once())
        med = {k: statistics.median(v) for k, v in times.items()}
        cell = lambda k: f"{med[k] * 1e3:.1f} ({min(times[k]) * 1e3:.1f})"
        for n in names:
            row = (f"| {n} | {threads} | {cell((n, 'original'))} | {cell((n, 'fused'))} | "
                   f"{cell((n, 'fused v1'))} | {med[(n, 'fused')] / med[(n, 'original')]:.3f}x | "
                   f"{med[(n, 'fused v1')] / med[(n, 'original')]:.3f}x |")
            if has_ada:
                partner = ("bert_postln", "original")
                row += (f" {med[(n, 'fused')] / med[partner]:.3f}x |"
                        if n in ("bert_adanorm", "bert_paperform") and partner in med
                        else " |")
            print(row)


if __name__ == "__main__":
    main()
