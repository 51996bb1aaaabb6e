"""Pre-processing parity with GluonCV's evaluation path (shared/parity/fixtures/prepost_eval.npz)."""
import hashlib
from typing import Dict, List

import cv2
import numpy as np
import pytest

from edgepose import transforms as T
from edgepose.errors import InputError, InputTypeError
from edgepose.meta import IMAGENET_MEAN, IMAGENET_STD, ModelMeta
from support import SHARED, prepost_fixture

SIZES = {"256x192": (256, 192), "128x96": (128, 96), "384x288": (384, 288)}
ALPHA_MEAN = (0.406, 0.457, 0.480)
ALPHA_META = ModelMeta(input_size=(320, 256), mean=ALPHA_MEAN, std=(1.0, 1.0, 1.0), decoder="alphapose")


@pytest.fixture(scope="module")
def fx() -> Dict[str, np.ndarray]:
    return prepost_fixture()


@pytest.fixture(scope="module")
def images_bgr(fx: Dict[str, np.ndarray]) -> List[np.ndarray]:
    """The fixture's images as cv2.imread gives them (BGR), after checking their RGB sha256."""
    out = []
    for rel, digest in zip(fx["image_files"], fx["image_rgb_sha256"]):
        bgr = cv2.imread(str(SHARED / str(rel)), cv2.IMREAD_COLOR)
        assert bgr is not None, "cannot read %s" % rel
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == digest, "%s decodes differently here" % rel
        out.append(bgr)
    return out


def _rgb(images_bgr: List[np.ndarray], fx: Dict[str, np.ndarray], inst: int) -> np.ndarray:
    return images_bgr[fx["inst_image_index"][inst]][..., ::-1]


def _lut_apply(lut: np.ndarray, crops: np.ndarray) -> np.ndarray:
    return np.stack([lut[c][crops[..., c]] for c in range(3)], axis=1)


# --- boxes, centre/scale, matrices -------------------------------------------------------------

def test_coco_xywh_to_xyxy_matches_dataset_boxes(fx):
    hw = fx["image_hw"][fx["inst_image_index"]]
    for i, box in enumerate(fx["inst_box_xywh"]):
        got = T.coco_xywh_to_xyxy(box[None], int(hw[i, 1]), int(hw[i, 0]))
        np.testing.assert_array_equal(got[0], fx["inst_bbox_xyxy"][i])


def test_center_scale_bit_exact(fx):
    center, scale = T.boxes_to_center_scale(fx["inst_bbox_xyxy"], 192 / 256)
    assert center.dtype == scale.dtype == np.float32
    np.testing.assert_array_equal(center, fx["sp_center"])
    np.testing.assert_array_equal(scale, fx["sp_scale"])


@pytest.mark.parametrize("size", sorted(SIZES))
def test_affine_matrices_match_gluoncv(fx, size):
    got = T.affine_matrices(fx["sp_center"], fx["sp_scale"], SIZES[size])
    ref = fx["sp%s_affine" % size]
    rel = np.abs(got - ref).max(axis=(1, 2)) / np.abs(ref).max(axis=(1, 2))
    assert rel.max() < 1e-6  # measured 1.4e-7 (GluonCV builds it from float32 points)


# --- crops -------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", sorted(SIZES))
def test_warp_with_gluoncv_matrix_is_bit_exact(fx, images_bgr, size):
    ref = fx["sp%s_crop_u8" % size]
    for row, inst in enumerate(fx["sp%s_crop_u8_index" % size]):
        got = T.warp_crops(_rgb(images_bgr, fx, inst), fx["sp%s_affine" % size][inst][None], SIZES[size])
        np.testing.assert_array_equal(got[0], ref[row], err_msg="instance %d" % inst)


@pytest.mark.parametrize("size", sorted(SIZES))
def test_crop_persons_is_bit_exact(fx, images_bgr, size):
    ref = fx["sp%s_crop_u8" % size]
    for row, inst in enumerate(fx["sp%s_crop_u8_index" % size]):
        got = T.crop_persons(_rgb(images_bgr, fx, inst), fx["sp_center"][inst][None],
                             fx["sp_scale"][inst][None], SIZES[size])
        assert got.dtype == np.uint8 and got.shape == (1,) + SIZES[size] + (3,)
        np.testing.assert_array_equal(got[0], ref[row], err_msg="instance %d" % inst)


def test_crop_outside_image_is_black(fx, images_bgr):
    # Instance 15 runs past the bottom border of soccer.png: those rows must be 0, as in GluonCV.
    crop = T.crop_persons(_rgb(images_bgr, fx, 15), fx["sp_center"][15:16], fx["sp_scale"][15:16],
                          (256, 192))[0]
    assert (crop[-1] == 0).all() and crop.any()


# --- normalisation -----------------------------------------------------------------------------

def test_normalization_lut_bit_exact(fx):
    np.testing.assert_array_equal(T.normalization_lut(IMAGENET_MEAN, IMAGENET_STD), fx["sp_lut"])
    np.testing.assert_array_equal(T.normalization_lut(ALPHA_MEAN, (1, 1, 1)), fx["ap_lut"])


@pytest.mark.parametrize("size", sorted(SIZES))
def test_normalize_matches_gluoncv_tensor(fx, size):
    crops = fx["sp%s_crop_u8" % size]
    got = T.normalize(crops, IMAGENET_MEAN, IMAGENET_STD, swap_rb=False)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _lut_apply(fx["sp_lut"], crops))
    rows = np.searchsorted(fx["sp%s_crop_u8_index" % size], fx["sp%s_input_index" % size])
    np.testing.assert_array_equal(got[rows], fx["sp%s_input" % size])


def test_normalize_swap_rb(fx):
    rgb = fx["sp128x96_crop_u8"][:3]
    want = T.normalize(rgb, IMAGENET_MEAN, IMAGENET_STD, swap_rb=False)
    np.testing.assert_array_equal(T.normalize(rgb[..., ::-1], IMAGENET_MEAN, IMAGENET_STD, swap_rb=True), want)


def test_flip_batch_matches_nd_flip(fx):
    np.testing.assert_array_equal(T.flip_batch(fx["sp256x192_input"][:2]), fx["flip_input_flipped"])


# --- AlphaPose ---------------------------------------------------------------------------------

def test_alphapose_boxes_match(fx):
    hw = fx["image_hw"][fx["inst_image_index"]]
    for i in range(len(hw)):
        got = T.alphapose_boxes(fx["inst_bbox_xyxy"][i:i + 1], int(hw[i, 1]), int(hw[i, 0]))
        np.testing.assert_array_equal(got[0], fx["ap_scale_box"][i])


def test_alphapose_affine_matches(fx):
    got = T.alphapose_affine(fx["ap_scale_box"], (320, 256))
    np.testing.assert_allclose(got, fx["ap_affine"], rtol=0, atol=1e-9)  # measured 1.1e-13


def test_alphapose_crop_is_bit_exact(fx, images_bgr):
    for i in range(len(fx["ap_scale_box"])):
        got = T.alphapose_crop(_rgb(images_bgr, fx, i), fx["ap_scale_box"][i:i + 1], (320, 256))
        np.testing.assert_array_equal(got[0], fx["ap_crop_u8"][i], err_msg="instance %d" % i)


def test_alphapose_normalisation(fx):
    got = T.normalize(fx["ap_crop_u8"], ALPHA_MEAN, (1, 1, 1), swap_rb=False)
    np.testing.assert_array_equal(got, _lut_apply(fx["ap_lut"], fx["ap_crop_u8"]))
    np.testing.assert_array_equal(got[fx["ap_input_index"]], fx["ap_input"])


# --- preprocess end to end ---------------------------------------------------------------------

def _per_image(fx):
    for img_idx in range(len(fx["image_files"])):
        yield img_idx, np.flatnonzero(fx["inst_image_index"] == img_idx)


@pytest.mark.parametrize("size", ["256x192", "128x96"])
def test_preprocess_simple_matches_gluoncv(fx, images_bgr, size):
    meta = ModelMeta(input_size=SIZES[size])
    for img_idx, inst in _per_image(fx):
        crops = T.preprocess(images_bgr[img_idx], fx["inst_bbox_xyxy"][inst], meta, image_is_rgb=False)
        assert crops.batch.shape == (len(inst), 3) + SIZES[size] and crops.batch.dtype == np.float32
        np.testing.assert_array_equal(crops.center, fx["sp_center"][inst])
        np.testing.assert_array_equal(crops.scale, fx["sp_scale"][inst])
        np.testing.assert_array_equal(crops.boxes, fx["inst_bbox_xyxy"][inst])
        want = _lut_apply(fx["sp_lut"], fx["sp%s_crop_u8" % size][inst])
        np.testing.assert_array_equal(crops.batch, want)


def test_preprocess_alphapose_matches_gluoncv(fx, images_bgr):
    for img_idx, inst in _per_image(fx):
        rgb = np.ascontiguousarray(images_bgr[img_idx][..., ::-1])
        crops = T.preprocess(rgb, fx["inst_bbox_xyxy"][inst], ALPHA_META, image_is_rgb=True)
        assert crops.center is None and crops.scale is None
        np.testing.assert_array_equal(crops.alpha_boxes, fx["ap_scale_box"][inst])
        np.testing.assert_array_equal(crops.batch, _lut_apply(fx["ap_lut"], fx["ap_crop_u8"][inst]))


def test_preprocess_bgr_model_gets_bgr(fx, images_bgr):
    meta = ModelMeta(input_size=(128, 96), color_order="BGR", mean=IMAGENET_MEAN[::-1], std=IMAGENET_STD[::-1])
    crops = T.preprocess(images_bgr[0], fx["inst_bbox_xyxy"][:1], meta, image_is_rgb=False)
    want = _lut_apply(fx["sp_lut"], fx["sp128x96_crop_u8"][:1])[:, ::-1]
    np.testing.assert_array_equal(crops.batch, want)


# --- input handling ----------------------------------------------------------------------------

@pytest.fixture()
def small_bgr(images_bgr) -> np.ndarray:
    return np.ascontiguousarray(images_bgr[1][:200, :300])


BOX = np.array([[40.0, 30.0, 160.0, 190.0]])


def test_grayscale_is_replicated(small_bgr):
    gray = cv2.cvtColor(small_bgr, cv2.COLOR_BGR2GRAY)
    want = T.preprocess(np.repeat(gray[..., None], 3, axis=2), BOX, ModelMeta(), False).batch
    np.testing.assert_array_equal(T.preprocess(gray, BOX, ModelMeta(), False).batch, want)
    np.testing.assert_array_equal(T.preprocess(gray[..., None], BOX, ModelMeta(), False).batch, want)


def test_four_channels_drop_alpha(small_bgr):
    bgra = cv2.cvtColor(small_bgr, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = 7
    want = T.preprocess(small_bgr, BOX, ModelMeta(), False).batch
    np.testing.assert_array_equal(T.preprocess(bgra, BOX, ModelMeta(), False).batch, want)


def test_rgb_view_equals_bgr(small_bgr):
    want = T.preprocess(small_bgr, BOX, ModelMeta(), image_is_rgb=False).batch
    np.testing.assert_array_equal(T.preprocess(small_bgr[..., ::-1], BOX, ModelMeta(), image_is_rgb=True).batch, want)


def test_float_image_is_rejected(small_bgr):
    with pytest.raises(InputTypeError, match="uint8"):
        T.preprocess(small_bgr.astype(np.float32) / 255, BOX, ModelMeta(), False)
    with pytest.raises(InputTypeError, match="NumPy array"):
        T.preprocess(small_bgr.tolist(), BOX, ModelMeta(), False)


@pytest.mark.parametrize("shape", [(20, 30, 2), (20, 30, 5), (1, 20, 30, 3), (0, 30, 3)])
def test_bad_image_shape(shape):
    with pytest.raises(InputError, match="shape|empty"):
        T.preprocess(np.zeros(shape, np.uint8), BOX, ModelMeta(), False)


@pytest.mark.parametrize("boxes", [np.zeros(4), np.zeros((2, 3)), np.zeros((1, 6)), np.zeros((1, 2, 4))])
def test_wrong_box_shape(small_bgr, boxes):
    with pytest.raises(InputError, match=r"\(N, 4\)"):
        T.preprocess(small_bgr, boxes, ModelMeta(), False)


def test_non_numeric_boxes(small_bgr):
    with pytest.raises(InputTypeError, match="numbers"):
        T.preprocess(small_bgr, [["a", "b", "c", "d"]], ModelMeta(), False)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_box(small_bgr, bad):
    boxes = np.array([[10.0, 10.0, 50.0, 80.0], [10.0, bad, 50.0, 80.0]])
    with pytest.raises(InputError, match="box 1 .*NaN or infinite"):
        T.preprocess(small_bgr, boxes, ModelMeta(), False)


@pytest.mark.parametrize("box", [[400.0, 10.0, 500.0, 80.0],   # right of the 300x200 image
                                 [-90.0, -50.0, -10.0, -5.0],  # above-left
                                 [50.0, 10.0, 20.0, 80.0],     # x2 < x1
                                 [50.0, 60.0, 90.0, 60.0]])    # zero height
def test_box_without_area_in_image(small_bgr, box):
    boxes = np.array([[10.0, 10.0, 50.0, 80.0], box])
    with pytest.raises(InputError, match=r"box 1 has no area inside the 300x200 image"):
        T.preprocess(small_bgr, boxes, ModelMeta(), False)


def test_partly_outside_box_is_clipped(small_bgr):
    crops = T.preprocess(small_bgr, [[-20.0, 150.0, 120.0, 260.0]], ModelMeta(), False)
    np.testing.assert_array_equal(crops.boxes, [[0.0, 150.0, 120.0, 199.0]])
    center, _ = T.boxes_to_center_scale(crops.boxes, 0.75)
    np.testing.assert_array_equal(crops.center, center)


def test_score_column_is_ignored(small_bgr):
    four = T.preprocess(small_bgr, BOX, ModelMeta(), False)
    five = T.preprocess(small_bgr, np.hstack([BOX, [[0.3]]]), ModelMeta(), False)
    np.testing.assert_array_equal(four.batch, five.batch)


@pytest.mark.parametrize("boxes", [np.zeros((0, 4)), np.zeros((0, 5)), []])
@pytest.mark.parametrize("meta", [ModelMeta(), ALPHA_META])
def test_no_boxes_gives_empty_batch(small_bgr, boxes, meta):
    crops = T.preprocess(small_bgr, boxes, meta, False)
    assert crops.batch.shape == (0, 3) + meta.input_size and crops.batch.dtype == np.float32
    assert len(crops) == 0 and crops.boxes.shape == (0, 4)
