"""Zoo entry + weights -> checked FP32 ONNX with edgepose metadata, written atomically (:mod:`.onnx_io`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import onnx

import edgepose
from edgepose.converters.archs import build_pose_net
from edgepose.converters.graph import GraphBuilder, LoadedWeights, RandomWeights, WeightSource
from edgepose.converters.onnx_io import check_and_infer, save_onnx
from edgepose.converters.zoo import ZooEntry
from edgepose.errors import WeightsMismatchError
from edgepose.fileio import PathLike, file_hash
from edgepose.meta import ModelMeta

log = logging.getLogger(__name__)


def entry_meta(entry: ZooEntry, weights_sha1: str) -> ModelMeta:
    """The metadata a zoo export carries (the runtime configures itself from it)."""
    return ModelMeta(
        name=entry.name, input_size=entry.input_size, mean=entry.mean, std=entry.std,
        color_order="RGB", heatmap_stride=4, decoder=entry.decoder, weights_sha1=weights_sha1,
        precision="fp32", source="gluoncv:%s-%s" % (entry.gluoncv_name, entry.hashtag),
        edgepose_version=edgepose.__version__)


def build_onnx(entry: ZooEntry, weights: WeightSource, weights_sha1: str) -> onnx.ModelProto:
    """Build the FP32 graph of ``entry`` (BatchNorm folded, dynamic batch) and check it."""
    g = GraphBuilder(weights)
    y = build_pose_net(g, g.input(), entry.backbone, entry.head)
    h, w = entry.input_size
    return g.to_model(y, (h, w), (h // 4, w // 4), entry_meta(entry, weights_sha1).to_props(),
                      graph_name=entry.name)


def load_weights_file(path: PathLike) -> LoadedWeights:
    """Read a GluonCV ``.params`` file into a weight source for :func:`build_onnx`."""
    from edgepose.converters.params import read_params

    params = read_params(path)
    if params.scheme != "structural":
        raise WeightsMismatchError(
            "%s uses MXNet's exported (arg:/aux: or prefix) parameter names, which depend on the "
            "process that exported the model and cannot be matched to the zoo's layers safely. Use the "
            "file written by `net.save_parameters()` (the model-store file, e.g. from ~/.mxnet/models)."
            % path)
    return LoadedWeights(params.arrays, str(path))


def random_weights(seed: int) -> RandomWeights:
    log.warning("RANDOM WEIGHTS (seed %d): this model predicts nothing useful; use it for speed trials "
                "and offline tests only. Its metadata records weights_sha1='random'.", seed)
    return RandomWeights(seed)


def count_gflops(model: onnx.ModelProto, batch: int = 1) -> float:
    """2 x multiply-accumulates of the Conv/ConvTranspose/Gemm nodes per sample, in 1e9.

    (Papers that quote 8.9 "GFLOPs" for SimpleBaseline-ResNet-50 count multiply-accumulates.)
    """
    graph = model.graph
    shapes = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = [d.dim_value or batch for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    if not any(n.output[0] in shapes for n in graph.node):
        return count_gflops(check_and_infer(model, strict=False), batch)
    inits = {i.name: list(i.dims) for i in graph.initializer}
    macs = 0
    for node in graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            w = inits[node.input[1]]
            macs += out[1] * out[2] * out[3] * w[1] * w[2] * w[3]
        elif node.op_type == "ConvTranspose":
            inp = shapes[node.input[0]]
            w = inits[node.input[1]]  # (in, out/groups, kH, kW)
            macs += inp[1] * inp[2] * inp[3] * w[1] * w[2] * w[3]
    return 2.0 * macs / 1e9


@dataclass
class ExportResult:
    entry: ZooEntry
    path: Path
    weights: str  # the weights file used, or "random (seed N)"
    meta: ModelMeta


def export_zoo_model(entry: ZooEntry, output: Optional[PathLike] = None, *,
                     weights: Optional[PathLike] = None, random: bool = False, seed: int = 0,
                     download: bool = True) -> ExportResult:
    """Resolve the weights of ``entry``, build its FP32 ONNX and write it (atomically)."""
    if random:
        source: WeightSource = random_weights(seed)
        sha1, used = "random", "random (seed %d)" % seed
    else:
        from edgepose.converters.weights import resolve_weights

        path = resolve_weights(entry.gluoncv_name, entry.hashtag, entry.sha1, weights, download=download)
        source, sha1, used = load_weights_file(path), file_hash(path, "sha1"), str(path)
    model = build_onnx(entry, source, sha1)
    out = Path(output) if output is not None else Path("%s.onnx" % entry.name)
    save_onnx(model, out)
    return ExportResult(entry, out, used, entry_meta(entry, sha1))
