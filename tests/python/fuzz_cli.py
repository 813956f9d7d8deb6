"""Mutation fuzzing of the CLI on real models: each case is a fixture model with a few random
edits (inputs rewired, attributes and small constants set to extreme values, op types swapped,
nodes deleted, made to read their own output or stripped of their outputs, readers without a
result added, declared dimensions changed). `inspect`,
`fuse`, `rewrite` and `revert` of the result must each end with exit code 0, 1 or 2, never a
signal, an abort or a panic; a failing command writes no output file and leaves its input as it
was. Seeded, so a failure reproduces: the offending model is kept and its path printed.

    python tests/python/fuzz_cli.py BINARY [CASES] [SEED]
"""
import glob
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCES = sorted(
    p for d in ("zoo", "normops", "subgraphs", "functions")
    for p in glob.glob(os.path.join(ROOT, "fixtures", d, "*", "model.onnx"))
)
OPS = ["Sqrt", "Pow", "Reshape", "Expand", "Concat", "Shape", "ReduceSum", "ReduceMean",
       "Unsqueeze", "InstanceNormalization", "MeanVarianceNormalization", "BatchNormalization",
       "LayerNormalization", "Div", "Sub", "Gather", "Slice", "Cast", "CastLike", "Identity", "If",
       "Max", "Clip", "Relu", "Where", "Greater", "ReduceSumSquare"]
EXTREME_INTS = [-1, 0, 1, 2, 5, -7, 1 << 40, -(1 << 40)]
EXTREME_FLOATS = [0.0, -1.0, float("nan"), float("inf"), 1e30]


def mutate(m, rng):
    g = m.graph
    values = [o for n in g.node for o in n.output] + [t.name for t in g.initializer]
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(10)
        node = rng.choice(g.node) if g.node else None
        if node is None:
            return
        if kind == 0 and node.input:
            node.input[rng.randrange(len(node.input))] = rng.choice(values)
        elif kind == 1:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.INT:
                    a.i = rng.choice(EXTREME_INTS)
                elif a.type == onnx.AttributeProto.INTS and a.ints:
                    a.ints[rng.randrange(len(a.ints))] = rng.choice(EXTREME_INTS)
                elif a.type == onnx.AttributeProto.FLOAT:
                    a.f = rng.choice(EXTREME_FLOATS)
        elif kind == 2 and g.initializer:
            t = rng.choice(g.initializer)
            a = numpy_helper.to_array(t)
            if a.size <= 16 and a.dtype.kind == "i":
                info = np.iinfo(a.dtype)
                v = [x for x in rng.choice([[-1], [0], [1 << 30], [3, 2], [-5, 7, 1]])]
                t.CopyFrom(numpy_helper.from_array(np.clip(v, info.min, info.max).astype(a.dtype), t.name))
            elif a.size <= 16 and a.dtype.kind == "f":
                with np.errstate(all="ignore"):
                    a = (a * rng.choice([0.0, -1.0, float("nan"), 1e30])).astype(a.dtype)
                t.CopyFrom(numpy_helper.from_array(a, t.name))
        elif kind == 3:
            node.op_type = rng.choice(OPS)
        elif kind == 4:
            g.node.remove(node)
        elif kind == 5 and g.value_info:
            for d in rng.choice(g.value_info).type.tensor_type.shape.dim:
                if rng.random() < 0.5:
                    d.dim_value = rng.choice([0, 1, -3, 1 << 40, 7])
                else:
                    d.dim_param = rng.choice(["batch", "seq", "x", ""])
        elif kind == 6 and node.output:
            node.input.append(node.output[0])
        elif kind == 7 and node.op_type == "Shape":
            node.attribute.append(helper.make_attribute("start", rng.choice([-100, 3, 1 << 40])))
        elif kind == 8 and node.output:
            # A reader with no result (or an omitted one) of some value.
            g.node.append(helper.make_node(rng.choice(["Mul", "Add", "Identity", "Cast"]),
                                           [rng.choice(values)] * 2, rng.choice([[], [""]])))
        elif kind == 9:
            del node.output[:]


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    binary = sys.argv[1]
    cases = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 20261126
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="adanorm-fuzz-")
    failures = []
    runs = 0
    for case in range(cases):
        src = rng.choice(SOURCES)
        m = onnx.load(src, load_external_data=False)
        mutate(m, rng)
        model = os.path.join(work, "m.onnx")
        with open(model, "wb") as f:
            f.write(m.SerializeToString())
        before = sha(model)
        out, weights = os.path.join(work, "out.onnx"), os.path.join(work, "w.safetensors")
        commands = [
            ["inspect", model, "--json"],
            ["fuse", model, "-o", out],
            ["rewrite", model, "-o", out, "--affine", rng.choice(["keep", "fold", "drop"]),
             "--weights-out", weights, "--portable"],
        ]
        for i, cmd in enumerate(commands):
            for f in (out, weights):
                if os.path.exists(f):
                    os.remove(f)
            runs += 1
            try:
                r = subprocess.run([binary] + cmd, capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                failures.append((case, src, cmd[0], "timed out"))
                break
            problem = None
            if r.returncode not in (0, 1, 2):
                problem = f"exit code {r.returncode}"
            elif "panicked" in r.stderr:
                problem = "panicked"
            elif r.returncode != 0 and cmd[0] != "inspect" and os.path.exists(out):
                problem = "an output file was left by a failing command"
            elif sha(model) != before:
                problem = "the input changed"
            elif r.returncode == 0 and cmd[0] == "rewrite" and os.path.exists(out):
                back = [binary, "revert", out, "-o", os.path.join(work, "back.onnx"), "--force"]
                if os.path.exists(weights):
                    back += ["--weights", weights]
                runs += 1
                rr = subprocess.run(back, capture_output=True, text=True, timeout=60)
                if rr.returncode not in (0, 1, 2) or "panicked" in rr.stderr:
                    problem = f"revert: exit code {rr.returncode} {rr.stderr[-300:]}"
            if problem:
                keep = os.path.join(work, f"case{case}.onnx")
                shutil.copy(model, keep)
                failures.append((case, src, cmd[0], f"{problem}; model kept at {keep}; {r.stderr[-300:]}"))
                break
    print(f"fuzz: {cases} mutated models, {runs} commands, {len(failures)} failures (seed {seed})")
    for f in failures:
        print("  case %d from %s, %s: %s" % f)
    if failures:
        sys.exit(1)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
