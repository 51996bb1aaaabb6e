"""ONNX files in the form MXNet's exporter (``mx.contrib.onnx`` / ``mx.onnx``, MXNet 1.3-1.9) wrote them,
made from a random-weight zoo export (Simple Pose ResNet-18 at 128x96, with its ConvTranspose head) with
``onnx.helper``: MXNet 1.9.1's exporter itself writes only opset 12/13 and needs an old onnx.

The legacy traits, each of which can be applied alone or together (:data:`CORPUS`):

* ``opset7`` / ``opset8`` / ``opset9``: the model declares that opset (the zoo's operators read the same
  there); ``clip``: every Relu is a relu6-style ``Clip`` with ``min``/``max`` attributes (opset < 11);
* ``ir3``: IR version 3, which requires ``inputs``: every initializer is also a graph input;
* ``batch1``: the batch dimension is fixed to 1; MXNet's tensor names (``data``, ``..._fwd``);
* ``bn_conv`` / ``bn_deconv``: an unfolded BatchNormalization (random per-channel statistics, shape
  (C,)) after every Conv but the last / after every ConvTranspose, carrying ``spatial=0`` (opset 8);
* ``bn_input``: such a BatchNormalization standalone on the image input;
* ``bn_plain``: BatchNormalization after the ConvTransposes and on the input without ``spatial`` (opset 17).

The reference heatmaps are a real oracle, not edgepose's output: the legacy model without its input
BatchNorm run by this ONNX Runtime (which fuses the Conv/ConvTranspose + BN pairs itself) on the input
put through that BatchNorm in float64 NumPy.

:func:`legacy_file` and :func:`normalised_files` write a corpus entry, its normalised FP32/FP16/INT8
models and their reference outputs into ``$EDGEPOSE_TEST_MODELS/legacy`` (when onnx is installed; else
the test skips), so the
Python 3.8 runtime suite with ONNX Runtime 1.19 runs the files the main suite made. Imports only the
standard library and NumPy at module level.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Tuple

import numpy as np

from support import DATA, TEST_MODELS, built_once, random_model

BASE = "simple_pose_resnet18_v1b_128x96"
HW = (128, 96)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CALIB = DATA / "coco_kpt_mini" / "test_coco.json"
FOLDER = TEST_MODELS / "legacy"
MXNET = frozenset({"opset8", "ir3", "inputs", "batch1", "clip", "bn_conv", "bn_deconv", "bn_input"})
#: Each trait alone, and all of them together at opsets 8 and 7.
CORPUS: Dict[str, FrozenSet[str]] = {
    "opset7": frozenset({"opset7"}), "opset9": frozenset({"opset9"}), "ir3": frozenset({"opset8", "ir3", "inputs"}),
    "inputs": frozenset({"inputs"}), "batch1": frozenset({"batch1"}), "clip": frozenset({"opset9", "clip"}),
    "bn_conv": frozenset({"opset8", "bn_conv"}), "bn_deconv": frozenset({"opset8", "bn_deconv"}),
    "bn_input": frozenset({"opset8", "bn_input"}), "bn_plain": frozenset({"bn_plain"}),
    "mxnet": MXNET, "mxnet_opset7": MXNET - {"opset8"} | {"opset7"},
}
BN_EPS = 1e-5


def _opset(traits: FrozenSet[str]) -> int:
    return next((int(t[5:]) for t in sorted(traits) if t.startswith("opset")), 17)


def _bn_params(rng: np.random.Generator, channels: int) -> Tuple[np.ndarray, ...]:
    """gamma, beta, running mean, running var (float32, shape (C,)) of a plausible trained BatchNorm."""
    return tuple(a.astype(np.float32) for a in (rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.2, channels),
                                                rng.normal(0, 0.2, channels), rng.uniform(0.5, 1.5, channels)))


def numpy_batchnorm(x: np.ndarray, params: Tuple[np.ndarray, ...]) -> np.ndarray:
    """Inference BatchNorm over axis 1 in float64, as the ONNX specification defines it."""
    gamma, beta, mean, var = (p.astype(np.float64).reshape(1, -1, 1, 1) for p in params)
    return ((x - mean) / np.sqrt(var + BN_EPS) * gamma + beta).astype(np.float32)


def build(name: str, seed: int = 0):
    """(legacy model, the same without its input BatchNorm, that BatchNorm's parameters or None)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    traits = CORPUS[name]
    model = onnx.load(str(random_model(BASE)))
    graph = model.graph
    del model.metadata_props[:]
    del graph.value_info[:]
    rng = np.random.default_rng(seed)
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    bn_attrs = {"spatial": 0} if traits & {"bn_conv", "bn_deconv", "bn_input"} else {}

    def batchnorm(x: str, y: str, channels: int, label: str):
        params = _bn_params(rng, channels)
        names = ["%s_%s" % (label, p) for p in ("gamma", "beta", "moving_mean", "moving_var")]
        graph.initializer.extend(numpy_helper.from_array(a, n) for a, n in zip(params, names))
        node = helper.make_node("BatchNormalization", [x] + names, [y], name=label, epsilon=BN_EPS, momentum=0.9,
                                **bn_attrs)
        return node, params

    last_conv = [n for n in graph.node if n.op_type == "Conv"][-1]
    nodes = []
    for node in graph.node:
        if node.op_type == "Relu" and "clip" in traits:
            node = helper.make_node("Clip", list(node.input), list(node.output), name=node.name, min=0.0, max=6.0)
        nodes.append(node)
        wanted = (node.op_type == "ConvTranspose" and traits & {"bn_deconv", "bn_plain"}
                  or node.op_type == "Conv" and node is not last_conv and "bn_conv" in traits)
        if wanted:
            out = node.output[0]
            node.output[0] = out + "_pre_bn"
            channels = shapes[node.input[1]][1 if node.op_type == "ConvTranspose" else 0]
            nodes.append(batchnorm(node.output[0], out, channels, (node.name or out) + "_batchnorm")[0])
    del graph.node[:]
    graph.node.extend(nodes)

    image, heatmaps = graph.input[0], graph.output[0]
    if "batch1" in traits:
        for value in (image, heatmaps):
            value.type.tensor_type.shape.dim[0].Clear()
            value.type.tensor_type.shape.dim[0].dim_value = 1
        _rename(graph, image.name, "data")
        _rename(graph, heatmaps.name, "simpleposeresnet0_conv1_fwd")
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", _opset(traits)))
    model.ir_version = 3 if "ir3" in traits else 8
    body = onnx.ModelProto()
    body.CopyFrom(model)
    input_bn = None
    if traits & {"bn_input", "bn_plain"}:
        normed = image.name + "_bn"
        for node in graph.node:
            node.input[:] = [normed if i == image.name else i for i in node.input]
        node, input_bn = batchnorm(image.name, normed, 3, "data_batchnorm")
        graph.node.insert(0, node)
    for m in (model, body):
        if "inputs" in traits:
            m.graph.input.extend(helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims))
                                 for i in m.graph.initializer)
        onnx.checker.check_model(m)
    return model, body, input_bn


def _rename(graph, old: str, new: str) -> None:
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]


def sample_input(batch: int = 1, seed: int = 1) -> np.ndarray:
    """A normalised crop-like batch (N, 3, 128, 96)."""
    return np.random.default_rng(seed).normal(size=(batch, 3, *HW)).astype(np.float32)


def run_ort(model, x: np.ndarray) -> np.ndarray:
    """Heatmaps of ``model`` (ModelProto or path) for ``x`` with this ONNX Runtime on the CPU."""
    import onnxruntime as ort

    data = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warning per initialiser listed as a graph input
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def oracle(name: str, x: np.ndarray) -> np.ndarray:
    """The reference heatmaps of the legacy model ``name`` for ``x`` (one person at a time for batch 1)."""
    _, body, input_bn = build(name)
    feed = x if input_bn is None else numpy_batchnorm(x, input_bn)
    return np.concatenate([run_ort(body, feed[i:i + 1]) for i in range(len(feed))])


def _built(files: Dict[str, Path], make: Callable[[], Dict[str, np.ndarray]]) -> Dict[str, Path]:
    """``files``, made by ``make`` on first use (:func:`support.built_once`); ``make`` returns the arrays of
    the last entry, an .npz written last."""
    done = list(files.values())[-1]

    def write() -> None:
        arrays = make()
        tmp = done.with_name(".%s.%d.npz" % (done.stem, os.getpid()))
        np.savez(tmp, **arrays)
        tmp.replace(done)

    built_once(done, write)
    return files


def legacy_file(name: str) -> Dict[str, Path]:
    """The legacy model ``name`` ("legacy") and "expected" (.npz: a batch ``x`` of two crops and the oracle
    heatmaps ``fp32``), built into $EDGEPOSE_TEST_MODELS/legacy on first use."""
    files = {"legacy": FOLDER / (name + ".onnx"), "expected": FOLDER / (name + "-expected.npz")}

    def make() -> Dict[str, np.ndarray]:
        from edgepose.converters.onnx_io import save_onnx

        save_onnx(build(name)[0], files["legacy"])
        x = sample_input(2)
        return dict(x=x, fp32=oracle(name, x))

    return _built(files, make)


def normalised_files(name: str = "mxnet") -> Dict[str, Path]:
    """``name`` normalised by edgepose: "fp32", "fp16", "int8" (TensorRT form, kept with force) and
    "expected" (.npz: ``x``, the oracle ``fp32`` and this ONNX Runtime's ``fp16``/``int8`` outputs of the
    variants), built into $EDGEPOSE_TEST_MODELS/legacy on first use."""
    source = legacy_file(name)
    files = {key: FOLDER / ("%s-edgepose%s" % (name, suffix)) for key, suffix in (
        ("fp32", ".onnx"), ("fp16", "-fp16.onnx"), ("int8", "-int8.onnx"), ("expected", "-expected.npz"))}

    def make() -> Dict[str, np.ndarray]:
        import onnx

        from edgepose.converters.onnx_io import save_onnx
        from edgepose.converters.fp16 import to_fp16
        from edgepose.converters.normalize import normalize_foreign
        from edgepose.converters.precision import make_int8

        save_onnx(normalize_foreign(source["legacy"]), files["fp32"])
        save_onnx(to_fp16(onnx.load(str(files["fp32"]))), files["fp16"])
        make_int8(files["fp32"], files["int8"], calib_source=CALIB, force=True, progress=False)
        expected = dict(np.load(source["expected"]))
        x = expected["x"]
        return dict(expected, fp16=run_ort(files["fp16"], x), int8=run_ort(files["int8"], x))

    return _built(files, make)
