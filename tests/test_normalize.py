"""Foreign top-down heatmap models (old opsets, batch 1, unfolded BatchNorm, no metadata) normalised
into the form of a zoo export, checked in ONNX Runtime and through edgepose.Runtime."""
import hashlib
import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepose.converters.onnx_io import save_onnx
from edgepose.converters.graph import OPSET
from edgepose.converters.normalize import fold_batchnorm, normalize_foreign
from edgepose.errors import ModelFileError
from edgepose.keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINTS
from edgepose.meta import IMAGENET_MEAN, IMAGENET_STD, ModelMeta
from edgepose.runtime import Runtime
from edgepose.transforms import boxes_to_center_scale
from support import DATA, random_model

HW = (64, 48)
IN, OUT = "image:0", "Identity:0"  # the names a TensorFlow export would carry


def bn_params(rng, name, c):
    return [numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), name + "/gamma"),
            numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), name + "/beta"),
            numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), name + "/mean"),
            numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), name + "/var")]


def foreign_model(opset, batch=1, hw=HW, seed=0, extra_nodes=(), extra_inits=()):
    """Input BN (kept) -> 3 x (Conv s2 -> BN -> Relu) -> ConvTranspose x2 -> BN -> Relu -> 1x1 Conv
    (its weight in a Constant node) -> 17 heatmaps at 1/4 of the input. Opset < 9 lists the weights
    as graph inputs, IR 3, as exporters of that time did."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def weight(name, shape):
        arr = rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def bn(x, name, c, y, **attrs):
        inits.extend(bn_params(rng, name, c))
        params = [name + s for s in ("/gamma", "/beta", "/mean", "/var")]
        nodes.append(helper.make_node("BatchNormalization", [x] + params, [y], name=name, **attrs))

    bn(IN, "input_bn", 3, "normed", epsilon=1e-3)
    x, c = "normed", 3
    for i, width in enumerate((16, 32, 32)):
        nodes.append(helper.make_node("Conv", [x, weight("conv%d/W" % i, (width, c, 3, 3))], ["conv%d" % i],
                                      kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], name="conv%d" % i))
        bn("conv%d" % i, "bn%d" % i, width, "bn%d:0" % i, epsilon=1e-3)
        nodes.append(helper.make_node("Relu", ["bn%d:0" % i], ["relu%d" % i]))
        x, c = "relu%d" % i, width
    nodes.append(helper.make_node("ConvTranspose", [x, weight("deconv/W", (c, 16, 4, 4))], ["deconv"],
                                  kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1], name="deconv"))
    bn("deconv", "deconv_bn", 16, "deconv_bn:0")
    nodes.append(helper.make_node("Relu", ["deconv_bn:0"], ["features"]))
    head = (rng.normal(size=(17, 16, 1, 1)) / 4).astype(np.float32)
    nodes.append(helper.make_node("Constant", [], ["head/W"], value=numpy_helper.from_array(head, "head/W")))
    nodes.append(helper.make_node("Conv", ["features", "head/W"], ["heat"], kernel_shape=[1, 1]))
    nodes += list(extra_nodes) or [helper.make_node("Identity", ["heat"], [OUT])]
    inits += list(extra_inits)
    inputs = [helper.make_tensor_value_info(IN, TensorProto.FLOAT, [batch, 3, *hw])]
    if opset < 9:
        inputs += [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims)) for i in inits]
    out_hw = [hw[0] // 4, hw[1] // 4] if isinstance(hw[0], int) else [None, None]
    graph = helper.make_graph(nodes, "tf2onnx", inputs, [helper.make_tensor_value_info(
        OUT, TensorProto.FLOAT, [batch, 17, *out_hw])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3 if opset < 9 else 7
    onnx.checker.check_model(model)
    return model


def run(model, x, name=IN):
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]


def props(model):
    return {p.key: p.value for p in model.metadata_props}


@pytest.mark.parametrize("opset", [8, 9, 11, 13])
def test_foreign_model_normalised(opset, tmp_path):
    source = save_onnx(foreign_model(opset), tmp_path / "pose net.onnx")
    x = np.random.default_rng(1).normal(size=(1, 3, *HW)).astype(np.float32)
    ref = run(str(source), x)
    model = normalize_foreign(source)
    assert model.opset_import[0].version == OPSET and model.ir_version == 8
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops and ops[:3] == ["Mul", "Add", "Conv"]  # the input BN: Mul + Add
    assert "Constant" not in ops and len(model.graph.input) == 1
    out = run(model, x)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    batch = np.concatenate([x, np.random.default_rng(2).normal(size=(3, 3, *HW)).astype(np.float32)])
    out4 = run(model, batch)
    assert out4.shape == (4, 17, 16, 12)
    assert np.abs(out4[:1] - ref).max() <= 1e-5 * np.abs(ref).max()
    for value in (model.graph.input[0], model.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = ModelMeta.from_props(props(model))
    assert meta.name == "pose net" and meta.input_size == HW and meta.heatmap_stride == 4
    assert meta.source == "foreign:pose net.onnx" and meta.precision == "fp32"
    assert meta.weights_sha1 == hashlib.sha1(source.read_bytes()).hexdigest()
    assert (meta.mean, meta.std, meta.color_order, meta.decoder) == (IMAGENET_MEAN, IMAGENET_STD, "RGB", "simple")
    assert meta.keypoints == COCO_KEYPOINTS and meta.flip_pairs == COCO_FLIP_PAIRS


@pytest.mark.shared
def test_runtime_estimates_with_a_normalised_model(tmp_path):
    path = save_onnx(normalize_foreign(foreign_model(9)), tmp_path / "foreign-normalised.onnx")
    image = cv2.imread(str(DATA / "demo_media" / "soccer.png"))
    boxes = np.array([[180, 420, 560, 920], [480, 40, 710, 440], [590, 70, 930, 470]], np.float32)
    with Runtime(str(path)) as rt:
        assert rt.meta.input_size == HW and rt.backend.input_shape[0] is None
        result = rt.estimate(image, boxes, flip=True)
    assert result.keypoints.shape == (3, 17, 2) and np.isfinite(result.keypoints).all()
    center, scale = boxes_to_center_scale(boxes, HW[1] / HW[0])
    assert np.all(np.abs(result.keypoints - center[:, None]) <= scale[:, None] / 2 + 1)  # inside each crop


def test_options_override_metadata():
    model = normalize_foreign(foreign_model(13), name="mine", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                              color_order="BGR", decoder="alphapose")
    meta = ModelMeta.from_props(props(model))
    assert (meta.name, meta.mean, meta.std, meta.color_order, meta.decoder) == (
        "mine", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "BGR", "alphapose")
    assert meta.weights_sha1 == "unknown" and meta.source == "foreign:tf2onnx"  # from a ModelProto


def test_dynamic_input_size_needs_input_size():
    model = foreign_model(13, batch="N", hw=("H", "W"))
    with pytest.raises(ModelFileError, match=r"dynamic input size; pass input_size"):
        normalize_foreign(model)
    meta = ModelMeta.from_props(props(normalize_foreign(model, input_size=(128, 96))))
    assert meta.input_size == (128, 96) and meta.heatmap_stride == 4  # stride: the model cannot tell; default
    with pytest.raises(ModelFileError, match=r"takes 64x48 inputs, but input_size"):
        normalize_foreign(foreign_model(13), input_size=(256, 192))


@pytest.mark.parametrize("stripped", [True, False], ids=["no-metadata", "with-metadata"])
def test_zoo_export_with_batch_fixed_round_trips(stripped):
    zoo = onnx.load(str(random_model("mobile_pose_mobilenetv3_small")))
    fixed = onnx.ModelProto.FromString(zoo.SerializeToString())
    for value in (fixed.graph.input[0], fixed.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    del fixed.graph.value_info[:]
    if stripped:
        del fixed.metadata_props[:]
    model = normalize_foreign(fixed)
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in zoo.graph.node]
    x = np.random.default_rng(3).normal(size=(3, 3, 256, 192)).astype(np.float32)
    np.testing.assert_array_equal(run(model, x, "input"), run(zoo, x, "input"))
    meta, zoo_meta = ModelMeta.from_props(props(model)), ModelMeta.from_props(props(zoo))
    if stripped:  # the defaults are the Mobile Pose conventions; the provenance says where it came from
        assert meta.source == "foreign:mobile_pose_mobilenetv3_small" and meta.weights_sha1 == "unknown"
        meta.name, meta.source, meta.weights_sha1 = zoo_meta.name, zoo_meta.source, zoo_meta.weights_sha1
    assert meta == zoo_meta


def test_fold_batchnorm_after_grouped_convtranspose():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(4, 3, 4, 4)).astype(np.float32)  # 2 groups: 4 in, 6 out
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["d"], strides=[2, 2], pads=[1, 1, 1, 1], group=2),
             helper.make_node("BatchNormalization", ["d", "bn/gamma", "bn/beta", "bn/mean", "bn/var"], ["y"],
                              epsilon=1e-2)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "b")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits + bn_params(rng, "bn", 6))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(2, 4, 5, 5)).astype(np.float32)
    ref = run(model, x, "x")
    assert fold_batchnorm(model.graph) == 1
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose"] and len(model.graph.initializer) == 2
    assert np.abs(run(model, x, "x") - ref).max() <= 1e-5 * np.abs(ref).max()


def reshape_tail(shape):
    """Flatten-then-restore tail through a Reshape to the constant ``shape``."""
    const = numpy_helper.from_array(np.array(shape, np.int64), "tail/shape")
    nodes = [helper.make_node("Reshape", ["heat", "tail/shape"], ["flat"], name="tail/Reshape"),
             helper.make_node("Reshape", ["flat", "back/shape"], [OUT])]
    back = numpy_helper.from_array(np.array([-1, 17, 16, 12], np.int64), "back/shape")
    return dict(extra_nodes=nodes, extra_inits=[const, back])


def test_reshape_with_batch_one_is_refused():
    with pytest.raises(ModelFileError, match=r"Reshape 'tail/Reshape'.*\[1, 17, 192\].*fixes the batch to 1"):
        normalize_foreign(foreign_model(11, **reshape_tail([1, 17, 192])))
    model = normalize_foreign(foreign_model(11, **reshape_tail([0, 17, 192])))  # 0 copies the batch
    assert run(model, np.zeros((2, 3, *HW), np.float32)).shape == (2, 17, 16, 12)


def odd_io(kind):
    model = foreign_model(13)
    if kind == "two inputs":
        model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1, 3]))
    elif kind == "3-D output":
        model.graph.output[0].type.tensor_type.shape.dim.pop()
    elif kind == "1 channel":
        model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
    elif kind == "int input":
        model.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    return model


def test_undeclared_output_shape_is_inferred():
    model = foreign_model(11)
    model.graph.output[0].type.tensor_type.ClearField("shape")
    normalised = normalize_foreign(model)
    dims = normalised.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 17, 16, 12]


@pytest.mark.parametrize("kind", ["two inputs", "3-D output", "1 channel", "int input"])
def test_not_a_heatmap_model(kind):
    with pytest.raises(ModelFileError, match=r"top-down heatmap model has one float32 \(N, 3, H, W\) image input"):
        normalize_foreign(odd_io(kind))


def test_conversion_failure_names_the_operator():
    model = foreign_model(8)
    scaler = helper.make_node("ImageScaler", [IN], ["scaled"], scale=1.0, bias=[0.0, 0.0, 0.0])
    model.graph.node[0].input[0] = "scaled"
    model.graph.node.insert(0, scaler)
    with pytest.raises(ModelFileError, match=r"opset 8 to 17.*removed or experimental\): ImageScaler"):
        normalize_foreign(model)


def test_too_old_opset_and_bad_files(tmp_path):
    old = foreign_model(8)
    old.opset_import[0].version = 6
    with pytest.raises(ModelFileError, match=r"opset 6; edgepose converts models from opset 7"):
        normalize_foreign(old)
    with pytest.raises(ModelFileError, match="does not exist"):
        normalize_foreign(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx model" * 10)
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        normalize_foreign(junk)


def test_keypoint_options_are_checked():
    with pytest.raises(ModelFileError, match="outputs 17 heatmaps but the metadata names 5 keypoints"):
        normalize_foreign(foreign_model(13), keypoints=list("abcde"), flip_pairs=[(1, 2)])
    with pytest.raises(ModelFileError, match="no flip_pairs"):
        normalize_foreign(foreign_model(13), keypoints=["k%d" % i for i in range(16)])
    with pytest.raises(ModelFileError, match=r"flip pairs \[\(3, 17\)\]"):
        normalize_foreign(foreign_model(13), flip_pairs=[(1, 2), (3, 17)])
    names = ["k%d" % i for i in range(17)]
    meta = ModelMeta.from_props(props(normalize_foreign(foreign_model(13), keypoints=names, flip_pairs=[])))
    assert meta.keypoints == names and meta.flip_pairs == []
    assert json.loads(props(normalize_foreign(foreign_model(13)))["edgepose.keypoints"]) == COCO_KEYPOINTS
