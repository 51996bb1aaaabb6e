"""FP16 ONNX: half-precision weights and compute, FP32 graph inputs and outputs.

Every node computes in FP16 except

* the node that produces each graph output (``fp32_head``): the final heatmap convolution is ~1% of
  the work (a 1x1 or 3x3 conv to 17 channels), and in FP32 its maps keep their full resolution, so
  that the arg-max and the quarter-pixel step (which compares neighbouring values) do not meet
  FP16 ties (heatmap peaks near 1 are quantised in steps of 2^-11);
* ops listed in ``keep_fp32_ops``. None of the zoo's ops needs it: there is no softmax, exp or
  normalisation, GlobalAveragePool (the SE blocks) averages O(1) values and HardSigmoid/HardSwish are
  piecewise linear; ``tests/test_fp16.py`` measures the resulting error on GluonCV's weights;
* ops whose output type an attribute fixes (Cast, Constant, ConstantOfShape).

Float inputs cross a precision boundary through a Cast (one per tensor and direction); float
initialisers read only in FP16 are stored in FP16 (values beyond +-65504 are clipped, with a
warning). The graph's input and output names, shapes and FP32 types stay the same, so the runtime
feeds an FP16 model exactly like the FP32 one.
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, Iterable, List, Set, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgepose.converters.onnx_io import check_and_infer
from edgepose.converters.rewrite import unique_name
from edgepose.meta import ModelMeta, encode_prop, read_onnx_props, update_onnx_props

log = logging.getLogger(__name__)

#: Op types kept in FP32 by default (see the module docstring for why it is empty).
DEFAULT_KEEP_FP32_OPS: Tuple[str, ...] = ()
#: Ops whose output type is set by an attribute: they never change precision.
TYPED_BY_ATTRIBUTE = frozenset({"Cast", "Constant", "ConstantOfShape"})
#: Float inputs that are not of the op's compute type (coordinates and scales stay FP32).
FP32_INPUTS: Dict[str, Tuple[int, ...]] = {"Resize": (1, 2), "Upsample": (1,)}
FP16_MAX = float(np.finfo(np.float16).max)
FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _float_tensors(model: onnx.ModelProto) -> Set[str]:
    """Names of the FP32 tensors of the (shape-inferred) main graph."""
    graph = check_and_infer(model, strict=False).graph
    typed = [(vi.name, vi.type.tensor_type.elem_type)
             for vi in list(graph.value_info) + list(graph.input) + list(graph.output)]
    typed += [(init.name, init.data_type) for init in graph.initializer]
    return {name for name, elem in typed if elem == FLOAT}


def _to_half(init: onnx.TensorProto, name: str) -> onnx.TensorProto:
    arr = numpy_helper.to_array(init)
    clipped = int((np.abs(arr) > FP16_MAX).sum())
    if clipped:
        log.warning("%s: %d values beyond the FP16 range clipped to +-%g", init.name, clipped, FP16_MAX)
    return numpy_helper.from_array(np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16), name)


def to_fp16(model: onnx.ModelProto, keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS, *,
            fp32_head: bool = True) -> onnx.ModelProto:
    """A checked copy of ``model`` computing in FP16 (see the module docstring for what stays FP32).

    Edgepose metadata, where present, is kept with ``precision`` set to ``"fp16"``.
    """
    model = copy.deepcopy(model)
    graph = model.graph
    floats = _float_tensors(model)
    keep = set(keep_fp32_ops) | TYPED_BY_ATTRIBUTE
    outputs = {o.name for o in graph.output}
    old_nodes = list(graph.node)
    half = [n.op_type not in keep and not (fp32_head and outputs & set(n.output)) for n in old_nodes]

    def wanted(k: int) -> List[Tuple[str, int]]:
        """(float input, the precision node ``k`` reads it in)."""
        node = old_nodes[k]
        fp32_at = FP32_INPUTS.get(node.op_type, ())
        return [(name, FLOAT16 if half[k] and i not in fp32_at else FLOAT)
                for i, name in enumerate(node.input) if name in floats]

    inits = {init.name: init for init in graph.initializer}
    reads: Dict[str, Set[int]] = {}
    for k in range(len(old_nodes)):
        for name, elem in wanted(k):
            reads.setdefault(name, set()).add(elem)
    precision = {name: FLOAT for name in floats}  # the precision each tensor is stored in
    overridable = {i.name for i in graph.input}  # initialisers that are also inputs keep their type
    for i, init in enumerate(graph.initializer):
        if init.data_type == FLOAT and reads.get(init.name) == {FLOAT16} and init.name not in overridable:
            graph.initializer[i].CopyFrom(_to_half(init, init.name))
            precision[init.name] = FLOAT16
    for k, node in enumerate(old_nodes):
        if half[k]:
            precision.update({o: FLOAT16 for o in node.output if o in floats})

    nodes: List[onnx.NodeProto] = []
    converted: Dict[Tuple[str, int], str] = {}
    taken = floats | set(inits) | {n.name for n in old_nodes} | {o for n in old_nodes for o in n.output}
    for k, node in enumerate(old_nodes):
        for name, elem in wanted(k):
            if precision[name] == elem:
                continue
            if (name, elem) not in converted:
                suffix = "_fp16" if elem == FLOAT16 else "_fp32"
                target = converted[(name, elem)] = unique_name(name + suffix, taken)
                if name in inits and name not in overridable:  # a constant read in both precisions
                    graph.initializer.append(_to_half(inits[name], target))
                else:
                    nodes.append(helper.make_node("Cast", [name], [target], name=target, to=elem))
            node.input[:] = [converted.get((n, elem), n) if n == name else n for n in node.input]
        nodes.append(node)
    for out in graph.output:  # FP16 graph outputs: computed under another name, cast back
        if precision.get(out.name) == FLOAT16:
            renamed = unique_name(out.name + "_fp16", taken)
            for node in nodes:
                node.input[:] = [renamed if n == out.name else n for n in node.input]
                node.output[:] = [renamed if n == out.name else n for n in node.output]
            cast_name = unique_name(out.name + "_fp32", taken)
            nodes.append(helper.make_node("Cast", [renamed], [out.name], name=cast_name, to=FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    props = read_onnx_props(model)
    if ModelMeta.has_edgepose_props(props):
        update_onnx_props(model, encode_prop("precision", "fp16"))
    return check_and_infer(model)
