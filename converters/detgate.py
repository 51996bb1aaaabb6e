"""The detector accuracy gate: does the quantised detector find the persons the FP32 detector finds?

Both detectors run with the runtime's own post-processing (:class:`edgepose.detector.YoloxDetector`:
score >= 0.5, NMS) on whole images the quantised model was not calibrated on; FP32 stands in for the
ground truth. Boxes are matched greedily by score: each quantised box, best first, takes the unmatched
FP32 box it overlaps most, if their IoU is at least MATCH_IOU. Over all images, with m matches, r FP32
boxes and q quantised boxes:

    recall = m / r  (FP32 persons the quantised detector still finds),  precision = m / q.

**Decision.** Each is a proportion of few boxes, so the gate uses its one-sided 95 % lower confidence
bound (Wilson score interval), not the point value. INT8 passes when

    r >= GATE_MIN_BOXES  and  lower(recall) >= GATE_MIN_AGREEMENT  and  lower(precision) >= GATE_MIN_AGREEMENT.

With GATE_MIN_AGREEMENT = 0.9 and GATE_MIN_BOXES = 25 (the fewest boxes whose perfect agreement has a
bound above 0.9: 25 of 25 gives 0.902): 30 of 30 passes (0.917), 39 of 40 does not (0.895), 95 of 100
does (0.901), 94 of 100 not (0.888), and with 1000 boxes 92 % agreement passes (0.905). So the fewer
the persons, the closer INT8 must follow FP32, and beyond a few hundred it may disagree on up to
about 9 % of them: persons scored near the threshold (0.5) that one detector keeps and the other
drops. A quantisation with wrong scales finds next to nothing and fails by far; the cpu form of
YOLOX-Nano (depthwise convolutions quantised) loses a quarter of the persons and fails too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from edgepose.fileio import PathLike

#: IoU from which an INT8 box and an FP32 box are the same person.
MATCH_IOU = 0.5
#: Fewest FP32 person boxes the gate decides on.
GATE_MIN_BOXES = 25
#: Lowest 95 % lower bound of recall and of precision for which INT8 is kept.
GATE_MIN_AGREEMENT = 0.9
_Z95 = 1.6448536269514722  # one-sided 95 % normal quantile


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N, >=4) and b (M, >=4), x1, y1, x2, y2 -> (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:4] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def match_count(reference: np.ndarray, boxes: np.ndarray, iou: float = MATCH_IOU) -> int:
    """Boxes (M, 5) matched to reference boxes (N, 5), greedily by the score of ``boxes`` (module docstring)."""
    if len(reference) == 0 or len(boxes) == 0:
        return 0
    overlap = iou_matrix(boxes[np.argsort(-boxes[:, 4], kind="stable")], reference)
    free = np.ones(len(reference), bool)
    matched = 0
    for row in overlap:
        candidates = np.where(free, row, -1.0)
        best = int(candidates.argmax())
        if candidates[best] >= iou:
            free[best] = False
            matched += 1
    return matched


def wilson_lower(successes: int, trials: int) -> float:
    """One-sided 95 % lower confidence bound of a proportion (Wilson score); nan for no trials."""
    if trials == 0:
        return float("nan")
    p, z2 = successes / trials, _Z95 ** 2
    centre = p + z2 / (2 * trials)
    spread = _Z95 * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials ** 2))
    return (centre - spread) / (1 + z2 / trials)


@dataclass
class BoxAgreement:
    """How well the quantised detector's boxes follow the FP32 boxes on ``images`` images."""

    reference_boxes: int
    boxes: int
    matched: int
    images: int

    @property
    def recall(self) -> float:
        return self.matched / self.reference_boxes if self.reference_boxes else float("nan")

    @property
    def precision(self) -> float:
        return self.matched / self.boxes if self.boxes else float("nan")

    @property
    def recall_lower(self) -> float:
        return wilson_lower(self.matched, self.reference_boxes)

    @property
    def precision_lower(self) -> float:
        return wilson_lower(self.matched, self.boxes)

    def as_dict(self) -> dict:
        def rounded(v: float):
            return None if math.isnan(v) else round(v, 4)

        return {"fp32_boxes": self.reference_boxes, "int8_boxes": self.boxes, "matched": self.matched,
                "images": self.images, "recall": rounded(self.recall), "recall_lower": rounded(self.recall_lower),
                "precision": rounded(self.precision), "precision_lower": rounded(self.precision_lower)}


@dataclass
class DetectorDecision:
    """The gate's verdict: ``passed`` and, in words, ``why``."""

    passed: bool
    why: str
    min_agreement: float
    min_boxes: int


def compare_boxes(reference: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> BoxAgreement:
    """:class:`BoxAgreement` of per-image boxes ``boxes`` against per-image FP32 boxes ``reference``."""
    return BoxAgreement(sum(len(r) for r in reference), sum(len(b) for b in boxes),
                        sum(match_count(r, b) for r, b in zip(reference, boxes)), len(reference))


def decide_boxes(agreement: BoxAgreement, min_agreement: float = GATE_MIN_AGREEMENT,
                 min_boxes: int = GATE_MIN_BOXES) -> DetectorDecision:
    """Pass when the FP32 detector finds at least ``min_boxes`` persons and both lower bounds reach
    ``min_agreement`` (module docstring)."""
    a = agreement
    if a.reference_boxes < max(min_boxes, 1):
        why = ("too little evidence: the FP32 detector finds %d persons in the %d scored images, %d needed; "
               "calibrate on more images with people" % (a.reference_boxes, a.images, max(min_boxes, 1)))
        return DetectorDecision(False, why, min_agreement, min_boxes)
    low = min(a.recall_lower, a.precision_lower if a.boxes else 0.0)
    if low >= min_agreement:
        why = "recall and precision are at least %.3f with 95 %% confidence, %.2f required" % (low, min_agreement)
        return DetectorDecision(True, why, min_agreement, min_boxes)
    which = "recall" if a.recall_lower <= (a.precision_lower if a.boxes else 0.0) else "precision"
    why = "%s may be as low as %.3f (95 %% bound), below the %.2f required" % (which, low, min_agreement)
    return DetectorDecision(False, why, min_agreement, min_boxes)


def detect_all(model_path: PathLike, canvases: np.ndarray) -> List[np.ndarray]:
    """Person boxes of the detector at ``model_path`` (ONNX Runtime, CPU) in (N, H, W, 3) uint8 canvases."""
    from edgepose.detector import YoloxDetector

    with YoloxDetector(model_path) as detector:
        return detector.detect_batch(list(canvases))


__all__ = ["BoxAgreement", "DetectorDecision", "GATE_MIN_AGREEMENT", "GATE_MIN_BOXES", "MATCH_IOU", "compare_boxes",
           "decide_boxes", "detect_all", "iou_matrix", "match_count", "wilson_lower"]
