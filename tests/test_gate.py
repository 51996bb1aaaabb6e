"""The INT8 accuracy gate: the OKS agreement formula, and make_int8's keep / refuse / fall back rules."""
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from edgepose.converters.gate import (  # noqa: E402
    CROP_GROWTH, GATE_MIN_MEAN_OKS, VISIBLE_SCORE, AccuracyGateError, agreement, crop_keypoints, oks_agreement,
    passes)
from edgepose.converters.precision import KEY_AGREEMENT, fp16_path_for, make_int8  # noqa: E402
from edgepose.errors import ModelFileError  # noqa: E402
from edgepose.keypoints import COCO_OKS_SIGMAS  # noqa: E402
from edgepose.meta import ModelMeta  # noqa: E402
from support import DATA, random_model  # noqa: E402

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
    assert a.mean_oks == 1.0 and a.sqnr_db == float("inf") and passes(a)


def test_threshold_is_strict_enough_for_the_accuracy_target():
    """Documented derivation: <= 0.02 mean-OKS loss at COCO scale needs 0.973; box-area scale ~1.7x."""
    assert 0.973 ** (1 / 1.8) <= GATE_MIN_MEAN_OKS < 1.0


# ------------------------------------------------------------------ make_int8
@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """The model, with the edgepose cache (prepared crops) in a folder of this module's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPOSE_HOME", str(tmp_path_factory.mktemp("home")))
        yield random_model("mobile_pose_mobilenetv3_small")


@pytest.mark.shared
def test_failing_the_gate_falls_back_to_fp16(fp32, tmp_path):
    out = tmp_path / "m-int8.onnx"  # a threshold above 1 can never be met
    report = make_int8(fp32, out, calib_source=COCO_FILE, target="cpu", threshold=1.01, progress=False)
    assert report.fell_back and not report.passed and report.precision == "fp16"
    assert report.path == tmp_path / "m-fp16.onnx" and report.path.is_file() and not out.exists()
    assert "failed the accuracy gate" in report.reason and "FP16 model was written instead" in report.reason
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    assert ModelMeta.from_props(props).precision == "fp16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-fp16.onnx"]  # no temporary files left
    assert report.calibration_persons == 12 and report.agreement.persons == 2


@pytest.mark.shared
def test_refuses_without_fallback_and_writes_nothing(fp32, tmp_path):
    with pytest.raises(AccuracyGateError, match=r"failed the accuracy gate: mean OKS agreement .* Nothing was written"):
        make_int8(fp32, tmp_path / "m-int8.onnx", calib_source=COCO_FILE, fp16_fallback=False, threshold=1.01,
                  progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.shared
def test_force_keeps_int8_with_its_figures(fp32, tmp_path):
    report = make_int8(fp32, tmp_path / "m-int8.onnx", calib_source=COCO_FILE, force=True, threshold=1.01,
                       progress=False)
    assert report.precision == "int8" and report.forced and not report.fell_back and "--force" in report.reason
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    figures = json.loads(props[KEY_AGREEMENT])
    assert figures["forced"] and figures["held_out_persons"] == 2
    assert figures["mean_oks"] == pytest.approx(report.agreement.mean_oks, abs=1e-5)
    calibration = json.loads(props["edgepose.int8_calibration"])
    assert calibration["persons"] == 12 and calibration["crops"] == 10 and "coco_kpt_mini" in calibration["source"]
    assert any("Wrote" in line for line in report.lines())


@pytest.mark.shared
def test_a_passing_model_is_kept_as_int8(fp32, tmp_path):
    report = make_int8(fp32, tmp_path / "m.onnx", calib_source=COCO_FILE, threshold=0.0, progress=False)
    assert report.passed and not report.forced and report.precision == "int8" and report.reason == ""


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
