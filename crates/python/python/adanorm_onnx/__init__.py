"""Find every LayerNorm-family subgraph of an ONNX model and rewrite it into the ``ai.adanorm``
ops (AdaNorm, LayerNorm-simple), and run them in ONNX Runtime.

The command line is ``adanorm-onnx`` (installed with the package); each command is also a
function here: :func:`inspect`, :func:`fuse`, :func:`rewrite`, :func:`revert`. The ONNX Runtime
custom-op library is :func:`get_library_path`::

    import onnxruntime as ort, adanorm_onnx
    fused, report = adanorm_onnx.fuse("model.onnx")
    so = ort.SessionOptions()
    so.register_custom_ops_library(adanorm_onnx.get_library_path())
    session = ort.InferenceSession(fused.SerializeToString(), so)
"""

from ._api import Error, fuse, get_library_path, get_plain_library_path, inspect, revert, rewrite
from ._native import __version__

__all__ = [
    "Error",
    "__version__",
    "fuse",
    "get_library_path",
    "get_plain_library_path",
    "inspect",
    "revert",
    "rewrite",
]
