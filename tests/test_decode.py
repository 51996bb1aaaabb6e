"""Post-processing parity with GluonCV's evaluation path (shared/parity/fixtures/prepost_eval.npz)."""
from typing import Dict

import numpy as np
import pytest

from edgepose import decode as D
from edgepose.errors import InputError
from edgepose.keypoints import COCO_FLIP_PAIRS
from edgepose.meta import ModelMeta
from edgepose.transforms import Crops
from support import prepost_fixture

SIMPLE_META = ModelMeta()
SIMPLE_META_128 = ModelMeta(input_size=(128, 96))
ALPHA_META = ModelMeta(input_size=(320, 256), mean=(0.406, 0.457, 0.480), std=(1.0, 1.0, 1.0),
                       decoder="alphapose")
PX_TOL = 1e-3  # image-pixel tolerance; measured max 6.1e-5 (float64 closed form vs GluonCV's matrix)
CASE_CODES = range(17)


@pytest.fixture(scope="module")
def fx() -> Dict[str, np.ndarray]:
    return prepost_fixture()


def _simple_crops(center: np.ndarray, scale: np.ndarray) -> Crops:
    n = len(center)
    return Crops(np.zeros((n, 3, 1, 1), np.float32), np.zeros((n, 4)), center=center, scale=scale)


def _alpha_crops(boxes: np.ndarray) -> Crops:
    n = len(boxes)
    return Crops(np.zeros((n, 3, 1, 1), np.float32), np.zeros((n, 4)), alpha_boxes=boxes)


def test_every_case_code_is_in_the_fixture(fx):
    for key in ("dec_case", "dec32x24_case", "ap_case"):
        assert set(np.unique(fx[key])) == set(CASE_CODES), key
    assert set(np.unique(fx["flip_case"])) >= {1, 2, 3, 7, 12, 13, 14}


# --- argmax and quarter step -------------------------------------------------------------------

def test_get_max_preds_exact(fx):
    coords, maxvals = D.get_max_preds(fx["dec_heatmaps"])
    assert coords.dtype == maxvals.dtype == np.float32
    np.testing.assert_array_equal(coords, fx["dec_argmax_coords"])
    np.testing.assert_array_equal(maxvals, fx["dec_maxvals"][..., 0])


@pytest.mark.parametrize("case", CASE_CODES)
def test_refine_quarter_per_case(fx, case):
    mask = fx["dec_case"] == case
    coords, _ = D.get_max_preds(fx["dec_heatmaps"])
    refined = D.refine_quarter(fx["dec_heatmaps"], coords)
    np.testing.assert_array_equal(refined[mask], fx["dec_refined_coords"][mask])
    np.testing.assert_array_equal(coords[mask], fx["dec_argmax_coords"][mask])


def test_case_semantics(fx):
    case, hm = fx["dec_case"], fx["dec_heatmaps"]
    coords, maxvals = D.get_max_preds(hm)
    refined = D.refine_quarter(hm, coords)
    masked = (case == 1) | (case == 2)
    assert (maxvals[masked] <= 0).all() and (coords[masked] == 0).all()
    unrefined = np.isin(case, [3, 4, 7, 8, 9, 11, 12, 13])  # borders, column/row 1, sign(0)
    np.testing.assert_array_equal(refined[unrefined], coords[unrefined])
    shifted = np.isin(case, [5, 6, 10])
    assert (np.abs(refined[shifted] - coords[shifted]).max(axis=1) == 0.25).all()
    only_y = case == 16
    assert (refined[only_y][:, 0] == coords[only_y][:, 0]).all()
    assert (np.abs(refined[only_y][:, 1] - coords[only_y][:, 1]) == 0.25).all()
    n, k = np.argwhere(case == 14)[0]
    flat = hm[n, k].reshape(-1)
    first = np.flatnonzero(flat == flat.max())[0]
    assert (coords[n, k] == [first % hm.shape[3], first // hm.shape[3]]).all()


def test_refine_leaves_input_alone(fx):
    coords, _ = D.get_max_preds(fx["dec_heatmaps"])
    before = coords.copy()
    D.refine_quarter(fx["dec_heatmaps"], coords)
    np.testing.assert_array_equal(coords, before)


# --- mapping back to the image -----------------------------------------------------------------

def test_heatmap_to_image_matches_inverse_affine(fx):
    grid = np.stack(np.meshgrid(np.arange(0, 48, 0.25), np.arange(0, 64, 0.25)), -1).reshape(1, -1, 2)
    grid = np.repeat(grid, len(fx["dec_center"]), axis=0).astype(np.float32)
    got = D.heatmap_to_image(grid, fx["dec_center"], fx["dec_scale"], (64, 48))
    homog = np.concatenate([grid, np.ones(grid.shape[:2] + (1,), np.float32)], axis=-1)
    want = np.einsum("nij,npj->npi", fx["dec_inv_affine"], homog.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=0, atol=PX_TOL)


@pytest.mark.parametrize("prefix,meta", [("dec", SIMPLE_META), ("dec32x24", SIMPLE_META_128)])
def test_decode_simple(fx, prefix, meta):
    crops = _simple_crops(fx["dec_center"], fx["dec_scale"])
    keypoints, scores = D.decode(fx[prefix + "_heatmaps"], crops, meta)
    assert keypoints.dtype == scores.dtype == np.float32
    np.testing.assert_allclose(keypoints, fx[prefix + "_preds"], rtol=0, atol=PX_TOL)
    np.testing.assert_array_equal(scores, fx[prefix + "_maxvals"][..., 0])


@pytest.mark.parametrize("case", CASE_CODES)
def test_decode_simple_per_case(fx, case):
    mask = fx["dec_case"] == case
    keypoints, _ = D.decode(fx["dec_heatmaps"], _simple_crops(fx["dec_center"], fx["dec_scale"]), SIMPLE_META)
    np.testing.assert_allclose(keypoints[mask], fx["dec_preds"][mask], rtol=0, atol=PX_TOL)


def test_decode_alphapose(fx):
    keypoints, scores = D.decode(fx["ap_heatmaps"], _alpha_crops(fx["ap_scale_box"]), ALPHA_META)
    for case in CASE_CODES:
        mask = fx["ap_case"] == case
        np.testing.assert_allclose(keypoints[mask], fx["ap_preds"][mask], rtol=0, atol=PX_TOL,
                                   err_msg="case %d" % case)
    np.testing.assert_array_equal(scores, fx["ap_maxvals"][..., 0])


# --- flip test ---------------------------------------------------------------------------------

def test_flip_back_exact_and_input_untouched(fx):
    flipped = fx["flip_hm_flipped"].copy()
    got = D.flip_back(flipped, COCO_FLIP_PAIRS, shift=True)
    np.testing.assert_array_equal(got, fx["flip_hm_flipback"])
    np.testing.assert_array_equal(flipped, fx["flip_hm_flipped"])
    assert (got[..., 0] == got[..., 1]).all()


def test_flip_back_without_shift_is_mirror_and_swap(fx):
    got = D.flip_back(fx["flip_hm_flipped"], COCO_FLIP_PAIRS, shift=False)
    np.testing.assert_array_equal(got[:, 0], fx["flip_hm_flipped"][:, 0, :, ::-1])
    np.testing.assert_array_equal(got[:, 1], fx["flip_hm_flipped"][:, 2, :, ::-1])
    np.testing.assert_array_equal(fx["flip_hm_flipback"][..., 1:], got[..., :-1])


def test_merge_flip_and_decode(fx):
    merged = D.merge_flip(fx["flip_hm_orig"], fx["flip_hm_flipped"], COCO_FLIP_PAIRS)
    assert merged.dtype == np.float32
    np.testing.assert_array_equal(merged, fx["flip_hm_merged"])
    keypoints, scores = D.decode(merged, _simple_crops(fx["sp_center"][:4], fx["sp_scale"][:4]), SIMPLE_META)
    np.testing.assert_allclose(keypoints, fx["flip_preds"], rtol=0, atol=PX_TOL)
    np.testing.assert_array_equal(scores, fx["flip_maxvals"][..., 0])


# --- shapes and errors -------------------------------------------------------------------------

def test_decode_empty_batch():
    crops = _simple_crops(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32))
    keypoints, scores = D.decode(np.zeros((0, 17, 64, 48), np.float32), crops, SIMPLE_META)
    assert keypoints.shape == (0, 17, 2) and scores.shape == (0, 17)


def test_decode_rejects_mismatched_heatmaps(fx):
    crops = _simple_crops(fx["dec_center"][:3], fx["dec_scale"][:3])
    with pytest.raises(InputError, match="N=3, K=17"):
        D.decode(fx["dec_heatmaps"][:2], crops, SIMPLE_META)
    with pytest.raises(InputError, match="N=3, K=17"):
        D.decode(fx["dec_heatmaps"][:3, :16], crops, SIMPLE_META)


def test_decode_rejects_crops_of_the_other_decoder(fx):
    with pytest.raises(InputError, match="alphapose"):
        D.decode(fx["ap_heatmaps"][:2], _simple_crops(fx["dec_center"][:2], fx["dec_scale"][:2]), ALPHA_META)
    with pytest.raises(InputError, match="simple"):
        D.decode(fx["dec_heatmaps"][:2], _alpha_crops(fx["ap_scale_box"][:2]), SIMPLE_META)


def test_float16_heatmaps_decode_like_float32(fx):
    """An FP16 model's heatmaps decode to float32 keypoints that differ from the FP32 ones only by FP16
    rounding: scores within FP16's relative step, and a keypoint moves only where rounding made the peak
    tie with another heatmap pixel (GluonCV's float32 values there within one FP16 step of the maximum)."""
    hm32 = fx["dec_heatmaps"]
    crops = _simple_crops(fx["dec_center"], fx["dec_scale"])
    kps16, scores16 = D.decode(hm32.astype(np.float16), crops, SIMPLE_META)
    kps32, scores32 = D.decode(hm32, crops, SIMPLE_META)
    assert kps16.dtype == np.float32 and scores16.dtype == np.float32
    np.testing.assert_allclose(scores16, scores32, rtol=2.0 ** -11, atol=0)
    moved = np.linalg.norm(kps16 - kps32, axis=-1) > 1e-4
    assert moved.mean() <= 0.01
    flat = hm32.reshape(hm32.shape[0], hm32.shape[1], -1)
    at16 = np.take_along_axis(flat, hm32.astype(np.float16).reshape(flat.shape).argmax(-1)[..., None], -1)[..., 0]
    assert np.all(flat.max(-1)[moved] - at16[moved] <= 2.0 ** -11 * flat.max(-1)[moved])
