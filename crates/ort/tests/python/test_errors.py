"""Every bad input of ops-spec.md ("Errors every implementation gives") is an exception that names
the node and the rule, never a crash; panics inside the library become exceptions too."""

import os
import unittest

import numpy as np
from onnx import TensorProto

import adanorm_testlib as lib

# The rule texts of ops-spec.md, as the library words them (adanorm_kernels::params::rule).
RANK = "X must have rank >= 1"
AXIS = "axis must be in [-r, r)"
BROADCAST = "Scale and B must be unidirectionally broadcastable to X.shape[axis:]"
TYPE = "all inputs must share one type among float, float16, bfloat16, double"
BOOL_ATTR = "unbiased and eps_in_sqrt must be 0 or 1"
EPSILON_NEGATIVE = "epsilon must be >= 0"
NON_FINITE = "c, k and epsilon must be finite"


class BadInputs(unittest.TestCase):
    def assert_error(self, fn, *fragments, node="bad_node"):
        with self.assertRaises(Exception) as ctx:
            fn()
        message = str(ctx.exception)
        for fragment in (node,) + fragments:
            self.assertIn(fragment, message)
        return message

    def model(self, op="AdaNorm", dtype="float32", x_shape=(2, 8), **kw):
        return lib.build_model(op, dtype, x_shape, node_name="bad_node", **kw)

    def run_model(self, model, feeds, threads=1):
        return lib.make_session(model, threads).run(None, feeds)

    def test_rank_0_x(self):
        model = self.model(x_shape=(), x_dims=[])
        for op in ["AdaNorm", "LayerNormSimple"]:
            model.graph.node[0].op_type = op
            self.assert_error(lambda: self.run_model(model, {"X": np.array(1.5, np.float32)}),
                              f"{op} node 'bad_node'", RANK, "X has rank 0")

    def test_axis_outside_range_known_rank(self):
        # The declared rank is enough: the session refuses to load.
        for axis in [2, -3, 100, -(2 ** 62)]:
            with self.subTest(axis=axis):
                self.assert_error(lambda: lib.make_session(self.model(attrs={"axis": axis})),
                                  AXIS, f"axis = {axis} for rank 2")

    def test_axis_outside_range_dynamic_rank(self):
        # Rank unknown until run time: the run fails, the session stays usable.
        model = self.model(x_dims=None, attrs={"axis": 2})
        model.graph.input[0].type.tensor_type.ClearField("shape")
        sess = lib.make_session(model)
        with self.assertRaises(Exception) as ctx:
            sess.run(None, {"X": np.ones((2, 8), np.float32)})
        for fragment in ("bad_node", AXIS, "axis = 2 for rank 2"):
            self.assertIn(fragment, str(ctx.exception))
        self.assertEqual(sess.run(None, {"X": np.ones((2, 8, 3), np.float32)})[0].shape, (2, 8, 3))

    def test_scale_or_b_not_broadcastable(self):
        x = np.ones((2, 3, 8), np.float32)
        for what, shape in [("Scale", [7]), ("Scale", [3, 8]), ("B", [2, 8]), ("B", [1, 1, 8]), ("B", [8, 1])]:
            with self.subTest(what=what, shape=shape):
                kw = {"scale_shape": shape} if what == "Scale" else {"bias_shape": shape}
                model = self.model(x_shape=x.shape, **kw)
                feeds = {"X": x, what: np.ones(shape, np.float32)}
                self.assert_error(lambda: self.run_model(model, feeds), BROADCAST,
                                  f"{what} has shape {shape}".replace("[]", "[]"))
        # Axis changes what must broadcast: Scale [3, 8] is fine for axis=1, not for axis=-1.
        model = self.model(x_shape=x.shape, scale_shape=[3, 8], attrs={"axis": 1})
        self.run_model(model, {"X": x, "Scale": np.ones((3, 8), np.float32)})

    def test_type_outside_t(self):
        # onnxruntime checks types against the registered records and refuses the model, naming
        # the node and the type.
        for elem, name in [(TensorProto.INT32, "int32"), (TensorProto.INT64, "int64"), (TensorProto.UINT8, "uint8")]:
            with self.subTest(type=name):
                model = self.model()
                for v in list(model.graph.input) + list(model.graph.output):
                    v.type.tensor_type.elem_type = elem
                self.assert_error(lambda: lib.make_session(model), f"tensor({name})")

    def test_mixed_types(self):
        for x_type, p_type, p_name in [("float32", TensorProto.DOUBLE, "double"),
                                       ("float16", TensorProto.FLOAT, "float"),
                                       ("float64", TensorProto.FLOAT16, "float16")]:
            for what in ["Scale", "B"]:
                with self.subTest(x=x_type, param=p_name, what=what):
                    kw = {"scale_shape": [8]} if what == "Scale" else {"bias_shape": [8]}
                    model = self.model(dtype=x_type, **kw)
                    for v in model.graph.input:
                        if v.name == what:
                            v.type.tensor_type.elem_type = p_type
                    self.assert_error(lambda: lib.make_session(model), TYPE, f"{what} is {p_name}")

    def test_bool_attributes_must_be_0_or_1(self):
        for name, value in [("unbiased", 2), ("unbiased", -1), ("eps_in_sqrt", 5), ("eps_in_sqrt", -1)]:
            for op in ["AdaNorm", "LayerNormSimple"]:
                with self.subTest(op=op, name=name, value=value):
                    model = self.model(op=op, attrs={name: value})
                    self.assert_error(lambda: lib.make_session(model), BOOL_ATTR, f"{name} = {value}")

    def test_negative_epsilon(self):
        self.assert_error(lambda: lib.make_session(self.model(attrs={"epsilon": -1e-3})), EPSILON_NEGATIVE)

    def test_non_finite_c_k_epsilon(self):
        for name in ["c", "k", "epsilon"]:
            for value in [float("inf"), float("-inf"), float("nan")]:
                with self.subTest(name=name, value=value):
                    model = self.model(attrs={name: value})
                    self.assert_error(lambda: lib.make_session(model), NON_FINITE, f"{name} = ")

    def test_attribute_of_the_wrong_kind(self):
        # Never silently replaced by the default.
        for name, value, wanted, given in [("axis", 1.0, "an int", "a float"),
                                           ("epsilon", 1, "a float", "an int"),
                                           ("unbiased", "yes", "an int", "a string"),
                                           ("c", [1.0, 2.0], "a float", "a list of floats")]:
            with self.subTest(name=name):
                model = self.model(attrs={name: value})
                self.assert_error(lambda: lib.make_session(model),
                                  f"attribute '{name}' must be {wanted}, the node gives {given}")

    def test_unnamed_node_is_named_by_its_output(self):
        model = lib.build_model("AdaNorm", "float32", (2, 8), node_name="", attrs={"unbiased": 3})
        self.assert_error(lambda: lib.make_session(model), "AdaNorm node with no name (output 'Y')",
                          BOOL_ATTR, node="")

    def test_wrong_feed_type_is_refused_by_onnxruntime(self):
        model = self.model()
        with self.assertRaises(Exception) as ctx:
            self.run_model(model, {"X": np.ones((2, 8), np.float64)})
        self.assertIn("tensor(double)", str(ctx.exception))


class Panics(unittest.TestCase):
    """Deliberate panics (test hooks, see src/hooks.rs) come back as exceptions."""

    def setUp(self):
        os.environ["ADANORM_ORT_TEST_HOOKS"] = "1"

    def tearDown(self):
        del os.environ["ADANORM_ORT_TEST_HOOKS"]

    def model(self, where):
        return lib.build_model("AdaNorm", "float32", (64, 128, 768), node_name="panicky",
                               attrs={"_test_panic": where})

    def test_panic_while_creating_the_kernel(self):
        with self.assertRaisesRegex(Exception, r"panicky.*Rust panic.*deliberate test panic in CreateKernelV2"):
            lib.make_session(self.model("create"))

    def test_panic_in_compute_and_in_pool_workers(self):
        x = np.random.default_rng(0).standard_normal((64, 128, 768)).astype(np.float32)
        for where, threads in [("compute", 1), ("worker", 1), ("worker", 2)]:
            with self.subTest(where=where, threads=threads):
                sess = lib.make_session(self.model(where), threads)
                for _ in range(2):  # the same session fails cleanly again
                    with self.assertRaises(Exception) as ctx:
                        sess.run(None, {"X": x})
                    message = str(ctx.exception)
                    self.assertIn("AdaNorm node 'panicky'", message)
                    self.assertIn("Rust panic", message)
                    self.assertIn(f'_test_panic = "{where}"', message)
        # The process and the library are fine afterwards.
        got = lib.make_session(lib.build_model("AdaNorm", "float32", x.shape)).run(None, {"X": x})[0]
        lib.assert_close(self, got, lib.reference(x)[0], 1e-5, "after panics")

    def test_hooks_are_inert_without_the_switch(self):
        del os.environ["ADANORM_ORT_TEST_HOOKS"]
        try:
            x = np.ones((64, 128, 768), np.float32)
            lib.make_session(self.model("worker"), 2).run(None, {"X": x})
        finally:
            os.environ["ADANORM_ORT_TEST_HOOKS"] = "1"


if __name__ == "__main__":
    unittest.main()
