"""``make_detector_int8``: the INT8 flow of :mod:`edgepose.converters.precision`, for a YOLOX person detector.

1. whole images from ``calib_source`` letterboxed as the detector does
   (:func:`edgepose.calib.load_detector_calibration`);
2. Q/DQ quantisation for ``target`` (:func:`edgepose.converters.quantize.quantize_int8`; the head and,
   for TensorRT, the depthwise convolutions stay FP32);
3. the detector gate (:mod:`edgepose.converters.detgate`) on images the scored INT8 model was not
   calibrated on: the held-out fifth from HOLD_OUT_MIN held-out images on, else cross-validation,
   as for pose models (:func:`edgepose.converters.precision.score_unseen`);
4. the same delivery rules as pose models: passed (or ``force``): INT8 at ``out_path`` with the gate's
   figures in its metadata; failed: FP16 at ``fallback_path`` (or the FP16 name) and the reason, or with
   ``fp16_fallback`` off an AccuracyGateError and nothing written.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from edgepose.calib import DEFAULT_MAX_IMAGES, ImageSet, ProgressCallback, load_detector_calibration
from edgepose.converters.detgate import (
    MATCH_IOU, BoxAgreement, DetectorDecision, compare_boxes, decide_boxes, detect_all)
from edgepose.converters.gate import AccuracyGateError
from edgepose.converters.onnx_io import load_onnx, save_onnx
from edgepose.converters.precision import write_fp16, fp16_path_for, score_unseen
from edgepose.converters.quantize import DEFAULT_METHOD, quantize_int8, quantizer_options
from edgepose.errors import ModelFileError
from edgepose.fileio import PathLike
from edgepose.meta import KEY_INT8_AGREEMENT, DetectorMeta, model_kind, read_onnx_props, update_onnx_props

#: Held-out images from which the gate scores them alone (one quantisation); below, cross-validation.
HOLD_OUT_MIN = 10


@dataclass
class DetectorInt8Report:
    """What :func:`make_detector_int8` did; ``path`` is the INT8 model, or FP16 when ``fell_back``."""

    path: Path
    precision: str
    target: str
    method: str
    agreement: BoxAgreement
    decision: DetectorDecision
    scheme: str
    passed: bool
    forced: bool
    fell_back: bool
    reason: str
    calibration: str
    calibration_images: int

    def lines(self) -> List[str]:
        """A human-readable account, one line each (for the CLI)."""
        a, d = self.agreement, self.decision
        out = ["Calibrated on %d images from %s (%s); INT8 %s form" % (
            self.calibration_images, self.calibration, self.method, self.target),
            "Detector gate: %s; FP32 finds %d persons, INT8 %d, %d of them the same (IoU >= %.2f)" % (
                self.scheme, a.reference_boxes, a.boxes, a.matched, MATCH_IOU),
            "Detector gate: recall %.3f (95%% lower bound %.3f), precision %.3f (%.3f); required: bounds >= %.2f "
            "with at least %d FP32 persons: %s, %s" % (a.recall, a.recall_lower, a.precision, a.precision_lower,
                                                       d.min_agreement, d.min_boxes,
                                                       "passed" if self.passed else "FAILED", d.why)]
        if self.reason:
            out.append(self.reason)
        out.append("Wrote %s (%s)" % (self.path, self.precision.upper()))
        return out


def make_detector_int8(fp32_path: PathLike, out_path: PathLike, *, calib_source: Optional[PathLike] = None,
                       target: str = "tensorrt", method: str = DEFAULT_METHOD, force: bool = False,
                       fp16_fallback: bool = True, max_images: int = DEFAULT_MAX_IMAGES,
                       progress: Union[bool, ProgressCallback] = True,
                       fallback_path: Optional[PathLike] = None) -> DetectorInt8Report:
    """Quantise the converted FP32 detector ``fp32_path`` to INT8 at ``out_path``, gated (module docstring).

    ``calib_source``: folder of images, COCO .json, video or calibration .npz (None: the default set).
    Raises AccuracyGateError when the gate fails, ``force`` is off and ``fp16_fallback`` is off.
    """
    quantizer_options(target, method)
    out_path = Path(out_path)
    props = read_onnx_props(load_onnx(fp32_path, load_external_data=False))
    if model_kind(props) != "detector":
        raise ModelFileError("%s is not a converted detector; convert it with `edgepose convert DETECTOR.onnx` "
                             "first" % fp32_path)
    meta = DetectorMeta.from_props(props)
    calib = load_detector_calibration(calib_source, meta.input_size, max_images=max_images, progress=progress)

    def quantize(images: np.ndarray, path: str) -> object:
        return quantize_int8(fp32_path, ImageSet.blob(images), path, target=target, method=method,
                             provenance={"source": calib.source, "images": calib.count})

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + out_path.name + ".", suffix=".tmp", dir=str(out_path.parent))
    os.close(fd)
    try:
        images, int8_boxes, scheme = score_unseen(calib.images, calib.held_out, tmp, quantize, detect_all,
                                                  HOLD_OUT_MIN, "images")
        agreement = compare_boxes(detect_all(fp32_path, np.stack(images)), int8_boxes)
        decision = decide_boxes(agreement)
        report = dict(target=target, method=method, agreement=agreement, decision=decision, scheme=scheme,
                      passed=decision.passed, forced=force and not decision.passed, calibration=calib.source,
                      calibration_images=calib.count)
        if decision.passed or force:
            model = load_onnx(tmp)
            figures = dict(agreement.as_dict(), scheme=scheme, passed=decision.passed, forced=report["forced"],
                           min_agreement=decision.min_agreement, min_boxes=decision.min_boxes)
            update_onnx_props(model, {KEY_INT8_AGREEMENT: json.dumps(figures)})
            path = save_onnx(model, out_path)
            reason = "" if decision.passed else "Kept INT8 anyway (--force): expect boxes to differ from FP32's."
            return DetectorInt8Report(path=path, precision="int8", fell_back=False, reason=reason, **report)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    advice = ("calibrate on more, and more typical, images with people (--calib DIR or a video), try the other "
              "--target, or keep INT8 anyway with --force")
    failure = "INT8 failed the detector gate: %s" % decision.why
    if not fp16_fallback:
        raise AccuracyGateError("%s of %s. Nothing was written; %s." % (failure, fp32_path, advice))
    path = write_fp16(fp32_path, Path(fallback_path) if fallback_path is not None else fp16_path_for(out_path))
    reason = "%s, so the FP16 model was written instead; %s." % (failure, advice)
    return DetectorInt8Report(path=path, precision="fp16", fell_back=True, reason=reason, **report)


__all__ = ["DetectorInt8Report", "HOLD_OUT_MIN", "make_detector_int8"]
