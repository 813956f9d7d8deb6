"""Sessions on many threads, shared sessions, the domain outliving its session options, repeated
load cycles in fresh processes, and the intra-op thread setting being honoured."""

import ctypes
import gc
import os
import subprocess
import sys
import textwrap
import threading
import unittest

import numpy as np

import adanorm_testlib as lib


def run_threads(target, n):
    errors = []

    def wrapped(i):
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


CREATE_LOCK = threading.Lock()


class Concurrency(unittest.TestCase):
    def test_a_session_per_thread(self):
        def work(i):
            op = "AdaNorm" if i % 2 else "LayerNormSimple"
            dtype = lib.DTYPES[i % 4]
            model = lib.build_model(op, dtype, (4, 6, 32), [32], [32], attrs={"unbiased": i % 2})
            # onnxruntime adds a custom domain to a process-wide table without a lock, so
            # sessions are created one at a time (see README); they then run concurrently.
            with CREATE_LOCK:
                sess = lib.make_session(model, threads=1 + i % 2)
            rng = np.random.default_rng(i)
            for _ in range(10):
                x = lib.quantize(rng.standard_normal((4, 6, 32)), dtype)
                s = lib.quantize(rng.standard_normal(32), dtype)
                b = lib.quantize(rng.standard_normal(32), dtype)
                y = sess.run(None, {"X": x, "Scale": s, "B": b})[0]
                want = lib.reference(x, s, b, op=op, unbiased=i % 2)[0]
                lib.assert_close(self, y, want, lib.TOL[dtype], f"thread {i}")

        self.assertEqual(run_threads(work, 8), [])

    def test_one_session_shared_by_threads(self):
        sess = lib.make_session(lib.build_model("AdaNorm", "float32", (16, 256), [256]), threads=2)
        scale = np.linspace(0.5, 1.5, 256, dtype=np.float32)

        def work(i):
            rng = np.random.default_rng(100 + i)
            for _ in range(20):
                x = rng.standard_normal((16, 256)).astype(np.float32) * (i + 1)
                y = sess.run(None, {"X": x, "Scale": scale})[0]
                lib.assert_close(self, y, lib.reference(x, scale)[0], 1e-5, f"thread {i}")

        self.assertEqual(run_threads(work, 8), [])

    def test_domain_outlives_the_options(self):
        so = lib.session_options()
        model = lib.build_model("LayerNormSimple", "float32", (3, 8)).SerializeToString()
        first = lib.make_session(model, so=so)
        second = lib.make_session(model, so=so)
        del so
        gc.collect()
        x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
        want = lib.reference(x, op="LayerNormSimple")[0]
        for sess in (first, second):
            lib.assert_close(self, sess.run(None, {"X": x})[0], want, 1e-5, "after options are gone")
        del first
        gc.collect()
        lib.assert_close(self, second.run(None, {"X": x})[0], want, 1e-5, "after a sibling session is gone")

    def test_repeated_load_cycles_in_fresh_processes(self):
        script = textwrap.dedent(f"""
            import gc, sys
            sys.path.insert(0, {lib.HERE!r})
            import numpy as np
            import adanorm_testlib as lib
            model = lib.build_model("AdaNorm", "float32", (4, 16), [16]).SerializeToString()
            x = np.ones((4, 16), np.float32); x[:, ::2] = -1
            for i in range(60):
                so = lib.session_options()
                sess = lib.make_session(model, so=so)
                y = sess.run(None, {{"X": x, "Scale": np.ones(16, np.float32)}})[0]
                assert abs(abs(float(y[0, 0])) - 1.0) < 0.2, y[0, 0]
                del sess, so
                gc.collect()
            print("cycles ok")
        """)
        for _ in range(3):
            done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
            self.assertEqual(done.returncode, 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}")
            self.assertIn("cycles ok", done.stdout)


class ThreadSetting(unittest.TestCase):
    """With the test hooks on, the library records which threads ran row chunks."""

    def setUp(self):
        os.environ["ADANORM_ORT_TEST_HOOKS"] = "1"
        # The same file onnxruntime loaded, so the same library instance and its record.
        self.seen = ctypes.CDLL(lib.LIB).adanorm_ort_test_threads_seen
        self.seen.restype = ctypes.c_size_t

    def tearDown(self):
        del os.environ["ADANORM_ORT_TEST_HOOKS"]

    def threads_used(self, threads, runs):
        sess = lib.make_session(lib.build_model("AdaNorm", "float32", (64, 128, 768)), threads)
        x = np.random.default_rng(2).standard_normal((64, 128, 768)).astype(np.float32)
        counts = []
        for _ in range(runs):
            self.seen()  # reset
            sess.run(None, {"X": x})
            counts.append(self.seen())
        return counts

    def test_one_thread_means_one_thread(self):
        self.assertEqual(self.threads_used(1, 3), [1, 1, 1])

    def test_two_threads_use_the_pool(self):
        counts = self.threads_used(2, 10)
        self.assertLessEqual(max(counts), 2, counts)
        # ~400 chunks per run: the pool's worker joins in at least once on a busy 2-core machine.
        self.assertIn(2, counts, counts)


if __name__ == "__main__":
    unittest.main()
