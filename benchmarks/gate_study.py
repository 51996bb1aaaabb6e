#!/usr/bin/env python
"""Does the INT8 accuracy gate (edgepose.converters.gate) pass near-lossless models and refuse broken ones?

Run from the project venv:

    python benchmarks/gate_study.py --json gate_study.json

No trained weights can be downloaded here, so two kinds of evidence:

A. **Trained-like heatmaps with ground truth** (the estimate against the real loss). The 12 COCO persons
   of ``<shared>/data/coco_kpt_mini`` plus 7 mirror images (19 persons, as many as demo_media has) are
   cropped by the runtime's pre-processing. FP32 heatmaps are drawn as a trained model's look: per
   labelled joint a Gaussian (sigma 2 heatmap pixels, the zoo's training target) of peak U(0.6, 0.95) at
   the ground truth plus an isotropic Gaussian error sized so that the expected OKS is 0.79 (the measured
   FP32 mean OKS of a real mobile_pose_mobilenetv3_small); per unlabelled joint two weak guesses (peaks
   U(0.1, 0.45)) at random places; background noise of 0.01. A candidate is the FP32 heatmaps plus
   smooth noise of relative level ``eta`` (white noise blurred by a 1-pixel Gaussian, scaled to RMS
   ``eta`` times the joint's peak): what quantisation noise does to the last layer's output. Per level,
   ``--draws`` independent draws; the **real loss** is the drop of mean OKS against the COCO ground truth
   (pycocotools' formula, each person's own segment area), the gate sees only the two sets of heatmaps.
B. **A real network with calibrated statistics** (real ONNX Runtime, the real quantiser, make_int8).
   mobile_pose_mobilenetv3_small with random weights whose every convolution is re-normalised, layer by
   layer, to zero mean and unit variance per channel on the real person crops (what BatchNorm's running
   statistics do in a trained model); the heatmap layer is scaled so that the median FP32 peak is 0.8,
   so the gate counts the joints. Its keypoints mean nothing, so the reference is the FP32 model itself:
   FP16 (known-good), INT8 from ``make_int8`` with default options in both targets and all three methods,
   calibrated on demo_media's 19 persons (cross-validated), and INT8 with every activation scale x4 and
   /4 (broken), plus Gaussian weight noise of known size.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import onnx
from onnx import helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_zoo_cpu import cpu_flags, cpu_model  # noqa: E402
from support import DATA, random_model  # noqa: E402

from edgepose.calib import load_calibration  # noqa: E402
from edgepose.coco import gt_person_boxes, load_coco  # noqa: E402
from edgepose.converters.gate import (  # noqa: E402
    CONFIDENT_SCORE, GATE_MAX_OKS_LOSS, decide, estimate_loss, model_heatmaps)
from edgepose.converters.precision import make_int8  # noqa: E402
from edgepose.converters.quantize import METHODS, TARGETS, final_heatmap_node, quantize_int8  # noqa: E402
from edgepose.keypoints import COCO_FLIP_PAIRS, COCO_OKS_SIGMAS, flip_permutation  # noqa: E402
from edgepose.meta import ModelMeta, read_onnx_props  # noqa: E402
from edgepose.live.track import keypoint_oks  # noqa: E402
from edgepose.transforms import affine_matrices, flip_batch, preprocess  # noqa: E402

COCO_FILE = DATA / "coco_kpt_mini" / "test_coco.json"
DEMO = DATA / "demo_media"
DETECTOR = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
MODEL = "mobile_pose_mobilenetv3_small"
HW = (256, 192)
STRIDE = 4
FP32_OKS = 0.79
ETAS = (0.0, 0.01, 0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3)


# --------------------------------------------------------------------------- A: trained-like heatmaps
def coco_persons(meta: ModelMeta) -> Dict[str, np.ndarray]:
    """Ground truth of the COCO persons in crop pixels: keypoints (P, 17, 2), labelled (P, 17), area (P,)
    in crop pixels^2; then the same persons mirrored (flip test convention: x -> W - 1 - x, pairs swapped)."""
    coco = load_coco(COCO_FILE)
    kps, vis, area = [], [], []
    for image_id in sorted(coco.getImgIds()):
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=[1], iscrowd=False))
                if a.get("num_keypoints", 0) > 0 and max(a["keypoints"]) > 0 and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        boxes = gt_person_boxes(coco, image_id)[:, :4]
        info = coco.loadImgs(image_id)[0]
        crops = preprocess(np.zeros((info["height"], info["width"], 3), np.uint8), boxes, meta, image_is_rgb=False)
        mats = affine_matrices(crops.center, crops.scale, HW)
        for ann, m in zip(anns, mats):
            k = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
            kps.append(k[:, :2] @ m[:, :2].T + m[:, 2])
            vis.append(k[:, 2] > 0)
            area.append(ann["area"] * m[0, 0] ** 2)
    kps, vis, area = np.array(kps), np.array(vis), np.array(area)
    perm = flip_permutation(17, COCO_FLIP_PAIRS)
    mirrored = kps[:, perm].copy()
    mirrored[..., 0] = HW[1] - 1 - mirrored[..., 0]
    extra = np.arange(7)
    return {"kps": np.concatenate([kps, mirrored[extra]]), "vis": np.concatenate([vis, vis[extra][:, perm]]),
            "area": np.concatenate([area, area[extra]])}


def _blob(cx: np.ndarray, cy: np.ndarray, peak: np.ndarray, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return peak[..., None, None] * np.exp(-((xx - cx[..., None, None]) ** 2 + (yy - cy[..., None, None]) ** 2) / 8.0)


def trained_like(persons: Dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """FP32 heatmaps (P, 17, 64, 48) as a trained model gives them (module docstring)."""
    p = len(persons["kps"])
    h, w = HW[0] // STRIDE, HW[1] // STRIDE
    a = persons["area"][:, None] * (2 * np.asarray(COCO_OKS_SIGMAS)) ** 2  # crop px^2
    err = rng.normal(size=(p, 17, 2)) * np.sqrt(a * (1 / FP32_OKS - 1))[..., None]
    centre = (persons["kps"] + err) / STRIDE
    peak = rng.uniform(0.6, 0.95, (p, 17))
    labelled = _blob(centre[..., 0], centre[..., 1], peak, h, w)
    guesses = sum(_blob(rng.uniform(0, w, (p, 17)), rng.uniform(0, h, (p, 17)), rng.uniform(0.1, 0.45, (p, 17)), h, w)
                  for _ in range(2))
    hm = np.where(persons["vis"][..., None, None], labelled, guesses)
    return (hm + rng.normal(0, 0.01, hm.shape)).astype(np.float32)


def smooth_noise(shape, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(size=shape).astype(np.float32)
    flat = noise.reshape(-1, shape[-2], shape[-1])
    for i in range(len(flat)):
        flat[i] = cv2.GaussianBlur(flat[i], (0, 0), 1.0)
    return noise / noise.std()


def true_oks(hm: np.ndarray, persons: Dict[str, np.ndarray]) -> np.ndarray:
    """OKS of each person's decoded keypoints against its ground truth (COCO: labelled joints, segment area)."""
    from edgepose.converters.gate import crop_keypoints

    kps, _ = crop_keypoints(hm, HW)
    return np.array([keypoint_oks(persons["kps"][i:i + 1], persons["vis"][i:i + 1], kps[i:i + 1],
                                  np.ones((1, 17), bool), persons["area"][i:i + 1])[0, 0] for i in range(len(kps))])


def study_heatmaps(draws: int, seed: int = 0) -> List[dict]:
    meta = ModelMeta(input_size=HW)
    persons = coco_persons(meta)
    rng = np.random.default_rng(seed)
    rows = []
    for eta in ETAS:
        real, est, upper, passed, fp32 = [], [], [], [], []
        for _ in range(draws):
            ref = trained_like(persons, rng)
            peaks = ref.max(axis=(2, 3), keepdims=True)
            cand = ref + eta * peaks * smooth_noise(ref.shape, rng)
            base = true_oks(ref, persons)
            real.append(float(base.mean() - true_oks(cand, persons).mean()))
            fp32.append(float(base.mean()))
            e = estimate_loss(ref, cand, HW)
            est.append(e.loss)
            upper.append(e.upper)
            passed.append(decide(e).passed)
        rows.append({"eta": eta, "persons": len(persons["kps"]), "draws": draws, "fp32_oks": float(np.mean(fp32)),
                     "real_loss": float(np.mean(real)), "real_loss_p90": float(np.quantile(real, 0.9)),
                     "estimate": float(np.mean(est)), "upper": float(np.mean(upper)),
                     "pass_rate": float(np.mean(passed))})
        print("A eta %.3f: FP32 OKS %.3f, real loss %.4f (p90 %.4f), estimate %.4f, upper %.4f, passed %.0f%%"
              % (eta, rows[-1]["fp32_oks"], rows[-1]["real_loss"], rows[-1]["real_loss_p90"], rows[-1]["estimate"],
                 rows[-1]["upper"], 100 * rows[-1]["pass_rate"]), flush=True)
    return rows


# --------------------------------------------------------------------------- B: a real network
def calibrated_statistics(path: Path, crops: np.ndarray, out: Path, peak: float = 0.8) -> Path:
    """``path`` with every convolution but the last re-normalised per channel on ``crops`` (module doc),
    and the last one scaled so that the median heatmap peak is ``peak``."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    final = final_heatmap_node(model)
    for node in [n for n in model.graph.node if n.op_type == "Conv"]:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        scale = 1.0
        if node is final:
            del probe.graph.output[:]
            probe.graph.output.append(helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
        else:
            probe.graph.output.append(helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        y = session.run([node.output[0]], {session.get_inputs()[0].name: crops})[0].astype(np.float64)
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        if node is final:
            scale = peak / float(np.median(y.max(axis=(2, 3))))
            inits[node.input[1]].CopyFrom(numpy_helper.from_array((weight * scale).astype(np.float32), node.input[1]))
            continue
        mean, std = y.mean(axis=(0, 2, 3)), y.std(axis=(0, 2, 3)) + 1e-6
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(
            (weight / std[:, None, None, None]).astype(np.float32), node.input[1]))
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 else 0.0
        new_bias = ((bias - mean) / std).astype(np.float32)
        if len(node.input) > 2:
            inits[node.input[2]].CopyFrom(numpy_helper.from_array(new_bias, node.input[2]))
        else:
            name = node.name + "_calibrated_bias"
            model.graph.initializer.append(numpy_helper.from_array(new_bias, name))
            node.input.append(name)
            inits[name] = model.graph.initializer[-1]
    onnx.save(model, str(out))
    return out


def wrong_scales(int8_path: Path, factor: float, out: Path) -> Path:
    """The Q/DQ model with every per-tensor (activation) scale multiplied by ``factor``."""
    model = onnx.load(str(int8_path))
    names = {n.input[1] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    for init in model.graph.initializer:
        if init.name in names:
            value = numpy_helper.to_array(init)
            if value.size == 1:
                init.CopyFrom(numpy_helper.from_array((value * factor).astype(value.dtype), init.name))
    onnx.save(model, str(out))
    return out


def weight_noise(path: Path, level: float, out: Path, seed: int = 0) -> Path:
    """Every convolution weight plus Gaussian noise of ``level`` times its tensor's RMS."""
    rng = np.random.default_rng(seed)
    model = onnx.load(str(path))
    weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    for init in model.graph.initializer:
        if init.name in weights:
            w = numpy_helper.to_array(init)
            noisy = w + level * np.sqrt(np.mean(w ** 2)) * rng.normal(size=w.shape)
            init.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), init.name))
    onnx.save(model, str(out))
    return out


def study_network(folder: Path) -> List[dict]:
    from edgepose.converters.fp16 import to_fp16

    fp32_random = random_model(MODEL)
    meta = ModelMeta.from_props(read_onnx_props(onnx.load(str(fp32_random))))
    demo = load_calibration(DEMO, meta, detector=DETECTOR, progress=False)
    coco = load_calibration(COCO_FILE, meta, progress=False)
    crops = np.concatenate([demo.crops, demo.held_out])
    everyone = np.concatenate([crops, coco.crops, coco.held_out])
    t0 = time.perf_counter()
    fp32 = calibrated_statistics(fp32_random, np.concatenate([everyone, flip_batch(everyone)]), folder / "fp32.onnx")
    print("B calibrated statistics in %.0f s" % (time.perf_counter() - t0), flush=True)
    ref = model_heatmaps(fp32, crops)
    rows = []

    def gate(name: str, path: Path, **extra) -> None:
        e = estimate_loss(ref, model_heatmaps(path, crops), meta.input_size)
        d = decide(e)
        rows.append(dict({"candidate": name, "persons": e.persons, "counted": e.counted, "joints": e.joints,
                          "estimate": e.loss, "upper": e.upper, "max_px": e.max_px_error, "passed": d.passed},
                         **extra))
        print("B %-34s counted %2d/%d, %3d joints, estimate %.4f, upper %.4f, max move %.1f px: %s"
              % (name, e.counted, e.persons, e.joints, e.loss, e.upper, e.max_px_error,
                 "passed" if d.passed else "FAILED"), flush=True)

    onnx.save(to_fp16(onnx.load(str(fp32))), str(folder / "fp16.onnx"))
    gate("FP16", folder / "fp16.onnx")
    for level in (0.001, 0.003, 0.01, 0.03):
        gate("weight noise %.3f" % level, weight_noise(fp32, level, folder / "noise.onnx"))
    quantize_int8(fp32, crops, folder / "int8.onnx", target="cpu")
    gate("INT8 cpu percentile, in-sample", folder / "int8.onnx")
    for factor in (4.0, 0.25):
        gate("INT8 cpu, activation scales x%g" % factor, wrong_scales(folder / "int8.onnx", factor,
                                                                      folder / "wrong.onnx"))
    for target in TARGETS:
        for method in METHODS:
            t0 = time.perf_counter()
            rep = make_int8(fp32, folder / ("m-%s-%s-int8.onnx" % (target, method)), calib_source=DEMO,
                            detector=DETECTOR, target=target, method=method, progress=False)
            e = rep.estimate
            rows.append({"candidate": "make_int8 %s %s" % (target, method), "persons": e.persons,
                         "counted": e.counted, "joints": e.joints, "estimate": e.loss, "upper": e.upper,
                         "max_px": e.max_px_error, "passed": rep.passed, "seconds": time.perf_counter() - t0})
            print("B %-34s counted %2d/%d, %3d joints, estimate %.4f, upper %.4f, max move %.1f px: %s (%.0f s)"
                  % (rows[-1]["candidate"], e.counted, e.persons, e.joints, e.loss, e.upper, e.max_px_error,
                     "passed" if rep.passed else "FAILED", rows[-1]["seconds"]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=100, help="draws per noise level in part A")
    ap.add_argument("--skip-network", action="store_true", help="part A only")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("EDGEPOSE_HOME", tempfile.mkdtemp(prefix="edgepose-gate-study-"))
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print("%s; %s; flags %s; Python %s; confident >= %.2f, tolerance %.3f"
          % (started, cpu_model(), cpu_flags(), platform.python_version(), CONFIDENT_SCORE, GATE_MAX_OKS_LOSS))
    result = {"date": started, "cpu": cpu_model(), "flags": cpu_flags(), "heatmaps": study_heatmaps(args.draws)}
    if not args.skip_network:
        with tempfile.TemporaryDirectory(prefix="edgepose-gate-study-") as folder:
            result["network"] = study_network(Path(folder))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
