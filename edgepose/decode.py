"""Post-processing: heatmaps -> keypoints in image pixels, as GluonCV evaluated its zoo.

Per map: first maximum in row-major order, coordinates zeroed where the maximum is <= 0, a
+-0.25 pixel step towards the higher neighbour (reference §5.1-§5.2), then the inverse of the crop:
the affine of the simple crop (§5.3a) or AlphaPose's box inverse (§5.3c). Flip test: §5.5.
Everything is vectorised over persons and joints.
"""
from typing import Sequence, Tuple

import numpy as np

from edgepose.errors import InputError
from edgepose.keypoints import flip_permutation
from edgepose.meta import ModelMeta
from edgepose.transforms import HW, Crops


def get_max_preds(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) heatmaps -> integer argmax coords (N, K, 2) float32 (x, y), maxvals (N, K) float32.

    Ties go to the first maximum in row-major order. Coords are (0, 0) where maxval <= 0 (or NaN).
    """
    hm = np.asarray(heatmaps)
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0].astype(np.float32)
    idx = np.where(maxvals > 0, idx, 0)
    coords = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    return coords, maxvals


def refine_quarter(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Quarter-pixel step: (N, K, H, W) heatmaps, (N, K, 2) coords -> new (N, K, 2) float32 coords.

    With px = floor(x + 0.5), py = floor(y + 0.5), and only where 1 < px < W-1 and 1 < py < H-1
    (both at once), x += 0.25*sign(hm[py, px+1] - hm[py, px-1]) and likewise y; sign(0) = 0.
    """
    hm = np.asarray(heatmaps)
    n, k, h, w = hm.shape
    xy = np.asarray(coords, dtype=np.float32).reshape(n, k, 2)
    if n * k == 0 or h < 4 or w < 4:  # no pixel satisfies the border rule
        return xy.copy()
    px = np.floor(xy[..., 0] + 0.5).astype(np.int64)
    py = np.floor(xy[..., 1] + 0.5).astype(np.int64)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    flat = hm.reshape(-1)
    at = (np.arange(n * k).reshape(n, k) * (h * w)
          + np.clip(py, 1, h - 2) * w + np.clip(px, 1, w - 2))
    dx = flat[at + 1] - flat[at - 1]
    dy = flat[at + w] - flat[at - w]
    step = np.stack([np.sign(dx), np.sign(dy)], axis=-1).astype(np.float32) * np.float32(0.25)
    return xy + np.where(inside[..., None], step, np.float32(0))


def heatmap_to_image(coords: np.ndarray, center: np.ndarray, scale: np.ndarray,
                     heatmap_hw: HW) -> np.ndarray:
    """Simple-pose inverse crop: heatmap coords (N, K, 2) -> image pixels (N, K, 2) float32.

    x_img = cx + (x - W_hm/2) * sw / W_hm, y_img = cy + (y - H_hm/2) * sw / W_hm, in float64
    (center/scale (N, 2) as returned by boxes_to_center_scale).
    """
    hm_h, hm_w = heatmap_hw
    xy = np.asarray(coords, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64).reshape(-1, 1, 2)
    per_pixel = np.asarray(scale, dtype=np.float64).reshape(-1, 1, 2)[..., :1] / hm_w
    return (c + (xy - np.array([hm_w / 2.0, hm_h / 2.0])) * per_pixel).astype(np.float32)


def alphapose_to_image(coords: np.ndarray, boxes_lurb: np.ndarray, heatmap_hw: HW) -> np.ndarray:
    """AlphaPose inverse crop: heatmap coords (N, K, 2), boxes (N, 4) L, U, R, B -> (N, K, 2) float32.

    GluonCV's rule (which is not the exact inverse of the crop): p = xy * len_h / H_hm with
    len_h = max(B - U, (R - L) * H_hm / W_hm), minus the padding offset where positive, plus (L, U).
    """
    hm_h, hm_w = heatmap_hw
    xy = np.asarray(coords, dtype=np.float64)
    b = np.asarray(boxes_lurb, dtype=np.float64).reshape(-1, 4)
    half_w = (b[:, 2] - 1 - b[:, 0]) / 2
    half_h = (b[:, 3] - 1 - b[:, 1]) / 2
    len_h = np.maximum(b[:, 3] - b[:, 1], (b[:, 2] - b[:, 0]) * hm_h / hm_w)
    len_w = len_h * hm_w / hm_h
    pad = np.stack([np.maximum((len_w - 1) / 2 - half_w, 0.0),
                    np.maximum((len_h - 1) / 2 - half_h, 0.0)], axis=1)
    origin = b[:, :2] - pad
    return (xy * (len_h / hm_h)[:, None, None] + origin[:, None, :]).astype(np.float32)


def flip_back(heatmaps_flipped: np.ndarray, flip_pairs: Sequence[Tuple[int, int]],
              shift: bool = True) -> np.ndarray:
    """Heatmaps of mirrored inputs (N, K, H, W) -> maps aligned with the unmirrored input (new array).

    Swaps left/right channels, mirrors the width axis and, with ``shift``, moves the maps one column
    right (column 0 keeps its value, the last column is dropped). The input is not modified.
    """
    hm = np.asarray(heatmaps_flipped)
    swapped = np.take(hm, flip_permutation(hm.shape[1], list(flip_pairs)), axis=1)
    if not shift:
        return np.ascontiguousarray(swapped[..., ::-1])
    out = np.empty_like(swapped)
    out[..., 1:] = swapped[..., :0:-1]
    out[..., 0] = swapped[..., -1]
    return out


def merge_flip(heatmaps: np.ndarray, heatmaps_flipped: np.ndarray,
               flip_pairs: Sequence[Tuple[int, int]], shift: bool = True) -> np.ndarray:
    """Flip-test ensemble: (heatmaps + flip_back(heatmaps_flipped)) / 2, both (N, K, H, W)."""
    hm = np.asarray(heatmaps)
    merged = hm + flip_back(heatmaps_flipped, flip_pairs, shift)
    merged /= merged.dtype.type(2)
    return merged


def decode(heatmaps: np.ndarray, crops: Crops, meta: ModelMeta) -> Tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) heatmaps of ``crops`` -> keypoints (N, K, 2) float32 image pixels, scores (N, K) float32.

    Scores are the raw heatmap maxima (possibly <= 0; those joints sit at the image point of heatmap
    pixel (0, 0)). For the flip test pass ``merge_flip(...)`` of the two outputs.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim != 4 or hm.shape[0] != len(crops) or hm.shape[1] != meta.num_keypoints:
        raise InputError("heatmaps must have shape (N=%d, K=%d, H, W) for these crops and model; got %s"
                         % (len(crops), meta.num_keypoints, hm.shape))
    coords, maxvals = get_max_preds(hm)
    coords = refine_quarter(hm, coords)
    heatmap_hw = (hm.shape[2], hm.shape[3])
    if meta.decoder == "alphapose":
        if crops.alpha_boxes is None:
            raise InputError("these crops were made for the simple decoder; the model uses 'alphapose'")
        return alphapose_to_image(coords, crops.alpha_boxes, heatmap_hw), maxvals
    if crops.center is None or crops.scale is None:
        raise InputError("these crops were made for the alphapose decoder; the model uses 'simple'")
    return heatmap_to_image(coords, crops.center, crops.scale, heatmap_hw), maxvals
