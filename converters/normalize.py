"""Top-down heatmap ONNX models from elsewhere, brought to the form of a zoo export.

:func:`normalize_foreign` takes a model with one (N, 3, H, W) image input and one (N, K, h, w)
heatmap output as another exporter left it (opset 7 or newer, IR 3, a fixed batch of 1, BatchNorm
not folded, also in the ``spatial=0`` form of MXNet's exporter, ``Clip`` with ``min``/``max``
attributes, weights held by Constant nodes or listed as graph inputs, no edgepose metadata) and
returns what :func:`edgepose.converters.export.build_onnx` would have produced: opset
:data:`~edgepose.converters.graph.OPSET`, BatchNorm folded into the (de)convolution before it (one
that follows no (de)convolution, e.g. on the input, becomes a per-channel Mul + Add), both before
the opset upgrade, a dynamic batch dimension, checked shapes and edgepose metadata. From there it
is treated exactly like a zoo export (FP16, INT8, TensorRT).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import edgepose
from edgepose.converters.graph import OPSET
from edgepose.converters.onnx_io import IR_VERSION, check_and_infer, load_onnx
from edgepose.converters.rewrite import remove_unused_initializers
from edgepose.errors import ModelFileError
from edgepose.fileio import PathLike, file_hash
from edgepose.keypoints import COCO_KEYPOINTS
from edgepose.meta import ModelMeta, read_onnx_props, update_onnx_props

log = logging.getLogger(__name__)
#: The oldest opset the ONNX version converter takes a model from, as edgepose supports it.
MIN_OPSET = 7
BATCH = "batch"


def load_model(model_or_path: Union[onnx.ModelProto, PathLike]) -> Tuple[onnx.ModelProto, str, str]:
    """(a copy of the model, its label for messages, SHA-1 of its file or "unknown")."""
    if isinstance(model_or_path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)
        return model, model.graph.name or "model", "unknown"
    path = Path(model_or_path)
    model = load_onnx(path)
    return model, path.name, file_hash(path, "sha1")


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _upgrade_opset(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """Convert the default-domain opset to :data:`OPSET` with ONNX's version converter."""
    opset = _default_opset(model)
    if opset == OPSET:
        return model
    if opset < MIN_OPSET:
        raise ModelFileError("%s uses opset %d; edgepose converts models from opset %d on. Export it again "
                             "with a newer exporter (opset >= %d)" % (label, opset, MIN_OPSET, OPSET))
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, OPSET)
    except Exception as e:  # the converter raises RuntimeError / ValidationError / C++ errors
        ops = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")})
        lo, hi = min(opset, OPSET), max(opset, OPSET)
        unknown = [op for op in ops if not onnx.defs.has(op)]
        changed = [op for op in ops if onnx.defs.has(op) and lo < onnx.defs.get_schema(op, hi).since_version]
        suspects = (["not in ONNX %s (removed or experimental): %s" % (onnx.__version__, ", ".join(unknown))]
                    if unknown else []) + (["redefined between opset %d and %d: %s" % (lo, hi, ", ".join(changed))]
                                           if changed else [])
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(
            "ONNX's version converter cannot bring %s from opset %d to %d (%s). Operators %s. Replace those "
            "operators or export the model again at opset %d."
            % (label, opset, OPSET, detail, "; ".join(suspects) or "none suspect", OPSET)) from e


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Constant nodes holding a tensor become initialisers (so weights are found in one place)."""
    kept = []
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value is not None:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _image_io(graph: onnx.GraphProto, label: str) -> onnx.ValueInfoProto:
    """The image input, with the heatmap output checked too; initialisers listed as inputs are dropped."""
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    del graph.input[:]
    graph.input.extend(inputs)

    def describe(values: Sequence[onnx.ValueInfoProto]) -> str:
        return ", ".join("%s %s %s" % (v.name, TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                                       [d.dim_value or d.dim_param or "?" for d in v.type.tensor_type.shape.dim])
                         for v in values) or "none"

    expected = ("a top-down heatmap model has one float32 (N, 3, H, W) image input and one float32 "
                "(N, K, h, w) heatmap output; %s has inputs %s and outputs %s"
                % (label, describe(inputs), describe(graph.output)))
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelFileError(expected + ". Cut the graph to the heatmap output (e.g. onnx.utils.extract_model).")
    for value in (inputs[0], graph.output[0]):
        t = value.type.tensor_type
        if t.elem_type != TensorProto.FLOAT or not t.HasField("shape") or len(t.shape.dim) != 4:
            raise ModelFileError(expected + ".")
    channels = inputs[0].type.tensor_type.shape.dim[1]
    if channels.HasField("dim_value") and channels.dim_value != 3:
        raise ModelFileError(expected + ": the input has %d channels, not 3." % channels.dim_value)
    return inputs[0]


def _inference_batchnorm(node: onnx.NodeProto, inits: Dict[str, onnx.TensorProto]) -> bool:
    """Whether ``node`` is an inference-mode BatchNormalization with constant parameters."""
    return (node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx") and not any(node.output[1:])
            and not any(a.name == "training_mode" and a.i for a in node.attribute)
            and all(name in inits for name in node.input[1:5]))


def _batchnorm_scale_shift(bn: onnx.NodeProto, inits: Dict[str, onnx.TensorProto]) -> Tuple[np.ndarray, np.ndarray]:
    """(scale, shift) in float64 with y = x * scale + shift, in the shape of the BN parameters."""
    gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def fold_batchnorm(graph: onnx.GraphProto) -> int:
    """Fold every inference BatchNormalization that alone reads a Conv/ConvTranspose output into that
    node's weight and bias (float64 arithmetic, stored in the weight's dtype). Returns how many.

    Only per-channel parameters (shape (C,)) are folded; their meaning does not depend on the
    ``spatial`` attribute of opsets 7-8, which MXNet's exporter sets to 0."""
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: Dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    folded: Set[int] = set()
    for k, bn in enumerate(graph.node):
        conv = producer.get(bn.input[0]) if bn.op_type == "BatchNormalization" else None
        if (conv is None or conv.op_type not in ("Conv", "ConvTranspose") or readers[bn.input[0]] != 1
                or bn.input[0] in outputs or not _inference_batchnorm(bn, inits)
                or not all(name in inits for name in conv.input[1:] if name)
                or any(len(inits[n].dims) != 1 for n in bn.input[1:5])):
            continue
        scale, shift = _batchnorm_scale_shift(bn, inits)
        weight_init = inits[conv.input[1]]
        w = numpy_helper.to_array(weight_init)
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        if conv.op_type == "Conv":  # (C_out, C_in/g, kh, kw)
            folded_w = w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
        else:  # ConvTranspose (C_in, C_out/g, kh, kw); output channel = group * C_out/g + j
            c_in, c_out_g = w.shape[:2]
            folded_w = (w.astype(np.float64).reshape(group, c_in // group, c_out_g, *w.shape[2:])
                        * scale.reshape(group, 1, c_out_g, *([1] * (w.ndim - 2)))).reshape(w.shape)
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_bias else np.zeros_like(scale)
        base = conv.name or conv.output[0]
        new_w = numpy_helper.from_array(folded_w.astype(w.dtype), base + ".weight_bn_folded")
        new_b = numpy_helper.from_array((b * scale + shift).astype(w.dtype),
                                        base + ".bias_bn_folded")
        graph.initializer.extend([new_w, new_b])
        conv.input[:] = [conv.input[0], new_w.name, new_b.name]
        conv.output[0] = bn.output[0]
        folded.add(k)
    nodes = [n for k, n in enumerate(graph.node) if k not in folded]
    del graph.node[:]
    graph.node.extend(nodes)
    remove_unused_initializers(graph)
    return len(folded)


def batchnorm_to_mul_add(graph: onnx.GraphProto) -> int:
    """Replace every inference BatchNormalization left (one that reads no Conv/ConvTranspose output
    alone, e.g. on the input) by ``x * scale + shift`` with constants computed in float64, stored in the
    parameters' dtype and shaped to broadcast over (N, C, ...): (1, C, 1, 1) for per-channel
    parameters of a 4-D tensor, (1, C, H, W) for the per-activation ones of ``spatial=0``.
    Every runtime runs Mul and Add; ONNX Runtime's own kernel refuses ``spatial=0`` unless it fuses
    the node away. Returns how many."""
    inits = {i.name: i for i in graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(graph.input) + list(graph.value_info)
             if v.type.tensor_type.HasField("shape")}
    nodes, count = [], 0
    for bn in graph.node:
        if not _inference_batchnorm(bn, inits):
            nodes.append(bn)
            continue
        scale, shift = _batchnorm_scale_shift(bn, inits)
        dtype = numpy_helper.to_array(inits[bn.input[1]]).dtype
        shape = (1,) + scale.shape + (1,) * max(0, ranks.get(bn.input[0], 4) - 1 - scale.ndim)
        base = bn.name or bn.output[0]
        constants = [numpy_helper.from_array(a.reshape(shape).astype(dtype), base + suffix)
                     for a, suffix in ((scale, ".bn_scale"), (shift, ".bn_shift"))]
        graph.initializer.extend(constants)
        nodes += [helper.make_node("Mul", [bn.input[0], constants[0].name], [base + ".bn_scaled"],
                                   name=base + "/mul"),
                  helper.make_node("Add", [base + ".bn_scaled", constants[1].name], [bn.output[0]],
                                   name=base + "/add")]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    remove_unused_initializers(graph)
    return count


def _check_reshapes(graph: onnx.GraphProto, image: str, label: str) -> None:
    """Refuse a Reshape of image-derived data to a constant shape that starts with 1 (batch 1 baked in)."""
    inits = {i.name: i for i in graph.initializer}
    derived = {image}
    for node in graph.node:
        if not derived.intersection(node.input):
            continue
        derived.update(node.output)
        if node.op_type == "Reshape" and node.input[0] in derived and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).tolist()
            if shape and shape[0] == 1:
                raise ModelFileError(
                    "%s: Reshape %r reshapes the image data to the constant shape %s, which fixes the batch "
                    "to 1. Export the model again with a dynamic batch (e.g. torch.onnx.export(..., "
                    "dynamic_axes={'input': {0: 'batch'}})), or change the first entry of %r to 0 or -1."
                    % (label, node.name or node.output[0], shape, node.input[1]))


def checked(model: onnx.ModelProto, label: str, stage: str, strict: bool) -> onnx.ModelProto:
    """``model`` with inferred shapes; ``strict`` also runs the full checker."""
    try:
        model = check_and_infer(model, strict)
    except Exception as e:  # InferenceError / ValidationError
        raise ModelFileError(
            "%s fails ONNX's shape inference or checker %s (%s)%s" % (
                label, stage, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__,
                "; it may hard-code its batch size of 1 in a way edgepose cannot see" if strict else
                "; it is not a valid ONNX model")) from e
    return model


def _set_batch(value: onnx.ValueInfoProto) -> None:
    dim = value.type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = BATCH


def _meta(model: onnx.ModelProto, label: str, sha1: str, options: Dict[str, Any]) -> ModelMeta:
    """The metadata of the normalised model: the options, then the model's own edgepose fields, then
    (for a model without them) what its shapes say and the defaults (COCO-17, ImageNet mean/std, RGB,
    simple decoder)."""
    graph = model.graph
    in_hw = [d.dim_value or None for d in graph.input[0].type.tensor_type.shape.dim[2:]]
    out_dims = [d.dim_value or None for d in graph.output[0].type.tensor_type.shape.dim]
    props = read_onnx_props(model)
    values = {k: v for k, v in options.items() if v is not None}
    size = values.get("input_size")
    if size is not None and None not in in_hw and list(size) != in_hw:
        raise ModelFileError("%s takes %dx%d inputs, but input_size=%s was given"
                             % (label, in_hw[0], in_hw[1], size))
    if not ModelMeta.has_edgepose_props(props):
        if size is None:
            if None in in_hw:
                raise ModelFileError("%s has a dynamic input size; pass input_size=(H, W)" % label)
            size = values["input_size"] = tuple(in_hw)
        values.setdefault("name", Path(label).stem)
        values.update(weights_sha1=sha1, source="foreign:%s" % label, edgepose_version=edgepose.__version__)
        out_h, out_w = out_dims[2:]
        if out_h and out_w and size[0] % out_h == 0 and size[0] // out_h * out_w == size[1]:
            values["heatmap_stride"] = size[0] // out_h  # the same whole ratio on both axes
    if "keypoints" in values and "flip_pairs" not in values and len(values["keypoints"]) != len(COCO_KEYPOINTS):
        raise ModelFileError("keypoint names were given for a non-COCO-17 model but no flip_pairs; pass the "
                             "left/right index pairs of those keypoints (an empty list if there are none)")
    meta = ModelMeta.from_props(props, **values)
    if out_dims[1] is not None and out_dims[1] != meta.num_keypoints:
        raise ModelFileError("%s outputs %d heatmaps but the metadata names %d keypoints; pass keypoints= "
                             "with one name per heatmap channel" % (label, out_dims[1], meta.num_keypoints))
    bad = [p for p in meta.flip_pairs if not all(0 <= i < meta.num_keypoints for i in p)]
    if bad:
        raise ModelFileError("flip pairs %s name keypoints beyond the %d the model has"
                             % (bad, meta.num_keypoints))
    return meta


def normalize_foreign(model_or_path: Union[onnx.ModelProto, PathLike], *, name: Optional[str] = None,
                      input_size: Optional[Tuple[int, int]] = None, mean: Optional[Sequence[float]] = None,
                      std: Optional[Sequence[float]] = None, color_order: Optional[str] = None,
                      decoder: Optional[str] = None, keypoints: Optional[List[str]] = None,
                      flip_pairs: Optional[List[Tuple[int, int]]] = None) -> onnx.ModelProto:
    """A checked copy of a top-down heatmap model in the form of a zoo export (see the module docstring).

    Options that are not None override the model's edgepose metadata (if it has any) and the
    defaults; ``weights_sha1`` is the SHA-1 of the source file ("unknown" for a ModelProto).
    """
    model, label, sha1 = load_model(model_or_path)
    model = checked(model, label, "as given", strict=False)  # fills in undeclared output shapes
    image = _image_io(model.graph, label)
    model = normalize_graph(model, image.name, label)
    meta = _meta(model, label, sha1, dict(name=name, input_size=input_size, mean=mean, std=std,
                                          color_order=color_order, decoder=decoder, keypoints=keypoints,
                                          flip_pairs=flip_pairs))
    update_onnx_props(model, meta.to_props())
    return model


def normalize_graph(model: onnx.ModelProto, image: str, label: str) -> onnx.ModelProto:
    """The steps every foreign model goes through (IR version, weights as initialisers, BatchNorm folded,
    opset :data:`OPSET`, no batch of 1 baked into a Reshape, dynamic batch on the image input ``image``
    and the first output), checked strictly. ``model`` has its inputs cleaned and shapes inferred."""
    model.ir_version = IR_VERSION  # initialisers need not be graph inputs from IR 4 on
    # BatchNorm goes before the opset upgrade: the converter refuses the spatial=0 of MXNet's exporter
    _constants_to_initializers(model.graph)
    folded = fold_batchnorm(model.graph)
    affine = batchnorm_to_mul_add(model.graph)
    log.info("%s: %d BatchNormalization folded, %d made Mul + Add (not after a Conv)", label, folded, affine)
    model = _upgrade_opset(model, label)
    graph = model.graph
    _constants_to_initializers(graph)  # the converter turns Clip's min/max attributes into Constant nodes
    _check_reshapes(graph, image, label)
    _set_batch(graph.input[0])
    _set_batch(graph.output[0])
    del graph.value_info[:]  # inferred again below, with the dynamic batch
    return checked(model, label, "after normalisation", strict=True)
