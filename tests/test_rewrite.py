"""The exact ConvTranspose -> Conv + DepthToSpace rewrite: single nodes in ONNX Runtime, and the zoo
graphs after it against GluonCV's heatmaps (the same check and tolerances as test_parity.py)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import oracle
from edgepose.converters.graph import ALLOWED_OPS
from edgepose.converters.rewrite import deconv_to_conv_depth_to_space
from edgepose.converters.zoo import get_entry, list_models
from edgepose.errors import ModelFileError
from support import random_model

SIMPLE_POSE = [e.name for e in list_models() if e.head == "deconv"]


def deconv_model(c_in, c_out, kernel, stride, pads, out_pad=(0, 0), group=1, bias=True, seed=0, **attrs):
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(c_in, c_out // group, *kernel)).astype(np.float32), "w")]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=c_out).astype(np.float32), "b"))
    node = helper.make_node("ConvTranspose", ["x"] + [i.name for i in inits], ["y"], kernel_shape=list(kernel),
                            strides=[stride, stride], pads=list(pads), output_padding=list(out_pad),
                            group=group, **attrs)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c_in, 7, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "deconv", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model, x, name="x"):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {name: x})[0]


CASES = {  # id: (c_in, c_out, kernel, stride, pads, output_padding, group, bias)
    "zoo-k4s2p1": (32, 16, (4, 4), 2, (1, 1, 1, 1), (0, 0), 1, False),
    "k4s2p1-bias": (5, 3, (4, 4), 2, (1, 1, 1, 1), (0, 0), 1, True),
    "k2s2p0": (8, 4, (2, 2), 2, (0, 0, 0, 0), (0, 0), 1, False),
    "k3s2p1-outpad1": (4, 6, (3, 3), 2, (1, 1, 1, 1), (1, 1), 1, True),
    "grouped": (4, 6, (4, 4), 2, (1, 1, 1, 1), (0, 0), 2, True),
    "k6x4-asym-kernel": (3, 2, (6, 4), 2, (2, 1, 2, 1), (0, 0), 1, True),
    "k5x3s3": (3, 7, (5, 3), 3, (1, 0, 1, 0), (0, 0), 1, True),
    "k8s4p2": (3, 2, (8, 8), 4, (2, 2, 2, 2), (0, 0), 1, False),
    "asym-pads": (3, 2, (5, 5), 2, (2, 1, 1, 2), (0, 0), 1, True),
}


@pytest.mark.parametrize("trim", [False, True], ids=["plain", "trim"])
@pytest.mark.parametrize("case", list(CASES))
def test_single_node_matches_convtranspose(case, trim):
    c_in, c_out, kernel, stride, pads, out_pad, group, bias = CASES[case]
    model = deconv_model(c_in, c_out, kernel, stride, pads, out_pad, group, bias)
    rewritten = deconv_to_conv_depth_to_space(model, trim=trim)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops[:2] == ["Conv", "DepthToSpace"] and set(ops) <= {"Conv", "DepthToSpace", "Slice"}
    if not trim:
        assert set(ops) <= ALLOWED_OPS
    d2s = rewritten.graph.node[1]
    assert {a.name: helper.get_attribute_value(a) for a in d2s.attribute} == {"blocksize": stride, "mode": b"CRD"}
    assert {i.name for i in rewritten.graph.initializer}.isdisjoint({"w", "b"})  # old weights dropped
    x = np.random.default_rng(1).normal(size=(3, c_in, 7, 5)).astype(np.float32)
    ref, ours = run(model, x), run(rewritten, x)
    assert ours.shape == ref.shape == (3, c_out, 7 * stride, 5 * stride)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()  # float32 summation order only


@pytest.mark.parametrize("trim", [False, True], ids=["plain", "trim"])
def test_activation_moves_before_the_pixel_shuffle(trim):
    model = deconv_model(*CASES["k4s2p1-bias"])
    model.graph.node[0].output[0] = "d"
    model.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), name)
                                    for name, v in (("lo", 0.0), ("hi", 0.5))])
    model.graph.node.append(helper.make_node("Clip", ["d", "lo", "hi"], ["y"]))
    branched = onnx.ModelProto.FromString(model.SerializeToString())  # d also read by a second node
    branched.graph.node.append(helper.make_node("Neg", ["d"], ["z"]))
    branched.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    x = np.random.default_rng(5).normal(size=(2, 5, 7, 5)).astype(np.float32)
    for source, order in ((model, ["Conv", "Clip", "DepthToSpace"]), (branched, ["Conv", "DepthToSpace"])):
        rewritten = deconv_to_conv_depth_to_space(source, trim=trim)
        assert [n.op_type for n in rewritten.graph.node][:len(order)] == order
        assert [o.name for o in rewritten.graph.output] == [o.name for o in source.graph.output]
        ref, ours = run(source, x), run(rewritten, x)
        assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


def test_trim_uses_the_deconvolution_kernel_size():
    model = deconv_model(*CASES["zoo-k4s2p1"])
    shapes = {mode: [list(i.dims) for i in deconv_to_conv_depth_to_space(model, trim=mode).graph.initializer
                     if len(i.dims) == 4] for mode in (False, True)}
    assert shapes == {False: [[64, 32, 3, 3]], True: [[64, 32, 2, 2]]}


@pytest.mark.parametrize("why, args, attrs", [
    ("output is 2H+2, not 2H", (3, 2, (4, 4), 2, (0, 0, 0, 0)), {}),
    ("stride 1", (3, 2, (3, 3), 1, (1, 1, 1, 1)), {}),
    ("dilation", (3, 2, (3, 3), 2, (1, 1, 1, 1)), {"dilations": [2, 2]}),
    ("output_shape given", (3, 2, (4, 4), 2, (1, 1, 1, 1)), {"output_shape": [14, 10]}),
])
def test_inexact_nodes_are_left_alone(why, args, attrs):
    model = deconv_model(*args, **attrs)
    rewritten = deconv_to_conv_depth_to_space(model)
    assert [n.op_type for n in rewritten.graph.node] == ["ConvTranspose"], why
    x = np.random.default_rng(2).normal(size=(1, 3, 7, 5)).astype(np.float32)
    np.testing.assert_array_equal(run(rewritten, x), run(model, x))


def test_old_opset_is_refused():
    model = deconv_model(*CASES["zoo-k4s2p1"])
    model.opset_import[0].version = 10
    with pytest.raises(ModelFileError, match="opset >= 11.*normalise"):
        deconv_to_conv_depth_to_space(model)


@pytest.mark.parametrize("trim", [False, True], ids=["plain", "trim"])
@pytest.mark.parametrize("case", SIMPLE_POSE)
def test_rewritten_zoo_graph_matches_gluoncv(case, trim):
    """The parity check of test_parity.py, with the built graph passed through the rewrite."""

    def rewritten(model):
        model = deconv_to_conv_depth_to_space(model, trim=trim)
        ops = {n.op_type for n in model.graph.node}
        assert "ConvTranspose" not in ops and (trim or ops <= ALLOWED_OPS)
        return model

    oracle.check_case(case, rewritten)


def test_graphs_without_deconvolutions_are_unchanged():
    model = onnx.load(str(random_model("mobile_pose_mobilenetv3_small")))
    rewritten = deconv_to_conv_depth_to_space(model)
    assert rewritten.graph.node == model.graph.node
    assert len(rewritten.graph.initializer) == len(model.graph.initializer)
    assert rewritten.metadata_props == model.metadata_props


def test_rewritten_export_keeps_io_and_metadata():
    model = onnx.load(str(random_model("simple_pose_resnet18_v1b")))
    rewritten = deconv_to_conv_depth_to_space(model)
    assert [i.name for i in rewritten.graph.input] == ["input"]
    assert rewritten.graph.output == model.graph.output
    assert rewritten.metadata_props == model.metadata_props
    producers = {o: n.op_type for n in rewritten.graph.node for o in n.output}
    d2s = [n for n in rewritten.graph.node if n.op_type == "DepthToSpace"]
    assert len(d2s) == 3 and all(producers[n.input[0]] == "Relu" for n in d2s)  # Conv -> ReLU -> shuffle
    hw = get_entry("simple_pose_resnet18_v1b").input_size
    x = np.random.default_rng(3).normal(size=(2, 3, *hw)).astype(np.float32)
    ref = run(model, x, "input")
    assert np.abs(run(rewritten, x, "input") - ref).max() <= 1e-5 * np.abs(ref).max()
