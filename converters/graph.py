"""One small ONNX graph-building layer shared by every architecture.

An architecture is a plain function that calls :class:`GraphBuilder` methods with GluonCV's
structural parameter names (``resnet.4.0.conv1`` ...). The builder asks its
:class:`WeightSource` for each array with the shape the layer needs, folds BatchNorm into the
preceding (de)convolution, and tracks the channel count of every tensor so architectures never
restate it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgepose.converters.onnx_io import IR_VERSION, check_and_infer
from edgepose.errors import WeightsMismatchError
from edgepose.meta import write_onnx_props

#: Opset of every exported graph: TensorRT 8.5 through 11 parse it (HardSwish needs >= 14).
OPSET = 17
#: GluonCV's BatchNorm epsilon (never overridden in the pose zoo).
BN_EPS = 1e-5
#: Every operator an exported zoo graph may contain (TensorRT 8.5+ parses all of them).
ALLOWED_OPS = frozenset({
    "Conv", "ConvTranspose", "Relu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid",
    "Add", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool", "DepthToSpace",
})
INPUT_NAME, OUTPUT_NAME = "input", "heatmaps"


class WeightSource:
    """Supplies parameter arrays by structural name; subclasses decide where they come from."""

    def get(self, name: str, shape: Tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once the graph is built: report anything that did not fit."""


class LoadedWeights(WeightSource):
    """Arrays read from a weights file, checked name by name and shape by shape."""

    MAX_LISTED = 8

    def __init__(self, arrays: Dict[str, np.ndarray], source: str) -> None:
        self.arrays = arrays
        self.source = source
        self.used: set = set()
        self.missing: List[str] = []
        self.wrong_shape: List[str] = []
        self.nonfinite = 0

    def get(self, name: str, shape: Tuple[int, ...]) -> np.ndarray:
        self.used.add(name)
        arr = self.arrays.get(name)
        if arr is None:
            self.missing.append("%s %s" % (name, tuple(shape)))
            return np.zeros(shape, np.float32)
        if tuple(arr.shape) != tuple(shape):
            self.wrong_shape.append("%s: file has %s, model needs %s" % (name, tuple(arr.shape), tuple(shape)))
            return np.zeros(shape, np.float32)
        arr = np.asarray(arr, dtype=np.float32)
        bad = ~np.isfinite(arr)
        if bad.any():  # GluonCV's purge_model_nan: GPU-trained weights may hold NaN/Inf
            self.nonfinite += int(bad.sum())
            arr = np.where(bad, np.float32(0), arr)
        return arr

    def finish(self) -> None:
        extra = [n for n in self.arrays if n not in self.used]
        if not (self.missing or self.wrong_shape or extra):
            if self.nonfinite:
                import logging
                logging.getLogger(__name__).warning(
                    "%s: %d NaN/Inf weight values replaced by 0 (as GluonCV's purge_model_nan)",
                    self.source, self.nonfinite)
            return
        parts = []
        for title, items in (("missing", self.missing), ("wrong shape", self.wrong_shape),
                             ("not used by this architecture", extra)):
            if items:
                shown = items[:self.MAX_LISTED]
                more = len(items) - len(shown)
                parts.append("  %s (%d): %s%s" % (title, len(items), "; ".join(shown),
                                                  " ... and %d more" % more if more else ""))
        found = sorted({n.split(".")[0] + ".*" for n in self.arrays})
        wanted = sorted({n.split(".")[0] + ".*" for n in self.used})
        layout = ("\nThe file's layers are %s; this architecture's are %s."
                  % (", ".join(found), ", ".join(wanted))) if found != wanted else ""
        raise WeightsMismatchError(
            "%s does not fit this architecture:\n%s%s\nIt is probably the weights file of another "
            "model: pass the .params file that belongs to this zoo entry (see `edgepose zoo`)."
            % (self.source, "\n".join(parts), layout))


class RandomWeights(WeightSource):
    """Seeded random weights that keep activations O(1); for benchmarks and offline trials only."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def get(self, name: str, shape: Tuple[int, ...]) -> np.ndarray:
        role = name.rsplit(".", 1)[-1]
        rng = self.rng
        if role == "weight":
            fan_in = int(np.prod(shape[1:])) or 1
            return rng.normal(0.0, np.sqrt(1.0 / fan_in), shape).astype(np.float32)
        if role == "gamma":
            return rng.uniform(0.5, 1.0, shape).astype(np.float32)
        if role == "running_var":
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return rng.normal(0.0, 0.1, shape).astype(np.float32)  # bias, beta, running_mean


class GraphBuilder:
    """Emits ONNX nodes and initialisers; tensors are named strings with a known channel count."""

    def __init__(self, weights: WeightSource) -> None:
        self.weights = weights
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self.channels: Dict[str, int] = {}
        self.num_params = 0  # trainable GluonCV parameters (running statistics excluded)
        self._count = 0

    # -- plumbing -------------------------------------------------------------------------
    def _name(self, op: str) -> str:
        self._count += 1
        return "%s_%d" % (op.lower(), self._count)

    def _param(self, name: str, shape: Tuple[int, ...]) -> np.ndarray:
        arr = self.weights.get(name, tuple(int(s) for s in shape))
        if not name.endswith(("running_mean", "running_var")):
            self.num_params += arr.size
        return arr

    def _const(self, hint: str, arr: np.ndarray) -> str:
        name = "%s_%d" % (hint, len(self.initializers))
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def _node(self, op: str, inputs: Sequence[str], channels: int, **attrs) -> str:
        out = self._name(op)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        self.channels[out] = channels
        return out

    def input(self, channels: int = 3) -> str:
        self.channels[INPUT_NAME] = channels
        return INPUT_NAME

    def _bn_fold(self, bn: str, channels: int) -> Tuple[np.ndarray, np.ndarray]:
        """Per-channel (scale, shift) of an inference BatchNorm, in float64."""
        gamma = self._param(bn + ".gamma", (channels,)).astype(np.float64)
        beta = self._param(bn + ".beta", (channels,)).astype(np.float64)
        mean = self._param(bn + ".running_mean", (channels,)).astype(np.float64)
        var = self._param(bn + ".running_var", (channels,)).astype(np.float64)
        scale = gamma / np.sqrt(var + BN_EPS)
        return scale, beta - mean * scale

    # -- layers ---------------------------------------------------------------------------
    def conv(self, x: str, name: str, out_channels: int, kernel: int, stride: int = 1,
             pad: Optional[int] = None, groups: int = 1, bias: bool = False,
             bn: Optional[str] = None, act: Optional[str] = None, dense: bool = False) -> str:
        """Convolution ``name.weight`` (+ ``name.bias``), then BatchNorm ``bn`` folded in, then ``act``.

        ``dense=True`` reads a Dense layer's (out, in) weight and applies it as a 1x1 convolution.
        """
        cin = self.channels[x]
        pad = (kernel - 1) // 2 if pad is None else pad
        shape = (out_channels, cin) if dense else (out_channels, cin // groups, kernel, kernel)
        w = self._param(name + ".weight", shape).astype(np.float64).reshape(
            out_channels, cin // groups, kernel, kernel)
        b = self._param(name + ".bias", (out_channels,)).astype(np.float64) if bias else np.zeros(out_channels)
        if bn is not None:
            scale, shift = self._bn_fold(bn, out_channels)
            w = w * scale[:, None, None, None]
            b = b * scale + shift
        inputs = [x, self._const(name + ".weight", w.astype(np.float32))]
        if bias or bn is not None:
            inputs.append(self._const(name + ".bias", b.astype(np.float32)))
        y = self._node("Conv", inputs, out_channels, kernel_shape=[kernel, kernel],
                       strides=[stride, stride], pads=[pad] * 4, group=groups)
        return self.act(y, act)

    def deconv(self, x: str, name: str, out_channels: int, kernel: int = 4, stride: int = 2,
               pad: int = 1, bn: Optional[str] = None, act: Optional[str] = None) -> str:
        """Bias-free ConvTranspose ``name.weight`` (layout in, out, k, k), BatchNorm folded in."""
        cin = self.channels[x]
        w = self._param(name + ".weight", (cin, out_channels, kernel, kernel)).astype(np.float64)
        inputs = [x]
        if bn is not None:
            scale, shift = self._bn_fold(bn, out_channels)
            w = w * scale[None, :, None, None]
            inputs += [self._const(name + ".weight", w.astype(np.float32)),
                       self._const(name + ".bias", shift.astype(np.float32))]
        else:
            inputs.append(self._const(name + ".weight", w.astype(np.float32)))
        y = self._node("ConvTranspose", inputs, out_channels, kernel_shape=[kernel, kernel],
                       strides=[stride, stride], pads=[pad] * 4)
        return self.act(y, act)

    def act(self, x: str, kind: Optional[str]) -> str:
        """Activation as GluonCV computes it: relu, relu6, hard_swish, hard_sigmoid, sigmoid."""
        c = self.channels[x]
        if kind is None:
            return x
        if kind == "relu":
            return self._node("Relu", [x], c)
        if kind == "relu6":
            lo = self._const("clip_min", np.array(0.0, np.float32))
            hi = self._const("clip_max", np.array(6.0, np.float32))
            return self._node("Clip", [x, lo, hi], c)
        if kind == "hard_swish":  # x * relu6(x + 3) / 6
            return self._node("HardSwish", [x], c)
        if kind == "hard_sigmoid":  # relu6(x + 3) / 6 -- ONNX's default alpha 0.2 would be wrong
            return self._node("HardSigmoid", [x], c, alpha=1.0 / 6.0, beta=0.5)
        if kind == "sigmoid":
            return self._node("Sigmoid", [x], c)
        raise ValueError("unknown activation %r" % kind)

    def add(self, a: str, b: str, act: Optional[str] = None) -> str:
        return self.act(self._node("Add", [a, b], self.channels[a]), act)

    def mul(self, a: str, b: str) -> str:
        return self._node("Mul", [a, b], self.channels[a])

    def max_pool(self, x: str, kernel: int = 3, stride: int = 2, pad: int = 1) -> str:
        return self._node("MaxPool", [x], self.channels[x], kernel_shape=[kernel, kernel],
                          strides=[stride, stride], pads=[pad] * 4)

    def avg_pool_ceil(self, x: str, kernel: int) -> str:
        """MXNet's ``pooling_convention='full'`` average pool that excludes padding (ResNet-v1d)."""
        return self._node("AveragePool", [x], self.channels[x], kernel_shape=[kernel, kernel],
                          strides=[kernel, kernel], ceil_mode=1, count_include_pad=0)

    def global_avg_pool(self, x: str) -> str:
        return self._node("GlobalAveragePool", [x], self.channels[x])

    def pixel_shuffle(self, x: str, factor: int = 2) -> str:
        """MXNet's PixelShuffle2D: ONNX DepthToSpace in CRD mode (not the default DCR)."""
        return self._node("DepthToSpace", [x], self.channels[x] // (factor * factor),
                          blocksize=factor, mode="CRD")

    # -- output ---------------------------------------------------------------------------
    def to_model(self, y_out: str, input_hw: Tuple[int, int], output_hw: Tuple[int, int],
                 metadata: Dict[str, str], graph_name: str) -> onnx.ModelProto:
        """Wrap the nodes into a checked model with a dynamic batch dimension."""
        self.weights.finish()
        for node in self.nodes:  # give the heatmaps a stable, readable name
            node.output[:] = [OUTPUT_NAME if o == y_out else o for o in node.output]
        self.channels[OUTPUT_NAME] = self.channels[y_out]
        y_out = OUTPUT_NAME
        inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, *input_hw])
        outp = helper.make_tensor_value_info(y_out, TensorProto.FLOAT,
                                             ["batch", self.channels[y_out], *output_hw])
        graph = helper.make_graph(self.nodes, graph_name, [inp], [outp], initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="edgepose")
        model.ir_version = IR_VERSION
        write_onnx_props(model, metadata)
        return check_and_infer(model)
