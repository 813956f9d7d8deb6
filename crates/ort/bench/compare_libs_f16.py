"""Two builds of libadanorm_ort side by side in one process (float16, 1 thread, [64, 128, 768]):
the version-1 AdaNorm with Scale/B and the version-2 residual node, against ONNX Runtime's own
ops. Usage: python crates/ort/bench/compare_libs_f16.py OLD.so NEW.so (BENCHMARKS.md, "float16
before and after F16C")."""
import numpy as np, sys, statistics
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
import bench_ort as b, bench_residual as br
OLD, NEW = sys.argv[1], sys.argv[2]
shape = (64, 128, 768)
x = (np.random.default_rng(1).standard_normal(shape) + 3).astype("float16")
ms = b.models("float16", 768)
run = {"v1 old": b.Runner(ms["adanorm_affine"], x, 1, OLD), "v1 new": b.Runner(ms["adanorm_affine"], x, 1, NEW),
       "ORT LN": b.Runner(ms["layernorm"], x, 1, NEW)}
rng = np.random.default_rng(2)
feeds = {"X": x, "Skip": rng.standard_normal(shape).astype("float16")}
for ws in (False, True):
    m = br.models("float16", shape, ws)
    run[f"v2 old sum={ws}"] = br.Runner(m["v2"], feeds, 1, OLD, ws)
    run[f"v2 new sum={ws}"] = br.Runner(m["v2"], feeds, 1, NEW, ws)
    run[f"ORT adds+LN sum={ws}"] = br.Runner(m["ort_best"], feeds, 1, NEW, ws)
for _ in range(5):
    for r in run.values(): r.once()
t = {k: [] for k in run}
for _ in range(30):
    for k, r in run.items(): t[k].append(r.once())
for k, v in t.items():
    print(f"| {k} | {statistics.median(v)*1e3:.2f} ({min(v)*1e3:.2f}) |")
