import os
from typing import Any, Iterable, Literal, Optional, Tuple, Union

import onnx

Model = Union[str, os.PathLike, bytes, onnx.ModelProto]
Family = Literal["layernorm", "lnsimple", "adanorm"]
Report = dict[str, Any]

__version__: str

class Error(Exception):
    message: str
    file: Optional[str]
    node: Optional[str]
    def __init__(self, message: str, file: Optional[str] = ..., node: Optional[str] = ...) -> None: ...

def get_library_path() -> str: ...
def get_plain_library_path() -> str: ...
def inspect(model: Model) -> Report: ...
def fuse(
    model: Model,
    *,
    only: Union[None, Family, Iterable[Family]] = ...,
    portable: bool = ...,
    residual: bool = ...,
    output: Union[None, str, os.PathLike] = ...,
    force: bool = ...,
) -> Tuple[Optional[onnx.ModelProto], Report]: ...
def rewrite(
    model: Model,
    *,
    to: Literal["adanorm", "simple"] = ...,
    c: Optional[float] = ...,
    k: Optional[float] = ...,
    affine: Literal["keep", "drop", "fold"] = ...,
    only: Union[None, Family, Iterable[Family]] = ...,
    portable: bool = ...,
    residual: bool = ...,
    output: Union[None, str, os.PathLike] = ...,
    weights_out: Union[None, str, os.PathLike] = ...,
    force: bool = ...,
) -> Tuple[Optional[onnx.ModelProto], Report]: ...
def revert(
    model: Model,
    *,
    weights: Union[None, str, os.PathLike] = ...,
    output: Union[None, str, os.PathLike] = ...,
    force: bool = ...,
) -> Tuple[Optional[onnx.ModelProto], Report]: ...
