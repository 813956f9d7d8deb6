"""Shared helpers for the libadanorm_ort Python tests.

- `LIB`: the library under test (`ADANORM_ORT_LIB`, default target/release/libadanorm_ort.so).
- `reference()`: ops-spec.md in numpy float64, written independently of the Rust oracle.
- `build_model()`: a one-node `ai.adanorm` model; bfloat16, which numpy lacks, goes in and out
  through float32 `Cast` nodes (exact, since inputs are pre-rounded to bfloat16).
- `run_case()`: builds, runs and checks one configuration against the reference with the spec's
  tolerances.
- `check_model_case()`: any model + inputs + expected outputs (the hook for fixture cases, see
  test_fixtures.py).
"""

import os
import re

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
LIB = os.environ.get("ADANORM_ORT_LIB", os.path.join(ROOT, "target", "release", "libadanorm_ort.so"))

DOMAIN = "ai.adanorm"
IR_VERSION = 8  # loadable by onnxruntime 1.17 (IR 9) and later
ORT_VERSION = tuple(int(p) for p in re.findall(r"\d+", ort.__version__)[:2])
# onnxruntime < 1.24 crashes in its own shape-inference wrapper on skipped optional inputs, so
# the library only registers shape inference from 1.24 on (see src/op.rs).
HAS_SHAPE_INFERENCE = ORT_VERSION >= (1, 24)

DTYPES = ["float32", "float16", "bfloat16", "float64"]
ONNX_TYPE = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
    "float64": TensorProto.DOUBLE,
}
# ops-spec "Tolerances": |got - ref| <= tol * max(1, |ref|).
TOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 2e-2, "float64": 1e-12}
# Mean and InvStdDev are in the compute precision: float (double for double).
STATS_TOL = {"float32": 1e-5, "float16": 1e-5, "bfloat16": 1e-5, "float64": 1e-12}


def to_bf16(a):
    """float32 values rounded to the nearest bfloat16 (ties to even), still as float32."""
    bits = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return rounded.astype(np.uint32).view(np.float32)


def quantize(a, dtype):
    """`a` rounded to `dtype`, as the numpy array fed to the session (bfloat16 as float32)."""
    a = np.asarray(a)
    if dtype == "bfloat16":
        return to_bf16(a.astype(np.float32))
    return a.astype(dtype)


def f32(v):
    """An attribute value as the float32 the node stores."""
    return float(np.float32(v))


def reference(x, scale=None, bias=None, op="AdaNorm", axis=-1, epsilon=1e-5, unbiased=0,
              eps_in_sqrt=1, c=1.0, k=0.1):
    """(Y, Mean, InvStdDev) in float64, formula for formula from ops-spec.md."""
    x = np.asarray(x, dtype=np.float64)
    r = x.ndim
    a = axis + r if axis < 0 else axis
    axes = tuple(range(a, r))
    n = int(np.prod(x.shape[a:]))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x.sum(axis=axes, keepdims=True) / n
        d = x - mean
        var = (d * d).sum(axis=axes, keepdims=True) / ((n - 1) if unbiased else n)
        eps = f32(epsilon)
        sigma = np.sqrt(var + eps) if eps_in_sqrt else np.sqrt(var) + eps
        y = d / sigma
        if op == "AdaNorm":
            y = f32(c) * (1.0 - f32(k) * y) * y
        if scale is not None:
            y = y * np.asarray(scale, dtype=np.float64)
        if bias is not None:
            y = y + np.asarray(bias, dtype=np.float64)
        return y, mean, 1.0 / sigma


def residual_sum(x, skip=None, bias=None, dtype="float32"):
    """Version 2's S = round(round(X + Bias) + Skip) in float64: each present term added exactly
    and rounded to `dtype`, as the Add nodes it replaces compute it."""
    def add(a, b):
        return quantize(np.asarray(a, dtype=np.float64) + np.asarray(b, dtype=np.float64), dtype)
    s = np.asarray(x)
    if bias is not None:
        s = add(s, bias)
    if skip is not None:
        s = add(s, skip)
    return np.asarray(s, dtype=np.float64)


def assert_close(testcase, got, want, tol, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    testcase.assertEqual(got.shape, want.shape, f"{what}: shape")
    both_nan = np.isnan(got) & np.isnan(want)
    err = np.where(both_nan, 0.0, np.abs(got - want))
    bound = tol * np.maximum(1.0, np.abs(np.nan_to_num(want)))
    bad = ~(err <= bound)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err, -1)), got.shape)
        testcase.fail(f"{what}: {int(bad.sum())} elements off, worst at {i}: got {got[i]!r}, "
                      f"reference {want[i]!r} (tol {tol} * max(1, |ref|))")


def build_model(op="AdaNorm", dtype="float32", x_shape=(2, 3, 8), scale_shape=None,
                bias_shape=None, inputs=None, outputs=("Y",), attrs=None, node_name="n0",
                opset=1, x_dims=None, declare_y_shape=False, declare_intermediates=True,
                skip_shape=None, residual_bias_shape=None):
    """A one-node model. `inputs`/`outputs` are the node's lists ("" skips an optional one);
    by default X plus Scale/B when their shapes are given. Graph inputs and outputs get the node's
    names; for bfloat16 the graph boundary is float32 with Cast nodes in between.
    `x_dims` overrides X's declared dims (None entries become unknown, strings symbolic).
    `declare_intermediates` gives the bfloat16 Y between the op and its Cast a value_info, as
    exporters do; without it, onnxruntime < 1.24 cannot type Y when an optional input is skipped
    (see test_numerics.ScaleAndBias.test_skipped_scale_with_undeclared_intermediate).
    Version 2's `Skip` and residual `Bias` (graph inputs "Skip", "Bias") come in with their shapes;
    output 3 is `Sum`, typed as Y."""
    if inputs is None:
        wanted = [("Scale", scale_shape), ("B", bias_shape), ("Skip", skip_shape),
                  ("Bias", residual_bias_shape)]
        inputs = ["X"] + [name if shape is not None else "" for name, shape in wanted]
        while inputs[-1] == "":
            inputs.pop()
    elem = ONNX_TYPE[dtype]
    stats_elem = TensorProto.DOUBLE if dtype == "float64" else TensorProto.FLOAT
    bf16 = dtype == "bfloat16"
    boundary = TensorProto.FLOAT if bf16 else elem
    shapes = {"X": list(x_dims) if x_dims is not None else list(x_shape),
              "Scale": scale_shape, "B": bias_shape, "Skip": skip_shape,
              "Bias": residual_bias_shape}
    nodes, graph_inputs, graph_outputs = [], [], []
    node_inputs = []
    for name in inputs:
        if not name:
            node_inputs.append("")
            continue
        graph_inputs.append(helper.make_tensor_value_info(name, boundary, shapes.get(name)))
        if bf16:
            nodes.append(helper.make_node("Cast", [name], [name + "_bf16"], to=elem))
            node_inputs.append(name + "_bf16")
        else:
            node_inputs.append(name)
    node_outputs = []
    for i, name in enumerate(outputs):
        if not name:
            node_outputs.append("")
            continue
        if i in (0, 3):  # Y, Sum: the element type
            shape = shapes["X"] if declare_y_shape else None
            graph_outputs.append(helper.make_tensor_value_info(name, boundary, shape))
            if bf16:
                node_outputs.append(name + "_bf16")
                continue
        else:
            graph_outputs.append(helper.make_tensor_value_info(name, stats_elem, None))
        node_outputs.append(name)
    nodes.append(helper.make_node(op, node_inputs, node_outputs, domain=DOMAIN, name=node_name,
                                  **(attrs or {})))
    value_info = []
    for i in (0, 3):
        if bf16 and len(outputs) > i and outputs[i]:
            nodes.append(helper.make_node("Cast", [outputs[i] + "_bf16"], [outputs[i]], to=TensorProto.FLOAT))
            if declare_intermediates:
                value_info.append(helper.make_tensor_value_info(outputs[i] + "_bf16", elem, None))
    graph = helper.make_graph(nodes, "g", graph_inputs, graph_outputs, value_info=value_info)
    model = helper.make_model(graph, ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, opset)])
    return model


def session_options(threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 4  # errors reach the test as exceptions; keep stderr quiet
    so.register_custom_ops_library(LIB)
    return so


CPU = ("CPUExecutionProvider",)


def make_session(model, threads=1, so=None, providers=CPU):
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, so or session_options(threads), providers=list(providers))


def run_case(testcase, op="AdaNorm", dtype="float32", x_shape=(2, 3, 8), axis=-1, scale_shape=None,
             bias_shape=None, inputs=None, outputs=("Y", "Mean", "InvStdDev"), attrs=None, seed=0,
             offset=0.0, threads=1, x=None, providers=CPU, so=None, skip_shape=None,
             residual_bias_shape=None, opset=1):
    """Runs one configuration and checks every requested output against `reference`
    (in a session on `providers`, with options `so` when given). With version 2's `Skip` /
    residual `Bias` the reference normalises `residual_sum`, and `Sum` must equal it exactly."""
    attrs = dict(attrs or {})
    if axis != -1:
        attrs["axis"] = axis
    rng = np.random.default_rng(seed)
    if x is None:
        x = rng.standard_normal(x_shape) * 2.0 + offset
    x = quantize(x, dtype)
    feeds = {"X": x}
    scale = bias = None
    if scale_shape is not None:
        scale = quantize(rng.standard_normal(scale_shape) + 1.0, dtype)
    if bias_shape is not None:
        bias = quantize(rng.standard_normal(bias_shape), dtype)
    skip = residual_bias = None
    if skip_shape is not None:
        skip = quantize(rng.standard_normal(skip_shape) * 3.0, dtype)
    if residual_bias_shape is not None:
        residual_bias = quantize(rng.standard_normal(residual_bias_shape), dtype)
    model = build_model(op, dtype, x.shape, scale_shape, bias_shape, inputs, outputs, attrs,
                        opset=opset, skip_shape=skip_shape, residual_bias_shape=residual_bias_shape)
    given = {"Scale": scale, "B": bias, "Skip": skip, "Bias": residual_bias}
    for vi in model.graph.input:
        if vi.name in given:
            feeds[vi.name] = given[vi.name]
    used_scale = scale if "Scale" in feeds else None
    used_bias = bias if "B" in feeds else None
    s = residual_sum(x, feeds.get("Skip"), feeds.get("Bias"), dtype)
    sess = make_session(model, threads, so=so, providers=providers)
    names = [o for o in outputs if o]
    got = dict(zip(names, sess.run(names, feeds)))
    ref_attrs = {k: v for k, v in attrs.items() if k in ("epsilon", "unbiased", "eps_in_sqrt", "c", "k")}
    y, mean, inv = reference(s, used_scale, used_bias, op=op, axis=axis, **ref_attrs)
    what = (f"{op} {dtype} x{tuple(x.shape)} axis={axis} attrs={attrs} inputs={inputs} "
            f"outputs={outputs} skip={skip_shape} residual_bias={residual_bias_shape}")
    want = {"Y": y, "Mean": mean, "InvStdDev": inv, "Sum": s}
    for name in names:
        tol = {"Y": TOL[dtype], "Sum": 0.0}.get(name, STATS_TOL[dtype])
        elementwise = name in ("Y", "Sum")
        expected_dtype = np.float32 if dtype == "bfloat16" and elementwise else (
            np.dtype(dtype) if elementwise else (np.float64 if dtype == "float64" else np.float32))
        testcase.assertEqual(got[name].dtype, expected_dtype, f"{what}: {name} dtype")
        assert_close(testcase, got[name], want[name], tol, f"{what}: {name}")
    return got


def check_model_case(testcase, model_path, inputs, expected, tol=1e-4, threads=1):
    """Runs any model (e.g. a zoo fixture after `fuse`/`rewrite`) with `inputs` and compares each
    output named in `expected` (|err| <= tol * max(1, |ref|))."""
    sess = make_session(open(model_path, "rb").read(), threads)
    names = list(expected)
    got = dict(zip(names, sess.run(names, dict(inputs))))
    for name in names:
        assert_close(testcase, got[name], expected[name], tol, f"{os.path.basename(model_path)}: {name}")
    return got
