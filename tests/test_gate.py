"""The INT8 accuracy gate: the OKS agreement and loss formulas, the decision rule, and make_int8's keep /
refuse / fall back rules."""
import json
import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from edgepose.converters.gate import (  # noqa: E402
    AREA_RATIO, CONFIDENT_SCORE, CROP_GROWTH, FP32_JOINT_OKS, GATE_MAX_OKS_LOSS, GATE_MIN_PERSONS, VISIBLE_SCORE,
    AccuracyGateError, agreement, crop_keypoints, decide, estimate_loss, oks_agreement, oks_loss, t95)
from edgepose.converters.precision import fp16_path_for, make_int8  # noqa: E402
from edgepose.errors import ModelFileError  # noqa: E402
from edgepose.keypoints import COCO_OKS_SIGMAS  # noqa: E402
from edgepose.meta import KEY_INT8_AGREEMENT, ModelMeta  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402
from support import DATA, heatmap_model, random_model  # noqa: E402

HW = (256, 192)
COCO_FILE = DATA / "coco_kpt_mini" / "test_coco.json"
SIGMAS = np.array(COCO_OKS_SIGMAS)


def people(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(10, 180, (n, 17, 2)), np.full((n, 17), 0.9)


# ------------------------------------------------------------------ the formula
def test_identical_keypoints_agree_fully():
    kps, scores = people()
    a = oks_agreement(kps, scores, kps, HW)
    assert a.mean_oks == a.min_oks == 1.0 and a.max_px_error == 0.0 and a.persons == 3
    np.testing.assert_array_equal(a.per_joint_oks, np.ones(17))


def test_a_known_shift_gives_cocos_oks():
    kps, scores = people()
    shift = 3.0
    a = oks_agreement(kps, scores, kps + [shift, 0.0], HW)
    area = HW[0] * HW[1] / CROP_GROWTH ** 2
    expected = np.exp(-shift ** 2 / (2 * area * (2 * SIGMAS) ** 2))
    np.testing.assert_allclose(a.per_joint_oks, expected)
    assert a.mean_oks == pytest.approx(expected.mean()) and a.max_px_error == pytest.approx(shift)


def test_only_joints_the_fp32_model_sees_count():
    kps, scores = people(2)
    scores[0, 5:] = VISIBLE_SCORE / 2  # person 0 sees joints 0..4 only
    scores[1, :] = 0.0  # person 1 sees none: all joints count
    moved = kps.copy()
    moved[0, 5:] += 100.0  # unseen joints of person 0 move far: no effect
    moved[1, 0, 0] += 100.0  # person 1's nose moves 100 px right: counts
    a = oks_agreement(kps, scores, moved, HW)
    nose = np.exp(-100.0 ** 2 / (2 * HW[0] * HW[1] / CROP_GROWTH ** 2 * (2 * SIGMAS[0]) ** 2))
    assert a.mean_oks == pytest.approx((1.0 + (16 + nose) / 17) / 2)
    assert a.max_px_error == pytest.approx(100.0)


def test_crop_keypoints_decodes_like_the_runtime():
    hm = np.zeros((1, 17, 64, 48), np.float32)
    hm[0, :, 20, 10] = 1.0
    hm[0, :, 20, 11] = 0.5  # the quarter-pixel step goes right
    kps, scores = crop_keypoints(hm, HW)
    np.testing.assert_allclose(kps[0], np.tile([(10.25) * 4, 20 * 4], (17, 1)))
    np.testing.assert_array_equal(scores, 1.0)


def test_a_model_agrees_with_itself():
    path = random_model("mobile_pose_mobilenetv3_small")
    x = np.random.default_rng(0).normal(size=(3, 3, *HW)).astype(np.float32)
    a = agreement(path, path, x, ModelMeta())
    assert a.mean_oks == 1.0 and a.sqnr_db == float("inf")


# ------------------------------------------------------------------ the loss estimate and the decision
def test_a_known_shift_gives_the_documented_loss():
    kps, scores = people()
    shift = 2.0
    est = oks_loss(kps, scores, kps + [0.0, shift], HW)
    a = AREA_RATIO * HW[0] * HW[1] / CROP_GROWTH ** 2 * (2 * SIGMAS) ** 2
    rho = FP32_JOINT_OKS
    per_joint = rho * (1 - np.exp(-rho * shift ** 2 / (2 * a)))
    np.testing.assert_allclose(est.per_joint_loss, per_joint)
    np.testing.assert_allclose(est.per_person, per_joint.mean())
    assert est.counted == est.persons == 3 and est.joints == 51 and est.max_px_error == pytest.approx(shift)


def test_only_confident_joints_and_persons_count():
    kps, scores = people(3)
    scores[0, 5:] = CONFIDENT_SCORE - 0.01  # person 0: joints 0..4 count
    scores[1, :] = 0.3  # person 1: none, left out
    moved = kps.copy()
    moved[0, 5:] += 80.0  # unconfident joints move far: no effect
    moved[1] += 80.0
    moved[2, 0] += 80.0  # person 2's nose moves: counts fully (1 - sim ~ 1)
    est = oks_loss(kps, scores, moved, HW)
    assert est.counted == 2 and est.persons == 3 and est.joints == 5 + 17
    np.testing.assert_allclose(est.per_person, [0.0, FP32_JOINT_OKS / 17], rtol=1e-6)
    assert est.max_px_error == pytest.approx(80.0 * math.sqrt(2))  # the nose, moved 80 px in x and y


def test_t95_matches_students_t():
    for df, t in ((1, 6.3138), (9, 1.8331), (10, 1.8125), (18, 1.7341), (30, 1.6973), (120, 1.6577)):
        assert t95(df) == pytest.approx(t, abs=2e-3)


def blobs(centres: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Heatmaps (N, 17, 64, 48) with one Gaussian (sigma 2) per joint at ``centres`` (N, 17, 2) heatmap pixels."""
    yy, xx = np.mgrid[0:64, 0:48]
    cx, cy = centres[..., 0, None, None], centres[..., 1, None, None]
    return (peak * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0)).astype(np.float32)


def test_the_default_rule_passes_a_near_lossless_model_of_19_persons():
    rng = np.random.default_rng(0)
    centres = rng.uniform(8, 40, (19, 17, 2))
    nudged = centres.copy()
    for person, joints in enumerate(rng.integers(0, 17, (19, 2))):  # 2 joints a person move 2 crop pixels
        nudged[person, joints, 0] += 0.5
    est = estimate_loss(blobs(centres), blobs(nudged), HW)
    decision = decide(est)
    assert 0 < est.loss < est.upper <= GATE_MAX_OKS_LOSS and decision.passed, decision.why
    assert "at most" in decision.why


def test_the_default_rule_refuses_a_model_that_loses_a_joint_per_person():
    rng = np.random.default_rng(0)
    centres = rng.uniform(8, 40, (19, 17, 2))
    broken = centres.copy()
    broken[:, 5] += 10.0  # one joint a person lands 40 crop pixels away
    est = estimate_loss(blobs(centres), blobs(broken), HW)
    decision = decide(est)
    assert est.upper > GATE_MAX_OKS_LOSS and not decision.passed and "may reach" in decision.why
    assert est.loss == pytest.approx(FP32_JOINT_OKS / 17, rel=0.05)  # one joint of 17 lost entirely


def test_the_default_rule_wants_enough_persons():
    centres = np.random.default_rng(0).uniform(8, 40, (GATE_MIN_PERSONS, 17, 2))
    ref = blobs(centres)
    assert decide(estimate_loss(ref, ref, HW)).passed  # identical: loss 0 on exactly enough persons
    ref[0] *= 0.5  # person 0 has no joint at the confident peak
    decision = decide(estimate_loss(ref, ref, HW))
    assert not decision.passed and "too little evidence" in decision.why


# ------------------------------------------------------------------ make_int8
@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """The model, with the edgepose cache (prepared crops) in a folder of this module's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPOSE_HOME", str(tmp_path_factory.mktemp("home")))
        yield random_model("mobile_pose_mobilenetv3_small")


def peaked_model(path, peak: float = 0.9) -> str:
    """A heatmap model whose FP32 joints are confident (``peak`` 0.9) and stable: 17 fixed Gaussian peaks (sigma 2)
    plus a small term computed from the crop (conv 3x3 -> ReLU -> conv 1x1), input 64x48, stride 1.
    INT8 moves its keypoints by at most a quarter pixel: near-lossless by construction."""
    hw = (64, 48)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]]
    cx, cy = rng.uniform(6, 42, 17), rng.uniform(6, 58, 17)
    peaks = peak * np.exp(-((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / 8.0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w1", rng.normal(0, 0.3, (8, 3, 3, 3))), ("w2", rng.normal(0, 0.01, (17, 8, 1, 1))),
        ("peaks", peaks[None]))]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="final", kernel_shape=[1, 1]),
             helper.make_node("Add", ["c2", "peaks"], ["heatmaps"], name="add")]
    onnx.save(heatmap_model("peaked", hw, nodes, inits), str(path))
    return path


@pytest.mark.shared
def test_the_default_rule_keeps_a_near_lossless_int8(fp32, tmp_path):
    report = make_int8(peaked_model(tmp_path / "peaked.onnx"), tmp_path / "p-int8.onnx", calib_source=COCO_FILE,
                       progress=False)
    est = report.estimate
    assert report.passed and report.precision == "int8" and not report.forced and report.reason == ""
    assert est.counted == 12 and est.joints == 12 * 17 and est.upper <= GATE_MAX_OKS_LOSS
    assert "5-fold cross-validation over all 12 persons" in report.scheme
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    figures = json.loads(props[KEY_INT8_AGREEMENT])
    assert figures["passed"] and figures["persons_counted"] == 12 and figures["tolerance"] == GATE_MAX_OKS_LOSS
    assert figures["oks_loss_upper"] == pytest.approx(est.upper, abs=1e-5)
    text = "\n".join(report.lines())
    assert "passed, the loss is at most" in text and "12 of them with 204 joints" in text


@pytest.mark.shared
def test_failing_the_gate_falls_back_to_fp16(fp32, tmp_path):
    out = tmp_path / "m-int8.onnx"  # random weights: no joint the FP32 model is confident about
    report = make_int8(fp32, out, calib_source=COCO_FILE, target="cpu", progress=False)
    assert report.fell_back and not report.passed and report.precision == "fp16"
    assert report.path == tmp_path / "m-fp16.onnx" and report.path.is_file() and not out.exists()
    assert "failed the accuracy gate: too little evidence" in report.reason
    assert "FP16 model was written instead" in report.reason
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    assert ModelMeta.from_props(props).precision == "fp16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-fp16.onnx"]  # no temporary files left
    assert report.calibration_persons == 12 and report.agreement.persons == 12 and report.estimate.counted == 0


@pytest.mark.shared
def test_refuses_without_fallback_and_writes_nothing(fp32, tmp_path):
    flat = peaked_model(tmp_path / "flat.onnx", peak=CONFIDENT_SCORE / 2)
    with pytest.raises(AccuracyGateError, match=r"failed the accuracy gate: too little evidence.* Nothing was written"):
        make_int8(flat, tmp_path / "out" / "m-int8.onnx", calib_source=COCO_FILE, fp16_fallback=False, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_tolerance_nothing_meets_refuses(tmp_path):
    with pytest.raises(AccuracyGateError, match=r"the loss may reach .* more than the -1.000 allowed"):
        make_int8(peaked_model(tmp_path / "peaked.onnx"), tmp_path / "p-int8.onnx", calib_source=COCO_FILE,
                  fp16_fallback=False, tolerance=-1.0, progress=False)


@pytest.mark.shared
def test_force_keeps_int8_with_its_figures(fp32, tmp_path):
    flat = peaked_model(tmp_path / "flat.onnx", peak=CONFIDENT_SCORE / 2)
    report = make_int8(flat, tmp_path / "m-int8.onnx", calib_source=COCO_FILE, force=True, progress=False)
    assert report.precision == "int8" and report.forced and not report.fell_back and "--force" in report.reason
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    figures = json.loads(props[KEY_INT8_AGREEMENT])
    assert figures["forced"] and not figures["passed"] and figures["held_out_persons"] == 12
    assert figures["oks_loss"] is None and figures["persons_counted"] == 0
    assert figures["mean_oks"] == pytest.approx(report.agreement.mean_oks, abs=1e-5)
    calibration = json.loads(props["edgepose.int8_calibration"])
    assert calibration["persons"] == 12 and calibration["crops"] == 12 and "coco_kpt_mini" in calibration["source"]
    assert any("Wrote" in line for line in report.lines())


@pytest.mark.shared
def test_needs_an_edgepose_model(fp32, tmp_path):
    model = onnx.load(str(fp32))
    del model.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match="no edgepose metadata"):
        make_int8(path, tmp_path / "x.onnx", calib_source=COCO_FILE, progress=False)


def test_fp16_path_names():
    from pathlib import Path

    assert fp16_path_for(Path("a/m-int8.onnx")) == Path("a/m-fp16.onnx")
    assert fp16_path_for(Path("a/m-int8-cpu.onnx")) == Path("a/m-fp16.onnx")
    assert fp16_path_for(Path("a/m.onnx")) == Path("a/m-fp16.onnx")
