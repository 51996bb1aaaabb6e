"""Person identities across video frames, and person boxes carried over from the last keypoints.

On frames where the detector runs, new poses are matched to the known tracks by the best of
keypoint OKS and box IoU (with the track's last box and its last detected box; greedy, best pair
first). On the frames in between, each track's box
comes from its previous keypoints (:meth:`PoseTracker.propagate`) and the pose model keeps the
track alive while it still finds enough joints. Tracks unseen for ``max_missed`` frames are
forgotten, so memory does not grow over long runs.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgepose.errors import InputError
from edgepose.keypoints import COCO_OKS_SIGMAS, keypoint_similarity
from edgepose.runtime import PoseResult


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), x1, y1, x2, y2 -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def keypoint_oks(a: np.ndarray, a_valid: np.ndarray, b: np.ndarray, b_valid: np.ndarray,
                 areas: np.ndarray, sigmas: Sequence[float] = COCO_OKS_SIGMAS) -> np.ndarray:
    """Object keypoint similarity of every pose in ``a`` (N, K, 2) with every pose in ``b`` (M, K, 2).

    COCO's formula, exp(-d^2 / (2 * area * (2 sigma)^2)) averaged over the joints valid in both
    (``a_valid`` (N, K), ``b_valid`` (M, K)), with ``areas`` (N,) the scale of the ``a`` persons
    (box areas). Pairs sharing no valid joint get 0. Returns (N, M).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d2 = ((a[:, None] - b[None]) ** 2).sum(axis=-1)  # (N, M, K)
    similarity = keypoint_similarity(d2, np.maximum(np.asarray(areas, np.float64), 1.0)[:, None, None], sigmas)
    both = np.asarray(a_valid, bool)[:, None] & np.asarray(b_valid, bool)[None]
    count = both.sum(axis=-1)
    total = np.where(both, similarity, 0).sum(axis=-1)
    return np.divide(total, count, out=np.zeros(count.shape), where=count > 0)


def boxes_from_keypoints(keypoints: np.ndarray, valid: np.ndarray, image_wh: Tuple[int, int],
                         enlarge: float = 1.25) -> np.ndarray:
    """Person boxes (N, 4) x1, y1, x2, y2 around the ``valid`` (N, K) joints of (N, K, 2) poses.

    The joints' extent is grown by ``enlarge`` about its centre (joints sit inside the body, the
    head top and feet outside them) and clipped to the image; a person with no valid joint gets
    an empty box (0, 0, 0, 0).
    """
    kpts = np.asarray(keypoints, np.float64)
    ok = np.asarray(valid, bool)[..., None]
    lo = np.where(ok, kpts, np.inf).min(axis=1)
    hi = np.where(ok, kpts, -np.inf).max(axis=1)
    seen = ok.any(axis=1)[:, 0]
    lo, hi = np.where(seen[:, None], lo, 0), np.where(seen[:, None], hi, 0)
    center, half = (lo + hi) / 2, (hi - lo) / 2 * enlarge
    boxes = np.concatenate([center - half, center + half], axis=1)
    w, h = image_wh
    np.clip(boxes[:, 0::2], 0, w - 1, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, h - 1, out=boxes[:, 1::2])
    return boxes


@dataclass
class Track:
    """One person followed over frames; ``missed`` counts frames since it was last seen."""

    id: int
    box: np.ndarray  # (4,) x1, y1, x2, y2 of the last pose
    detected_box: np.ndarray  # (4,) its box on the last detection frame it was matched on
    keypoints: np.ndarray  # (K, 2) raw (unsmoothed) last keypoints
    valid: np.ndarray  # (K,) joints above the keypoint threshold
    score: float  # detector score of its last detection
    missed: int = 0


class PoseTracker:
    """Keeps person ids across frames.

    ``keypoint_thresh``: a joint counts (for OKS, box propagation) when its score exceeds it.
    ``match_thresh``: least IoU/OKS for a new pose to continue a track on a detection frame.
    ``min_keypoints``: a propagated person with fewer valid joints is considered lost.
    ``duplicate_oks``: of two tracks whose poses overlap by more than this, the newer is dropped
    (propagated boxes can drift onto the same person).
    ``max_missed``: frames a lost track is remembered, to give a returning person its old id.
    """

    def __init__(self, keypoint_thresh: float = 0.2, match_thresh: float = 0.3, min_keypoints: int = 4,
                 duplicate_oks: float = 0.7, max_missed: int = 30,
                 sigmas: Sequence[float] = COCO_OKS_SIGMAS) -> None:
        if not 0 < match_thresh <= 1 or not 0 < duplicate_oks <= 1 or min_keypoints < 1 or max_missed < 0:
            raise InputError("tracker needs 0 < match_thresh <= 1, 0 < duplicate_oks <= 1, min_keypoints "
                             ">= 1 and max_missed >= 0; got %r, %r, %r, %r"
                             % (match_thresh, duplicate_oks, min_keypoints, max_missed))
        self.keypoint_thresh = float(keypoint_thresh)
        self.match_thresh = float(match_thresh)
        self.min_keypoints = int(min_keypoints)
        self.duplicate_oks = float(duplicate_oks)
        self.max_missed = int(max_missed)
        self.sigmas = list(sigmas)
        self.tracks: Dict[int, Track] = {}
        self._next_id = 1

    def propagate(self, image_wh: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
        """Boxes (M, 5) x1, y1, x2, y2, score for the next frame from the tracks seen in this one,
        and their ids (M,). Tracks whose box would be empty are left out (they count as missed)."""
        live = [t for t in self.tracks.values() if t.missed == 0]
        if not live:
            return np.zeros((0, 5), np.float32), np.zeros(0, np.int64)
        boxes = boxes_from_keypoints(np.stack([t.keypoints for t in live]),
                                     np.stack([t.valid for t in live]), image_wh)
        good = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        scores = np.array([[t.score] for t in live])
        ids = np.array([t.id for t in live], np.int64)
        return np.concatenate([boxes, scores], axis=1)[good].astype(np.float32), ids[good]

    def update(self, result: PoseResult, ids: Optional[np.ndarray] = None) -> np.ndarray:
        """Record the poses of one frame and return their ids (N,); -1 marks a pose not kept.

        ``ids`` None: a detection frame, poses are matched to tracks or start new ones. Otherwise the
        poses were estimated in boxes from :meth:`propagate` and carry those ids; one with fewer than
        ``min_keypoints`` valid joints, or duplicating an older track, is dropped.
        """
        valid = result.scores > self.keypoint_thresh
        detected = ids is None
        if detected:
            ids = self._match(result, valid)
        else:
            ids = np.where(valid.sum(axis=1) >= self.min_keypoints, np.asarray(ids, np.int64), -1)
        ids = self._drop_duplicates(ids, result.keypoints, valid, result.boxes)
        seen = set()
        for n, i in enumerate(ids):
            if i >= 0:
                box = result.boxes[n].copy()
                detected_box = box if detected or i not in self.tracks else self.tracks[i].detected_box
                self.tracks[i] = Track(int(i), box, detected_box, result.keypoints[n].copy(), valid[n].copy(),
                                       float(result.box_scores[n]))
                seen.add(int(i))
        for i in list(self.tracks):
            if i not in seen:
                self.tracks[i].missed += 1
                if self.tracks[i].missed > self.max_missed:
                    del self.tracks[i]
        return ids

    def _match(self, result: PoseResult, valid: np.ndarray) -> np.ndarray:
        """Greedy assignment of new poses to tracks by the best of OKS with the last pose and IoU
        with its box or its last detected box; unmatched poses get new ids."""
        n = len(result)
        ids = np.full(n, -1, np.int64)
        tracks: List[Track] = list(self.tracks.values())
        if tracks and n:
            t_boxes = np.stack([t.box for t in tracks])
            areas = np.prod(t_boxes[:, 2:] - t_boxes[:, :2], axis=1)
            oks = keypoint_oks(np.stack([t.keypoints for t in tracks]), np.stack([t.valid for t in tracks]),
                               result.keypoints, valid, areas, self.sigmas)
            detected = np.stack([t.detected_box for t in tracks])
            sim = np.maximum(np.maximum(box_iou(t_boxes, result.boxes), box_iou(detected, result.boxes)), oks)
            used = np.zeros(len(tracks), bool)
            for flat in np.argsort(-sim, axis=None, kind="stable"):
                t, p = divmod(int(flat), n)
                if sim[t, p] < self.match_thresh:
                    break
                if not used[t] and ids[p] < 0:
                    used[t] = True
                    ids[p] = tracks[t].id
        for p in np.flatnonzero(ids < 0):
            ids[p] = self._next_id
            self._next_id += 1
        return ids

    def _drop_duplicates(self, ids: np.ndarray, keypoints: np.ndarray, valid: np.ndarray,
                         boxes: np.ndarray) -> np.ndarray:
        """-1 for the newer of two kept poses with OKS above ``duplicate_oks``."""
        kept = np.flatnonzero(ids >= 0)
        if len(kept) < 2:
            return ids
        kept = kept[np.argsort(ids[kept])]  # oldest track first
        areas = np.prod(boxes[kept, 2:] - boxes[kept, :2], axis=1)
        oks = keypoint_oks(keypoints[kept], valid[kept], keypoints[kept], valid[kept], areas, self.sigmas)
        out = ids.copy()
        for j in range(1, len(kept)):
            if (oks[:j, j][out[kept[:j]] >= 0] > self.duplicate_oks).any():
                out[kept[j]] = -1
        return out

    def reset(self) -> None:
        """Forget all tracks (ids keep counting up)."""
        self.tracks = {}
