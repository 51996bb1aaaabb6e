"""FP32 ONNX + calibration crops -> INT8 Q/DQ ONNX, with ONNX Runtime's static quantiser.

Two targets, both explicit quantisation (QuantizeLinear/DequantizeLinear pairs, opset 17):

``tensorrt`` (default): what TensorRT 8.x-10.x builds INT8 engines from, as NVIDIA's own exporters
  write it: symmetric INT8 activations (zero point 0), per-channel symmetric INT8 weights (axis 0 for
  Conv, 1 for ConvTranspose) kept as FP32 initialisers behind a Q/DQ pair, FP32 biases; Q/DQ on the
  inputs of Conv/ConvTranspose, residual Add and pooling only (TensorRT fuses the rest).
``cpu``: what ONNX Runtime's CPU kernels run fastest: asymmetric UINT8 activations, per-channel INT8
  weights stored as INT8 (U8S8 QLinearConv), every operator ORT has a quantised kernel for, and
  DepthToSpace (Q/DQ with one scale on both sides, which ORT drops: it moves the UINT8 data).

Before quantising, each stride-2 ConvTranspose is rewritten exactly as a 2x2 Conv + DepthToSpace +
Slice (:func:`edgepose.converters.rewrite.deconv_to_conv_depth_to_space` with ``trim``; the activation
after it moves before the DepthToSpace and fuses into the Conv): ORT has no quantised ConvTranspose,
and TensorRT's INT8 deconvolution has a history of bugs. The FP32 function does not change.

The final heatmap convolution stays FP32 (``exclude_final``): its input is quantised, its weights
and output are not, so the arg-max and the quarter-pixel step see FP32 heatmaps. In a YOLOX detector
(``edgepose.kind`` "detector") the head's prediction convolutions and everything after them stay FP32
the same way (:func:`head_nodes`): box offsets go through exp, and scores are compared with a threshold. The
tensorrt form keeps its depthwise convolutions in FP32 too: per-tensor INT8 of their inputs wipes out
the channels of small range, which no other channel mixes back in (YOLOX-Nano's scores drop by 0.57
on average with them quantised, by 0.01 without; ``benchmarks/RESULTS.md`` "## Detector INT8"). The
cpu form quantises them, for speed, and is gated.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional

import numpy as np
import onnx

from edgepose.converters.onnx_io import load_onnx, save_onnx
from edgepose.converters.rewrite import deconv_to_conv_depth_to_space
from edgepose.errors import InputError, MissingDependencyError, ModelFileError
from edgepose.fileio import PathLike
from edgepose.meta import (KEY_INT8_CALIBRATION, KEY_INT8_TARGET, TARGETS, encode_prop, model_kind, prop_value,
                           read_onnx_props, write_onnx_props)


METHODS = ("minmax", "entropy", "percentile")
#: Chosen by measurement (benchmarks/bench_int8.py, benchmarks/RESULTS.md "## INT8"): the highest (or tied)
#: heatmap SQNR in 15 of 16 model/target cases, ahead of entropy and minmax; it takes 1.3-2.5x minmax's time.
DEFAULT_METHOD = "percentile"
#: Percentile of |activation| kept by the percentile method.
PERCENTILE = 99.999
#: Crops per calibration run of ONNX Runtime; each run's activations are reduced (min/max or
#: histograms) before the next one, which bounds the memory of the histogram methods.
CALIB_BATCH = 8
#: The deconvolution rewrite's 2x2 form (the deconvolution's own cost, plus a Slice) rather than its
#: 3x3 form (2.25x the multiply-accumulates): measured faster in INT8 (benchmarks/RESULTS.md "## INT8").
TRIM_REWRITE = True
#: Ops whose inputs the tensorrt form quantises (TensorRT's Q/DQ placement advice).
TENSORRT_OPS = ("Conv", "ConvTranspose", "Add", "MaxPool", "AveragePool", "GlobalAveragePool")
#: ONNX Runtime that calibrates batch by batch (``CalibStridedMinMax``, 1.19) with every option used here.
MIN_ORT = (1, 19)


def final_heatmap_node(model: onnx.ModelProto) -> onnx.NodeProto:
    """The convolution that computes the heatmaps: the last Conv/ConvTranspose on the way to the output."""
    producers = {o: n for n in model.graph.node for o in n.output}
    name = model.graph.output[0].name
    while name in producers:
        node = producers[name]
        if node.op_type in ("Conv", "ConvTranspose"):
            return node
        name = node.input[0]
    raise ModelFileError("found no convolution producing the output %r; is this a heatmap model?"
                         % model.graph.output[0].name)


def head_nodes(model: onnx.ModelProto) -> List[str]:
    """The nodes between the last convolutions and the outputs, those convolutions included: walking back
    from each graph output through every input, stopping at (and keeping) each Conv/ConvTranspose."""
    producers = {o: n for n in model.graph.node for o in n.output}
    todo = [o.name for o in model.graph.output]
    seen: List[str] = []
    while todo:
        node = producers.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.append(node.name)
        if node.op_type not in ("Conv", "ConvTranspose"):
            todo += list(node.input)
    return seen


def float_nodes(model: onnx.ModelProto, target: str) -> List[str]:
    """The nodes ``exclude_final`` keeps in floating point: the final heatmap convolution of a pose model;
    the head (:func:`head_nodes`) of a detector, and for ``target`` tensorrt its depthwise convolutions."""
    if model_kind(read_onnx_props(model)) != "detector":
        return [final_heatmap_node(model).name]
    depthwise = [n.name for n in model.graph.node if n.op_type == "Conv" and target == "tensorrt"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    return head_nodes(model) + depthwise


def prepare_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """A checked copy of ``model`` with the exact rewrite applied before quantising (module docstring)."""
    return deconv_to_conv_depth_to_space(model, trim=TRIM_REWRITE)


class _CropReader:
    """ORT calibration reader over (N, 3, H, W) crops in batches, with the range API through which
    ``CalibStridedMinMax`` (despite its name, used by every method) calibrates one batch at a time."""

    def __init__(self, input_name: str, crops: np.ndarray, batch: int = CALIB_BATCH) -> None:
        self.batches = [crops[i:i + batch] for i in range(0, len(crops), batch)]
        self.input_name = input_name
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._todo = iter(self.batches[start_index:end_index])

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        batch = next(self._todo, None)
        return None if batch is None else {self.input_name: batch}


def quantizer_options(target: str, method: str) -> dict:
    """Keyword arguments of ``onnxruntime.quantization.quantize_static`` for a target and method."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    if target not in TARGETS:
        raise InputError("INT8 target must be one of %s, got %r" % (", ".join(TARGETS), target))
    if method not in METHODS:
        raise InputError("calibration method must be one of %s, got %r" % (", ".join(METHODS), method))
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    extra = {"WeightSymmetric": True, "CalibPercentile": PERCENTILE}
    options = dict(quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                   calibrate_method=calibrate, extra_options=extra)
    if target == "tensorrt":
        options.update(activation_type=QuantType.QInt8, op_types_to_quantize=list(TENSORRT_OPS))
        extra.update(ActivationSymmetric=True, CalibTensorRangeSymmetric=True, QuantizeBias=False,
                     AddQDQPairToWeight=True, OpTypesToExcludeOutputQuantization=["Conv", "ConvTranspose"])
    else:  # every op ORT quantises by default, and DepthToSpace, which it then runs on UINT8
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        ops = set(QLinearOpsRegistry) | set(QDQRegistry) | {"DepthToSpace"}
        options.update(activation_type=QuantType.QUInt8, op_types_to_quantize=sorted(ops))
    return options


def quantize_model(model: onnx.ModelProto, calib: np.ndarray, *, target: str = "tensorrt",
                   method: str = DEFAULT_METHOD, exclude_final: bool = True) -> onnx.ModelProto:
    """The Q/DQ model of an (already prepared, see :func:`prepare_graph`) FP32 ``model``, calibrated on
    ``calib`` (N, 3, H, W) float32. Metadata is copied unchanged."""
    import onnxruntime

    if tuple(int(v) for v in onnxruntime.__version__.split(".")[:2]) < MIN_ORT:
        raise MissingDependencyError("INT8 conversion needs onnxruntime >= %d.%d (found %s): pip install -U "
                                     "onnxruntime" % (MIN_ORT + (onnxruntime.__version__,)))
    from onnxruntime.quantization import quantize_static

    calib = np.ascontiguousarray(calib, dtype=np.float32)
    if calib.ndim != 4 or len(calib) == 0:
        raise InputError("calibration crops must be a non-empty (N, 3, H, W) array; got shape %s" % (calib.shape,))
    options = quantizer_options(target, method)
    options["extra_options"]["CalibStridedMinMax"] = 1
    if exclude_final:
        options["nodes_to_exclude"] = float_nodes(model, target)
    with tempfile.TemporaryDirectory(prefix="edgepose-int8-") as tmp, _quiet():
        prepared, quantized = os.path.join(tmp, "prepared.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, prepared)
        quantize_static(prepared, quantized, _CropReader(model.graph.input[0].name, calib), **options)
        return onnx.load(quantized)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence ONNX Runtime's quantiser: it prints progress and logs advice on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_int8(fp32_path: PathLike, calib: np.ndarray, out_path: PathLike, *, target: str = "tensorrt",
                  method: str = DEFAULT_METHOD, exclude_final: bool = True,
                  provenance: Optional[Mapping[str, object]] = None) -> Path:
    """Quantise the FP32 model at ``fp32_path`` with calibration crops ``calib`` (N, 3, H, W) float32 and
    write the Q/DQ model to ``out_path`` (atomically). Returns ``out_path``.

    The model is a pose model or a detector (its ``edgepose.kind``); its edgepose metadata is kept with
    ``precision`` "int8"; ``edgepose.int8_target`` holds ``target``
    and ``edgepose.int8_calibration`` a JSON object with the method, the number of crops and
    ``provenance`` (e.g. the calibration source).
    """
    quantizer_options(target, method)  # check both before the work starts
    model = load_onnx(fp32_path)
    props = read_onnx_props(model)
    precision = str(prop_value(props, "precision", "fp32"))
    if precision != "fp32":
        raise ModelFileError("%s is already %s (its edgepose.precision); quantise the FP32 model"
                             % (fp32_path, precision.upper()))
    result = quantize_model(prepare_graph(model), calib, target=target, method=method,
                            exclude_final=exclude_final)
    props.update(encode_prop("precision", "int8"))
    props[KEY_INT8_TARGET] = json.dumps(target)
    props[KEY_INT8_CALIBRATION] = json.dumps(dict(method=method, crops=int(len(calib)), **(provenance or {})))
    write_onnx_props(result, props)
    return save_onnx(result, out_path)
