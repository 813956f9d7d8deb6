"""Whole transformer models before and after `adanorm-onnx fuse`, side by side in ONNX Runtime's
CUDAExecutionProvider: what a deployer sees end to end, not one kernel.

The original model gets onnxruntime's own graph optimisations, which turn its decomposed
LayerNorms into LayerNormalization and, after a residual Add, SkipLayerNormalization. The fused
model holds ai.adanorm nodes instead (the same function), which those fusions do not know, so
this measures what the rewrite costs or saves in a real model. It also counts the normalisation
ops in each optimised graph and checks that both give the same output.

Models: the ONNX files given, else exported here with torch + transformers (random weights, no
download; the legacy exporter at opset 14, whose LayerNorms are decomposed): BERT-base and GPT-2
(12 layers, hidden 768), and BERT-base with each LayerNorm replaced by the paper's AdaNorm (the
reference code's module: unbiased std, eps added to it, C = 1, k = 1/10, the detached factor), at
batch 8 x 128 tokens, float32 and float16 (`model.half()`).

    python crates/ort/bench/bench_model_cuda.py --lib libadanorm_ort.so --cli adanorm-onnx [model.onnx ...]

Timing: inputs and outputs bound on the device (IO binding), rounds interleave the two models,
median per run. `--provider cpu` runs the same comparison on the CPU (a dry run of the script).
With `ADANORM_REQUIRE_GPU=1` (the device scripts set it), `--provider cuda` exits non-zero when
onnxruntime has no CUDAExecutionProvider or the library's CUDA kernels are not registered.
"""

import argparse
import collections
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

NORM_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
            "SkipSimplifiedLayerNormalization", "AdaNorm", "LayerNormSimple")


def export_models(out_dir, batch, seq, small, which):
    """(name, path) of BERT-base and GPT-2 exports in float32 and float16."""
    import torch
    import transformers as T

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    class AdaNorm(torch.nn.Module):
        # The reference code's mode 'adanorm' (lancopku/AdaNorm, fairseq/modules/layer_norm.py).
        def forward(self, x):
            mean = x.mean(-1, keepdim=True)
            std = x.std(-1, keepdim=True)
            x = x - mean
            mean = x.mean(-1, keepdim=True)
            gra = (0.1 * (x - mean) / (std + 1e-5)).detach()
            return (x - x * gra) / (std + 1e-5)

    def with_adanorm(model):
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, torch.nn.LayerNorm):
                    setattr(module, child_name, AdaNorm())
        return model

    size = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128) if small else {}
    gpt_size = dict(n_layer=2, n_embd=64, n_head=2) if small else {}
    builders = {
        "bert-base": lambda: T.BertModel(T.BertConfig(attn_implementation="eager", **size)),
        "gpt2": lambda: T.GPT2Model(T.GPT2Config(attn_implementation="eager", use_cache=False, **gpt_size)),
        "bert-base-adanorm": lambda: with_adanorm(T.BertModel(T.BertConfig(attn_implementation="eager", **size))),
    }
    made = []
    for name, build in ((n, b) for n, b in builders.items() if not which or n in which):
        for dtype in ("float32", "float16"):
            torch.manual_seed(0)
            model = Hidden(build().eval())
            if dtype == "float16":
                model = model.half()
            ids = torch.randint(0, 1000, (batch, seq))
            mask = torch.ones(batch, seq, dtype=torch.int64)  # explicit: transformers 5 builds it with aten::diff otherwise
            path = os.path.join(out_dir, f"{name}-{dtype}.onnx")
            torch.onnx.export(model, (ids, mask), path, input_names=["input_ids", "attention_mask"],
                              output_names=["hidden"], opset_version=14, dynamo=False)
            made.append((f"{name} {dtype}", path))
            print(f"exported {name} {dtype} (torch {torch.__version__}, transformers {T.__version__})",
                  file=sys.stderr)
    return made


def optimised_norm_ops(path, lib, providers, out_dir):
    """Normalisation op counts in the graph onnxruntime actually runs."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.register_custom_ops_library(lib)
    so.optimized_model_filepath = os.path.join(out_dir, "optimised-" + os.path.basename(path))
    ort.InferenceSession(path, so, providers=providers)
    graph = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
    counts = collections.Counter(n.op_type for n in graph.node if n.op_type in NORM_OPS)
    return ", ".join(f"{n} {op}" for op, n in sorted(counts.items())) or "none"


class Runner:
    def __init__(self, path, lib, providers, feeds, device):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.register_custom_ops_library(lib)
        self.sess = ort.InferenceSession(path, so, providers=providers)
        self.binding = self.sess.io_binding()
        for name, value in feeds.items():
            self.binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
        for out in self.sess.get_outputs():
            self.binding.bind_output(out.name, device)

    def once(self):
        t = time.perf_counter()
        self.sess.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()
        return time.perf_counter() - t

    def outputs(self):
        return [o.numpy() for o in self.binding.get_outputs()]


def feeds_for(path, batch, seq):
    rng = np.random.default_rng(0)
    feeds = {}
    for i in ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs():
        shape = [d if isinstance(d, int) else (batch if k == 0 else seq) for k, d in enumerate(i.shape)]
        if "mask" in i.name:
            feeds[i.name] = np.ones(shape, np.int64)
        elif "int" in i.type:
            feeds[i.name] = rng.integers(0, 1000, shape).astype(np.int64)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float16 if "float16" in i.type else np.float32)
    return feeds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="ONNX models (default: export BERT-base and GPT-2)")
    p.add_argument("--lib", required=True, help="libadanorm_ort.so (built with --features cuda for the GPU)")
    p.add_argument("--cli", required=True, help="the adanorm-onnx binary")
    p.add_argument("--provider", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--which", nargs="+", default=[], help="exports to make (default: all)")
    p.add_argument("--small", action="store_true", help="tiny exports (2 layers, hidden 64), for a dry run")
    a = p.parse_args()

    work = tempfile.mkdtemp(prefix="adanorm-model-bench-")
    models = [(os.path.basename(m), m) for m in a.models] or export_models(work, a.batch, a.seq, a.small, a.which)
    if a.provider == "cuda":
        providers, device = [("CUDAExecutionProvider", {"use_tf32": "0"})], "cuda"
        dll = ctypes.CDLL(a.lib)
        dll.adanorm_ort_cuda_status.restype = ctypes.c_char_p
        status = dll.adanorm_ort_cuda_status().decode()
        if os.environ.get("ADANORM_REQUIRE_GPU") == "1":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                sys.exit(f"ADANORM_REQUIRE_GPU=1 is set, but onnxruntime {ort.__version__} has no "
                         "CUDAExecutionProvider")
            if not status.startswith("registered"):
                sys.exit(f"ADANORM_REQUIRE_GPU=1 is set, but libadanorm_ort's CUDA kernels are {status}")
    else:
        providers, device, status = ["CPUExecutionProvider"], "cpu", "CPU run"
    print(f"onnxruntime {ort.__version__}, {a.provider}; libadanorm_ort: {status}")
    print(f"batch {a.batch} x {a.seq} tokens, {a.rounds} interleaved rounds after {a.warmup} warm-up, "
          "median ms per run; TF32 off\n")
    print("| model | norms fused | original ms | fused ms | fused/original | max scaled diff | "
          "norm ops onnxruntime runs: original | fused |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    failed = False
    for name, path in models:
        fused = os.path.join(work, os.path.basename(path).replace(".onnx", ".fused.onnx"))
        done = subprocess.run([a.cli, "fuse", path, "-o", fused], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {name} | fuse failed: {done.stderr.strip()[:200]} |")
            failed = True
            continue
        ours = sum(n.domain == "ai.adanorm" for n in onnx.load(fused, load_external_data=False).graph.node)
        feeds = feeds_for(path, a.batch, a.seq)
        runners = {"original": Runner(path, a.lib, providers, feeds, device),
                   "fused": Runner(fused, a.lib, providers, feeds, device)}
        for r in runners.values():
            for _ in range(a.warmup):
                r.once()
        times = {k: [] for k in runners}
        for _ in range(a.rounds):
            for k, r in runners.items():
                times[k].append(r.once())
        t = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        want, got = (runners[k].outputs()[0].astype(np.float64) for k in ("original", "fused"))
        diff = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))
        norms = [optimised_norm_ops(m, a.lib, providers, work) for m in (path, fused)]
        print(f"| {name} | {ours} | {t['original']:.3f} | {t['fused']:.3f} | {t['fused'] / t['original']:.2f} | "
              f"{diff:.1e} | {norms[0]} | {norms[1]} |", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
