"""COCO-17 keypoint facts: names, left/right flip pairs, skeletons, OKS sigmas."""
from typing import List, Tuple

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


def flip_permutation(num_keypoints: int, flip_pairs: List[Tuple[int, int]]) -> List[int]:
    """Index list that reorders keypoints (or heatmap channels) of a mirrored person."""
    perm = list(range(num_keypoints))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm
