"""The Python API: one function per command, on a path, ``bytes`` or ``onnx.ModelProto``.

Each runs the command in this process (the native module) with ``--json`` and returns its report
as a dict: the same document ``adanorm-onnx <command> --json`` prints.
"""

import json
import os
import tempfile

from . import _native

_PROGRAM = "adanorm-onnx"


class Error(Exception):
    """A command failed: the model could not be read, written or rewritten.

    ``file`` and ``node`` name where (``None`` when the failure has no such place; ``file`` is
    ``"<bytes>"`` or ``"<ModelProto>"`` for a model given in memory), ``message`` says why.
    """

    def __init__(self, message, file=None, node=None):
        self.message = message
        self.file = file
        self.node = node
        where = "".join(f"{p}: " for p in (file, f"node '{node}'" if node else None) if p)
        super().__init__(where + message)


def get_library_path():
    """The ONNX Runtime custom-op library, for ``SessionOptions.register_custom_ops_library`` in a
    Python process: this package's native module, which exports ``RegisterCustomOps``. It holds
    the CPU and the CUDA kernels and runs without a GPU."""
    return os.path.abspath(_native.__file__)


def get_plain_library_path():
    """A plain ``libadanorm_ort.so`` shipped in the package, for processes without Python (C++,
    Triton's ``model_operations``/``op_library_filename``): the same kernels, no Python symbols."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "libadanorm_ort.so")
    if not os.path.exists(path):
        raise Error("this installation has no plain libadanorm_ort.so", file=path)
    return path


class _Input:
    """The model as a file the command can read: a path as given, or bytes in a temporary one."""

    def __init__(self, model, tmp):
        self.shown = None
        if isinstance(model, (str, os.PathLike)):
            self.path = os.fspath(model)
            return
        if isinstance(model, (bytes, bytearray, memoryview)):
            data, self.shown = bytes(model), "<bytes>"
        elif hasattr(model, "SerializeToString"):
            data, self.shown = model.SerializeToString(), "<ModelProto>"
        else:
            raise TypeError(f"model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")
        self.path = os.path.join(tmp, "input.onnx")
        with open(self.path, "wb") as f:
            f.write(data)

    def error(self, e):
        message, file, node = e.args
        if self.shown and file == self.path:
            file = self.shown
        return Error(message, file, node)


def _run(inp, argv):
    try:
        _, report = _native.execute([_PROGRAM, *argv])
    except _native.NativeError as e:
        raise inp.error(e) from None
    return json.loads(report)


def _families(only):
    if only is None:
        return []
    names = [only] if isinstance(only, str) else list(only)
    return ["--only", ",".join(names)] if names else []


def _transform(command, model, options, output, force):
    """Runs ``command`` writing to ``output``, or to a temporary file loaded back as the result."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="adanorm-onnx-") as tmp:
        inp = _Input(model, tmp)
        target = os.fspath(output) if output is not None else os.path.join(tmp, "output.onnx")
        argv = [command, inp.path, "-o", target, "--json", *options]
        if force:
            argv.append("--force")
        try:
            report = _run(inp, argv)
        except Error as e:
            if output is None and "external data" in e.message:
                e = Error(e.message + "; give output= in that directory", e.file, e.node)
                raise e from None
            raise
        if inp.shown:
            report["model"] = inp.shown
        if output is not None:
            return None, report
        report["output"] = None
        return onnx.load(target), report


def inspect(model):
    """Every LayerNorm-family match of ``model``: the dict ``adanorm-onnx inspect --json`` prints
    (``matches``, ``summary``, ``inlined_functions``)."""
    with tempfile.TemporaryDirectory(prefix="adanorm-onnx-") as tmp:
        inp = _Input(model, tmp)
        report = _run(inp, ["inspect", inp.path, "--json"])
        if inp.shown:
            report["model"] = inp.shown
        return report


def fuse(model, *, only=None, portable=False, residual=True, output=None, force=False):
    """Replaces each decomposed norm by one ``ai.adanorm`` node computing the same function.

    Returns ``(model, report)``: the fused ``onnx.ModelProto`` and what was done (the dict
    ``fuse --json`` prints). With ``output=`` the model is written there atomically instead and
    ``None`` returned in its place (models over 2 GiB, external data beside the input).
    ``only``: families to change (``"adanorm"``, ``"lnsimple"``, ``"layernorm"``);
    ``portable``: add function bodies for runtimes without the library; ``residual=False``: keep
    the residual ``Add``s (``--no-residual``).
    """
    options = _families(only)
    if portable:
        options.append("--portable")
    if not residual:
        options.append("--no-residual")
    return _transform("fuse", model, options, output, force)


def rewrite(model, *, to="adanorm", c=None, k=None, affine="keep", only=None, portable=False,
            residual=True, output=None, weights_out=None, force=False):
    """Replaces every LayerNorm-family match (fused or not) by ``AdaNorm`` (``to="adanorm"``) or
    ``LayerNormSimple`` (``to="simple"``), with ``C``/``k`` (default: the match's own, else 1 and
    0.1) and ``affine`` ``"keep"``, ``"drop"`` or ``"fold"`` for gain and bias.

    Returns ``(model, report)`` as :func:`fuse`. Dropped or folded weights go to ``weights_out``
    (required then, unless ``output=`` is given: they default to beside it), to be given back
    to :func:`revert`.
    """
    if affine != "keep" and weights_out is None and output is None:
        raise Error(f"affine={affine!r} removes weights from the model: give weights_out= (or output=) to keep them")
    options = ["--to", to, "--affine", affine, *_families(only)]
    for name, value in (("--c", c), ("--k", k)):
        if value is not None:
            options += [name, repr(float(value))]
    if weights_out is not None:
        options += ["--weights-out", os.fspath(weights_out)]
    if portable:
        options.append("--portable")
    if not residual:
        options.append("--no-residual")
    return _transform("rewrite", model, options, output, force)


def revert(model, *, weights=None, output=None, force=False):
    """Turns ``ai.adanorm`` nodes back into standard ONNX (``weights``: the file a ``rewrite``
    with ``affine="drop"``/``"fold"`` wrote). Returns ``(model, report)`` as :func:`fuse`."""
    options = [] if weights is None else ["--weights", os.fspath(weights)]
    return _transform("revert", model, options, output, force)
