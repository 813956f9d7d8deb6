"""End-to-end checks of `fuse`, `rewrite` and `revert` on every zoo model, with stock ONNX Runtime
as the judge: every written model passes `onnx.checker.check_model(full_check=True)` and strict
shape inference; models that claim to compute the original function are run (through their
`--portable` function bodies, or after `revert`) and compared with the exporter's reference
outputs; the input file is never modified.

Run by scripts/test as:  .venv/bin/python tests/python/test_rewrite.py target/debug/adanorm-onnx
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(ROOT, "fixtures", "zoo")
BIN = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "adanorm-onnx")

MODELS = sorted(d for d in os.listdir(ZOO) if os.path.exists(os.path.join(ZOO, d, "model.onnx")))
# float16 models (tolerance 3e-2, as the tract zoo test): the "fp16" in their names.
FP16 = {d for d in MODELS if "fp16" in d}


def cli(*args, ok=True):
    p = subprocess.run([BIN, *args], capture_output=True, text=True)
    if ok and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def valid(test, path):
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)
    ai = [o for o in m.opset_import if o.domain == "ai.adanorm"]
    uses = any(n.domain == "ai.adanorm" for n in m.graph.node)
    test.assertEqual(bool(ai), uses, f"{path}: ai.adanorm import declared iff used")
    if ai:
        # Version 2 exactly when a node uses its residual slots (Skip, Bias, Sum).
        def residual(n):
            return any(i for i in n.input[3:]) or any(o for o in n.output[3:])
        ours = [n for n in all_nodes(m.graph) if n.domain == "ai.adanorm"]
        test.assertEqual(ai[0].version, 2 if any(residual(n) for n in ours) else 1, path)
    return m


def refuses_portable(test, src):
    """Whether `src` is below the opset --portable needs (12): then the CLI must say so."""
    opset = max(o.version for o in onnx.load(src, load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx"))
    if opset >= 12:
        return False
    p = cli("fuse", src, "-o", os.path.join(tempfile.gettempdir(), "never-written.onnx"), "--portable", ok=False)
    test.assertEqual(p.returncode, 2, p.stderr)
    test.assertIn("--portable needs the model's default opset >= 12", p.stderr)
    return True


def revert_of(test, path, name):
    """`path` reverted, checked valid and free of ai.adanorm nodes."""
    back = path + ".reverted.onnx"
    cli("revert", path, "-o", back)
    m = valid(test, back)
    test.assertFalse(any(n.domain == "ai.adanorm" for n in m.graph.node), name)
    return back


def all_nodes(graph):
    """The nodes of `graph` and of every subgraph in it."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from all_nodes(g)


def run(path, name):
    inputs = dict(np.load(os.path.join(ZOO, name, "inputs.npz")))
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: inputs[i.name] for i in s.get_inputs()})


def assert_matches_reference(test, path, name):
    ref = np.load(os.path.join(ZOO, name, "ref_output.npz"))
    out = run(path, name)
    tol = 3e-2 if name in FP16 else 1e-4
    key = list(ref.keys())[0]
    r = ref[key].astype(np.float64)
    o = out[0].astype(np.float64)
    err = np.max(np.abs(o - r) / np.maximum(1.0, np.abs(r)))
    test.assertLessEqual(err, tol, f"{path}: max scaled error {err}")
    return err


def summary(path):
    return json.loads(cli("inspect", "--json", path).stdout)["summary"]


class Rewrite(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def out(self, name):
        return os.path.join(self.tmp.name, name)

    def test_fuse_computes_the_same_function(self):
        for name in MODELS:
            with self.subTest(name):
                src = os.path.join(ZOO, name, "model.onnx")
                before = sha(src)
                before_summary = summary(src)
                fused = self.out(f"{name}.fused.onnx")
                cli("fuse", src, "-o", fused)
                self.assertEqual(sha(src), before, "the input is never modified")
                m = valid(self, fused)
                # The same normalisations are found in the fused model.
                self.assertEqual(summary(fused), before_summary)
                if any(n.domain == "ai.adanorm" for n in m.graph.node) and refuses_portable(self, src):
                    assert_matches_reference(self, revert_of(self, fused, name), name)
                elif any(n.domain == "ai.adanorm" for n in m.graph.node):
                    # The same fuse with function bodies runs in stock onnxruntime.
                    portable = self.out(f"{name}.fused.portable.onnx")
                    cli("fuse", src, "-o", portable, "--portable")
                    p = valid(self, portable)
                    self.assertTrue(any(f.domain == "ai.adanorm" for f in p.functions))
                    assert_matches_reference(self, portable, name)

    def test_rewrite_keep_with_k0_c1_and_fold_preserve_layernorm_models(self):
        for name in MODELS:
            src = os.path.join(ZOO, name, "model.onnx")
            counts = summary(src)
            # (A model that also holds AdaNorms has no single k, C that keeps them all.)
            if counts["layernorm"] == 0 or counts["adanorm"] > 0:
                continue
            if refuses_portable(self, src):
                continue
            with self.subTest(name):
                a = self.out(f"{name}.k0.onnx")
                p = cli("rewrite", src, "-o", a, "--to", "adanorm", "--k", "0", "--c", "1", "--portable")
                self.assertIn("computes the same function as before", p.stdout)
                valid(self, a)
                assert_matches_reference(self, a, name)
                f = self.out(f"{name}.fold.onnx")
                cli("rewrite", src, "-o", f, "--to", "simple", "--affine", "fold", "--portable",
                    "--weights-out", self.out(f"{name}.fold.safetensors"))
                valid(self, f)
                assert_matches_reference(self, f, name)

    def test_revert_of_a_drop_restores_the_model(self):
        for name in MODELS:
            src = os.path.join(ZOO, name, "model.onnx")
            with self.subTest(name):
                d = self.out(f"{name}.drop.onnx")
                w = self.out(f"{name}.drop.safetensors")
                p = cli("rewrite", src, "-o", d, "--affine", "drop", "--weights-out", w)
                valid(self, d)
                r = self.out(f"{name}.reverted.onnx")
                if os.path.exists(w):
                    self.assertIn("no longer computes the same function", p.stdout)
                    # Without the weights, revert refuses rather than guessing.
                    q = cli("revert", d, "-o", r, ok=False)
                    self.assertEqual(q.returncode, 2, q.stderr)
                    self.assertIn("--weights", q.stderr)
                    self.assertFalse(os.path.exists(r))
                    cli("revert", d, "-o", r, "--weights", w)
                else:
                    cli("revert", d, "-o", r)
                m = valid(self, r)
                self.assertFalse(any(n.domain == "ai.adanorm" for n in m.graph.node))
                assert_matches_reference(self, r, name)

    def test_adanorm_and_lnsimple_models_rewritten_to_their_own_kind(self):
        for name, args in [("adanorm_legacy_op14", ["--to", "adanorm"]), ("lnsimple_legacy_op14", ["--to", "simple"])]:
            with self.subTest(name):
                src = os.path.join(ZOO, name, "model.onnx")
                out = self.out(f"{name}.own.onnx")
                p = cli("rewrite", src, "-o", out, "--portable", *args)
                self.assertIn("computes the same function as before", p.stdout)
                valid(self, out)
                assert_matches_reference(self, out, name)

    def test_adanorm_with_k_changes_the_function_and_says_so(self):
        src = os.path.join(ZOO, "bert_legacy_op14", "model.onnx")
        out = self.out("bert.k.onnx")
        p = cli("rewrite", src, "-o", out, "--to", "adanorm", "--k", "0.1", "--c", "2", "--portable")
        self.assertIn("changes the function", p.stdout)
        ref = np.load(os.path.join(ZOO, "bert_legacy_op14", "ref_output.npz"))
        o = run(out, "bert_legacy_op14")[0]
        self.assertGreater(np.max(np.abs(o - ref[list(ref.keys())[0]])), 1e-2)

    def test_skip_layer_normalization_is_split_into_add_and_the_norm(self):
        from onnx import TensorProto, helper, numpy_helper
        rng = np.random.default_rng(5)
        h = 16
        g = numpy_helper.from_array(rng.standard_normal(h).astype(np.float32), "gamma")
        b = numpy_helper.from_array(rng.standard_normal(h).astype(np.float32), "beta")
        bias = numpy_helper.from_array(rng.standard_normal(h).astype(np.float32), "bias")
        for with_sum in (False, True):
            with self.subTest(sum_output_read=with_sum):
                outs = ["y", "", "", "sum"] if with_sum else ["y"]
                node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], outs,
                                        domain="com.microsoft", epsilon=1e-6, name="skipln")
                graph_outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, h])]
                if with_sum:
                    graph_outs.append(helper.make_tensor_value_info("sum", TensorProto.FLOAT, [2, 3, h]))
                graph = helper.make_graph([node], "g", [
                    helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, h]),
                    helper.make_tensor_value_info("skip", TensorProto.FLOAT, [2, 3, h])], graph_outs, [g, b, bias])
                model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
                src = self.out(f"skipln{with_sum}.onnx")
                onnx.save(model, src)
                out = self.out(f"skipln{with_sum}.adanorm.onnx")
                cli("rewrite", src, "-o", out, "--k", "0", "--c", "1", "--portable")
                m = onnx.load(out)
                self.assertFalse(any(n.op_type == "SkipLayerNormalization" for n in m.graph.node))
                self.assertEqual([n.op_type for n in m.graph.node], ["Add", "Add", "AdaNorm"])
                feeds = {"x": rng.standard_normal((2, 3, h)).astype(np.float32),
                         "skip": rng.standard_normal((2, 3, h)).astype(np.float32)}
                want = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)
                got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, feeds)
                for w, o in zip(want, got):
                    self.assertLess(float(np.max(np.abs(w - o))), 1e-4)

    def test_embed_layer_normalization_is_split_into_standard_ops(self):
        # Every optional input and output of ONNX Runtime's op, against ONNX Runtime itself:
        # segment ids and table, a table alone (row 0 for every token), none; position_ids
        # [1, S] or [B, S] or absent (0..S); a mask with holes (mask_index counts its ones, as
        # the CPU kernel does) or none (zeros); embedding_sum read.
        from onnx import TensorProto, helper, numpy_helper
        rng = np.random.default_rng(7)
        bsz, seq, h, vocab = 2, 5, 16, 30
        tables = {
            "word": rng.standard_normal((vocab, h)).astype(np.float32),
            "pos": rng.standard_normal((12, h)).astype(np.float32),
            "seg": rng.standard_normal((2, h)).astype(np.float32),
            "gamma": rng.standard_normal(h).astype(np.float32),
            "beta": rng.standard_normal(h).astype(np.float32),
        }
        feeds_all = {
            "ids": rng.integers(0, vocab, (bsz, seq)).astype(np.int32),
            "segs": rng.integers(0, 2, (bsz, seq)).astype(np.int32),
            "mask": np.array([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=np.int32),
            "pos1": np.array([[4, 3, 2, 1, 0]], dtype=np.int32),
            "posb": rng.integers(0, 12, (bsz, seq)).astype(np.int32),
        }
        cases = {
            "all": dict(segs=True, seg=True, mask=True, pos="pos1", outs=3),
            "plain": dict(segs=False, seg=False, mask=False, pos=None, outs=2),
            "table_only": dict(segs=False, seg=True, mask=True, pos="posb", outs=3),
            "no_mask_read": dict(segs=True, seg=True, mask=False, pos=None, outs=3),
        }
        for case, c in cases.items():
            with self.subTest(case):
                ins = ["ids", "segs" if c["segs"] else "", "word", "pos", "seg" if c["seg"] else "",
                       "gamma", "beta", "mask" if c["mask"] else "", c["pos"] or ""]
                while not ins[-1]:
                    ins.pop()
                outs = ["y", "mask_index", "embedding_sum"][:c["outs"]]
                node = helper.make_node("EmbedLayerNormalization", ins, outs, domain="com.microsoft",
                                        epsilon=1e-5, name="embed")
                graph_ins = [helper.make_tensor_value_info(n, TensorProto.INT32, list(feeds_all[n].shape))
                             for n in ins if n in feeds_all]
                graph_outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [bsz, seq, h]),
                              helper.make_tensor_value_info("mask_index", TensorProto.INT32, [bsz])]
                if c["outs"] == 3:
                    graph_outs.append(helper.make_tensor_value_info("embedding_sum", TensorProto.FLOAT, [bsz, seq, h]))
                inits = [numpy_helper.from_array(v, k) for k, v in tables.items()]
                graph = helper.make_graph([node], "g", graph_ins, graph_outs, inits)
                model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14),
                                                                helper.make_opsetid("com.microsoft", 1)])
                model.ir_version = 8
                src = self.out(f"embed_{case}.onnx")
                onnx.save(model, src)
                out = self.out(f"embed_{case}.split.onnx")
                cli("rewrite", src, "-o", out, "--to", "simple", "--portable")
                m = valid(self, out)
                self.assertFalse(any(n.domain == "com.microsoft" for n in all_nodes(m.graph)))
                feeds = {n: feeds_all[n] for n in ins if n in feeds_all}
                want = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)
                got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, feeds)
                for name, w, o in zip(outs, want, got):
                    self.assertEqual(w.dtype, o.dtype, name)
                    self.assertEqual(w.shape, o.shape, name)
                    self.assertLess(float(np.max(np.abs(w.astype(np.float64) - o))), 1e-4, name)
                back = self.out(f"embed_{case}.back.onnx")
                cli("revert", out, "-o", back)
                self.assertEqual([n.op_type for n in onnx.load(back).graph.node], ["EmbedLayerNormalization"])

    def test_ort_optimised_bert_after_rewrite_runs_in_stock_onnxruntime(self):
        # The transformer optimizer's BERT (fixtures/ort_optimised): EmbedLayerNormalization with
        # its mask_index read by Attention, SkipLayerNormalization with bias.
        case = os.path.join(ROOT, "fixtures", "ort_optimised", "bert_ort_opt")
        src = os.path.join(case, "model.onnx")
        out = self.out("bert_ort_opt.portable.onnx")
        cli("rewrite", src, "-o", out, "--to", "simple", "--portable")
        m = onnx.load(out)  # (onnx's checker does not know the contrib ops left in it)
        self.assertEqual(sorted({n.op_type for n in m.graph.node if n.domain == "com.microsoft"}),
                         ["Attention", "BiasGelu"])
        feeds = dict(np.load(os.path.join(case, "inputs.npz")))
        ref = dict(np.load(os.path.join(case, "ref_output.npz")))
        sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
        for o, got in zip(sess.get_outputs(), sess.run(None, feeds)):
            self.assertLess(float(np.max(np.abs(ref[o.name] - got))), 1e-4, o.name)

    def test_existing_output_needs_force_and_input_is_never_the_output(self):
        src = os.path.join(ZOO, "gpt2_legacy_op14", "model.onnx")
        out = self.out("taken.onnx")
        with open(out, "wb") as f:
            f.write(b"precious")
        p = cli("fuse", src, "-o", out, ok=False)
        self.assertEqual(p.returncode, 2)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"precious")
        cli("fuse", src, "-o", out, "--force")
        valid(self, out)
        p = cli("fuse", out, "-o", out, "--force", ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("replace the input", p.stderr)


SUBGRAPHS = os.path.join(ROOT, "fixtures", "subgraphs")


def nodes_everywhere(graph):
    for n in graph.node:
        yield n
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from nodes_everywhere(sub)


class Subgraphs(unittest.TestCase):
    """LayerNorms inside If branches, a Loop body, a nested If (fixtures/subgraphs/make.py) and a real
    HF optimum merged decoder (fixtures/subgraphs/export_gpt2_merged.py)."""

    def test_portable_rewrites_run_in_stock_onnxruntime_and_revert_exactly(self):
        with tempfile.TemporaryDirectory() as tmp:
            for name, count, tol in [("if_branches", 2, 1e-4), ("loop_body", 1, 1e-4), ("nested_if", 1, 3e-2),
                                     ("gpt2_merged_optimum_op14", 10, 1e-4)]:
                with self.subTest(model=name):
                    src = os.path.join(SUBGRAPHS, name, "model.onnx")
                    before = sha(src)
                    p = os.path.join(tmp, f"{name}.adanorm.onnx")
                    cli("rewrite", src, "-o", p, "--to", "simple", "--portable")
                    m = onnx.load(p)
                    onnx.checker.check_model(m, full_check=True)
                    onnx.shape_inference.infer_shapes(m, strict_mode=True)
                    ours = [n for n in nodes_everywhere(m.graph) if n.domain == "ai.adanorm"]
                    self.assertEqual(len(ours), count)
                    self.assertFalse(any(n.domain == "ai.adanorm" for n in m.graph.node),
                                     "the ops stay inside the subgraphs")
                    s = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
                    cases = [f[len("inputs_"):-4] for f in os.listdir(os.path.join(SUBGRAPHS, name))
                             if f.startswith("inputs_")]
                    self.assertTrue(cases)
                    for case in cases:
                        feeds = dict(np.load(os.path.join(SUBGRAPHS, name, f"inputs_{case}.npz")))
                        ref = np.load(os.path.join(SUBGRAPHS, name, f"ref_{case}.npz"))
                        got = s.run(None, feeds)
                        for want, out in zip(ref.values(), got):
                            err = np.max(np.abs(out.astype(np.float64) - want) / np.maximum(1.0, np.abs(want)))
                            self.assertLessEqual(err, tol, f"{name} {case}")
                    r = os.path.join(tmp, f"{name}.reverted.onnx")
                    cli("revert", p, "-o", r)
                    self.assertEqual(onnx.load(r).graph.SerializeToString(), onnx.load(src).graph.SerializeToString())
                    self.assertEqual(sha(src), before)


SHARING = os.path.join(ROOT, "fixtures", "sharing")
SHARED_MODELS = sorted(d for d in os.listdir(SHARING) if os.path.exists(os.path.join(SHARING, d, "model.onnx")))


def unique_names(test, path):
    """One tensor per name, one producer per value, in every graph (ORT only warns about a
    duplicate initializer and then computes with the last one)."""
    m = onnx.load(path)

    def walk(g, outer):
        names = [t.name for t in g.initializer] + [o for n in g.node for o in n.output if o]
        test.assertEqual(len(names), len(set(names)), f"{path}: a name is defined twice in {g.name}")
        test.assertFalse(outer & set(names), f"{path}: a subgraph redefines {outer & set(names)}")
        for n in g.node:
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(sub, outer | set(names) | {i.name for i in g.input})

    walk(m.graph, set())


class Sharing(unittest.TestCase):
    """Real dynamo exports run through the onnxscript optimizer (equal initializers deduplicated:
    one zero bias for q, k, v and the norms, one gain for every norm, a tied embedding) and legacy
    exports with shared constants (fixtures/sharing/make*.py): every rewrite is valid, claimed-
    exact ones compute what the original computes in ONNX Runtime, reverts restore it."""

    def test_every_rewrite_of_a_deduplicated_model_is_exact_and_reverts(self):
        with tempfile.TemporaryDirectory() as tmp:
            for name in SHARED_MODELS:
                with self.subTest(model=name):
                    folder = os.path.join(SHARING, name)
                    src = os.path.join(folder, "model.onnx")
                    before, listing = sha(src), sorted(os.listdir(folder))
                    feeds = dict(np.load(os.path.join(folder, "inputs.npz")))
                    ref = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)

                    def same(path, tol):
                        got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
                        for want, out in zip(ref, got):
                            w = want.astype(np.float64)
                            err = np.max(np.abs(out.astype(np.float64) - w) / np.maximum(1.0, np.abs(w)))
                            self.assertLessEqual(err, tol, f"{path}: max scaled error {err}")

                    runs = [("fuse", ["fuse", "--portable"], True),
                            ("k0", ["rewrite", "--k", "0", "--c", "1", "--portable"], True),
                            ("fold", ["rewrite", "--k", "0", "--c", "1", "--affine", "fold", "--portable"], True),
                            ("simplefold", ["rewrite", "--to", "simple", "--affine", "fold", "--portable"], False),
                            ("drop", ["rewrite", "--affine", "drop"], False)]
                    for tag, args, exact in runs:
                        out = os.path.join(tmp, f"{name}.{tag}.onnx")
                        p = cli(args[0], src, "-o", out, *args[1:])
                        valid(self, out)
                        unique_names(self, out)
                        if exact:
                            self.assertIn("computes the same function as before", p.stdout)
                            same(out, 1e-4)
                        # The weights file, if any, lands beside the output.
                        weights = os.path.join(tmp, f"{name}.{tag}.weights.safetensors")
                        back = os.path.join(tmp, f"{name}.{tag}.reverted.onnx")
                        if os.path.exists(weights):
                            cli("revert", out, "-o", back, "--weights", weights)
                        else:
                            cli("revert", out, "-o", back)
                        valid(self, back)
                        unique_names(self, back)
                        same(back, 0.0)
                    self.assertEqual(sha(src), before, "the input is never modified")
                    self.assertEqual(sorted(os.listdir(folder)), listing, "nothing is written beside the input")


def layer_norm_model(opset, h=16):
    """The PyTorch decomposed LayerNorm at an old opset (ReduceMean's axes as an attribute)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(opset)
    inits = [numpy_helper.from_array(rng.standard_normal(h).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.standard_normal(h).astype(np.float32), "beta"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "eps")]
    mk = helper.make_node
    nodes = [mk("ReduceMean", ["x"], ["m"], axes=[-1], name="mean"),
             mk("Sub", ["x", "m"], ["d"], name="sub"),
             mk("Pow", ["d", "two"], ["dd"], name="pow"),
             mk("ReduceMean", ["dd"], ["var"], axes=[-1], name="var"),
             mk("Add", ["var", "eps"], ["ve"], name="add_eps"),
             mk("Sqrt", ["ve"], ["sd"], name="sqrt"),
             mk("Div", ["d", "sd"], ["n"], name="div"),
             mk("Mul", ["n", "gamma"], ["g"], name="mul"),
             mk("Add", ["g", "beta"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, h])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


class OldOpsets(unittest.TestCase):
    """`--portable` bodies and revert's standard ops in the model's own opset: bodies from opset 12
    (they read attributes through Constant's value_int/value_float), inlined standard ops from
    opset 10; below, a clear error."""

    def test_portable_and_revert_at_old_opsets(self):
        feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 16)).astype(np.float32)}
        with tempfile.TemporaryDirectory() as tmp:
            for opset in (11, 12, 13):
                with self.subTest(opset=opset):
                    src = os.path.join(tmp, f"ln{opset}.onnx")
                    onnx.save(layer_norm_model(opset), src)
                    want = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
                    out = os.path.join(tmp, f"ln{opset}.portable.onnx")
                    p = cli("rewrite", src, "-o", out, "--k", "0", "--c", "1", "--portable", ok=False)
                    if opset < 12:
                        self.assertEqual(p.returncode, 2, p.stderr)
                        self.assertIn("opset >= 12", p.stderr)
                        self.assertFalse(os.path.exists(out))
                    else:
                        self.assertEqual(p.returncode, 0, p.stderr)
                        valid(self, out)
                        got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
                        self.assertLess(float(np.max(np.abs(got - want))), 1e-4)
                    # A node without a revert record becomes standard ops in the model's opset.
                    plain = os.path.join(tmp, f"ln{opset}.adanorm.onnx")
                    cli("rewrite", src, "-o", plain, "--k", "0", "--c", "1")
                    m = onnx.load(plain)
                    del m.metadata_props[:]
                    bare = os.path.join(tmp, f"ln{opset}.bare.onnx")
                    onnx.save(m, bare)
                    back = os.path.join(tmp, f"ln{opset}.reverted.onnx")
                    cli("revert", bare, "-o", back)
                    valid(self, back)
                    self.assertEqual(onnx.load(back).opset_import[0].version, opset)
                    got = ort.InferenceSession(back, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
                    self.assertLess(float(np.max(np.abs(got - want))), 1e-4)


def untyped_half_norms_model():
    """Two float16 LayerNorms without gain or bias whose input's element type the tool cannot
    know (an `Add` whose first operand comes from `ConstantOfShape`), for `--portable`."""
    from onnx import TensorProto, helper
    half = lambda name, v: helper.make_tensor(name, TensorProto.FLOAT16, [], [v])
    nodes = [
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("ConstantOfShape", ["xs"], ["zeros"], value=helper.make_tensor("v", TensorProto.FLOAT16, [1], [0.0])),
        helper.make_node("Add", ["zeros", "x"], ["h0"]),
    ]
    inits = [half("eps", 1e-5)]
    h = "h0"
    for i in range(2):
        nodes += [
            helper.make_node("ReduceMean", [h], [f"m{i}"], axes=[-1]),
            helper.make_node("Sub", [h, f"m{i}"], [f"d{i}"]),
            helper.make_node("Mul", [f"d{i}", f"d{i}"], [f"dd{i}"]),
            helper.make_node("ReduceMean", [f"dd{i}"], [f"v{i}"], axes=[-1]),
            helper.make_node("Add", [f"v{i}", "eps"], [f"ve{i}"]),
            helper.make_node("Sqrt", [f"ve{i}"], [f"s{i}"]),
            helper.make_node("Div", [f"d{i}", f"s{i}"], [f"y{i}"]),
            helper.make_node("Relu", [f"y{i}"], [f"h{i + 1}"]),
        ]
        h = f"h{i + 1}"
    g = helper.make_graph(nodes, "untyped", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3, 16])],
                          [helper.make_tensor_value_info(h, TensorProto.FLOAT16, [2, 3, 16])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


class PortableTypes(unittest.TestCase):
    """`--portable` where the tool cannot know a norm's element type: the default gain and bias
    it adds for the function call take X's type in the body (CastLike), and every name it adds
    is fresh, also for nodes that have no name."""

    def test_untyped_float16_and_nameless_nodes(self):
        feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 16)).astype(np.float16)}
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "untyped.onnx")
            onnx.save(untyped_half_norms_model(), src)
            want = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
            # Straight from the original, and from a rewrite whose ai.adanorm nodes lost their names.
            plain = os.path.join(tmp, "plain.onnx")
            cli("rewrite", src, "-o", plain, "--k", "0", "--c", "1")
            m = onnx.load(plain)
            self.assertEqual(sum(n.domain == "ai.adanorm" for n in m.graph.node), 2)
            for n in m.graph.node:
                n.name = ""
            nameless = os.path.join(tmp, "nameless.onnx")
            onnx.save(m, nameless)
            for what, args in [("rewrite", ["rewrite", src, "--k", "0", "--c", "1"]),
                               ("fuse", ["fuse", src]),
                               ("fuse of nameless nodes", ["fuse", nameless])]:
                with self.subTest(what):
                    out = os.path.join(tmp, what.replace(" ", "_") + ".portable.onnx")
                    cli(*args, "-o", out, "--portable")
                    valid(self, out)
                    got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
                    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
                    self.assertLess(err, 3e-2)


FUNCTIONS = os.path.join(ROOT, "fixtures", "functions", "torch_modules_as_functions_op15")


class Functions(unittest.TestCase):
    """LayerNorms inside model-local functions (fixtures/functions/export.py)."""

    def test_calls_are_inlined_rewritten_and_run_in_stock_onnxruntime(self):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(FUNCTIONS, "model.onnx")
            before = sha(src)
            feeds = dict(np.load(os.path.join(FUNCTIONS, "inputs.npz")))
            ref = np.load(os.path.join(FUNCTIONS, "ref_output.npz"))
            p = os.path.join(tmp, "portable.onnx")
            out = cli("rewrite", src, "-o", p, "--to", "simple", "--portable").stdout
            self.assertIn("torch.nn.modules.normalization.LayerNorm were inlined", out)
            r = os.path.join(tmp, "reverted.onnx")
            cli("revert", p, "-o", r)
            for path in [p, r]:
                m = onnx.load(path)
                onnx.checker.check_model(m, full_check=True)
                onnx.shape_inference.infer_shapes(m, strict_mode=True)
                self.assertFalse(any(f.domain == "torch.nn.modules.normalization" for f in m.functions))
                got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
                for want, o in zip(ref.values(), got):
                    self.assertLessEqual(float(np.max(np.abs(o - want))), 1e-5, path)
            self.assertEqual(sum(n.domain == "ai.adanorm" for n in onnx.load(p).graph.node), 2)
            self.assertEqual(sha(src), before)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
