"""The ai.adanorm ops on onnxruntime's CUDAExecutionProvider.

`OnTheGpu` needs onnxruntime-gpu, a GPU and a library built with `--features cuda`; without any of
them it is skipped with the reason (`adanorm_ort_cuda_status()` says why the library did not
register its CUDA kernels), or, with `ADANORM_REQUIRE_GPU=1` (set by the device scripts), fails
with it. Its sessions refuse CPU fallback, so a node that did not land on the GPU fails the test
instead of passing on the CPU.

`CudaRecordsBesideCpuSessions` runs everywhere: in a child process with the test switch that
registers the CUDA records even without a GPU, CPU sessions must still load and compute exactly.
"""

import ctypes
import glob
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

import adanorm_testlib as lib
import test_fixtures
from adanorm_testlib import run_case

CUDA = ("CUDAExecutionProvider",)
GPU_DTYPES = ["float32", "float16", "bfloat16"]
# Row lengths around every kernel boundary (warp/block, vector widths, register capacity, the
# loop kernel past 16384/32768 elements), up to 65536.
ROW_LENGTHS = [1, 2, 3, 5, 8, 16, 31, 32, 33, 63, 64, 100, 127, 128, 129, 255, 256, 257, 511, 512,
               513, 768, 1000, 1024, 1025, 2048, 2049, 4096, 5000, 8192, 8193, 16384, 16385, 32768,
               32769, 65536]
ATTRS = [
    {},
    {"unbiased": 1, "eps_in_sqrt": 0, "epsilon": 1e-3},
    {"unbiased": 1, "eps_in_sqrt": 1},
    {"unbiased": 0, "eps_in_sqrt": 0, "epsilon": 1e-2},
]


def cuda_status():
    """The library's own line: "registered for CUDAExecutionProvider: <GPU>" or "not registered: <why>"."""
    dll = ctypes.CDLL(lib.LIB)
    dll.adanorm_ort_cuda_status.restype = ctypes.c_char_p
    return dll.adanorm_ort_cuda_status().decode()


def gpu_skip_reason():
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                "(install onnxruntime-gpu on a machine with an NVIDIA GPU)")
    status = cuda_status()
    if not status.startswith("registered"):
        return f"libadanorm_ort: {status}"
    return None


def needs_gpu(cls):
    """Skips the class with gpu_skip_reason(); under ADANORM_REQUIRE_GPU=1, where a GPU is expected,
    fails it (in setUpClass) with that reason instead."""
    reason = gpu_skip_reason()
    if reason is None:
        return cls
    if os.environ.get("ADANORM_REQUIRE_GPU") != "1":
        return unittest.skip(reason)(cls)

    def fail(_cls):
        raise AssertionError(f"ADANORM_REQUIRE_GPU=1 is set, but the GPU tests cannot run: {reason}")

    cls.setUpClass = classmethod(fail)
    return cls


def cuda_options(threads=1, fallback=False):
    so = lib.session_options(threads)
    if not fallback:
        # Every node must run on the GPU; session creation fails otherwise.
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return so


@needs_gpu
class OnTheGpu(unittest.TestCase):
    def run_gpu(self, *args, **kwargs):
        return run_case(self, *args, providers=CUDA, so=cuda_options(), **kwargs)

    def test_nodes_run_on_cuda(self):
        # The profile names the provider of every node that ran.
        model = lib.build_model("AdaNorm", "float16", (8, 1024), [1024], [1024])
        so = cuda_options()
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "adanorm")
        sess = lib.make_session(model, so=so, providers=CUDA)
        x = np.random.default_rng(0).standard_normal((8, 1024)).astype(np.float16)
        sess.run(None, {"X": x, "Scale": np.ones(1024, np.float16), "B": np.zeros(1024, np.float16)})
        with open(sess.end_profiling()) as f:
            events = json.load(f)
        ran = [e["args"]["provider"] for e in events
               if e.get("cat") == "Node" and e.get("args", {}).get("op_name") == "AdaNorm"]
        self.assertTrue(ran, "the profile shows no AdaNorm node")
        self.assertEqual(set(ran), {"CUDAExecutionProvider"})

    def test_every_type_and_row_length(self):
        # One session per (op, type, attributes) with symbolic dims, run at every row length; the
        # float32 inputs go through Casts for bfloat16 (numpy has no bfloat16).
        for op, dtype, (a, attrs) in itertools.product(
                ["AdaNorm", "LayerNormSimple"], GPU_DTYPES, enumerate(ATTRS)):
            attrs = dict(attrs)
            if op == "AdaNorm":
                attrs.update(c=1.5, k=0.25)
            model = lib.build_model(op, dtype, None, ["L"], ["L"], outputs=("Y", "Mean", "InvStdDev"),
                                    attrs=attrs, x_dims=["N", "L"])
            sess = lib.make_session(model, so=cuda_options(), providers=CUDA)
            for i, n in enumerate(ROW_LENGTHS):
                rows = max(1, min(64, (1 << 20) // n))
                rng = np.random.default_rng(i)
                # Every fifth length sits at mean 1e4: the statistics must not cancel.
                offset = 1e4 if (i + a) % 5 == 0 else 0.0
                x = lib.quantize(rng.standard_normal((rows, n)) * 2.0 + offset, dtype)
                g = lib.quantize(rng.standard_normal(n) + 1.0, dtype)
                b = lib.quantize(rng.standard_normal(n), dtype)
                got = sess.run(None, {"X": x, "Scale": g, "B": b})
                want = lib.reference(x, g, b, op=op, **attrs)
                what = f"{op} {dtype} {attrs} x{x.shape} offset {offset}"
                for name, gv, wv, tol in zip(["Y", "Mean", "InvStdDev"], got, want,
                                             [lib.TOL[dtype], lib.STATS_TOL[dtype], lib.STATS_TOL[dtype]]):
                    lib.assert_close(self, gv, wv, tol, f"{what}: {name}")

    def test_large_offsets_in_the_tensor(self):
        # 270 001 rows of 2048 float32: the last rows start past byte 2^31, and the launch needs
        # several grids' worth of blocks. Rows are independent, so the ends are checked.
        rows, n = 270001, 2048
        x = np.random.default_rng(1).standard_normal((rows, n), dtype=np.float32)
        model = lib.build_model("AdaNorm", "float32", (rows, n))
        (y,) = lib.make_session(model, so=cuda_options(), providers=CUDA).run(None, {"X": x})
        for part in [slice(0, 64), slice(rows - 4096, rows)]:
            want, _, _ = lib.reference(x[part])
            lib.assert_close(self, y[part], want, lib.TOL["float32"], f"rows {part}")

    def test_broadcast_scale_and_bias(self):
        # Scale/B shorter than the normalized shape go through a scratch row on the device.
        for dtype in GPU_DTYPES:
            with self.subTest(dtype=dtype):
                self.run_gpu("AdaNorm", dtype, x_shape=(4, 6, 32), axis=-2, scale_shape=[32],
                             bias_shape=[1, 32], seed=2)
                self.run_gpu("LayerNormSimple", dtype, x_shape=(3, 5, 7, 16), axis=1,
                             scale_shape=[7, 1], bias_shape=[16], seed=3)

    def test_statistics_alone_and_skipped_inputs(self):
        self.run_gpu("AdaNorm", "float32", x_shape=(9, 300), inputs=["X", "", "B"],
                     bias_shape=[300], outputs=("Y", "", "InvStdDev"), seed=4)
        self.run_gpu("LayerNormSimple", "float16", x_shape=(9, 300), outputs=("Y", "Mean"), seed=5)

    def test_empty_tensors(self):
        for shape in [(0, 64), (4, 0)]:
            with self.subTest(shape=shape):
                self.run_gpu("AdaNorm", "float32", x_shape=shape, seed=6)

    def test_double_falls_back_to_the_cpu_kernel(self):
        # No GPU kernel for double: onnxruntime runs the CPU record, the answer is the same.
        run_case(self, "AdaNorm", "float64", x_shape=(5, 40), scale_shape=[40], bias_shape=[40],
                 providers=CUDA + lib.CPU, so=cuda_options(fallback=True), seed=7)

    def test_contract_errors_name_the_node(self):
        model = lib.build_model("AdaNorm", "float32", (4, 16), scale_shape=[8], node_name="ln_bad")
        sess = lib.make_session(model, so=cuda_options(), providers=CUDA)
        x = np.ones((4, 16), np.float32)
        with self.assertRaises(Exception) as caught:
            sess.run(None, {"X": x, "Scale": np.ones(8, np.float32)})
        message = str(caught.exception)
        self.assertIn("ln_bad", message)
        self.assertIn("Scale", message)

    def test_device_tensors_through_io_binding(self):
        rng = np.random.default_rng(8)
        x = rng.standard_normal((32, 768)).astype(np.float32)
        g = rng.standard_normal(768).astype(np.float32)
        model = lib.build_model("AdaNorm", "float32", x.shape, [768])
        sess = lib.make_session(model, so=cuda_options(), providers=CUDA)
        binding = sess.io_binding()
        binding.bind_ortvalue_input("X", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        binding.bind_ortvalue_input("Scale", ort.OrtValue.ortvalue_from_numpy(g, "cuda", 0))
        binding.bind_output("Y", "cuda")
        sess.run_with_iobinding(binding)
        (y,) = binding.copy_outputs_to_cpu()
        want, _, _ = lib.reference(x, g)
        lib.assert_close(self, y, want, lib.TOL["float32"], "IO binding Y")

    def test_matches_onnxruntimes_own_layernormalization(self):
        # LayerNormSimple with Scale/B and AdaNorm(k=0, C=1) are LayerNormalization on the same
        # inputs (unbiased=0, eps_in_sqrt=1 are the defaults).
        rng = np.random.default_rng(9)
        for dtype in ["float32", "float16"]:
            x = rng.standard_normal((64, 768)).astype(dtype)
            g = (rng.standard_normal(768) + 1).astype(dtype)
            b = rng.standard_normal(768).astype(dtype)
            ln = layer_normalization_model(dtype)
            want = lib.make_session(ln, so=cuda_options(), providers=CUDA).run(
                None, {"X": x, "Scale": g, "B": b})[0]
            for op, attrs in [("LayerNormSimple", {}), ("AdaNorm", {"k": 0.0, "c": 1.0})]:
                with self.subTest(dtype=dtype, op=op):
                    ours = lib.build_model(op, dtype, x.shape, [768], [768], attrs=attrs)
                    got = lib.make_session(ours, so=cuda_options(), providers=CUDA).run(
                        None, {"X": x, "Scale": g, "B": b})[0]
                    lib.assert_close(self, got, want, lib.TOL[dtype], f"{op} vs LayerNormalization")

    def test_concurrent_runs_of_one_session(self):
        # Scratch rows come from onnxruntime's stream-ordered arena; concurrent runs (each on its
        # own stream) must not see each other's rows. The kernels are deterministic.
        rng = np.random.default_rng(10)
        model = lib.build_model("AdaNorm", "float16", (16, 6, 64), [64], [64], attrs={"axis": -2})
        sess = lib.make_session(model, so=cuda_options(), providers=CUDA)
        feeds = [{"X": rng.standard_normal((16, 6, 64)).astype(np.float16),
                  "Scale": rng.standard_normal(64).astype(np.float16),
                  "B": rng.standard_normal(64).astype(np.float16)} for _ in range(4)]
        expected = [sess.run(None, f)[0] for f in feeds]
        failures = []

        def worker(t):
            for _ in range(25):
                got = sess.run(None, feeds[t])[0]
                if not np.array_equal(got, expected[t]):
                    failures.append(t)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(failures, [])

    def test_cuda_graph_replays_the_node(self):
        # With enable_cuda_graph onnxruntime captures the run once and replays it; the kernels
        # must read the bound input's current contents on every replay.
        rng = np.random.default_rng(11)
        shape = (32, 1024)
        model = lib.build_model("AdaNorm", "float32", shape, [1024], [1024], declare_y_shape=True)
        g = rng.standard_normal(1024).astype(np.float32)
        b = rng.standard_normal(1024).astype(np.float32)
        sess = lib.make_session(model, so=cuda_options(), providers=[
            ("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
        x_dev = ort.OrtValue.ortvalue_from_numpy(rng.standard_normal(shape).astype(np.float32), "cuda", 0)
        y_dev = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
        binding = sess.io_binding()
        binding.bind_ortvalue_input("X", x_dev)
        binding.bind_ortvalue_input("Scale", ort.OrtValue.ortvalue_from_numpy(g, "cuda", 0))
        binding.bind_ortvalue_input("B", ort.OrtValue.ortvalue_from_numpy(b, "cuda", 0))
        binding.bind_ortvalue_output("Y", y_dev)
        for step in range(4):
            x = rng.standard_normal(shape).astype(np.float32) + step
            x_dev.update_inplace(x)
            sess.run_with_iobinding(binding)
            want, _, _ = lib.reference(x, g, b)
            lib.assert_close(self, y_dev.numpy(), want, lib.TOL["float32"], f"replay {step}")


def fixture_cases():
    """test_fixtures' cases (ADANORM_ORT_FIXTURES), else every case under target/ort-fixtures
    (written by scripts/build-ort-fixtures: the zoo after fuse and rewrite)."""
    if not os.environ.get("ADANORM_ORT_FIXTURES"):
        built = sorted(glob.glob(os.path.join(lib.ROOT, "target", "ort-fixtures", "*", "")))
        return [c for c in (test_fixtures.case_of(d) for d in built) if c is not None]
    return test_fixtures.cases()


def our_nodes(graph):
    """How many ai.adanorm nodes `graph` holds, subgraphs (If/Loop/Scan bodies) included."""
    count = 0
    for node in graph.node:
        count += node.domain == lib.DOMAIN
        for attr in node.attribute:
            for g in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                count += our_nodes(g)
    return count


@needs_gpu
class RewrittenModelsOnTheGpu(unittest.TestCase):
    def test_every_rewritten_model_on_cuda(self):
        # Whole exported models after `fuse`/`rewrite`, run on CUDAExecutionProvider: the outputs
        # must match the exporter's reference as on the CPU, and every ai.adanorm node that ran
        # must have run on the GPU. Shape arithmetic may stay on the CPU (onnxruntime puts it
        # there on purpose), so CPU fallback is allowed and the profile is the judge. TF32 is off:
        # the references are float32 PyTorch/TensorFlow on the CPU.
        cases = fixture_cases()
        if not cases:
            self.skipTest("no rewritten models: run scripts/build-ort-fixtures (or set ADANORM_ORT_FIXTURES)")
        providers = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
        report = []
        for name, model_path, inputs, ref, tol in cases:
            with self.subTest(case=name):
                model = onnx.load(model_path)
                so = cuda_options(fallback=True)
                so.enable_profiling = True
                so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), name)
                sess = lib.make_session(model, so=so, providers=providers)
                with np.load(inputs) as i, np.load(ref) as r:
                    feeds, want = dict(i), dict(r)
                names = list(want)
                got = dict(zip(names, sess.run(names, feeds)))
                with open(sess.end_profiling()) as f:
                    events = json.load(f)
                ran = [e["args"]["provider"] for e in events if e.get("cat") == "Node"
                       and e.get("args", {}).get("op_name") in ("AdaNorm", "LayerNormSimple")]
                err = max(float(np.max(np.abs(got[n].astype(np.float64) - want[n].astype(np.float64))
                                       / np.maximum(1.0, np.abs(want[n].astype(np.float64))), initial=0.0))
                          for n in names)
                report.append(f"{name}: {our_nodes(model.graph)} ai.adanorm nodes, {len(ran)} ran "
                              f"on {sorted(set(ran)) or '-'}, max scaled error {err:.2e} (tol {tol})")
                self.assertEqual(set(ran) - {"CUDAExecutionProvider"}, set(), f"{name}: ran on {ran}")
                # (Nodes only inside If branches may legitimately not run: the branch not taken.)
                if any(n.domain == lib.DOMAIN for n in model.graph.node):
                    self.assertTrue(ran, f"{name}: no ai.adanorm node in the profile")
                for n in names:
                    lib.assert_close(self, got[n], want[n], tol, f"{name}: {n}")
        print("\n" + "\n".join(report), file=sys.stderr)


def layer_normalization_model(dtype):
    elem = lib.ONNX_TYPE[dtype]
    graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["X", "Scale", "B"], ["Y"], axis=-1, epsilon=1e-5)],
        "ln", [helper.make_tensor_value_info("X", elem, None),
               helper.make_tensor_value_info("Scale", elem, None),
               helper.make_tensor_value_info("B", elem, None)],
        [helper.make_tensor_value_info("Y", elem, None)])
    return helper.make_model(graph, ir_version=lib.IR_VERSION,
                             opset_imports=[helper.make_opsetid("", 17)])


CHILD = "ADANORM_TEST_CUDA_CHILD"


class OptOut(unittest.TestCase):
    def test_the_environment_switch_keeps_the_cuda_kernels_off(self):
        code = ("import ctypes, os; d = ctypes.CDLL(os.environ['ADANORM_ORT_LIB']); "
                "d.adanorm_ort_cuda_status.restype = ctypes.c_char_p; print(d.adanorm_ort_cuda_status().decode())")
        env = dict(os.environ, ADANORM_ORT_LIB=lib.LIB, ADANORM_ORT_DISABLE_CUDA="1",
                   ADANORM_ORT_TEST_HOOKS="1", ADANORM_ORT_TEST_CUDA_RECORDS="1")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "not registered: disabled by ADANORM_ORT_DISABLE_CUDA=1")


class CudaRecordsBesideCpuSessions(unittest.TestCase):
    def test_cpu_sessions_are_unchanged(self):
        env = dict(os.environ, ADANORM_ORT_TEST_HOOKS="1", ADANORM_ORT_TEST_CUDA_RECORDS="1")
        env[CHILD] = "1"
        done = subprocess.run(
            [sys.executable, "-m", "unittest", "-q", "test_cuda.ChildWithForcedRecords"],
            cwd=lib.HERE, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("Ran 1 test", done.stderr)


@unittest.skipUnless(os.environ.get(CHILD) == "1", "runs in the child process of CudaRecordsBesideCpuSessions")
class ChildWithForcedRecords(unittest.TestCase):
    def test_every_op_and_type_on_the_cpu(self):
        status = cuda_status()
        self.assertTrue(status.startswith("registered"), status)
        for op, dtype in itertools.product(["AdaNorm", "LayerNormSimple"], lib.DTYPES):
            with self.subTest(op=op, dtype=dtype):
                run_case(self, op, dtype, x_shape=(3, 5, 16), scale_shape=[16], bias_shape=[16],
                         attrs={"unbiased": 1, "eps_in_sqrt": 0}, seed=12)


if __name__ == "__main__":
    unittest.main()
