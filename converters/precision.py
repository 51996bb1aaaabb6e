"""``make_int8``: calibrate, quantise, measure, and keep INT8 only when it follows FP32 closely enough.

1. person crops from ``calib_source`` (or the default public set) via :func:`edgepose.calib.load_calibration`;
2. Q/DQ quantisation for ``target`` (:func:`edgepose.converters.quantize.quantize_int8`) into a
   temporary file beside the output;
3. the accuracy gate (:mod:`edgepose.converters.gate`): the OKS a user is estimated to lose, from
   crops the scored INT8 model was not calibrated on. With at least HOLD_OUT_MIN held-out persons
   (every 5th person of the source, e.g. the default set) those, the model calibrated on the rest;
   with fewer, CV_FOLDS-fold cross-validation over all persons: each fold is scored by a model
   calibrated on the other folds, so every person counts, and the model kept is calibrated on all;
4. gate passed (or ``force``): the INT8 model moves to ``out_path``, its gate figures in its
   metadata. Gate failed: nothing is left at ``out_path``; with ``fp16_fallback`` the FP16 model is
   written instead (its name says fp16) and the report says why, else AccuracyGateError.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgepose.calib import DEFAULT_MAX_PERSONS, ProgressCallback, load_calibration
from edgepose.converters.onnx_io import load_onnx, save_onnx
from edgepose.converters.gate import (
    CONFIDENT_SCORE, GATE_MAX_OKS_LOSS, GATE_MIN_PERSONS, AccuracyGateError, Agreement, GateDecision, LossEstimate,
    compare_heatmaps, decide, estimate_loss, model_heatmaps)
from edgepose.converters.quantize import DEFAULT_METHOD, quantize_int8, quantizer_options
from edgepose.errors import ModelFileError
from edgepose.fileio import PathLike
from edgepose.meta import KEY_INT8_AGREEMENT, ModelMeta, read_onnx_props, update_onnx_props

#: Held-out persons from which the gate scores them alone (one quantisation); below, cross-validation.
HOLD_OUT_MIN = 50
#: Folds of the cross-validation (each model is calibrated on 1 - 1/CV_FOLDS of the persons).
CV_FOLDS = 5


@dataclass
class Int8Report:
    """What :func:`make_int8` did. ``path`` is the file written: the INT8 model, or the FP16 model
    when ``fell_back`` (``reason`` says why)."""

    path: Path
    precision: str
    target: str
    method: str
    agreement: Agreement
    estimate: LossEstimate
    decision: GateDecision
    scheme: str  # how the scored persons were kept out of calibration
    passed: bool
    forced: bool
    fell_back: bool
    reason: str
    calibration: str
    calibration_persons: int

    def lines(self) -> List[str]:
        """A human-readable account, one line each (for the CLI)."""
        est, dec = self.estimate, self.decision
        out = ["Calibrated on %d persons from %s (%s); INT8 %s form" % (
            self.calibration_persons, self.calibration, self.method, self.target),
            "Accuracy gate: %s; %d of them with %d joints the FP32 model is confident about (peak >= %.2f)" % (
                self.scheme, est.counted, est.joints, CONFIDENT_SCORE),
            "Accuracy gate: estimated mean OKS loss vs FP32 %s, allowed %.3f (95%% upper bound, at least %d persons): "
            "%s, %s" % ("%.4f, 95%% upper bound %.4f" % (est.loss, est.upper) if est.counted > 1 else "unknown",
                        dec.tolerance, dec.min_persons, "passed" if self.passed else "FAILED", dec.why),
            "Accuracy gate: largest move of a confident joint %.1f crop pixels; %s" % (
                est.max_px_error, self.agreement.summary())]
        if self.reason:
            out.append(self.reason)
        out.append("Wrote %s (%s)" % (self.path, self.precision.upper()))
        return out


def fp16_path_for(out_path: Path) -> Path:
    """Where the FP16 fallback goes: ``int8`` in the name becomes ``fp16``, else ``-fp16`` is appended."""
    for tag in ("int8-cpu", "int8"):  # the CPU form's FP16 twin is just FP16
        if tag in out_path.name:
            return out_path.with_name(out_path.name.replace(tag, "fp16"))
    return out_path.with_name(out_path.stem + "-fp16" + out_path.suffix)


def write_fp16(fp32_path: PathLike, out_path: Path) -> Path:
    from edgepose.converters.fp16 import to_fp16

    return save_onnx(to_fp16(load_onnx(fp32_path)), out_path)


def _rounded(value: float) -> Optional[float]:
    """``value`` to 5 decimals for JSON; None for nan (no persons to estimate from)."""
    return None if np.isnan(value) else round(value, 5)


def _finish_int8(tmp: str, out_path: Path, result: Agreement, estimate: LossEstimate, decision: GateDecision,
                 scheme: str, forced: bool) -> Path:
    """Move the INT8 model into place with its gate figures in the metadata."""
    model = load_onnx(tmp)
    figures = {"oks_loss": _rounded(estimate.loss), "oks_loss_upper": _rounded(estimate.upper),
               "tolerance": decision.tolerance, "persons_counted": estimate.counted, "joints": estimate.joints,
               "scheme": scheme, "mean_oks": round(result.mean_oks, 5), "min_oks": round(result.min_oks, 5),
               "max_px_error": round(result.max_px_error, 2), "held_out_persons": result.persons,
               "passed": decision.passed, "forced": forced}
    update_onnx_props(model, {KEY_INT8_AGREEMENT: json.dumps(figures)})
    return save_onnx(model, out_path)


def score_unseen(train: np.ndarray, held_out: np.ndarray, tmp: str, quantize: Callable[[np.ndarray, str], object],
                 run: Callable[[str, np.ndarray], Sequence], hold_out_min: int, unit: str,
                 folds: int = CV_FOLDS) -> Tuple[list, list, str]:
    """Quantise the model kept into ``tmp`` and score items it, or a fold model, was not calibrated on.

    ``run(model_path, items)`` gives one output per item (``tmp``'s path for the quantised model; the FP32
    model is the caller's). With at least ``hold_out_min`` held-out items those, else cross-validation
    (module docstring). Returns (the scored items, their quantised outputs, the scheme in words, ``unit``
    naming the items).
    """
    if len(held_out) >= hold_out_min:
        quantize(train, tmp)
        return (list(held_out), list(run(tmp, held_out)),
                "%d held-out %s (calibrated on the other %d)" % (len(held_out), unit, len(train)))
    items = np.concatenate([train, held_out])
    k = min(folds, len(items))
    fold_of = np.arange(len(items)) % k
    outputs: list = [None] * len(items)
    with tempfile.TemporaryDirectory(prefix="edgepose-gate-") as folder:
        for f in range(k):
            fold_model = os.path.join(folder, "fold%d.onnx" % f)
            quantize(items[fold_of != f], fold_model)
            for i, out in zip(np.flatnonzero(fold_of == f), run(fold_model, items[fold_of == f])):
                outputs[i] = out
    quantize(items, tmp)
    return (list(items), outputs, "%d-fold cross-validation over all %d %s (each scored by a model not calibrated "
            "on it)" % (k, len(items), unit))


def _scored(fp32_path: PathLike, calib, tmp: str, quantize: Callable[[np.ndarray, str], object]
            ) -> Tuple[np.ndarray, np.ndarray, str]:
    """FP32 and INT8 heatmaps of persons the scored INT8 model was not calibrated on (module docstring)."""
    crops, int8, scheme = score_unseen(calib.crops, calib.held_out, tmp, quantize, model_heatmaps, HOLD_OUT_MIN,
                                       "persons")
    return model_heatmaps(fp32_path, np.stack(crops)), np.stack(int8), scheme


def make_int8(fp32_path: PathLike, out_path: PathLike, *, calib_source: Optional[PathLike] = None,
              target: str = "tensorrt", method: str = DEFAULT_METHOD, force: bool = False,
              fp16_fallback: bool = True, detector=None, max_persons: Optional[int] = None,
              tolerance: float = GATE_MAX_OKS_LOSS, min_persons: int = GATE_MIN_PERSONS,
              progress: Union[bool, ProgressCallback] = True,
              fallback_path: Optional[PathLike] = None) -> Int8Report:
    """Quantise ``fp32_path`` (an edgepose FP32 ONNX) to INT8 at ``out_path``, gated (module docstring).

    ``calib_source``: folder of photos, COCO keypoints .json, video or calibration-set .npz (None: the
    default public set, downloaded once). ``detector``: YoloxDetector or YOLOX .onnx path for folders
    and videos. ``tolerance``/``min_persons``: the gate's rule (:func:`edgepose.converters.gate.decide`).
    ``progress``: True for a progress bar on stderr while persons are found, False for none, or a callback
    (:data:`edgepose.calib.ProgressCallback`). Raises AccuracyGateError when the gate fails, ``force`` is
    off and ``fp16_fallback`` is off.
    ``fallback_path``: where the FP16 fallback goes (default: :func:`fp16_path_for` ``out_path``).
    """
    quantizer_options(target, method)  # bad target/method fail before any work
    out_path = Path(out_path)
    props = read_onnx_props(load_onnx(fp32_path, load_external_data=False))
    if not ModelMeta.has_edgepose_props(props):
        raise ModelFileError("%s has no edgepose metadata; convert it with `edgepose convert MODEL.onnx` first"
                             % fp32_path)
    meta = ModelMeta.from_props(props)
    calib = load_calibration(calib_source, meta, max_persons=max_persons or DEFAULT_MAX_PERSONS,
                             detector=detector, progress=progress)
    provenance = {"source": calib.source, "persons": calib.persons, "fingerprint": calib.fingerprint}

    def quantize(crops: np.ndarray, path: str) -> object:
        return quantize_int8(fp32_path, crops, path, target=target, method=method, provenance=provenance)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + out_path.name + ".", suffix=".tmp", dir=str(out_path.parent))
    os.close(fd)
    try:
        fp32_hm, int8_hm, scheme = _scored(fp32_path, calib, tmp, quantize)
        result = compare_heatmaps(fp32_hm, int8_hm, meta.input_size)
        estimate = estimate_loss(fp32_hm, int8_hm, meta.input_size)
        decision = decide(estimate, tolerance, min_persons)
        ok = decision.passed
        report = dict(target=target, method=method, agreement=result, estimate=estimate, decision=decision,
                      scheme=scheme, passed=ok, forced=force and not ok, calibration=calib.source,
                      calibration_persons=calib.persons)
        if ok or force:
            reason = "" if ok else "Kept INT8 anyway (--force): expect keypoints to differ from the FP32 model's."
            path = _finish_int8(tmp, out_path, result, estimate, decision, scheme, force and not ok)
            return Int8Report(path=path, precision="int8", fell_back=False, reason=reason, **report)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    worst = estimate.worst_joints(meta.keypoints)
    advice = ("calibrate on more, and more typical, persons (--calib DIR; the gate needs %d persons with confident "
              "joints), try another calibration method, or keep INT8 anyway with --force (e.g. a random-weight "
              "model for speed trials)" % min_persons)
    failure = "INT8 failed the accuracy gate: %s%s" % (decision.why, " (worst joints: %s)" % worst if worst else "")
    if not fp16_fallback:
        raise AccuracyGateError("%s of %s. Nothing was written; %s." % (failure, fp32_path, advice))
    path = write_fp16(fp32_path, Path(fallback_path) if fallback_path is not None else fp16_path_for(out_path))
    reason = "%s, so the FP16 model was written instead; %s." % (failure, advice)
    return Int8Report(path=path, precision="fp16", fell_back=True, reason=reason, **report)
