"""Exact rewrite of a strided ConvTranspose as Conv (stride 1) + DepthToSpace.

A 2-D ConvTranspose with stride s, kernel k, pads (b, e), output_padding o and dilation 1 computes,
along one axis, ``y[m] = sum_i x[i] * W[m + b - s*i]`` (taps outside [0, k) are zero, x is zero
outside the image). Writing ``m + c = s*u + r`` (phase r in [0, s), crop offset c), output u of a
stride-1 correlation with pad-begin A reads ``x[u - A + j]`` at its tap j, so
``W[r + (b - c + s*A) - s*j]`` is that tap's weight for phase r. One Conv with s*s*C_out output
channels therefore computes all phases at once, and DepthToSpace(s) in CRD mode (channel
``c*s*s + r_y*s + r_x`` -> pixel ``(s*h + r_y, s*w + r_x)``, the order of MXNet's PixelShuffle and
the zoo's Mobile Pose head) interleaves them. Two forms:

* default (c = 0): kernel ``k' = floor((k-1-b)/s) + floor((s-1+b)/s) + 1``, no crop, only
  :data:`~edgepose.converters.graph.ALLOWED_OPS`. The zoo's Simple Pose deconvolution (k 4, s 2,
  pad 1) becomes a 3x3 Conv with 4*C_out outputs: 2.25x its multiply-accumulates (each phase uses
  2x2 of the 3x3 taps).
* ``trim=True``: kernel ``ceil(k/s)`` (no zero taps where s divides k: the deconvolution's own
  cost), bought with a shift of the output grid that a Slice after the DepthToSpace removes
  (k 4, s 2, pad 1: 2x2 Conv with pad 1, then one pixel cropped at each border).

Both are exact when the ConvTranspose's output is s times its input, ``k - b - e + o == s``; nodes
where it is not (or with dilation, ``output_shape``, SAME auto-padding, unequal strides, weights
that are not initialisers) are left as they are.
"""
from __future__ import annotations

import copy
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgepose.converters.onnx_io import check_and_infer
from edgepose.errors import ModelFileError

INT64_MAX = 2 ** 63 - 1
#: Element-wise activations that commute with DepthToSpace and Slice: one that alone reads a
#: rewritten ConvTranspose moves before the DepthToSpace, so it fuses into the Conv (ONNX Runtime,
#: TensorRT) and a quantised graph keeps the pixel shuffle in INT8.
ELEMENTWISE = frozenset({"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid"})


class AxisPlan(NamedTuple):
    """How one spatial axis of a ConvTranspose maps onto the Conv + DepthToSpace (+ crop)."""

    kernel: int        # Conv kernel length
    pad_begin: int
    pad_end: int
    crop_begin: int    # pixels the Slice drops at the start (trim form only)
    crop_end: int      # ... and at the end
    taps: np.ndarray   # (s, kernel): index into the ConvTranspose kernel, -1 for a zero tap


def axis_plan(k: int, s: int, pad_begin: int, pad_end: int, out_pad: int, trim: bool) -> Optional[AxisPlan]:
    """The plan of one axis (see the module docstring), or None when the rewrite is not exact."""
    if k - pad_begin - pad_end + out_pad != s or pad_begin >= k:
        return None
    if trim:  # the top s taps at j = 0, every tap used once; crop c makes that line up
        kernel = -(-k // s)
        begin = -(-(k - s - pad_begin) // s)
        crop = pad_begin + s * begin - (k - s)  # in [0, s)
        end = kernel - 1 - begin + (crop > 0)
    else:  # c = 0: offsets t_min..t_max of the module docstring
        begin, crop = (k - 1 - pad_begin) // s, 0
        end = (s - 1 + pad_begin) // s
        kernel = begin + end + 1
    offset = pad_begin - crop + s * begin  # phase r, tap j reads W[r + offset - s*j]
    taps = np.array([[r + offset - s * j for j in range(kernel)] for r in range(s)])
    taps[(taps < 0) | (taps >= k)] = -1
    crop_end = s * (begin + end - kernel + 1) - crop  # the Conv's extra rows, less the front crop
    return AxisPlan(kernel, begin, end, crop, crop_end, taps)


def _plan(node: onnx.NodeProto, inits: Dict[str, onnx.TensorProto],
          trim: bool) -> Optional[Tuple[int, int, AxisPlan, AxisPlan]]:
    """(stride, group, plan H, plan W) if ``node`` can be rewritten exactly, else None."""
    if node.op_type != "ConvTranspose" or len(node.input) < 2 or node.input[1] not in inits:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return None
    weight = inits[node.input[1]]
    if len(weight.dims) != 4 or weight.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        return None
    a = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if "output_shape" in a or auto_pad not in ("NOTSET", "VALID"):
        return None
    strides = list(a.get("strides", [1, 1]))
    if any(d != 1 for d in a.get("dilations", [1, 1])) or strides[0] != strides[1] or strides[0] < 2:
        return None
    k_h, k_w = weight.dims[2], weight.dims[3]
    if list(a.get("kernel_shape", [k_h, k_w])) != [k_h, k_w]:
        return None
    pads = [0, 0, 0, 0] if auto_pad == "VALID" else list(a.get("pads", [0, 0, 0, 0]))
    out_pad = list(a.get("output_padding", [0, 0]))
    s = strides[0]
    plan_h = axis_plan(k_h, s, pads[0], pads[2], out_pad[0], trim)
    plan_w = axis_plan(k_w, s, pads[1], pads[3], out_pad[1], trim)
    if plan_h is None or plan_w is None:
        return None
    return s, int(a.get("group", 1)), plan_h, plan_w


def conv_weight(w: np.ndarray, s: int, group: int, plan_h: AxisPlan, plan_w: AxisPlan) -> np.ndarray:
    """ConvTranspose weight (C_in, C_out/g, k_h, k_w) -> Conv weight (C_out*s*s, C_in/g, k_h', k_w').

    Output channel ``c*s*s + r_y*s + r_x`` holds phase (r_y, r_x) of channel c (CRD order); the
    groups stay contiguous, so a grouped ConvTranspose becomes a Conv with the same group count.
    """
    c_in, c_out_g, k_h, k_w = w.shape
    padded = np.zeros((group, c_in // group, c_out_g, k_h + 1, k_w + 1), w.dtype)
    padded[..., :k_h, :k_w] = w.reshape(group, c_in // group, c_out_g, k_h, k_w)  # tap -1: the zero
    taps_h, taps_w = plan_h.taps, plan_w.taps  # (s, k_h'), (s, k_w')
    gathered = padded[..., taps_h[:, None, :, None], taps_w[None, :, None, :]]  # (g, ci, co, s, s, kh', kw')
    return np.ascontiguousarray(gathered.transpose(0, 2, 3, 4, 1, 5, 6).reshape(
        group * c_out_g * s * s, c_in // group, plan_h.kernel, plan_w.kernel))


def remove_unused_initializers(graph: onnx.GraphProto) -> None:
    """Drop initialisers (and the graph inputs that shadow them) that no node or output reads."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    dropped = {init.name for init in graph.initializer} - {init.name for init in kept}
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [i for i in graph.input if i.name not in dropped]
    del graph.input[:]
    graph.input.extend(inputs)


def unique_name(name: str, taken: set) -> str:
    """``name``, or ``name_2``, ``name_3`` ... if taken; the result is added to ``taken``."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = "%s_%d" % (name, n)
    taken.add(candidate)
    return candidate


def deconv_to_conv_depth_to_space(model: onnx.ModelProto, *, trim: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` with every exactly rewritable ConvTranspose as Conv + DepthToSpace (CRD),
    plus a Slice where ``trim`` needs one (see the module docstring).

    An element-wise activation that alone reads the ConvTranspose's output (the zoo's ReLU) moves
    between the Conv and the DepthToSpace (see :data:`ELEMENTWISE`). Needs opset >= 11. Metadata,
    the names of graph inputs and outputs and every other node are unchanged; the result is
    shape-inferred and checked.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        raise ModelFileError("the deconvolution rewrite needs opset >= 11 (DepthToSpace CRD); this model "
                             "has opset %d: normalise it first (edgepose.converters.normalize)" % opset)
    model = copy.deepcopy(model)
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    taken = ({n.name for n in graph.node} | set(inits) | {o for n in graph.node for o in n.output}
             | {i.name for i in graph.input})

    def add_init(name: str, arr: np.ndarray) -> str:
        name = unique_name(name, taken)
        graph.initializer.append(numpy_helper.from_array(arr, name))
        return name

    old_nodes = list(graph.node)
    readers: Dict[str, List[int]] = {}
    for k, node in enumerate(old_nodes):
        for name in node.input:
            readers.setdefault(name, []).append(k)
    outputs = {o.name for o in graph.output}
    nodes: List[onnx.NodeProto] = []
    hoisted: set = set()
    for k, node in enumerate(old_nodes):
        plan = _plan(node, inits, trim) if k not in hoisted else None
        if plan is None:
            if k not in hoisted:
                nodes.append(node)
            continue
        s, group, ph, pw = plan
        base = node.name or node.output[0]
        w = numpy_helper.to_array(inits[node.input[1]])
        conv_inputs = [node.input[0], add_init(base + ".conv_weight", conv_weight(w, s, group, ph, pw))]
        if len(node.input) > 2 and node.input[2]:
            bias = np.repeat(numpy_helper.to_array(inits[node.input[2]]), s * s)
            conv_inputs.append(add_init(base + ".conv_bias", bias))
        phases = unique_name(node.output[0] + "_phases", taken)
        nodes.append(helper.make_node(
            "Conv", conv_inputs, [phases], name=unique_name(base + "_conv", taken),
            kernel_shape=[ph.kernel, pw.kernel], pads=[ph.pad_begin, pw.pad_begin, ph.pad_end, pw.pad_end],
            strides=[1, 1], group=group))
        result = node.output[0]
        after = readers.get(result, [])
        act = old_nodes[after[0]] if len(after) == 1 else None
        if (act is not None and act.op_type in ELEMENTWISE and result not in outputs
                and all(name in inits for name in act.input[1:] if name)):
            hoisted.add(after[0])  # the activation commutes with the pixel permutation: run it first
            result = act.output[0]  # which the shuffle (or the crop) now writes
            act.input[0] = phases
            phases = unique_name(phases + "_act", taken)
            act.output[0] = phases
            nodes.append(act)
        crops = (ph.crop_begin, pw.crop_begin, ph.crop_end, pw.crop_end)
        shuffled = unique_name(result + "_uncropped", taken) if any(crops) else result
        nodes.append(helper.make_node("DepthToSpace", [phases], [shuffled],
                                      name=unique_name(base + "_d2s", taken), blocksize=s, mode="CRD"))
        if any(crops):
            starts = add_init(base + ".crop_starts", np.array(crops[:2], np.int64))
            ends = add_init(base + ".crop_ends", np.array([-c if c else INT64_MAX for c in crops[2:]], np.int64))
            axes = add_init(base + ".crop_axes", np.array([2, 3], np.int64))
            nodes.append(helper.make_node("Slice", [shuffled, starts, ends, axes], [result],
                                          name=unique_name(base + "_crop", taken)))
    del graph.node[:]
    graph.node.extend(nodes)
    remove_unused_initializers(graph)
    return check_and_infer(model)
