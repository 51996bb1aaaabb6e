"""INT8 Q/DQ quantisation: exact graph preparation, the two target forms, metadata and errors."""
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgepose.converters.export import build_onnx, load_weights_file  # noqa: E402
from edgepose.converters.gate import compare_heatmaps, sqnr_db  # noqa: E402
from edgepose.converters.graph import ALLOWED_OPS  # noqa: E402
from edgepose.converters.quantize import (  # noqa: E402
    final_heatmap_node, prepare_graph, quantize_int8, quantize_model)
from edgepose.converters.zoo import get_entry  # noqa: E402
from edgepose.errors import InputError, ModelFileError  # noqa: E402
from edgepose.meta import KEY_INT8_CALIBRATION, KEY_INT8_TARGET, ModelMeta  # noqa: E402
from support import SHARED, heatmap_model, random_model  # noqa: E402

FIXTURES = SHARED / "parity" / "fixtures"
HW = (32, 24)


def small_deconv_model() -> "onnx.ModelProto":
    """A Simple-Pose-like net: conv s2 -> relu -> 4x4/2 ConvTranspose (+bias) -> relu -> 1x1 conv,
    with edgepose metadata; random weights (seed 0)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w1", rng.normal(0, 0.3, (8, 3, 3, 3))), ("b1", rng.normal(0, 0.1, 8)),
        ("wt", rng.normal(0, 0.2, (8, 8, 4, 4))), ("bt", rng.normal(0, 0.1, 8)),
        ("w2", rng.normal(0, 0.3, (17, 8, 1, 1))), ("b2", rng.normal(0, 0.1, 17)))]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3],
                              strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("ConvTranspose", ["r1", "wt", "bt"], ["d1"], name="deconv", kernel_shape=[4, 4],
                              strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["d1"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w2", "b2"], ["heatmaps"], name="final", kernel_shape=[1, 1])]
    return heatmap_model("small", HW, nodes, inits)


def crops(n: int, hw=HW, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, *hw)).astype(np.float32)


def run(model, x: np.ndarray) -> np.ndarray:
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def initializer(model, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


@pytest.fixture(scope="module")
def small_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("quantize") / "small.onnx"
    onnx.save(small_deconv_model(), str(path))
    return path


# ------------------------------------------------------------------ graph preparation is exact
def test_prepare_graph_is_exact_and_removes_the_deconvolution():
    model = small_deconv_model()
    prepared = prepare_graph(model)
    ops = [n.op_type for n in prepared.graph.node]
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops
    assert ops.index("Relu", 1) < ops.index("DepthToSpace")  # the activation moved before it
    x = crops(4)
    ref = run(model, x)
    np.testing.assert_allclose(run(prepared, x), ref, atol=1e-5 * np.abs(ref).max())


@pytest.mark.shared
def test_prepare_graph_keeps_gluoncv_parity():
    """The FP32 graph after the INT8 rewrites still reproduces GluonCV's heatmaps (both heads)."""
    for case in ("simple_pose_resnet18_v1b", "mobile_pose_mobilenetv3_small"):
        info = json.loads((FIXTURES / (case + ".json")).read_text())
        model = build_onnx(get_entry(case), load_weights_file(FIXTURES / info["params_file"]), "test")
        ref = np.load(FIXTURES / info["output_file"])
        ours = run(prepare_graph(model), np.load(FIXTURES / info["input_file"]))
        assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max(), case


def test_final_heatmap_node_is_the_last_convolution():
    assert final_heatmap_node(small_deconv_model()).name == "final"


# ------------------------------------------------------------------ the two forms
def quantized_tensors(model):
    """{tensor fed to a QuantizeLinear: (scale, zero point)} and the DequantizeLinear nodes."""
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    return q_nodes, dq_nodes


def test_tensorrt_form(small_path, tmp_path):
    out = quantize_int8(small_path, crops(16), tmp_path / "small-int8.onnx", target="tensorrt", method="minmax",
                        provenance={"source": "test"})
    model = onnx.load(str(out))
    q_nodes, dq_nodes = quantized_tensors(model)
    assert q_nodes and dq_nodes
    for node in q_nodes + dq_nodes:  # symmetric INT8: zero points are int8 zeros
        zp = initializer(model, node.input[2])
        assert zp.dtype == np.int8 and not zp.any(), node.name
    weights = {n.input[0]: n for n in q_nodes if n.input[0] in {i.name for i in model.graph.initializer}}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    final = next(n for n in convs if n.output[0] == "heatmaps")
    for conv in convs:
        producer = next((n for n in model.graph.node if conv.input[1] in n.output), None)
        if conv is final:  # the heatmap layer keeps plain FP32 weights
            assert producer is None
            continue
        assert producer is not None and producer.op_type == "DequantizeLinear"
        q = next(n for n in q_nodes if n.output[0] == producer.input[0])
        assert q.input[0] in weights  # FP32 weight -> Q -> DQ, per output channel on axis 0
        scale = initializer(model, q.input[1])
        assert scale.shape == (initializer(model, q.input[0]).shape[0],)
        assert {a.name: a.i for a in q.attribute}.get("axis", 1) == 0
        assert len(conv.input) < 3 or conv.input[2] in {i.name for i in model.graph.initializer}  # FP32 bias
    assert {n.op_type for n in model.graph.node} <= ALLOWED_OPS | {"Slice", "QuantizeLinear", "DequantizeLinear"}
    props = {p.key: p.value for p in model.metadata_props}
    assert ModelMeta.from_props(props).precision == "int8"
    assert json.loads(props[KEY_INT8_TARGET]) == "tensorrt"
    assert json.loads(props[KEY_INT8_CALIBRATION]) == {"method": "minmax", "crops": 16, "source": "test"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small-int8.onnx"]  # no temporary files left


def test_cpu_form_runs_on_ort_uint8_fast_path(small_path, tmp_path):
    out = quantize_int8(small_path, crops(16), tmp_path / "small-int8.onnx", target="cpu", method="minmax")
    model = onnx.load(str(out))
    q_nodes, _ = quantized_tensors(model)
    assert all(initializer(model, n.input[2]).dtype == np.uint8 for n in q_nodes)  # UINT8 activations
    int8_weights = [i for i in model.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) == 4]
    assert len(int8_weights) == 2  # conv1 and the rewritten deconvolution; the final conv stays FP32
    # ONNX Runtime fuses it into QLinearConv and moves UINT8 data through DepthToSpace.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    ops = [n.op_type for n in optimized.graph.node]
    assert ops.count("QLinearConv") == 2
    producers = {o: n.op_type for n in optimized.graph.node for o in n.output}
    d2s = next(n for n in optimized.graph.node if n.op_type == "DepthToSpace")
    assert producers[d2s.input[0]] != "DequantizeLinear"


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_every_method_follows_fp32(small_path, method):
    model = prepare_graph(onnx.load(str(small_path)))
    x = crops(12, seed=5)
    quantized = quantize_model(model, crops(24), target="cpu", method=method)
    assert sqnr_db(run(model, x), run(quantized, x)) > 25


def test_zoo_model_quantises_and_agrees(tmp_path):
    """A real zoo graph (random weights) on real-looking data: both forms keep the heatmaps close."""
    path = random_model("mobile_pose_mobilenetv3_small")
    x = crops(6, (256, 192), seed=3)
    ref = run(str(path), x)
    for target in ("tensorrt", "cpu"):
        out = quantize_int8(path, crops(8, (256, 192)), tmp_path / ("%s.onnx" % target), target=target)
        result = compare_heatmaps(ref, run(str(out), x), (256, 192))
        assert result.sqnr_db > 25, target


# ------------------------------------------------------------------ errors
def test_bad_target_and_method(small_path, tmp_path):
    with pytest.raises(InputError, match="target must be one of tensorrt, cpu"):
        quantize_int8(small_path, crops(4), tmp_path / "x.onnx", target="gpu")
    with pytest.raises(InputError, match="method must be one of"):
        quantize_int8(small_path, crops(4), tmp_path / "x.onnx", method="kl")
    with pytest.raises(InputError, match="non-empty"):
        quantize_int8(small_path, np.zeros((0, 3, *HW), np.float32), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_refuses_to_quantise_a_quantised_model(small_path, tmp_path):
    out = quantize_int8(small_path, crops(4), tmp_path / "once.onnx", target="cpu", method="minmax")
    with pytest.raises(ModelFileError, match="is already INT8 .* quantise the FP32 model"):
        quantize_int8(out, crops(4), tmp_path / "twice.onnx")
