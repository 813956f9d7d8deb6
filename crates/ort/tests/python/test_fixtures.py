"""Whole models through the library: a model file, its inputs and reference outputs.

A case is a directory in the zoo layout (fixtures/zoo/README.md): `inputs.npz` (keys = graph
input names), `ref_output.npz` (keys = graph output names) and a model. The model is the first
that exists of `model.adanorm.onnx`, `model.fused.onnx`, `model.onnx`, so a rewritten copy placed
next to the original is what gets tested. Tolerance: ops-spec's 1e-4 (1e-2 for fp16 models, i.e.
a directory whose name contains "fp16").

Cases come from `ADANORM_ORT_FIXTURES` (directories separated by ':'), else from every directory
under crates/ort/tests/fixtures/. To add the zoo after `fuse`/`rewrite`: write the rewritten model
into each case directory (or a copy of it) and list the directories in ADANORM_ORT_FIXTURES, or
extend `cases()`.
"""

import glob
import os
import tempfile
import unittest

import numpy as np

import adanorm_testlib as lib

MODEL_NAMES = ["model.adanorm.onnx", "model.fused.onnx", "model.onnx"]


def case_of(directory):
    """(name, model, inputs, reference, tol) for a case directory, or None if incomplete."""
    model = next((os.path.join(directory, m) for m in MODEL_NAMES
                  if os.path.exists(os.path.join(directory, m))), None)
    inputs = os.path.join(directory, "inputs.npz")
    ref = os.path.join(directory, "ref_output.npz")
    if model is None or not (os.path.exists(inputs) and os.path.exists(ref)):
        return None
    name = os.path.basename(os.path.normpath(directory))
    return name, model, inputs, ref, (1e-2 if "fp16" in name else 1e-4)


def cases():
    listed = os.environ.get("ADANORM_ORT_FIXTURES")
    dirs = listed.split(":") if listed else sorted(glob.glob(os.path.join(lib.HERE, "..", "fixtures", "*", "")))
    return [c for c in (case_of(d) for d in dirs if d) if c is not None]


def check_case(testcase, case, threads=1):
    name, model, inputs, ref, tol = case
    with np.load(inputs) as i, np.load(ref) as r:
        try:
            return lib.check_model_case(testcase, model, dict(i), dict(r), tol=tol, threads=threads)
        except Exception as e:  # an old runtime that cannot load the model at all
            if "Unsupported model IR version" in str(e):
                testcase.skipTest(f"{name}: this onnxruntime cannot load the model's IR version ({e})")
            # A standard domain at a version newer than this runtime knows: the original's own
            # imports (onnxruntime.quantization writes ai.onnx.ml 5), not the rewrite's.
            if "is under development and support for this is limited" in str(e) and not original_loads(model):
                testcase.skipTest(f"{name}: this onnxruntime refuses the original model's opset imports ({e})")
            raise


def original_loads(model):
    """Whether this onnxruntime loads the unrewritten model the case was made from
    (`original.onnx` beside it, which scripts/build-ort-fixtures links; without one: yes)."""
    original = os.path.join(os.path.dirname(model), "original.onnx")
    if not os.path.exists(original):
        return True
    try:
        lib.ort.InferenceSession(original, providers=["CPUExecutionProvider"])
        return True
    except Exception:  # noqa: BLE001 - any refusal means the same: the original does not load
        return False


class Fixtures(unittest.TestCase):
    def test_fixture_cases(self):
        found = cases()
        if not found:
            self.skipTest("no fixture cases (set ADANORM_ORT_FIXTURES or add crates/ort/tests/fixtures/<case>/)")
        for case in found:
            for threads in (1, 2):
                with self.subTest(case=case[0], threads=threads):
                    check_case(self, case, threads)

    def test_the_case_mechanism_itself(self):
        # A generated case in the same layout must pass, and a wrong reference must fail.
        rng = np.random.default_rng(11)
        x = rng.standard_normal((2, 8, 64)).astype(np.float32)
        scale = rng.standard_normal(64).astype(np.float32)
        model = lib.build_model("AdaNorm", "float32", x.shape, [64], attrs={"unbiased": 1, "eps_in_sqrt": 0})
        y = lib.reference(x, scale, unbiased=1, eps_in_sqrt=0)[0].astype(np.float32)
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "model.adanorm.onnx"), "wb") as f:
                f.write(model.SerializeToString())
            np.savez(os.path.join(d, "inputs.npz"), X=x, Scale=scale)
            np.savez(os.path.join(d, "ref_output.npz"), Y=y)
            case = case_of(d)
            self.assertIsNotNone(case)
            check_case(self, case)
            np.savez(os.path.join(d, "ref_output.npz"), Y=y + 1e-3)
            with self.assertRaises(AssertionError):
                check_case(self, case)


if __name__ == "__main__":
    unittest.main()
