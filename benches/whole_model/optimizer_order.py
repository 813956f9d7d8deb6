"""`bert_postln` of benches/whole_model (see export.py) in ONNX Runtime (CPU): as exported, after
`onnxruntime.transformers.optimizer`, after the optimizer and then
`adanorm-onnx rewrite --to simple --k 0 --c 1`, and after `adanorm-onnx fuse` alone; outputs
checked against the original, rounds interleaved, median (min) ms. README.md, "With ONNX
Runtime's transformer optimizer", quotes it.

    python benches/whole_model/optimizer_order.py [--models DIR] [--rounds 12]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Runner, paths)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=os.path.join(bench.ROOT, "target", "whole-models"))
    p.add_argument("--cli", default=os.path.join(bench.ROOT, "target", "release", "adanorm-onnx"))
    p.add_argument("--lib", default=os.path.join(bench.ROOT, "target", "release", "libadanorm_ort.so"))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=12)
    a = p.parse_args()
    from onnxruntime.transformers import optimizer

    src = os.path.join(a.models, "bert_postln.onnx")
    x = np.load(os.path.join(a.models, "inputs.npz"))["x"]
    with tempfile.TemporaryDirectory() as tmp:
        opt = os.path.join(tmp, "opt.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer.optimize_model(src, model_type="bert", num_heads=12, hidden_size=768,
                                     opt_level=0).save_model_to_file(opt)
        opt_rw = os.path.join(tmp, "opt.rewritten.onnx")
        subprocess.run([a.cli, "rewrite", opt, "-o", opt_rw, "--to", "simple", "--k", "0", "--c", "1"],
                       check=True, stdout=subprocess.DEVNULL)
        fused = os.path.join(tmp, "fused.onnx")
        subprocess.run([a.cli, "fuse", src, "-o", fused], check=True, stdout=subprocess.DEVNULL)
        paths = {"original": src, "optimizer": opt, "optimizer + rewrite": opt_rw, "fuse": fused}
        for threads in a.threads:
            runners = {k: bench.Runner(v, x, threads, a.lib) for k, v in paths.items()}
            for r in runners.values():
                r.once()
            want = runners["original"].y.numpy().astype(np.float64)
            for k, r in runners.items():
                err = np.max(np.abs(r.y.numpy() - want) / np.maximum(1.0, np.abs(want)))
                assert err <= 1e-4, f"{k}: {err}"
            for _ in range(2):
                for r in runners.values():
                    r.once()
            times = {k: [] for k in runners}
            for _ in range(a.rounds):
                for k, r in runners.items():
                    times[k].append(r.once())
            print(f"threads {threads}: " + ", ".join(
                f"{k} {statistics.median(v) * 1e3:.1f} ({min(v) * 1e3:.1f})" for k, v in times.items()))


if __name__ == "__main__":
    main()
