"""Numerics: every op, element type and attribute combination against the float64 reference."""

import itertools
import unittest

import numpy as np
from onnx import TensorProto, helper

import adanorm_testlib as lib
from adanorm_testlib import DTYPES, run_case


class EveryCombination(unittest.TestCase):
    def test_ops_dtypes_variance_and_epsilon_forms(self):
        # 2 ops x 4 types x unbiased x eps_in_sqrt, with Scale, B and both statistics.
        for op, dtype, unbiased, eps_in_sqrt in itertools.product(
                ["AdaNorm", "LayerNormSimple"], DTYPES, [0, 1], [0, 1]):
            with self.subTest(op=op, dtype=dtype, unbiased=unbiased, eps_in_sqrt=eps_in_sqrt):
                attrs = {"unbiased": unbiased, "eps_in_sqrt": eps_in_sqrt, "epsilon": 1e-3}
                if op == "AdaNorm":
                    attrs.update(c=1.5, k=0.25)
                run_case(self, op, dtype, x_shape=(3, 5, 16), scale_shape=[16], bias_shape=[16],
                         attrs=attrs, seed=len(attrs) + unbiased * 2 + eps_in_sqrt)

    def test_defaults(self):
        for op, dtype in itertools.product(["AdaNorm", "LayerNormSimple"], DTYPES):
            with self.subTest(op=op, dtype=dtype):
                run_case(self, op, dtype, x_shape=(4, 32))

    def test_adanorm_with_k0_c1_is_layernormsimple(self):
        x = np.random.default_rng(3).standard_normal((5, 24)).astype(np.float32)
        a = run_case(self, "AdaNorm", x=x, attrs={"k": 0.0, "c": 1.0}, outputs=("Y",))
        b = run_case(self, "LayerNormSimple", x=x, outputs=("Y",))
        np.testing.assert_array_equal(a["Y"], b["Y"])

    def test_layernormsimple_matches_onnx_layernormalization(self):
        # With Scale and B, unbiased=0, eps_in_sqrt=1 it is exactly ONNX LayerNormalization.
        rng = np.random.default_rng(4)
        x = rng.standard_normal((6, 10, 32)).astype(np.float32)
        g = rng.standard_normal(32).astype(np.float32)
        b = rng.standard_normal(32).astype(np.float32)
        ours = lib.make_session(lib.build_model("LayerNormSimple", "float32", x.shape, [32], [32]))
        node = helper.make_node("LayerNormalization", ["X", "Scale", "B"], ["Y"], axis=-1, epsilon=1e-5)
        graph = helper.make_graph([node], "ln", [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape)),
            helper.make_tensor_value_info("Scale", TensorProto.FLOAT, [32]),
            helper.make_tensor_value_info("B", TensorProto.FLOAT, [32])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, ir_version=lib.IR_VERSION, opset_imports=[helper.make_opsetid("", 17)])
        theirs = lib.make_session(model)
        feeds = {"X": x, "Scale": g, "B": b}
        np.testing.assert_allclose(ours.run(None, feeds)[0], theirs.run(None, feeds)[0], atol=2e-5, rtol=1e-5)


class ScaleAndBias(unittest.TestCase):
    def test_presence(self):
        for dtype in DTYPES:
            for scale, bias in itertools.product([None, [16]], [None, [16]]):
                with self.subTest(dtype=dtype, scale=scale, bias=bias):
                    run_case(self, "AdaNorm", dtype, x_shape=(3, 16), scale_shape=scale, bias_shape=bias)

    def test_skipped_scale_with_bias(self):
        # ["X", "", "B"]: onnxruntime < 1.24 would crash here if shape inference were registered.
        for dtype in DTYPES:
            with self.subTest(dtype=dtype):
                run_case(self, "LayerNormSimple", dtype, x_shape=(3, 16), bias_shape=[16],
                         inputs=["X", "", "B"])

    def test_skipped_scale_with_undeclared_intermediate(self):
        # X -> LayerNormSimple(X, "", B) -> Y -> Relu, Y declared nowhere. onnxruntime derives
        # Y's type from the registered records; before 1.24 it cannot when an input is skipped
        # and refuses the model with an error naming the node (declaring Y, as exporters do via
        # value_info, or passing Scale avoids it). It must never crash.
        node = helper.make_node("LayerNormSimple", ["X", "", "B"], ["Y"], domain=lib.DOMAIN, name="skip0")
        relu = helper.make_node("Relu", ["Y"], ["Z"])
        graph = helper.make_graph([node, relu], "g",
                                  [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 8]),
                                   helper.make_tensor_value_info("B", TensorProto.FLOAT, [8])],
                                  [helper.make_tensor_value_info("Z", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, ir_version=lib.IR_VERSION,
                                  opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(lib.DOMAIN, 1)])
        if not lib.HAS_SHAPE_INFERENCE:
            with self.assertRaisesRegex(Exception, r"skip0.*type inference failed|type inference failed.*skip0"):
                lib.make_session(model)
            model.graph.value_info.append(helper.make_tensor_value_info("Y", TensorProto.FLOAT, None))
        x = np.random.default_rng(7).standard_normal((3, 8)).astype(np.float32)
        b = np.random.default_rng(8).standard_normal(8).astype(np.float32)
        (z,) = lib.make_session(model).run(None, {"X": x, "B": b})
        y, _, _ = lib.reference(x, None, b, op="LayerNormSimple")
        lib.assert_close(self, z, np.maximum(y, 0), 1e-5, "Relu(LayerNormSimple(X, '', B))")

    def test_broadcast_shapes(self):
        # axis = 1 on (2, 3, 4, 5): X.shape[axis:] = (3, 4, 5).
        for shape in ([5], [1, 5], [4, 1], [4, 5], [3, 1, 5], [3, 4, 5], [1], [1, 1, 1], []):
            with self.subTest(scale=shape):
                run_case(self, "AdaNorm", "float32", x_shape=(2, 3, 4, 5), axis=1,
                         scale_shape=shape, bias_shape=[4, 5])
            with self.subTest(bias=shape):
                run_case(self, "LayerNormSimple", "float64", x_shape=(2, 3, 4, 5), axis=1,
                         scale_shape=[3, 1, 1], bias_shape=shape)


class Axes(unittest.TestCase):
    def test_every_axis(self):
        for dtype in ["float32", "float16"]:
            for axis in [0, 1, 2, -1, -2, -3]:
                with self.subTest(dtype=dtype, axis=axis):
                    shape = (3, 4, 6)
                    a = axis + 3 if axis < 0 else axis
                    run_case(self, "AdaNorm", dtype, x_shape=shape, axis=axis,
                             scale_shape=list(shape[a:]), bias_shape=[shape[-1]])

    def test_rank_1(self):
        run_case(self, "AdaNorm", "float32", x_shape=(40,), scale_shape=[40])
        run_case(self, "LayerNormSimple", "float64", x_shape=(7,), axis=0)


class Outputs(unittest.TestCase):
    def test_subsets_of_outputs(self):
        for outputs in [("Y",), ("Y", "Mean"), ("Y", "", "InvStdDev"), ("Y", "Mean", "InvStdDev")]:
            for dtype in DTYPES:
                with self.subTest(outputs=outputs, dtype=dtype):
                    run_case(self, "AdaNorm", dtype, x_shape=(2, 5, 8), outputs=outputs,
                             attrs={"unbiased": 1})

    def test_stats_shape_keeps_rank(self):
        got = run_case(self, "AdaNorm", "float32", x_shape=(2, 3, 4), axis=1)
        self.assertEqual(got["Mean"].shape, (2, 1, 1))
        self.assertEqual(got["InvStdDev"].shape, (2, 1, 1))


class Edges(unittest.TestCase):
    def test_large_mean_rows_stay_accurate(self):
        rng = np.random.default_rng(5)
        x = (1e4 + rng.standard_normal((8, 512))).astype(np.float32)
        run_case(self, "LayerNormSimple", "float32", x=x, attrs={"epsilon": 0.0})
        run_case(self, "AdaNorm", "float32", x=x, attrs={"unbiased": 1, "eps_in_sqrt": 0})

    def test_many_rows_many_chunks_two_threads(self):
        # Hundreds of thread-pool chunks, and rows longer than one chunk.
        for shape, threads in [((64, 128, 768), 2), ((4, 70000), 2), ((64, 128, 768), 1)]:
            with self.subTest(shape=shape, threads=threads):
                run_case(self, "AdaNorm", "float32", x_shape=shape, scale_shape=[shape[-1]],
                         bias_shape=[shape[-1]], threads=threads, offset=3.0)
        run_case(self, "AdaNorm", "float16", x_shape=(32, 64, 256), scale_shape=[256], threads=2)
        run_case(self, "LayerNormSimple", "bfloat16", x_shape=(32, 64, 256), bias_shape=[256], threads=2)

    def test_empty_tensors(self):
        # No rows: empty Y and statistics.
        got = run_case(self, "AdaNorm", "float32", x_shape=(0, 8), scale_shape=[8])
        self.assertEqual(got["Y"].shape, (0, 8))
        self.assertEqual(got["Mean"].shape, (0, 1))
        # Empty rows: Y is empty, the statistics of an empty row are NaN (0/0).
        got = run_case(self, "LayerNormSimple", "float64", x_shape=(3, 0))
        self.assertEqual(got["Y"].shape, (3, 0))
        self.assertTrue(np.isnan(got["Mean"]).all() and np.isnan(got["InvStdDev"]).all())

    def test_unbiased_single_element_rows_are_nan(self):
        got = run_case(self, "AdaNorm", "float32", x_shape=(4, 1), attrs={"unbiased": 1})
        self.assertTrue(np.isnan(got["Y"]).all())

    def test_constant_rows(self):
        x = np.full((3, 64), 0.1, dtype=np.float32)
        got = run_case(self, "LayerNormSimple", "float32", x=x, attrs={"epsilon": 0.25})
        self.assertTrue((got["Y"] == 0).all())


class ShapeInference(unittest.TestCase):
    def test_y_shape_with_symbolic_dims(self):
        model = lib.build_model("AdaNorm", "float32", (2, 5, 16), [16], None,
                                x_dims=["batch", "seq", 16])
        sess = lib.make_session(model)
        y = sess.get_outputs()[0]
        if lib.HAS_SHAPE_INFERENCE:
            self.assertEqual(y.shape, ["batch", "seq", 16])
        else:
            # Older runtimes: only element types are inferred (see src/op.rs).
            self.assertEqual(y.type, "tensor(float)")
        x = np.ones((3, 7, 16), np.float32)
        self.assertEqual(sess.run(None, {"X": x, "Scale": np.ones(16, np.float32)})[0].shape, (3, 7, 16))

    def test_unknown_dims_of_y_get_fresh_names(self):
        # Neither known nor named in X (what onnxruntime's own inference leaves on a BERT's
        # residual stream): Y still gets its rank and known dims, the unknown ones a name each
        # that no other dim has (a dim_value of -1 would be wrong, no shape costs ORT's fusions).
        model = lib.build_model("AdaNorm", "float32", (2, 5, 16), [16], None, x_dims=[None, None, 16])
        sess = lib.make_session(model)
        y = sess.get_outputs()[0]
        if lib.HAS_SHAPE_INFERENCE:
            self.assertEqual(len(y.shape), 3, y.shape)
            self.assertEqual(y.shape[2], 16)
            for d in y.shape[:2]:
                self.assertTrue(isinstance(d, str) and d.startswith("adanorm_unknown_"), y.shape)
            self.assertNotEqual(y.shape[0], y.shape[1])
        x = np.ones((3, 7, 16), np.float32)
        self.assertEqual(sess.run(None, {"X": x, "Scale": np.ones(16, np.float32)})[0].shape, (3, 7, 16))

    def test_undeclared_intermediate_feeds_a_standard_op(self):
        # AdaNorm -> Relu, with Y not declared anywhere: its type must be inferred.
        node = helper.make_node("AdaNorm", ["X"], ["Y", "M"], domain=lib.DOMAIN, name="n0")
        relu = helper.make_node("Relu", ["Y"], ["Z"])
        graph = helper.make_graph([node, relu], "g",
                                  [helper.make_tensor_value_info("X", TensorProto.FLOAT16, ["b", 8])],
                                  [helper.make_tensor_value_info("Z", TensorProto.FLOAT16, None),
                                   helper.make_tensor_value_info("M", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, ir_version=lib.IR_VERSION,
                                  opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(lib.DOMAIN, 1)])
        sess = lib.make_session(model)
        x = lib.quantize(np.random.default_rng(6).standard_normal((3, 8)), "float16")
        z, m = sess.run(None, {"X": x})
        y, mean, _ = lib.reference(x)
        lib.assert_close(self, z, np.maximum(y, 0), 1e-2, "Relu(AdaNorm)")
        lib.assert_close(self, m, mean, 1e-5, "Mean")
        if lib.HAS_SHAPE_INFERENCE:
            self.assertEqual(sess.get_outputs()[0].shape, ["b", 8])


if __name__ == "__main__":
    unittest.main()
