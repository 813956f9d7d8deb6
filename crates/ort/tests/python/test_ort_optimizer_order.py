"""The order README.md gives for combining adanorm-onnx with onnxruntime's transformer optimizer
(`onnxruntime.transformers.optimizer`): the optimizer first, then `adanorm-onnx`.

Its Attention and SkipLayerNormalization fusions anchor on LayerNormalization nodes, so after our
rewrite (the norms are ai.adanorm nodes) it no longer finds the attention blocks; in the other
order `rewrite --to simple --k 0 --c 1` turns its fused norms into ai.adanorm nodes (its
SkipLayerNormalization into one version-2 node) and keeps every Attention, computing the same.

Needs the CLI (ADANORM_CLI, default target/debug/adanorm-onnx, which scripts/test builds) and
sympy (the optimizer's shape inference; in the pinned .venv, not in the oldest-runtime venv,
which skips this test).
"""

import collections
import os
import subprocess
import tempfile
import unittest
import warnings

import numpy as np
import onnx

import adanorm_testlib as lib

CLI = os.environ.get("ADANORM_CLI", os.path.join(lib.ROOT, "target", "debug", "adanorm-onnx"))
ZOO = os.path.join(lib.ROOT, "fixtures", "zoo", "bert_legacy_op14")  # HF BERT, hidden 64, 2 heads


def op_counts(path):
    return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


def ort_optimize(src, dst):
    from onnxruntime.transformers import optimizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer.optimize_model(src, model_type="bert", num_heads=2, hidden_size=64,
                                 opt_level=0).save_model_to_file(dst)
    return dst


def cli(*args):
    subprocess.run([CLI, *args], check=True, stdout=subprocess.DEVNULL)


@unittest.skipUnless(os.path.exists(CLI), f"no CLI at {CLI}")
class OptimizerFirst(unittest.TestCase):
    def setUp(self):
        try:
            import sympy  # noqa: F401
            from onnxruntime.transformers import optimizer  # noqa: F401
        except ImportError as e:
            self.skipTest(f"onnxruntime.transformers.optimizer unavailable here: {e}")

    def test_optimizer_then_rewrite_keeps_attention_and_computes_the_same(self):
        with tempfile.TemporaryDirectory() as tmp:
            optimized = ort_optimize(os.path.join(ZOO, "model.onnx"), os.path.join(tmp, "opt.onnx"))
            before = op_counts(optimized)
            if before["Attention"] == 0:
                # onnxruntime 1.17's optimizer does not match this export's attention blocks.
                self.skipTest(f"the optimizer of onnxruntime {lib.ort.__version__} fuses no Attention here")
            self.assertEqual(before["Attention"], 2, before)
            self.assertGreaterEqual(before["SkipLayerNormalization"], 4, before)
            ours = os.path.join(tmp, "opt.adanorm.onnx")
            cli("rewrite", optimized, "-o", ours, "--to", "simple", "--k", "0", "--c", "1")
            after = op_counts(ours)
            self.assertEqual(after["Attention"], before["Attention"], after)
            self.assertEqual(after["BiasGelu"], before["BiasGelu"], after)
            self.assertEqual(after["SkipLayerNormalization"], 0, after)
            # The embeddings' EmbedLayerNormalization is split into standard lookups and a
            # node, its mask_index (read by Attention) computed by standard ops.
            self.assertEqual(after["EmbedLayerNormalization"], 0, after)
            self.assertEqual(after["LayerNormSimple"],
                             before["SkipLayerNormalization"] + before["EmbedLayerNormalization"], after)
            m = onnx.load(ours)
            v2 = [n for n in m.graph.node if n.op_type == "LayerNormSimple" and len(n.input) > 3]
            self.assertEqual(len(v2), before["SkipLayerNormalization"], "each SkipLayerNorm is one version-2 node")
            self.assertEqual([o.version for o in m.opset_import if o.domain == "ai.adanorm"], [2])
            inputs = dict(np.load(os.path.join(ZOO, "inputs.npz")))
            ref = np.load(os.path.join(ZOO, "ref_output.npz"))
            expected = {k: ref[k] for k in ref.files}
            lib.check_model_case(self, ours, inputs, expected, tol=1e-4)

    def test_rewrite_first_loses_the_attention_fusion(self):
        # Why the README says "optimizer first": the other order is not wrong, only slower.
        with tempfile.TemporaryDirectory() as tmp:
            fused = os.path.join(tmp, "fused.onnx")
            cli("fuse", os.path.join(ZOO, "model.onnx"), "-o", fused)
            optimized = ort_optimize(fused, os.path.join(tmp, "fused.opt.onnx"))
            self.assertEqual(op_counts(optimized)["Attention"], 0)
            # ... while on the original it does (where this runtime's optimizer fuses any).
            original = ort_optimize(os.path.join(ZOO, "model.onnx"), os.path.join(tmp, "opt.onnx"))
            if op_counts(original)["Attention"] == 0:
                self.skipTest(f"the optimizer of onnxruntime {lib.ort.__version__} fuses no Attention here")


if __name__ == "__main__":
    unittest.main()
