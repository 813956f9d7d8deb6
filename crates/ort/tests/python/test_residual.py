"""ai.adanorm version 2 in onnxruntime: the residual inputs `Skip` and `Bias` and the output `Sum`
against the float64 reference, against the Add nodes they replace (run by onnxruntime itself),
and the version rules (version-1 nodes unchanged under a version-2 import)."""

import itertools
import unittest

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

import adanorm_testlib as lib
from adanorm_testlib import DTYPES, run_case

VERSION_RULE = "Skip, Bias and Sum need ai.adanorm version 2"
SKIP_RULE = "Skip must be unidirectionally broadcastable to X"
BIAS_RULE = "Bias must be unidirectionally broadcastable to X.shape[axis:]"

# X is (2, 3, 8): X's own shape, the row suffixes, and broadcasts the kernel expands.
SKIP_SHAPES = [[2, 3, 8], [3, 8], [1, 3, 8], [8], [2, 1, 8], [3, 1], [1]]


class AgainstTheReference(unittest.TestCase):
    def test_every_skip_form_bias_and_sum(self):
        for op, axis, skip, bias, outputs in itertools.product(
                ["AdaNorm", "LayerNormSimple"], [-1, 1], SKIP_SHAPES + [None], [None, [8]],
                [("Y", "Mean", "InvStdDev", "Sum"), ("Y", "", "", "Sum"), ("Y", "", "InvStdDev")]):
            if skip is None and bias is None and "Sum" not in outputs:
                continue
            with self.subTest(op=op, axis=axis, skip=skip, bias=bias, outputs=outputs):
                attrs = {"c": 1.5, "k": 0.25} if op == "AdaNorm" else {}
                run_case(self, op, "float32", x_shape=(2, 3, 8), axis=axis, scale_shape=[8],
                         bias_shape=[8], skip_shape=skip, residual_bias_shape=bias,
                         outputs=outputs, attrs=attrs, opset=2)

    def test_every_type(self):
        for op, dtype in itertools.product(["AdaNorm", "LayerNormSimple"], DTYPES):
            with self.subTest(op=op, dtype=dtype):
                run_case(self, op, dtype, x_shape=(4, 6, 32), scale_shape=[32], bias_shape=[32],
                         skip_shape=[4, 6, 32], residual_bias_shape=[32],
                         outputs=("Y", "Mean", "InvStdDev", "Sum"), opset=2, offset=3.0)

    def test_many_rows_on_the_thread_pool(self):
        # Chunks of rows run on pool threads, each with its own first row of Skip.
        for threads, skip in itertools.product([1, 2, 4], [[64, 768], [1, 64, 768], [16, 1, 768]]):
            with self.subTest(threads=threads, skip=skip):
                run_case(self, "AdaNorm", "float32", x_shape=(16, 64, 768), scale_shape=[768],
                         bias_shape=[768], skip_shape=skip, residual_bias_shape=[768],
                         outputs=("Y", "", "InvStdDev", "Sum"), threads=threads, opset=2)

    def test_a_version_1_node_in_a_version_2_model(self):
        # The same node, imported as version 1 and as version 2, computes the same.
        x = lib.quantize(np.random.default_rng(9).standard_normal((5, 24)), "float32")
        a = run_case(self, "AdaNorm", x=x, scale_shape=[24], outputs=("Y", "Mean"), opset=1)
        b = run_case(self, "AdaNorm", x=x, scale_shape=[24], outputs=("Y", "Mean"), opset=2)
        np.testing.assert_array_equal(a["Y"], b["Y"])


def add_add_layer_norm(dtype, x_shape, skip_shape, with_sum):
    """The unfused graph version 2 replaces: Add(X, Bias) -> Add(., Skip) -> LayerNormalization,
    with the sum as an output too when `with_sum`."""
    elem = lib.ONNX_TYPE[dtype]
    h = x_shape[-1]
    nodes = [helper.make_node("Add", ["X", "Bias"], ["XB"]),
             helper.make_node("Add", ["XB", "Skip"], ["S"]),
             helper.make_node("LayerNormalization", ["S", "Scale", "B"], ["Y"], axis=-1, epsilon=1e-5)]
    outputs = [helper.make_tensor_value_info("Y", elem, None)]
    if with_sum:
        outputs.append(helper.make_tensor_value_info("S", elem, None))
    graph = helper.make_graph(nodes, "residual", [
        helper.make_tensor_value_info("X", elem, list(x_shape)),
        helper.make_tensor_value_info("Scale", elem, [h]),
        helper.make_tensor_value_info("B", elem, [h]),
        helper.make_tensor_value_info("Skip", elem, list(skip_shape)),
        helper.make_tensor_value_info("Bias", elem, [h])], outputs)
    return helper.make_model(graph, ir_version=lib.IR_VERSION, opset_imports=[helper.make_opsetid("", 17)])


class AgainstTheAddsItReplaces(unittest.TestCase):
    def test_sum_is_the_adds_output_and_y_their_layer_norm(self):
        # Sum must be bit for bit what onnxruntime's own Adds compute; Y what its
        # LayerNormalization computes from that, within the spec's tolerance.
        for dtype, skip in itertools.product(["float32", "float16", "float64"],
                                             [[8, 16, 64], [16, 64], [8, 1, 64]]):
            with self.subTest(dtype=dtype, skip=skip):
                rng = np.random.default_rng(len(skip))
                feeds = {"X": lib.quantize(rng.standard_normal((8, 16, 64)) * 4, dtype),
                         "Scale": lib.quantize(rng.standard_normal(64) + 1, dtype),
                         "B": lib.quantize(rng.standard_normal(64), dtype),
                         "Skip": lib.quantize(rng.standard_normal(skip) * 4, dtype),
                         "Bias": lib.quantize(rng.standard_normal(64), dtype)}
                # Unoptimised: onnxruntime would otherwise fuse the Adds into its own
                # SkipLayerNormalization, whose float16 sum is rounded once, not per Add.
                so = lib.session_options()
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                theirs = lib.make_session(add_add_layer_norm(dtype, (8, 16, 64), skip, True), so=so)
                y_ref, s_ref = theirs.run(["Y", "S"], feeds)
                ours = lib.make_session(lib.build_model(
                    "LayerNormSimple", dtype, (8, 16, 64), [64], [64], outputs=("Y", "", "", "Sum"),
                    skip_shape=skip, residual_bias_shape=[64], opset=2))
                y, s = ours.run(["Y", "Sum"], feeds)
                if dtype == "float16":
                    # onnxruntime's CPU provider has no float16 Add: it runs both Adds in float32
                    # and drops the Cast between them, so its sum is rounded once. The spec (and
                    # ONNX) round per Add: Sum is the spec's, and differs from theirs by at most
                    # the first Add's rounding plus the last's.
                    np.testing.assert_array_equal(s, lib.residual_sum(
                        feeds["X"], feeds["Skip"], feeds["Bias"], dtype).astype(np.float16))
                    first = (feeds["X"] + feeds["Bias"]).astype(np.float16)
                    bound = (np.spacing(np.abs(first)).astype(np.float32) / 2
                             + np.spacing(np.abs(s_ref)).astype(np.float32))
                    diff = np.abs(s.astype(np.float32) - s_ref.astype(np.float32))
                    self.assertTrue((diff <= bound).all(), f"{diff.max()} > bound")
                else:
                    np.testing.assert_array_equal(s, s_ref)
                tol = 1e-2 if dtype == "float16" else 1e-4
                lib.assert_close(self, y, y_ref, tol, f"{dtype} Y vs Add+Add+LayerNormalization")


class VersionRules(unittest.TestCase):
    def assert_refused(self, model, *fragments):
        with self.assertRaises(Exception) as ctx:
            sess = lib.make_session(model)
            sess.run(None, {i.name: np.ones([d.dim_value for d in i.type.tensor_type.shape.dim],
                                            np.float32) for i in model.graph.input})
        for fragment in ("n0",) + fragments:
            self.assertIn(fragment, str(ctx.exception))

    def test_residual_slots_run_under_either_import(self):
        # onnxruntime picks custom kernels by the schema's version, not the model's import, so
        # the library cannot refuse version 2's slots under a version-1 import (tract does).
        a = run_case(self, "AdaNorm", skip_shape=[2, 3, 8], outputs=("Y", "", "", "Sum"), opset=1)
        b = run_case(self, "AdaNorm", skip_shape=[2, 3, 8], outputs=("Y", "", "", "Sum"), opset=2)
        np.testing.assert_array_equal(a["Y"], b["Y"])

    def test_empty_residual_slots_are_absent(self):
        model = lib.build_model("AdaNorm", "float32", (2, 8), inputs=["X", "", "", ""], opset=1)
        y = lib.make_session(model).run(None, {"X": np.ones((2, 8), np.float32)})[0]
        self.assertEqual(y.shape, (2, 8))

    def test_bad_skip_and_bias_shapes_and_types(self):
        self.assert_refused(lib.build_model("AdaNorm", "float32", (2, 8), skip_shape=[3, 8], opset=2),
                            SKIP_RULE, "Skip has shape [3, 8]")
        self.assert_refused(lib.build_model("AdaNorm", "float32", (2, 8), residual_bias_shape=[4], opset=2),
                            BIAS_RULE, "Bias has shape [4]")
        model = lib.build_model("AdaNorm", "float32", (2, 8), skip_shape=[2, 8], opset=2)
        model.graph.input[1].type.tensor_type.elem_type = TensorProto.DOUBLE
        with self.assertRaises(Exception) as ctx:
            lib.make_session(model)
        self.assertIn("Skip", str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
