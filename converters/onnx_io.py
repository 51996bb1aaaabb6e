"""Reading, checking and writing ONNX models: every converter goes through these.

* :func:`load_onnx`: a model a user gave, with a :class:`~edgepose.errors.ModelFileError` naming the
  file when it is missing, a folder or not ONNX;
* :func:`save_onnx`: written atomically (temporary file + rename);
* :func:`check_and_infer`: shapes inferred (strictly) and the full ONNX checker, after each graph edit;
* :data:`IR_VERSION`: the IR version of every model edgepose writes.
"""
from __future__ import annotations

from pathlib import Path

from edgepose.errors import ModelFileError
from edgepose.fileio import PathLike, atomic_write_bytes, existing_file
from edgepose.optional import require

onnx = require("onnx", "convert", "building, converting and reading ONNX models")

#: IR version of every model edgepose writes (readable by onnxruntime >= 1.10 and TensorRT 8.5).
IR_VERSION = 8


def load_onnx(path: PathLike, load_external_data: bool = True) -> onnx.ModelProto:
    """An ONNX model a user gave; ModelFileError naming the file when it is missing, a folder or not ONNX."""
    path = existing_file(path, "ONNX model", "pass the path of an .onnx model file", ModelFileError)
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as e:  # protobuf's DecodeError, OSError, ValueError ...: no common base class
        raise ModelFileError("%s is not a readable ONNX model (%s); check that the file is complete and is an "
                             ".onnx file" % (path, str(e).strip() or type(e).__name__)) from e


def save_onnx(model: onnx.ModelProto, path: PathLike) -> Path:
    """Write ``model`` to ``path`` through a temporary file and an atomic rename."""
    return atomic_write_bytes(path, model.SerializeToString())


def check_and_infer(model: onnx.ModelProto, strict: bool = True) -> onnx.ModelProto:
    """``model`` with its shapes inferred; ``strict``: strict shape inference and ONNX's full checker, which
    raise on any inconsistency (onnx's InferenceError / ValidationError)."""
    model = onnx.shape_inference.infer_shapes(model, strict_mode=strict)
    if strict:
        onnx.checker.check_model(model, full_check=True)
    return model


def type_name(elem_type: int) -> str:
    """The name of an ONNX TensorProto data type (``1`` -> ``"FLOAT"``); the number as text when unknown."""
    return {v: k for k, v in onnx.TensorProto.DataType.items()}.get(elem_type, str(elem_type))


__all__ = ["IR_VERSION", "check_and_infer", "load_onnx", "save_onnx", "type_name"]
