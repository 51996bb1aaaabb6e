"""YOLOX person detectors in the converters: recognised by their inputs and outputs, normalised like pose models.

A YOLOX export (YOLOX's ``tools/export_onnx.py``, the release files) has one float32 (N, 3, H, W) image
input with H and W multiples of 32 and one float32 (N, A, 5 + C) output, A = the cells of the stride
8/16/32 grids. :func:`normalize_yolox` brings one to the form edgepose converts further (FP16, INT8,
TensorRT): the steps of :func:`edgepose.converters.normalize.normalize_graph` (opset, BatchNorm folding,
dynamic batch), then :class:`edgepose.meta.DetectorMeta` metadata: input size, strides, classes and
whether the boxes are decoded in the graph (``--decode_in_inference``), found by running the model once.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import onnx
from onnx import TensorProto

import edgepose
from edgepose.converters.normalize import checked, load_model, normalize_graph
from edgepose.detector import PAD_VALUE, STRIDES, boxes_in_pixels, make_grid
from edgepose.errors import ModelFileError
from edgepose.fileio import PathLike
from edgepose.meta import DetectorMeta, model_kind, read_onnx_props, update_onnx_props


def _dims(value: onnx.ValueInfoProto) -> List[Optional[int]]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim]


def yolox_problem(model: onnx.ModelProto) -> Optional[str]:
    """Why ``model`` (shapes inferred) is not a YOLOX detector by its inputs and outputs; None when it is."""
    graph = model.graph
    weights = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 1:
        return "it has %d inputs and %d outputs, not one of each" % (len(inputs), len(graph.output))
    image, out = inputs[0], graph.output[0]
    if any(v.type.tensor_type.elem_type != TensorProto.FLOAT for v in (image, out)):
        return "its input or output is not float32"
    in_dims, out_dims = _dims(image), _dims(out)
    if len(in_dims) != 4 or in_dims[1] != 3 or not all(d and d % STRIDES[-1] == 0 for d in in_dims[2:]):
        return "its input is not (N, 3, H, W) with fixed H and W multiples of %d: %s" % (STRIDES[-1], in_dims)
    anchors = len(make_grid((in_dims[2], in_dims[3]))[0])
    if len(out_dims) != 3 or out_dims[1] != anchors or not (out_dims[2] or 0) >= 6:
        return ("its output is not (N, %d, 5 + classes), the stride %s grids of a %dx%d input: %s"
                % (anchors, "/".join(map(str, STRIDES)), in_dims[2], in_dims[3], out_dims))
    return None


def is_yolox(path: PathLike) -> bool:
    """Whether the ONNX file at ``path`` is a YOLOX detector: a converted one (its metadata says so) or a
    foreign export (by its inputs and outputs). ModelFileError when it is no readable ONNX file."""
    from edgepose.converters.onnx_io import load_onnx

    model = load_onnx(path, load_external_data=False)
    if model_kind(read_onnx_props(model)) == "detector":
        return True
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a model ONNX cannot infer is no detector we recognise
        return False
    return yolox_problem(model) is None


def decoded_in_graph(model: onnx.ModelProto) -> bool:
    """Run ``model`` once (ONNX Runtime, CPU) on a grey canvas: whether its boxes come out in pixels."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = session.get_inputs()[0]
    canvas = np.full([1, 3] + [int(d) for d in image.shape[2:]], PAD_VALUE, np.float32)
    return boxes_in_pixels(session.run(None, {image.name: canvas})[0][0])


def normalize_yolox(model_or_path: Union[onnx.ModelProto, PathLike], *, name: Optional[str] = None) -> onnx.ModelProto:
    """A checked copy of a YOLOX export with a dynamic batch and detector metadata (module docstring)."""
    model, label, sha1 = load_model(model_or_path)
    model = checked(model, label, "as given", strict=False)
    problem = yolox_problem(model)
    if problem:
        raise ModelFileError("%s is not a YOLOX detector edgepose converts: %s. Export it with YOLOX's "
                             "tools/export_onnx.py (one image input, one raw or decoded head output)"
                             % (label, problem))
    image = next(i for i in model.graph.input if i.name not in {w.name for w in model.graph.initializer})
    size = tuple(_dims(image)[2:])
    classes = _dims(model.graph.output[0])[2] - 5
    model = normalize_graph(model, image.name, label)
    meta = DetectorMeta(name=name or Path(label).stem, input_size=size, strides=STRIDES,  # type: ignore[arg-type]
                        decode_in_graph=decoded_in_graph(model), num_classes=classes, weights_sha1=sha1,
                        source="foreign:%s" % label, edgepose_version=edgepose.__version__)
    update_onnx_props(model, meta.to_props())
    return model


__all__ = ["decoded_in_graph", "is_yolox", "normalize_yolox", "yolox_problem"]
