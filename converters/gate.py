"""The INT8 accuracy gate: how closely a quantised model's keypoints follow the FP32 model's.

Both models run (ONNX Runtime, CPU) on held-out calibration crops; each heatmap is decoded as the
runtime decodes it (first maximum, quarter-pixel step) and scaled to crop-input pixels. For person p
and joint i with FP32 keypoint x and INT8 keypoint y (the FP32 model plays the ground truth):

    e_pi = |x - y|^2 / (2 * s^2 * k_i^2),  k_i = 2 * sigma_i (COCO's OKS sigmas),
    s^2  = H * W / 1.25^2  (the person box inside the crop: the crop is the box grown by 25 %),
    OKS_p = mean of exp(-e_pi) over the joints the FP32 model sees (score > VISIBLE_SCORE; all
            17 when it sees none), as COCO averages over labelled joints.

``mean_oks`` is the mean of OKS_p; per joint, the mean of exp(-e_pi) and the largest |x - y|.
``sqnr_db`` (heatmap signal-to-quantisation-noise ratio, 10 log10(sum h^2 / sum (h - h_int8)^2)) is
reported too: unlike the keypoints it varies smoothly, so it also ranks quantisers on models whose
heatmaps have no clear peaks (random weights).

Threshold: INT8 error adds to FP32's error roughly independently, so a joint's OKS against the
ground truth shrinks by about its agreement factor: OKS_int8 ~ OKS_fp32 x agreement. With a trained
model's mean OKS of ~0.75 on COCO, a loss of at most 0.02 needs agreement >= 1 - 0.02 / 0.75 = 0.973
under COCO's scale (segment area); our s^2 is the box area, about 1.5-2x larger, which makes the
same errors look ~1.7x smaller, hence GATE_MIN_MEAN_OKS = 0.985. Models with random weights have
flat, noisy heatmaps whose peaks jump under any perturbation: they fail the gate (use ``force``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from edgepose.decode import get_max_preds, refine_quarter
from edgepose.errors import EdgeposeError
from edgepose.keypoints import COCO_KEYPOINTS, COCO_OKS_SIGMAS
from edgepose.meta import ModelMeta

PathLike = Union[str, Path]
#: Mean OKS agreement below which INT8 is refused (or replaced by FP16); see the module docstring.
GATE_MIN_MEAN_OKS = 0.985
#: FP32 heatmap peak above which a joint counts as seen (GluonCV's keypoint threshold).
VISIBLE_SCORE = 0.2
#: Sigma for keypoint sets other than COCO-17 (about the mean of COCO's).
DEFAULT_SIGMA = 0.06
CROP_GROWTH = 1.25


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
                "%.1f dB, on %d held-out persons"
                % (self.mean_oks, self.min_oks, self.max_px_error, self.sqnr_db, self.persons))

    def worst_joints(self, names: List[str], n: int = 3) -> str:
        order = np.argsort(self.per_joint_oks)[:n]
        return ", ".join("%s %.3f" % (names[i] if i < len(names) else i, self.per_joint_oks[i]) for i in order)


def sigmas_for(num_keypoints: int) -> np.ndarray:
    if num_keypoints == len(COCO_KEYPOINTS):
        return np.asarray(COCO_OKS_SIGMAS, np.float64)
    return np.full(num_keypoints, DEFAULT_SIGMA)


def crop_keypoints(heatmaps: np.ndarray, input_hw) -> tuple:
    """(N, K, h, w) heatmaps -> keypoints (N, K, 2) in crop-input pixels, scores (N, K)."""
    coords, scores = get_max_preds(heatmaps)
    coords = refine_quarter(heatmaps, coords)
    stride = np.array([input_hw[1] / heatmaps.shape[3], input_hw[0] / heatmaps.shape[2]], np.float64)
    return coords * stride, scores


def oks_agreement(ref_kps: np.ndarray, ref_scores: np.ndarray, kps: np.ndarray, input_hw) -> Agreement:
    """Agreement of keypoints ``kps`` with reference keypoints (N, K, 2) in crop pixels (module docstring)."""
    n, k = ref_scores.shape
    if n == 0:
        raise ValueError("no persons to compare")
    dist = np.linalg.norm(np.asarray(kps, np.float64) - np.asarray(ref_kps, np.float64), axis=2)
    area = input_hw[0] * input_hw[1] / CROP_GROWTH ** 2
    sim = np.exp(-dist ** 2 / (2 * area * (2 * sigmas_for(k)) ** 2))
    seen = ref_scores > VISIBLE_SCORE
    seen[~seen.any(axis=1)] = True
    oks = (sim * seen).sum(axis=1) / seen.sum(axis=1)
    counted = seen.sum(axis=0)
    per_joint = np.divide((sim * seen).sum(axis=0), counted, out=np.ones(k), where=counted > 0)
    per_joint_px = np.where(seen, dist, 0.0).max(axis=0)
    return Agreement(float(oks.mean()), float(oks.min()), float(per_joint_px.max()), per_joint,
                     per_joint_px, int(n))


def _heatmaps(model_path: PathLike, crops: np.ndarray, batch: int, threads: Optional[int]) -> np.ndarray:
    from edgepose.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(str(model_path), providers=["CPUExecutionProvider"], threads=threads)
    try:
        return np.concatenate([backend.run(crops[i:i + batch]) for i in range(0, len(crops), batch)])
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


def agreement(fp32_path: PathLike, int8_path: PathLike, crops: np.ndarray, meta: ModelMeta, *,
              batch: int = 16, threads: Optional[int] = None) -> Agreement:
    """Run both models on ``crops`` (N, 3, H, W) and compare their decoded keypoints."""
    return compare_heatmaps(_heatmaps(fp32_path, crops, batch, threads),
                            _heatmaps(int8_path, crops, batch, threads), meta.input_size)


def passes(result: Agreement, threshold: float = GATE_MIN_MEAN_OKS) -> bool:
    return result.mean_oks >= threshold
