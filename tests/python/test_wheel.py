"""The installed wheel (scripts/test-wheel runs this in a fresh venv, no source tree on sys.path):
the API against the console script on zoo models, fused and rewritten models against the
originals in ONNX Runtime through get_library_path(), errors as adanorm_onnx.Error, the plain
library, and the wheel's platform tag. Env: ADANORM_REPO (the checkout), ADANORM_WHEEL."""

import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import adanorm_onnx

REPO = os.environ["ADANORM_REPO"]
WHEEL = os.environ["ADANORM_WHEEL"]
ZOO = os.path.join(REPO, "fixtures", "zoo")
ZOO_MODELS = sorted(d for d in os.listdir(ZOO) if os.path.exists(os.path.join(ZOO, d, "model.onnx")))
# float32 models, each a different exporter or architecture, at IR <= 9 (onnxruntime 1.17 loads them).
RUN_MODELS = ["adanorm_legacy_op14", "bert_legacy_op14", "gpt2_legacy_op14", "lnsimple_legacy_op14",
              "swin_legacy_op14", "keras_tf2onnx_op13"]
SCRIPT = os.path.join(os.path.dirname(sys.executable), "adanorm-onnx")
# node_modules holding onnxruntime-node (scripts/test-wheel installs it from npm).
NODE_MODULES = os.environ["ADANORM_NODE_MODULES"]


def zoo(name):
    return os.path.join(ZOO, name, "model.onnx")


def cli(*args):
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True)


def run_ort(model, feeds, lib=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if lib:
        so.register_custom_ops_library(lib)
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})


def inputs(name):
    with np.load(os.path.join(ZOO, name, "inputs.npz")) as z:
        return dict(z)


def assert_same_outputs(a, b, tol=1e-4):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape
        assert np.max(np.abs(x - y) / np.maximum(1, np.abs(y)), initial=0) <= tol


def test_installed_not_the_source_tree():
    here = os.path.abspath(adanorm_onnx.__file__)
    assert here.startswith(os.path.abspath(sys.prefix) + os.sep), here
    assert not here.startswith(os.path.join(os.path.abspath(REPO), "crates")), here


def test_version_is_the_crate_version():
    text = open(os.path.join(REPO, "Cargo.toml")).read()
    want = re.search(r'\[workspace\.package\][^\[]*?version = "([^"]+)"', text).group(1)
    assert adanorm_onnx.__version__ == want
    assert cli("--version").stdout.split() == ["adanorm-onnx", want]


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_inspect_equals_the_console_script(name):
    got = adanorm_onnx.inspect(zoo(name))
    out = cli("inspect", zoo(name), "--json")
    assert out.returncode == 0, out.stderr
    assert got == json.loads(out.stdout)
    # The same document from bytes and from a ModelProto, but for the model's name.
    from_bytes = adanorm_onnx.inspect(open(zoo(name), "rb").read())
    assert from_bytes["model"] == "<bytes>"
    assert {**from_bytes, "model": got["model"]} == got


@pytest.mark.parametrize("name", RUN_MODELS)
def test_fused_and_rewritten_models_compute_the_original(name):
    original = onnx.load(zoo(name))
    feeds = inputs(name)
    want = run_ort(original, feeds)
    lib = adanorm_onnx.get_library_path()
    fused, report = adanorm_onnx.fuse(original)
    assert report["command"] == "fuse" and report["same_function"] and report["replaced"] > 0
    assert any(n.domain == "ai.adanorm" for n in fused.graph.node)
    assert_same_outputs(run_ort(fused, feeds, lib), want)
    # rewrite keeps the function where the target is the match's own op: AdaNorm with its own C
    # and k, or LayerNorm-simple with the gains kept for a LayerNorm.
    to = "adanorm" if name.startswith("adanorm") else "simple"
    rewritten, report = adanorm_onnx.rewrite(original, to=to)
    assert report["replaced"] > 0 and report["same_function"]
    assert_same_outputs(run_ort(rewritten, feeds, lib), want)


def test_drop_then_revert_restores_the_model(tmp_path):
    name = "bert_legacy_op14"
    feeds, weights = inputs(name), tmp_path / "w.safetensors"
    dropped, report = adanorm_onnx.rewrite(zoo(name), affine="drop", weights_out=weights)
    assert report["weights"] == str(weights) and weights.exists()
    back, report = adanorm_onnx.revert(dropped, weights=weights)
    assert report["command"] == "revert"
    assert_same_outputs(run_ort(back, feeds), run_ort(onnx.load(zoo(name)), feeds))


def test_output_writes_the_file_instead(tmp_path):
    out = tmp_path / "fused.onnx"
    model, report = adanorm_onnx.fuse(zoo("gpt2_legacy_op14"), output=out)
    assert model is None and report["output"] == str(out)
    assert any(n.domain == "ai.adanorm" for n in onnx.load(out).graph.node)
    with pytest.raises(adanorm_onnx.Error, match="exists"):
        adanorm_onnx.fuse(zoo("gpt2_legacy_op14"), output=out)
    adanorm_onnx.fuse(zoo("gpt2_legacy_op14"), output=out, force=True)


def test_errors_are_adanorm_onnx_errors(tmp_path):
    missing = str(tmp_path / "missing.onnx")
    with pytest.raises(adanorm_onnx.Error) as e:
        adanorm_onnx.inspect(missing)
    assert e.value.file == missing and "cannot read" in e.value.message
    with pytest.raises(adanorm_onnx.Error) as e:
        adanorm_onnx.fuse(b"not a model")
    assert e.value.file == "<bytes>"
    with pytest.raises(adanorm_onnx.Error, match="weights_out"):
        adanorm_onnx.rewrite(zoo("bert_legacy_op14"), affine="fold")
    with pytest.raises(TypeError):
        adanorm_onnx.inspect(42)
    # The console script: the binary's statuses and messages.
    out = cli("inspect", missing)
    assert out.returncode == 2 and missing in out.stderr
    assert cli("no-such-command").returncode == 2


def test_plain_library_runs_without_python_symbols():
    plain = adanorm_onnx.get_plain_library_path()
    needed = subprocess.run(["readelf", "-d", plain], capture_output=True, text=True).stdout
    assert "libpython" not in needed
    undefined = subprocess.run(["nm", "-D", "--undefined-only", plain], capture_output=True, text=True).stdout
    assert not re.search(r"\bPy", undefined)
    name = "lnsimple_legacy_op14"
    fused, _ = adanorm_onnx.fuse(zoo(name))
    assert_same_outputs(run_ort(fused, inputs(name), plain), run_ort(onnx.load(zoo(name)), inputs(name)))


def test_the_wheel_is_manylinux2014_with_cli_api_and_library():
    names = zipfile.ZipFile(WHEEL).namelist()
    assert "adanorm_onnx/lib/libadanorm_ort.so" in names
    assert any(n.startswith("adanorm_onnx/_native") and n.endswith(".so") for n in names)
    assert "adanorm_onnx/__init__.pyi" in names
    entry = [n for n in names if n.endswith("entry_points.txt")]
    scripts = zipfile.ZipFile(WHEEL).read(entry[0]).decode().replace(" ", "")
    assert "adanorm-onnx=adanorm_onnx._cli:main" in scripts.splitlines()
    shown = subprocess.run([sys.executable, "-m", "auditwheel", "show", WHEEL], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"manylinux_2_17_x86_64", " ".join(shown.stdout.split())), shown.stdout


def test_portable_rewrite_runs_in_onnxruntime_node(tmp_path):
    """ORT-web and onnxruntime-node load no custom-op libraries: a --portable model is how they
    run a rewritten model. Node's outputs must be ORT Python's, and the original's."""
    name = "bert_legacy_op14"
    portable, report = adanorm_onnx.rewrite(zoo(name), to="simple", portable=True)
    assert report["replaced"] > 0 and report["same_function"]
    assert any(f.domain == "ai.adanorm" for f in portable.functions)
    model_path = tmp_path / "portable.onnx"
    onnx.save(portable, model_path)
    feeds = inputs(name)
    graph_inputs = {i.name for i in portable.graph.input}
    io = {"inputs": {}, "out_dir": str(tmp_path)}
    for k, v in feeds.items():
        if k in graph_inputs:
            file = tmp_path / f"in_{len(io['inputs'])}.bin"
            np.ascontiguousarray(v).tofile(file)
            io["inputs"][k] = {"file": str(file), "dtype": str(v.dtype), "shape": list(v.shape)}
    (tmp_path / "io.json").write_text(json.dumps(io))
    run = subprocess.run(["node", os.path.join(REPO, "tests", "node", "run_model.js"), str(model_path),
                          str(tmp_path / "io.json")], capture_output=True, text=True,
                         env={**os.environ, "NODE_PATH": NODE_MODULES})
    assert run.returncode == 0, run.stderr
    got = [np.fromfile(o["file"], dtype=o["dtype"]).reshape(o["shape"])
           for o in json.loads((tmp_path / "outputs.json").read_text())]
    assert_same_outputs(got, run_ort(portable, feeds))
    assert_same_outputs(got, run_ort(onnx.load(zoo(name)), feeds))


def test_external_data_models_go_through_output(tmp_path):
    """A model keeping its weights in an external file: output= beside it works, and the
    in-memory return (which would need the data elsewhere) is refused with an Error."""
    name = "bert_legacy_op14"
    model = onnx.load(zoo(name))
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    out = tmp_path / "ext.fused.onnx"
    fused, report = adanorm_onnx.fuse(path, output=out)
    assert fused is None and report["replaced"] > 0
    feeds = inputs(name)
    # (onnx.save with external data rewrote `model` in place: reload the original.)
    want = run_ort(onnx.load(zoo(name)), feeds)
    assert_same_outputs(run_ort(str(out), feeds, adanorm_onnx.get_library_path()), want)
    with pytest.raises(adanorm_onnx.Error, match="external data"):
        adanorm_onnx.fuse(path)
