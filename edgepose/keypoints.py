"""COCO-17 keypoint facts: names, left/right flip pairs, skeletons, OKS sigmas and COCO's keypoint similarity."""
from typing import List, Sequence, Tuple, Union

import numpy as np

COCO_KEYPOINTS: List[str] = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]

#: Left/right pairs swapped by a horizontal flip (0-based); the nose maps to itself.
COCO_FLIP_PAIRS: List[Tuple[int, int]] = [
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
]

#: Limbs drawn by GluonCV's plotting helper (0-based, 16 limbs).
COCO_SKELETON: List[Tuple[int, int]] = [
    (0, 1), (1, 3), (0, 2), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8),
    (8, 10), (5, 11), (6, 12), (11, 12), (11, 13), (12, 14), (13, 15), (14, 16),
]

#: Per-keypoint OKS sigmas of the COCO API, in COCO_KEYPOINTS order.
COCO_OKS_SIGMAS: List[float] = [
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
]
#: OKS sigma for keypoint sets other than COCO-17 (about the mean of COCO's).
DEFAULT_OKS_SIGMA = 0.06


def oks_sigmas(num_keypoints: int) -> np.ndarray:
    """The OKS sigmas of ``num_keypoints`` keypoints: COCO's for COCO-17, else :data:`DEFAULT_OKS_SIGMA` each."""
    if num_keypoints == len(COCO_KEYPOINTS):
        return np.asarray(COCO_OKS_SIGMAS, np.float64)
    return np.full(num_keypoints, DEFAULT_OKS_SIGMA)


def keypoint_similarity(d2: np.ndarray, area: Union[float, np.ndarray], sigmas: Sequence[float]) -> np.ndarray:
    """COCO's similarity of each joint, exp(-d^2 / (2 * area * (2 sigma)^2)), for squared distances ``d2``
    (..., K) at the person scale ``area`` (broadcast against ``d2``) with per-joint ``sigmas`` (K,).
    OKS is its mean over the joints that count."""
    return np.exp(-np.asarray(d2, np.float64) / (2 * area * (2 * np.asarray(sigmas, np.float64)) ** 2))


def flip_permutation(num_keypoints: int, flip_pairs: List[Tuple[int, int]]) -> List[int]:
    """Index list that reorders keypoints (or heatmap channels) of a mirrored person."""
    perm = list(range(num_keypoints))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm
