"""The Python stage of the differential fuzzer (tests/fuzz_rewrites.rs): every model the fuzzer
wrote, judged by the reference tools the Rust side does not have.

    ADANORM_FUZZ_KEEP=DIR cargo test --test fuzz_rewrites      # writes DIR/<seed>/...
    .venv/bin/python tests/python/fuzz_check.py DIR [--ort-lib target/debug/libadanorm_ort.so]

Each DIR/<seed>/ holds `original.onnx`, the written models and `manifest.json`:
{"seed": n, "half": bool, "models": [{"file", "command", "exact", "revert"}]}.

For every written model: `onnx.checker.check_model(full_check=True)` and strict shape inference
(what `onnx.checker` calls a valid model); then, where ONNX Runtime can run it (no `ai.adanorm`
node, a `--portable` model, a reverted one, or any model when the custom-op library is given), its
outputs against the original's in ONNX Runtime: claimed-exact rewrites within the ops-spec
tolerances (1e-4 scaled, 3e-2 with float16), reverts within 1e-6. Prints counts and failures by
class; exits 1 if any.
"""
import collections
import json
import os
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)
warnings.filterwarnings("ignore")


def nodes_everywhere(graph):
    for n in graph.node:
        yield n
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from nodes_everywhere(sub)


def feeds_for(session, seed):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d >= 0 else 2 for d in i.shape]
        t = i.type
        if "float16" in t:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float16)
        elif "double" in t:
            feeds[i.name] = rng.standard_normal(shape)
        elif "float" in t:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        elif "bool" in t:
            feeds[i.name] = rng.integers(0, 2, shape).astype(bool)
        elif "int64" in t:
            feeds[i.name] = rng.integers(0, 2, shape).astype(np.int64)
        elif "int32" in t:
            feeds[i.name] = rng.integers(0, 2, shape).astype(np.int32)
        else:
            return None
    return feeds


def session(path, lib):
    so = ort.SessionOptions()
    if lib:
        so.register_custom_ops_library(lib)
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    args = sys.argv[1:]
    lib = None
    if "--ort-lib" in args:
        i = args.index("--ort-lib")
        lib = os.path.abspath(args[i + 1])
        del args[i:i + 2]
    root = args[0]
    counts = collections.Counter()
    failures = collections.defaultdict(list)

    def fail(cls, where, why):
        failures[cls].append(f"{where}: {str(why).splitlines()[0][:300]}")

    for case in sorted(os.listdir(root)):
        d = os.path.join(root, case)
        manifest = os.path.join(d, "manifest.json")
        if not os.path.exists(manifest):
            continue
        with open(manifest) as f:
            m = json.load(f)
        counts["graphs"] += 1
        original = os.path.join(d, "original.onnx")
        ref = feeds = None
        try:
            s0 = session(original, None)
            feeds = feeds_for(s0, m["seed"])
            if feeds is not None:
                ref = s0.run(None, feeds)
        except Exception:
            counts["originals ONNX Runtime refuses (not judged in ORT)"] += 1
        tol = 3e-2 if m.get("half") else 1e-4
        for w in m["models"]:
            path = os.path.join(d, w["file"])
            where = f"seed {m['seed']} {w['command']}"
            counts["written models"] += 1
            try:
                model = onnx.load(path)
                onnx.checker.check_model(model, full_check=True)
                onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True)
            except Exception as e:
                fail("onnx.checker / strict shape inference", where, e)
                continue
            custom = any(n.domain == "ai.adanorm" for n in nodes_everywhere(model.graph))
            portable = any(f.domain == "ai.adanorm" for f in model.functions)
            if ref is None or (custom and not portable and not lib):
                continue
            try:
                got = session(path, lib if custom and not portable else None).run(None, feeds)
            except Exception as e:
                fail("ONNX Runtime refuses a written model", where, e)
                continue
            counts["run in ONNX Runtime"] += 1
            if not (w["exact"] or w["revert"]):
                continue
            limit = 1e-6 if w["revert"] else tol
            for want, out in zip(ref, got):
                if want.shape != out.shape:
                    fail("wrong output (ONNX Runtime)", where, f"shape {out.shape} != {want.shape}")
                    break
                if want.dtype.kind != "f":
                    if not np.array_equal(want, out):
                        fail("wrong output (ONNX Runtime)", where, "integer output differs")
                    continue
                a, b = want.astype(np.float64), out.astype(np.float64)
                both_nan = np.isnan(a) & np.isnan(b)
                err = np.where(both_nan, 0.0, np.abs(a - b) / np.maximum(1.0, np.abs(a)))
                if np.isnan(err).any() or float(np.max(err, initial=0.0)) > limit:
                    fail("wrong output (ONNX Runtime)", where, f"max scaled error {np.nanmax(err)} > {limit}")
                    break
            else:
                counts["claimed-exact or reverted outputs checked in ONNX Runtime"] += 1

    for k, v in counts.items():
        print(f"{k}: {v}")
    for cls, items in sorted(failures.items()):
        print(f"FAIL [{cls}] x{len(items)}")
        for it in items[:10]:
            print(f"    {it}")
    total = sum(len(v) for v in failures.values())
    print(f"{counts['written models'] - total} passed, {total} failed")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
