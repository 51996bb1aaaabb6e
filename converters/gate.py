"""The INT8 accuracy gate: estimate the OKS a user loses by running the quantised model, and decide.

Both models run (ONNX Runtime, CPU) on person crops the quantised model was not calibrated on; each
heatmap is decoded as the runtime decodes it (first maximum, quarter-pixel step) and scaled to
crop-input pixels. The FP32 model stands in for the ground truth.

**Estimate.** For person p, joint i with FP32 keypoint x and quantised keypoint y, COCO's keypoint
similarity of the two at COCO's scale:

    sim_pi = exp(-|x - y|^2 / (2 * s^2 * k_i^2)),  k_i = 2 * sigma_i (COCO's OKS sigmas),
    s^2 = AREA_RATIO * H * W / CROP_GROWTH^2.

The crop is the person box fixed to the input's aspect ratio and grown by 25 %, so H * W / 1.25^2 is
that box's area in crop pixels; COCO scales OKS by the person's *segment* area, which is 0.15-0.52
(median 0.26 = AREA_RATIO) of it on the COCO persons of ``../shared/data/coco_kpt_mini``. Only joints
the FP32 model is confident about count (heatmap peak >= CONFIDENT_SCORE: half the peak of the
Gaussian targets the zoo was trained on); elsewhere its keypoint is a guess that COCO mostly does not
label (occluded joints), and a quantised model that guesses differently costs the user nothing there.
FP32's own keypoint is off the ground truth too: for an independent Gaussian error of variance v,
a joint's expected similarity to the ground truth is rho = a / (a + v) (a = s^2 k_i^2), and moving the
keypoint by d turns it into rho * exp(-rho d^2 / 2a). So the expected loss of a joint is

    l_pi = rho * (1 - exp(-rho * |x - y|^2 / (2 * s^2 * k_i^2))),  rho = FP32_JOINT_OKS = 0.85,

and the person's estimated loss L_p is the mean of l_pi over p's confident joints; persons without a
confident joint carry no evidence and are left out. rho = 0.85 is above the 0.79 mean OKS of a
trained mobile_pose_mobilenetv3_small on COCO (confident joints are the better ones), and l grows
with rho, so the estimate errs on the safe side: on trained-like heatmaps with ground truth it is
1.1-2x the real loss (``benchmarks/gate_study.py``).

**Decision.** Over the n persons counted, the mean loss m and its one-sided 95 % upper confidence
bound u = m + t_{0.95, n-1} * sd(L_p) / sqrt(n) (Student's t). The quantised model passes when

    n >= GATE_MIN_PERSONS  and  u <= GATE_MAX_OKS_LOSS.

GATE_MAX_OKS_LOSS = 0.025 was chosen with that study so that, with 19 persons, a model losing
<= 0.01 against the ground truth passes (0.009: 98 % of draws), one losing 0.013 passes in 44 % and
one losing 0.021 never, while broken models (wrong scales) fail by far (``benchmarks/RESULTS.md``
"### The accuracy gate"). Fewer than GATE_MIN_PERSONS counted persons are too little evidence
either way, and the gate refuses. Random-weight models have flat heatmaps (peaks ~0.02) with no
confident joint: they fail the gate (use ``force``).

:class:`Agreement` (mean OKS agreement over the joints the FP32 model sees, heatmap SQNR) is the
descriptive companion, also used to rank quantisers (``benchmarks/bench_int8.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgepose.decode import get_max_preds, refine_quarter
from edgepose.errors import EdgeposeError
from edgepose.fileio import PathLike
from edgepose.keypoints import keypoint_similarity, oks_sigmas
from edgepose.meta import ModelMeta

#: Largest 95 % upper bound of the estimated mean OKS loss for which INT8 is kept (module docstring).
GATE_MAX_OKS_LOSS = 0.025
#: Fewest persons with confident joints the gate decides on.
GATE_MIN_PERSONS = 10
#: FP32 heatmap peak from which a joint counts for the estimate (half the trained Gaussian targets' peak).
CONFIDENT_SCORE = 0.5
#: COCO's person (segment) area relative to the crop's box area H * W / CROP_GROWTH^2 (median, coco_kpt_mini).
AREA_RATIO = 0.26
#: Expected OKS of a confident FP32 joint against the ground truth (rho in the module docstring).
FP32_JOINT_OKS = 0.85
#: FP32 heatmap peak above which a joint counts as seen for the agreement figures (GluonCV's keypoint threshold).
VISIBLE_SCORE = 0.2
CROP_GROWTH = 1.25
_Z95 = 1.6448536269514722  # one-sided 95 % normal quantile
_T95_SMALL = (6.3138, 2.9200, 2.3534, 2.1318, 2.0150, 1.9432, 1.8946, 1.8595, 1.8331)  # Student's t, df 1..9


class AccuracyGateError(EdgeposeError):
    """The quantised model does not follow the FP32 model closely enough."""


@dataclass
class Agreement:
    """How well a quantised model follows the FP32 model on ``persons`` held-out crops."""

    mean_oks: float
    min_oks: float
    max_px_error: float  # largest joint distance among seen joints, in crop-input pixels
    per_joint_oks: np.ndarray  # (K,)
    per_joint_max_px: np.ndarray  # (K,)
    persons: int
    sqnr_db: float = float("nan")

    def summary(self) -> str:
        return ("mean OKS agreement %.4f (min %.4f), largest keypoint error %.1f crop pixels, heatmap SQNR "
                "%.1f dB, on %d persons"
                % (self.mean_oks, self.min_oks, self.max_px_error, self.sqnr_db, self.persons))

    def worst_joints(self, names: List[str], n: int = 3) -> str:
        order = np.argsort(self.per_joint_oks)[:n]
        return ", ".join("%s %.3f" % (names[i] if i < len(names) else i, self.per_joint_oks[i]) for i in order)


@dataclass
class LossEstimate:
    """The OKS a user is estimated to lose (module docstring), from ``persons`` scored crops.

    ``per_person``: L_p of the ``counted`` persons with a confident joint; ``per_joint_loss``: mean of
    1 - sim per joint over its confident occurrences (0 where it never was), ``per_joint_count`` those
    occurrences; ``max_px_error``: the largest move of a confident joint, crop-input pixels.
    """

    per_person: np.ndarray
    per_joint_loss: np.ndarray
    per_joint_count: np.ndarray
    max_px_error: float
    persons: int

    @property
    def counted(self) -> int:
        return int(len(self.per_person))

    @property
    def joints(self) -> int:
        return int(self.per_joint_count.sum())

    @property
    def loss(self) -> float:
        return float(self.per_person.mean()) if self.counted else float("nan")

    @property
    def upper(self) -> float:
        """One-sided 95 % upper confidence bound of the mean loss (Student's t; nan below 2 persons)."""
        n = self.counted
        if n < 2:
            return float("nan")
        return self.loss + t95(n - 1) * float(self.per_person.std(ddof=1)) / math.sqrt(n)

    def worst_joints(self, names: Sequence[str], n: int = 3) -> str:
        order = [int(i) for i in np.argsort(-self.per_joint_loss)[:n] if self.per_joint_count[i] > 0]
        return ", ".join("%s %.3f" % (names[i] if i < len(names) else i, self.per_joint_loss[i]) for i in order)


@dataclass
class GateDecision:
    """The gate's verdict on a :class:`LossEstimate`: ``passed`` and, in words, ``why``."""

    passed: bool
    why: str
    tolerance: float
    min_persons: int


def t95(df: int) -> float:
    """One-sided 95 % quantile of Student's t with ``df`` degrees of freedom (tabled to df 9, then the
    Cornish-Fisher expansion, within 0.002)."""
    if df < 10:
        return _T95_SMALL[df - 1]
    z = _Z95
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def crop_keypoints(heatmaps: np.ndarray, input_hw) -> tuple:
    """(N, K, h, w) heatmaps -> keypoints (N, K, 2) in crop-input pixels, scores (N, K)."""
    coords, scores = get_max_preds(heatmaps)
    coords = refine_quarter(heatmaps, coords)
    stride = np.array([input_hw[1] / heatmaps.shape[3], input_hw[0] / heatmaps.shape[2]], np.float64)
    return coords * stride, scores


def _similarity(ref_kps: np.ndarray, kps: np.ndarray, area: float) -> Tuple[np.ndarray, np.ndarray]:
    """(distance (N, K), COCO similarity (N, K)) of keypoints ``kps`` to ``ref_kps`` at scale ``area``."""
    dist = np.linalg.norm(np.asarray(kps, np.float64) - np.asarray(ref_kps, np.float64), axis=2)
    return dist, keypoint_similarity(dist ** 2, area, oks_sigmas(dist.shape[1]))


def oks_agreement(ref_kps: np.ndarray, ref_scores: np.ndarray, kps: np.ndarray, input_hw) -> Agreement:
    """Agreement of keypoints ``kps`` with reference keypoints (N, K, 2) in crop pixels: OKS at the crop's
    box scale over the joints the reference sees (score > VISIBLE_SCORE; all when it sees none)."""
    n, k = ref_scores.shape
    if n == 0:
        raise ValueError("no persons to compare")
    dist, sim = _similarity(ref_kps, kps, input_hw[0] * input_hw[1] / CROP_GROWTH ** 2)
    seen = ref_scores > VISIBLE_SCORE
    seen[~seen.any(axis=1)] = True
    oks = (sim * seen).sum(axis=1) / seen.sum(axis=1)
    counted = seen.sum(axis=0)
    per_joint = np.divide((sim * seen).sum(axis=0), counted, out=np.ones(k), where=counted > 0)
    per_joint_px = np.where(seen, dist, 0.0).max(axis=0)
    return Agreement(float(oks.mean()), float(oks.min()), float(per_joint_px.max()), per_joint,
                     per_joint_px, int(n))


def oks_loss(ref_kps: np.ndarray, ref_scores: np.ndarray, kps: np.ndarray, input_hw) -> LossEstimate:
    """The :class:`LossEstimate` of keypoints ``kps`` against reference keypoints (N, K, 2), crop pixels."""
    n, k = ref_scores.shape
    if n == 0:
        raise ValueError("no persons to compare")
    rho = FP32_JOINT_OKS
    dist, sim = _similarity(ref_kps, kps, AREA_RATIO * input_hw[0] * input_hw[1] / CROP_GROWTH ** 2 / rho)
    confident = ref_scores >= CONFIDENT_SCORE
    loss = np.where(confident, rho * (1.0 - sim), 0.0)
    counted = confident.any(axis=1)
    per_person = loss[counted].sum(axis=1) / confident[counted].sum(axis=1)
    count = confident.sum(axis=0)
    per_joint = np.divide(loss.sum(axis=0), count, out=np.zeros(k), where=count > 0)
    max_px = float(np.where(confident, dist, 0.0).max())
    return LossEstimate(per_person, per_joint, count, max_px, int(n))


def decide(estimate: LossEstimate, tolerance: float = GATE_MAX_OKS_LOSS,
           min_persons: int = GATE_MIN_PERSONS) -> GateDecision:
    """Pass when at least ``min_persons`` persons count and the loss's upper bound is <= ``tolerance``."""
    if estimate.counted < max(min_persons, 2):
        why = ("too little evidence: only %d of %d persons have a joint the FP32 model is confident about "
               "(heatmap peak >= %.2f), %d needed" % (estimate.counted, estimate.persons, CONFIDENT_SCORE,
                                                    max(min_persons, 2)))
        return GateDecision(False, why, tolerance, min_persons)
    if estimate.upper <= tolerance:
        why = "the loss is at most %.4f with 95 %% confidence, within the %.3f allowed" % (estimate.upper, tolerance)
        return GateDecision(True, why, tolerance, min_persons)
    why = ("the loss may reach %.4f (95 %% bound), more than the %.3f allowed" % (estimate.upper, tolerance))
    return GateDecision(False, why, tolerance, min_persons)


def model_heatmaps(model_path: PathLike, crops: np.ndarray, batch: int = 16,
                   threads: Optional[int] = None) -> np.ndarray:
    """Heatmaps of the model at ``model_path`` (ONNX Runtime, CPU) for crops (N, 3, H, W)."""
    from edgepose.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(str(model_path), providers=["CPUExecutionProvider"], threads=threads)
    try:
        return backend.run_chunked(crops, batch)
    finally:
        backend.close()


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((np.asarray(reference, np.float64) - other) ** 2))
    signal = float(np.sum(np.asarray(reference, np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


def compare_heatmaps(reference: np.ndarray, other: np.ndarray, input_hw) -> Agreement:
    """Agreement of heatmaps ``other`` with ``reference`` (both (N, K, h, w) for (H, W) inputs)."""
    ref_kps, ref_scores = crop_keypoints(reference, input_hw)
    kps, _ = crop_keypoints(other, input_hw)
    result = oks_agreement(ref_kps, ref_scores, kps, input_hw)
    result.sqnr_db = sqnr_db(reference, other)
    return result


def estimate_loss(reference: np.ndarray, other: np.ndarray, input_hw) -> LossEstimate:
    """:class:`LossEstimate` of heatmaps ``other`` against FP32 heatmaps ``reference`` ((N, K, h, w))."""
    ref_kps, ref_scores = crop_keypoints(reference, input_hw)
    kps, _ = crop_keypoints(other, input_hw)
    return oks_loss(ref_kps, ref_scores, kps, input_hw)


def agreement(fp32_path: PathLike, int8_path: PathLike, crops: np.ndarray, meta: ModelMeta, *,
              batch: int = 16, threads: Optional[int] = None) -> Agreement:
    """Run both models on ``crops`` (N, 3, H, W) and compare their decoded keypoints."""
    return compare_heatmaps(model_heatmaps(fp32_path, crops, batch, threads),
                            model_heatmaps(int8_path, crops, batch, threads), meta.input_size)
