"""The Python stage of the differential fuzzer (tests/it/fuzz_rewrites.rs): every model the fuzzer
wrote, judged by the reference tools the Rust side does not have.

    ADANORM_FUZZ_KEEP=DIR cargo test --test it fuzz_rewrites      # writes DIR/<seed>/...
    .venv/bin/python tests/python/fuzz_check.py DIR [--ort-lib target/debug/libadanorm_ort.so]

Each DIR/<seed>/ holds `original.onnx`, the written models and `manifest.json`:
{"seed": n, "half": bool, "models": [{"file", "command", "exact", "revert"}]}.

For every written model: `onnx.checker.check_model(full_check=True)` and strict shape inference
(what `onnx.checker` calls a valid model); then, where ONNX Runtime can run it (no `ai.adanorm`
node, a `--portable` model, a reverted one, or any model when the custom-op library is given), its
outputs against the original's in ONNX Runtime: claimed-exact rewrites within the ops-spec
tolerances (1e-4 scaled, 3e-2 with float16), reverts within 1e-6. Prints counts and failures by
class; exits 1 if any, or if there was nothing to check.

What the original itself fails is not held against the tool: where onnx.checker refuses the
original, the written models are not checked by it either; where ONNX Runtime refuses or crashes
on the original, the case is not judged in ONNX Runtime. Each case runs in a child process, so a
crash inside ONNX Runtime is attributed to the model it was loading and the other cases still
run (seen: ORT 1.32 segfaults on an opset-14 model-local function whose LayerNormalization reads
its epsilon from a function attribute).
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


def feeds_for(session, seed, dims=None):
    """Random inputs of the declared types (integers 0 or 1: in range of any table); a dynamic
    dimension's size from `dims` by name, else 2. None for a type it cannot make."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d >= 0 else (dims or {}).get(d, 2) for d in i.shape]
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


def with_output_shapes(model, types):
    """Gives the main graph's outputs that have no shape the type in `types` (by name)."""
    for o in model.graph.output:
        if not o.type.tensor_type.HasField("shape") and o.name in types:
            o.type.CopyFrom(types[o.name])


def check_case(d, lib, counts, fail, progress):
    """Judges one kept case; `progress(text)` says what is being loaded, for crash reports."""
    with open(os.path.join(d, "manifest.json")) as f:
        m = json.load(f)
    counts["graphs"] += 1
    original = os.path.join(d, "original.onnx")
    # The generator leaves graph outputs without a shape (unknown rank), which onnx.checker
    # refuses at the top level; the tool copies them as they are. Both sides get the shapes
    # ONNX shape inference finds for the original's outputs, then the checker judges.
    out_types = {}
    checker_ok = True
    try:
        m0 = onnx.load(original)
        inferred = onnx.shape_inference.infer_shapes(m0)
        out_types = {o.name: o.type for o in inferred.graph.output if o.type.tensor_type.HasField("shape")}
        with_output_shapes(m0, out_types)
        onnx.checker.check_model(m0, full_check=True)
    except Exception:
        checker_ok = False
        counts["originals onnx.checker refuses (written models not checked by it)"] += 1
    ref = feeds = None
    progress("original")
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
        where = f"seed {m['seed']} {w['command']} ({w['file']})"
        counts["written models"] += 1
        try:
            model = onnx.load(path)
            if checker_ok:
                checked = onnx.ModelProto()
                checked.CopyFrom(model)
                with_output_shapes(checked, out_types)
                onnx.checker.check_model(checked, full_check=True)
                onnx.shape_inference.infer_shapes(checked, strict_mode=True, check_type=True)
                counts["written models onnx.checker and strict shape inference accept"] += 1
        except Exception as e:
            fail("onnx.checker / strict shape inference", where, e)
            continue
        custom = any(n.domain == "ai.adanorm" for n in nodes_everywhere(model.graph))
        portable = any(f.domain == "ai.adanorm" for f in model.functions)
        if ref is None or (custom and not portable and not lib):
            continue
        progress(where)
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
                    break
                continue
            a, b = want.astype(np.float64), out.astype(np.float64)
            # Equal values (the same infinity included: a float16 overflow in the original and
            # its revert) and NaN on both sides agree; an infinity on one side only does not.
            agree = (a == b) | (np.isnan(a) & np.isnan(b))
            with np.errstate(invalid="ignore"):
                err = np.where(agree, 0.0, np.abs(a - b) / np.maximum(1.0, np.abs(a)))
            if np.isnan(err).any() or float(np.max(err, initial=0.0)) > limit:
                fail("wrong output (ONNX Runtime)", where, f"max scaled error {np.nanmax(err)} > {limit}")
                break
        else:
            counts["claimed-exact or reverted outputs checked in ONNX Runtime"] += 1


def in_child(d, lib):
    """Runs check_case in a forked child: (counts, failures, None) or, if the child died,
    the partial results and what it was loading."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = os.fdopen(w, "w")
        counts = collections.Counter()
        failures = []

        def fail(cls, where, why):
            failures.append((cls, f"{where}: {str(why).splitlines()[0][:300] if str(why) else ''}"))

        def progress(text):
            out.write(json.dumps({"loading": text}) + "\n")
            out.flush()

        code = 0
        try:
            check_case(d, lib, counts, fail, progress)
        except Exception as e:  # the checker's own bug: report it, do not hide it
            failures.append(("fuzz_check.py error", f"{d}: {e!r}"))
        out.write(json.dumps({"counts": counts, "failures": failures}) + "\n")
        out.flush()
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    _, status = os.waitpid(pid, 0)
    done = [x for x in lines if "counts" in x]
    if done:
        return collections.Counter(done[0]["counts"]), done[0]["failures"], None
    loading = [x["loading"] for x in lines if "loading" in x]
    why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {status}"
    return collections.Counter(), [], (loading[-1] if loading else "before loading", why)


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
    for case in sorted(os.listdir(root), key=lambda c: (len(c), c)):
        d = os.path.join(root, case)
        if not os.path.exists(os.path.join(d, "manifest.json")):
            continue
        got, fails, crash = in_child(d, lib)
        counts.update(got)
        for cls, text in fails:
            failures[cls].append(text)
        if crash is None:
            continue
        loading, why = crash
        if loading == "original":
            counts["graphs"] += 1
            counts["originals ONNX Runtime crashes on (not judged in ORT)"] += 1
        else:
            # ONNX Runtime ran the original and dies on what the tool wrote: a user's process
            # would too. The case's other models are not checked.
            counts["graphs"] += 1
            failures["ONNX Runtime crashes on a written model"].append(f"case {case}: {loading} ({why})")

    for k, v in sorted(counts.items()):
        print(f"{k}: {v}")
    for cls, items in sorted(failures.items()):
        print(f"FAIL [{cls}] x{len(items)}")
        for it in items[:10]:
            print(f"    {it}")
    total = sum(len(v) for v in failures.values())
    print(f"{counts['written models'] - total} passed, {total} failed")
    if counts["written models"] == 0:
        print(f"nothing to check in {root}: was the fuzzer run with ADANORM_FUZZ_KEEP?")
        return 1
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
