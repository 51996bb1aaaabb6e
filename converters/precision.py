"""``make_int8``: calibrate, quantise, measure, and keep INT8 only when it follows FP32 closely enough.

1. person crops from ``calib_source`` (or the default public set) via :func:`edgepose.calib.load_calibration`;
2. Q/DQ quantisation for ``target`` (:func:`edgepose.converters.quantize.quantize_int8`) into a
   temporary file beside the output;
3. the accuracy gate (:mod:`edgepose.converters.gate`) on the held-out crops;
4. gate passed (or ``force``): the INT8 model moves to ``out_path``, its agreement figures in its
   metadata. Gate failed: nothing is left at ``out_path``; with ``fp16_fallback`` the FP16 model is
   written instead (its name says fp16) and the report says why, else AccuracyGateError.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import onnx
from onnx import helper

from edgepose.converters.export import save_onnx
from edgepose.converters.gate import GATE_MIN_MEAN_OKS, AccuracyGateError, Agreement, agreement, passes
from edgepose.converters.quantize import DEFAULT_METHOD, quantize_int8, quantizer_options
from edgepose.errors import ModelFileError
from edgepose.meta import PREFIX, ModelMeta

PathLike = Union[str, Path]
KEY_AGREEMENT = PREFIX + "int8_agreement"


@dataclass
class Int8Report:
    """What :func:`make_int8` did. ``path`` is the file written: the INT8 model, or the FP16 model
    when ``fell_back`` (``reason`` says why)."""

    path: Path
    precision: str
    target: str
    method: str
    agreement: Agreement
    threshold: float
    passed: bool
    forced: bool
    fell_back: bool
    reason: str
    calibration: str
    calibration_persons: int

    def lines(self) -> List[str]:
        """A human-readable account, one line each (for the CLI)."""
        out = ["Calibrated on %d persons from %s (%s); INT8 %s form" % (
            self.calibration_persons, self.calibration, self.method, self.target),
            "Accuracy gate: %s; needs mean OKS agreement >= %.3f: %s" % (
                self.agreement.summary(), self.threshold, "passed" if self.passed else "FAILED")]
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


def _write_fp16(fp32_path: PathLike, out_path: Path) -> Path:
    from edgepose.converters.fp16 import to_fp16

    return save_onnx(to_fp16(onnx.load(str(fp32_path))), out_path)


def _finish_int8(tmp: str, out_path: Path, result: Agreement, threshold: float, forced: bool) -> Path:
    """Move the INT8 model into place with its gate figures in the metadata."""
    model = onnx.load(tmp)
    figures = {"mean_oks": round(result.mean_oks, 5), "min_oks": round(result.min_oks, 5),
               "max_px_error": round(result.max_px_error, 2), "held_out_persons": result.persons,
               "threshold": threshold, "forced": forced}
    helper.set_model_props(model, dict({p.key: p.value for p in model.metadata_props},
                                            **{KEY_AGREEMENT: json.dumps(figures)}))
    return save_onnx(model, out_path)


def make_int8(fp32_path: PathLike, out_path: PathLike, *, calib_source: Optional[PathLike] = None,
              target: str = "tensorrt", method: str = DEFAULT_METHOD, force: bool = False,
              fp16_fallback: bool = True, detector=None, max_persons: Optional[int] = None,
              threshold: float = GATE_MIN_MEAN_OKS, progress: bool = True,
              fallback_path: Optional[PathLike] = None) -> Int8Report:
    """Quantise ``fp32_path`` (an edgepose FP32 ONNX) to INT8 at ``out_path``, gated (module docstring).

    ``calib_source``: folder of photos, COCO keypoints .json, video or calibration-set .npz (None: the
    default public set, downloaded once). ``detector``: YoloxDetector or YOLOX .onnx path for folders
    and videos. Raises AccuracyGateError when the gate fails, ``force`` is off and ``fp16_fallback`` is off.
    ``fallback_path``: where the FP16 fallback goes (default: :func:`fp16_path_for` ``out_path``).
    """
    from edgepose.calib import DEFAULT_MAX_PERSONS, load_calibration

    quantizer_options(target, method)  # bad target/method fail before any work
    out_path = Path(out_path)
    model = onnx.load(str(fp32_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if not ModelMeta.has_edgepose_props(props):
        raise ModelFileError("%s has no edgepose metadata; convert it with `edgepose convert MODEL.onnx` first"
                             % fp32_path)
    meta = ModelMeta.from_props(props)
    calib = load_calibration(calib_source, meta, max_persons=max_persons or DEFAULT_MAX_PERSONS,
                             detector=detector, progress=progress)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + out_path.name + ".", suffix=".tmp", dir=str(out_path.parent))
    os.close(fd)
    try:
        quantize_int8(fp32_path, calib.crops, tmp, target=target, method=method,
                      provenance={"source": calib.source, "persons": calib.persons, "fingerprint": calib.fingerprint})
        result = agreement(fp32_path, tmp, calib.held_out, meta)
        ok = passes(result, threshold)
        report = dict(target=target, method=method, agreement=result, threshold=threshold, passed=ok,
                      forced=force and not ok, calibration=calib.source, calibration_persons=calib.persons)
        if ok or force:
            reason = "" if ok else "Kept INT8 anyway (--force): expect keypoints to differ from the FP32 model's."
            path = _finish_int8(tmp, out_path, result, threshold, force and not ok)
            return Int8Report(path=path, precision="int8", fell_back=False, reason=reason, **report)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    advice = ("calibrate on more, and more typical, persons (--calib DIR), try another calibration method, or "
              "keep INT8 anyway with --force (e.g. a random-weight model for speed trials)")
    if not fp16_fallback:
        raise AccuracyGateError("INT8 %s failed the accuracy gate: %s, below the %.3f required (worst joints: "
                                "%s). Nothing was written; %s." % (
                                    fp32_path, result.summary(), threshold,
                                    result.worst_joints(meta.keypoints), advice))
    path = _write_fp16(fp32_path, Path(fallback_path) if fallback_path is not None else fp16_path_for(out_path))
    reason = ("INT8 failed the accuracy gate (mean OKS agreement %.4f < %.3f; worst joints: %s), so the FP16 "
              "model was written instead; %s." % (result.mean_oks, threshold, result.worst_joints(meta.keypoints),
                                                  advice))
    return Int8Report(path=path, precision="fp16", fell_back=True, reason=reason, **report)
