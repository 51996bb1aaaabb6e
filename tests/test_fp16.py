"""FP16 conversion: FP16 vs FP32 heatmaps and keypoints in ONNX Runtime on CPU, graph structure, metadata.

Bounds:
* zoo exports with edgepose's random weights (activations kept O(1)) on real COCO person crops:
  max|FP16 - FP32| <= 2e-3 max|FP32|, about four FP16 unit roundoffs (2^-11) at the output scale
  (measured: <= 5e-4). Per-joint arg-max identical except at near-ties (FP32's own top value and its
  value at FP16's arg-max within that bound); where the arg-max agrees, decoded keypoints within half
  a heatmap pixel (the quarter-pixel step may flip on both axes).
* GluonCV's fixture weights (random, with random BatchNorm statistics): these networks amplify any
  weight perturbation (a 2^-11 relative jitter of the FP32 weights moves their heatmaps by 0.4% of
  max|y| for ResNet-18 up to 45% for ResNet-152), so FP16 is held to that yardstick: its error
  <= 1.5x the error of such a jitter (measured 0.6-1.0x on all 16 zoo cases; the 10 larger ones run
  with EDGEPOSE_ORACLE_ZOO, as in test_parity.py). A conversion fault (a lost Cast, an input read in
  the wrong precision, an overflow) is far larger than either bound.
"""
import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from edgepose.converters.onnx_io import save_onnx
from edgepose.converters.fp16 import to_fp16
from edgepose.decode import decode
from edgepose.meta import ModelMeta
from edgepose.runtime import Runtime
from edgepose.transforms import coco_xywh_to_xyxy, preprocess
import oracle
from support import DATA, random_model, require_shared

MODELS = ["simple_pose_resnet18_v1b", "mobile_pose_mobilenet1.0",
          "mobile_pose_mobilenetv2_1.0", "mobile_pose_mobilenetv3_large", "mobile_pose_mobilenetv3_small"]
REL_BOUND = 2e-3


@pytest.fixture(scope="module")
def coco_persons():
    """[(BGR image, (N, 4) xyxy ground-truth boxes)] for the 4 COCO images (14 persons)."""
    require_shared()
    folder = DATA / "coco_kpt_mini"
    ann = json.loads((folder / "test_coco.json").read_text())
    out = []
    for img in ann["images"]:
        boxes = [a["bbox"] for a in ann["annotations"] if a["image_id"] == img["id"]]
        out.append((cv2.imread(str(folder / img["file_name"])),
                    coco_xywh_to_xyxy(np.array(boxes), img["width"], img["height"])))
    return out


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def assert_argmax_agrees(hm16, hm32, tol):
    """Identical per-joint arg-max except at FP32 near-ties; returns the mask of agreeing joints."""
    flat32 = hm32.reshape(*hm32.shape[:2], -1)
    idx16 = hm16.reshape(flat32.shape).argmax(-1)
    same = idx16 == flat32.argmax(-1)
    at16 = np.take_along_axis(flat32, idx16[..., None], -1)[..., 0]
    assert np.all(flat32.max(-1)[~same] - at16[~same] <= tol)
    assert same.mean() >= 0.9
    return same


@pytest.mark.parametrize("name", MODELS)
def test_fp16_matches_fp32_on_coco_persons(name, coco_persons, tmp_path):
    fp32_path = random_model(name)
    fp16_path = save_onnx(to_fp16(onnx.load(str(fp32_path))), tmp_path / (name + "-fp16.onnx"))
    with Runtime(str(fp32_path)) as rt32, Runtime(str(fp16_path)) as rt16:
        assert rt16.meta.precision == "fp16"
        for image, boxes in coco_persons:
            crops = preprocess(image, boxes, rt32.meta, image_is_rgb=False)
            hm32, hm16 = rt32.infer(crops.batch), rt16.infer(crops.batch)
            assert hm16.dtype == np.float32 and hm16.shape == hm32.shape
            tol = REL_BOUND * np.abs(hm32).max()
            assert np.abs(hm16 - hm32).max() <= tol
            same = assert_argmax_agrees(hm16, hm32, tol)
            (kp32, _), (kp16, _) = decode(hm32, crops, rt32.meta), decode(hm16, crops, rt16.meta)
            half_px = 0.5 * crops.scale[:, 0] / hm32.shape[3] + 1e-3  # half a heatmap pixel, in image pixels
            assert np.all((np.abs(kp16 - kp32).max(-1) <= half_px[:, None])[same])


def jittered(model, rel, seed=0):
    """``model`` with every float weight multiplied by (1 + U(-rel, rel))."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        w = w * (1 + rng.uniform(-rel, rel, w.shape))
        init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
    return model


@pytest.mark.parametrize("case", oracle.all_cases())
def test_fp16_error_on_gluoncv_weights_is_weight_rounding(case):
    _, model, x, _ = oracle.load_case(case, "check FP16 on GluonCV's weights")
    ref = session(model).run(None, {"input": x})[0]
    err16 = np.abs(session(to_fp16(model)).run(None, {"input": x})[0] - ref).max()
    err_jitter = np.abs(session(jittered(model, 2.0 ** -11)).run(None, {"input": x})[0] - ref).max()
    assert err16 <= 1.5 * err_jitter


@pytest.fixture(scope="module")
def v3_small():
    return onnx.load(str(random_model("mobile_pose_mobilenetv3_small")))


def initializer_types(model):
    return {i.name: i.data_type for i in model.graph.initializer}


def test_structure_io_and_metadata(v3_small):
    fp16 = to_fp16(v3_small)
    for old, new in ((v3_small.graph.input, fp16.graph.input), (v3_small.graph.output, fp16.graph.output)):
        assert [(v.name, v.type) for v in old] == [(v.name, v.type) for v in new]  # FP32, dynamic batch
    types = initializer_types(fp16)
    head = fp16.graph.node[-1]
    assert head.op_type == "Conv" and head.output[0] == "heatmaps"
    assert all(types[n] == TensorProto.FLOAT for n in head.input[1:])  # the heatmap conv stays FP32
    body = [n for n in fp16.graph.node[:-1] if n.op_type == "Conv"]
    assert len(body) > 50 and all(types[n.input[1]] == TensorProto.FLOAT16 for n in body)
    casts = [(n.input[0], n.output[0]) for n in fp16.graph.node if n.op_type == "Cast"]
    assert casts[0][0] == "input" and len(casts) == 2  # one in at the input, one up before the head
    meta16, meta32 = (ModelMeta.from_props({p.key: p.value for p in m.metadata_props}) for m in (fp16, v3_small))
    assert meta16.precision == "fp16"
    meta16.precision = "fp32"
    assert meta16 == meta32
    assert len(fp16.SerializeToString()) < 0.55 * len(v3_small.SerializeToString())


def test_fp16_head_and_keep_ops(v3_small):
    x = np.random.default_rng(0).normal(size=(2, 3, 256, 192)).astype(np.float32)
    ref = session(v3_small).run(None, {"input": x})[0]
    all_half = to_fp16(v3_small, fp32_head=False)
    assert all_half.graph.node[-1].op_type == "Cast" and all_half.graph.node[-1].output[0] == "heatmaps"
    kept = to_fp16(v3_small, keep_fp32_ops=("GlobalAveragePool", "HardSigmoid"))
    for node in kept.graph.node:
        if node.op_type in ("GlobalAveragePool", "HardSigmoid"):
            producers = {o: n for n in kept.graph.node for o in n.output}
            assert producers[node.input[0]].op_type == "Cast"  # read back in FP32
    for model in (all_half, kept):
        out = session(model).run(None, {"input": x})[0]
        assert out.dtype == np.float32 and np.abs(out - ref).max() <= REL_BOUND * np.abs(ref).max()


def test_initializer_read_in_both_precisions_is_stored_twice(v3_small):
    """A weight shared by an FP16 and an FP32 node: FP32 kept, an FP16 copy added for the other."""
    model = onnx.ModelProto.FromString(v3_small.SerializeToString())
    head = model.graph.node[-1]
    other = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] != head.input[1])
    model.graph.node.append(onnx.helper.make_node("Neg", [other.input[2]], ["probe"]))  # bias read twice
    model.graph.output.append(onnx.helper.make_tensor_value_info("probe", TensorProto.FLOAT, None))
    fp16 = to_fp16(model, keep_fp32_ops=("Neg",))
    types = initializer_types(fp16)
    assert types[other.input[2]] == TensorProto.FLOAT and types[other.input[2] + "_fp16"] == TensorProto.FLOAT16
    session(fp16)  # and ONNX Runtime accepts it


def test_model_without_edgepose_metadata_keeps_its_props(v3_small):
    model = onnx.ModelProto.FromString(v3_small.SerializeToString())
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {"author": "someone"})
    assert {p.key: p.value for p in to_fp16(model).metadata_props} == {"author": "someone"}
