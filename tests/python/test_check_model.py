"""The held-out checker (check_model.py) passes a sound tool and catches a faulty one.

    .venv/bin/python tests/python/test_check_model.py CLI ORT_LIB

A faulty tool is the real CLI behind a wrapper that spoils what it writes in one way each: a
norm's gain scaled by 1.01 in every written model, a stray file beside the input, the input model
touched. Each must turn into a FAIL line and exit status 1.
"""
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CHECKER = os.path.join(HERE, "check_model.py")
CLI, LIB = (os.path.abspath(a) for a in sys.argv[1:3])
ZOO = os.path.join(ROOT, "fixtures", "zoo")

# Runs the real CLI, then spoils the written model or its folder as SABOTAGE says.
WRAPPER = textwrap.dedent("""\
    #!{python}
    import os, subprocess, sys
    import numpy as np, onnx
    from onnx import numpy_helper
    argv = sys.argv[1:]
    p = subprocess.run([{cli!r}] + argv)
    if p.returncode != 0 or argv[0] in ("inspect", "revert"):
        sys.exit(p.returncode)
    out = argv[argv.index("-o") + 1]
    model_in = argv[-4] if "--json" in argv else argv[-3]
    sabotage = {sabotage!r}
    if sabotage == "gain":
        m = onnx.load(out)
        gains = {{n.input[1] for n in m.graph.node if n.domain == "ai.adanorm" and len(n.input) > 1}}
        for i, t in enumerate(m.graph.initializer):
            if t.name in gains:
                m.graph.initializer[i].CopyFrom(
                    numpy_helper.from_array(numpy_helper.to_array(t) * 1.01, t.name))
        onnx.save(m, out)
    elif sabotage == "stray":
        open(os.path.join(os.path.dirname(out), "stray.txt"), "w").write("x")
    elif sabotage == "touch-input":
        with open(model_in, "ab") as f:
            f.write(b"")
        m = onnx.load(model_in)
        m.doc_string = "changed"
        onnx.save(m, model_in)
    sys.exit(0)
    """)


def check(model, cli):
    return subprocess.run([sys.executable, CHECKER, model, "--cli", cli, "--ort-lib", LIB,
                           "--inputs", os.path.join(os.path.dirname(model), "inputs.npz")],
                          capture_output=True, text=True)


class CheckModel(unittest.TestCase):
    def test_sound_tool_passes_on_zoo_models(self):
        for name in ("gpt2_legacy_op14", "bert_dynamo_default", "bert_fp16_islands_legacy_op14"):
            p = check(os.path.join(ZOO, name, "model.onnx"), CLI)
            self.assertEqual(p.returncode, 0, f"{name}:\n{p.stdout}{p.stderr}")
            self.assertNotIn("FAIL", p.stdout)
            # It did run ONNX Runtime on the written models and the reverts.
            self.assertIn("fuse: ONNX Runtime (all optimisations): worst", p.stdout)
            self.assertIn("fuse: revert gives the same nodes and initializers", p.stdout)

    def test_faulty_tool_fails(self):
        model = os.path.join(ZOO, "gpt2_legacy_op14", "model.onnx")
        expected = {
            "gain": "FAIL  fuse: ONNX Runtime (none)",
            "stray": "FAIL  nothing written where not asked",
            "touch-input": "FAIL  the input model unchanged by every command",
        }
        with tempfile.TemporaryDirectory() as tmp:
            for sabotage, line in expected.items():
                wrapper = os.path.join(tmp, f"cli-{sabotage}")
                with open(wrapper, "w") as f:
                    f.write(WRAPPER.format(python=sys.executable, cli=CLI, sabotage=sabotage))
                os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IEXEC)
                p = check(model, wrapper)
                self.assertEqual(p.returncode, 1, f"{sabotage}:\n{p.stdout}{p.stderr}")
                self.assertIn(line, p.stdout, sabotage)

    def test_missing_model_is_a_usage_error(self):
        p = check(os.path.join(ZOO, "no_such_model", "model.onnx"), CLI)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no such file", p.stderr)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[3:])
