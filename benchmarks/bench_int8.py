#!/usr/bin/env python
"""INT8 on this CPU: calibration methods compared, and INT8 vs FP32 speed in ONNX Runtime.

Run from the project venv:

    python benchmarks/bench_int8.py --markdown int8.md --json int8.json

Calibration data: every real person of ../shared/data (coco_kpt_mini with its ground-truth boxes,
demo_media photos and demo.mp4 through the YOLOX-Nano detector), made into crops by the runtime's
pre-processing, plus their mirror images (what the flip test feeds); every 5th person is held out.

1. Methods (``--models``): per model, target (tensorrt, cpu) and method (minmax, entropy,
   percentile), the INT8 model's agreement with FP32 on the held-out crops (edgepose.converters.gate:
   mean and min OKS agreement, largest keypoint error in crop pixels, heatmap SQNR). Models: random
   weights (seed 0), and the GluonCV parity fixtures (``fixture:NAME``: random weights with calibrated
   BatchNorm statistics, so activations have realistic ranges). For scale, per model: how far FP16
   (edgepose.converters.fp16) and Gaussian input noise of 1e-3 move the same figures.
2. Speed (``--speed-models``): FP32 (as exported) against the INT8 cpu form (default method) and,
   for information, the tensorrt form on ORT's CPU kernels; ``--ablations`` adds the FP32 graph
   after the INT8 rewrite and the cpu form with the 3x3 (untrimmed) deconvolution rewrite. All sessions
   run in one process, ``--threads`` intra-op threads, one batch of ``--batch`` real crops; rounds
   alternate the variants, and the speed-up is the median over rounds of FP32 time / variant time,
   so machine noise hits both alike ("other load": CPUs other processes used meanwhile).
   ``--profile`` adds ONNX Runtime's per-operator time split of the INT8 model.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import onnx
import onnxruntime as ort

from bench_zoo_cpu import CpuMeter, cpu_flags, cpu_model, make_session, ort_profile
from edgepose.calib import load_calibration
from edgepose.converters.export import build_onnx, load_weights_file
from edgepose.converters.gate import compare_heatmaps
from edgepose.converters.graph import RandomWeights
from edgepose.converters.quantize import DEFAULT_METHOD, METHODS, TARGETS, prepare_graph, quantize_model
from edgepose.converters.rewrite import deconv_to_conv_depth_to_space
from edgepose.converters.zoo import get_entry
from edgepose.meta import ModelMeta, read_onnx_props
from edgepose.transforms import flip_batch

SHARED = Path(os.environ.get("EDGEPOSE_SHARED") or Path(__file__).resolve().parents[2] / "shared")
DATA = SHARED / "data"
FIXTURES = SHARED / "parity" / "fixtures"
DETECTOR = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
SOURCES = (DATA / "coco_kpt_mini" / "test_coco.json", DATA / "demo_media", DATA / "demo_media" / "demo.mp4")
METHOD_MODELS = ("simple_pose_resnet18_v1b,mobile_pose_resnet18_v1b,mobile_pose_mobilenetv3_small,"
                 "fixture:simple_pose_resnet18_v1b,fixture:mobile_pose_mobilenet1.0,"
                 "fixture:mobile_pose_mobilenetv2_1.0,fixture:mobile_pose_mobilenetv3_large,"
                 "fixture:mobile_pose_mobilenetv3_small")
SPEED_MODELS = "simple_pose_resnet18_v1b,mobile_pose_resnet18_v1b,mobile_pose_mobilenetv3_small"


def build_model(spec: str) -> onnx.ModelProto:
    """``NAME`` (random weights, seed 0) or ``fixture:NAME`` (the parity fixture's weights)."""
    if spec.startswith("fixture:"):
        name = spec.split(":", 1)[1]
        return build_onnx(get_entry(name), load_weights_file(FIXTURES / (name + ".params")), "fixture")
    return build_onnx(get_entry(spec), RandomWeights(0), "random")


def calibration_data(meta: ModelMeta) -> tuple:
    """(calibration crops, held-out crops) from every shared source, each with its mirror images."""
    sets = [load_calibration(src, meta, detector=DETECTOR, progress=False) for src in SOURCES]
    calib = np.concatenate([s.crops for s in sets])
    held = np.concatenate([s.held_out for s in sets])
    return np.concatenate([calib, flip_batch(calib)]), np.concatenate([held, flip_batch(held)])


def run_model(model: onnx.ModelProto, x: np.ndarray, threads: int, batch: int = 16) -> np.ndarray:
    sess = make_session(model.SerializeToString(), threads, "all")
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


# --------------------------------------------------------------------------- 1. methods
def sensitivity(spec: str, model: onnx.ModelProto, held: np.ndarray, reference: np.ndarray, meta: ModelMeta,
                threads: int) -> dict:
    """How far FP16, and input noise of 1e-3 (~0.06 grey levels), move this model's output."""
    from edgepose.converters.fp16 import to_fp16

    noisy = held + np.random.default_rng(0).normal(0, 1e-3, held.shape).astype(np.float32)
    fp16 = compare_heatmaps(reference, run_model(to_fp16(model), held, threads), meta.input_size)
    noise = compare_heatmaps(reference, run_model(model, noisy, threads), meta.input_size)
    return {"model": spec, "fp16_oks": fp16.mean_oks, "fp16_sqnr_db": fp16.sqnr_db, "noise_oks": noise.mean_oks,
            "noise_sqnr_db": noise.sqnr_db,
            "peak_median": float(np.median(reference.reshape(len(reference), reference.shape[1], -1).max(-1)))}


def compare_methods(specs: List[str], methods: List[str], threads: int) -> tuple:
    rows, models = [], []
    for spec in specs:
        model = build_model(spec)
        meta = ModelMeta.from_props(read_onnx_props(model))
        calib, held = calibration_data(meta)
        reference = run_model(model, held, threads)
        models.append(sensitivity(spec, model, held, reference, meta, threads))
        prepared = prepare_graph(model)
        for target in TARGETS:
            for method in methods:
                t0 = time.perf_counter()
                quantized = quantize_model(prepared, calib, target=target, method=method)
                seconds = time.perf_counter() - t0
                a = compare_heatmaps(reference, run_model(quantized, held, threads), meta.input_size)
                rows.append({"model": spec, "target": target, "method": method, "mean_oks": a.mean_oks,
                             "min_oks": a.min_oks, "max_px": a.max_px_error, "sqnr_db": a.sqnr_db,
                             "quantize_s": seconds, "calib_crops": len(calib), "held_out": len(held)})
                print("methods: %-40s %-8s %-10s OKS %.4f (min %.4f) max %.1f px SQNR %.1f dB  %.0f s" % (
                    spec, target, method, a.mean_oks, a.min_oks, a.max_px_error, a.sqnr_db, seconds),
                    file=sys.stderr)
    return rows, models


# --------------------------------------------------------------------------- 2. speed
def speed_variants(model: onnx.ModelProto, calib: np.ndarray, method: str,
                   ablations: bool) -> Dict[str, onnx.ModelProto]:
    variants = {"FP32": model}
    if ablations:
        variants["FP32 after the INT8 rewrite"] = prepare_graph(model)
    variants["INT8 cpu form"] = quantize_model(prepare_graph(model), calib,
                                               target="cpu", method=method)
    if ablations:
        variants["INT8 cpu form, 3x3 deconvolution rewrite"] = quantize_model(
            deconv_to_conv_depth_to_space(model, trim=False), calib, target="cpu", method=method)
    variants["INT8 tensorrt form (on ORT CPU)"] = quantize_model(prepare_graph(model),
                                                                 calib, target="tensorrt", method=method)
    return variants


def measure_speed(spec: str, args: argparse.Namespace, meter: CpuMeter) -> List[dict]:
    model = build_model(spec)
    meta = ModelMeta.from_props(read_onnx_props(model))
    calib, held = calibration_data(meta)
    x = np.concatenate([calib, held])[:args.batch]
    variants = speed_variants(model, calib, args.method, args.ablations)
    sessions = {k: make_session(v.SerializeToString(), args.threads, "all") for k, v in variants.items()}
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(2):
            s.run(None, feeds[k])
    times: Dict[str, List[float]] = {k: [] for k in sessions}
    meter.start()
    for _ in range(args.rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append(time.perf_counter() - t0)
    load = meter.stop()
    fp32 = np.array(times["FP32"])
    rows = []
    for k, t in times.items():
        t = np.array(t)
        rows.append({"model": spec, "variant": k, "batch": args.batch, "threads": args.threads,
                     "rounds": args.rounds, "median_ms": 1e3 * float(np.median(t)), "min_ms": 1e3 * float(t.min()),
                     "speedup": float(np.median(fp32 / t)), "other_load_cpus": load})
        print("speed: %-32s %-40s %8.1f ms  x%.2f" % (spec, k, rows[-1]["median_ms"], rows[-1]["speedup"]),
              file=sys.stderr)
    if args.profile:
        key = "INT8 cpu form"
        profile = ort_profile(variants[key].SerializeToString(), x, args.threads, "all", 5,
                              Path(args.profile_dir), spec)
        rows.append({"model": spec, "variant": key, "profile": [(op, ms, share) for op, ms, share in profile[:8]]})
    return rows


# --------------------------------------------------------------------------- output
def machine() -> str:
    return "\n".join([
        "- Date: %s" % datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "- CPU: %s (%s), %s logical CPUs; %s %s" % (cpu_model(), cpu_flags(), os.cpu_count(),
                                                    platform.system(), platform.release()),
        "- ONNX Runtime %s (CPUExecutionProvider), onnx %s, NumPy %s, Python %s" % (
            ort.__version__, onnx.__version__, np.__version__, platform.python_version()),
    ])


def methods_markdown(rows: List[dict]) -> str:
    lines = ["| model | target | method | mean OKS agr. | min OKS agr. | max px err | heatmap SQNR dB | quantise s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| %s | %s | %s | %.4f | %.4f | %.1f | %.1f | %.0f |" % (
            r["model"], r["target"], r["method"], r["mean_oks"], r["min_oks"], r["max_px"], r["sqnr_db"],
            r["quantize_s"]))
    return "\n".join(lines)


def sensitivity_markdown(rows: List[dict]) -> str:
    lines = ["| model | median heatmap peak | FP16: OKS agr. | FP16: SQNR dB | input noise 1e-3: OKS agr. "
             "| input noise 1e-3: SQNR dB |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| %s | %.3f | %.4f | %.1f | %.4f | %.1f |" % (
            r["model"], r["peak_median"], r["fp16_oks"], r["fp16_sqnr_db"], r["noise_oks"], r["noise_sqnr_db"]))
    return "\n".join(lines)


def speed_markdown(rows: List[dict]) -> str:
    lines = ["| model | variant | ms / batch (median) | ms / person | speed-up vs FP32 | other load |",
             "|---|---|---:|---:|---:|---:|"]
    profiles = []
    for r in rows:
        if "profile" in r:
            profiles.append("- %s, %s: %s" % (r["model"], r["variant"], ", ".join(
                "%s %.0f%%" % (op, 100 * share) for op, _, share in r["profile"])))
            continue
        lines.append("| %s | %s | %.1f | %.1f | %.2fx | %s |" % (
            r["model"], r["variant"], r["median_ms"], r["median_ms"] / r["batch"], r["speedup"],
            "—" if r["other_load_cpus"] is None else "%.2f" % r["other_load_cpus"]))
    return "\n".join(lines + ([""] + ["ONNX Runtime profile (share of kernel time):"] + profiles if profiles else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=METHOD_MODELS, help="models of the method comparison ('' skips it)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--speed-models", default=SPEED_MODELS, help="models of the speed table ('' skips it)")
    parser.add_argument("--method", default=DEFAULT_METHOD, help="calibration method of the speed variants")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-dir", default="/tmp/edgepose-int8-profile")
    parser.add_argument("--markdown")
    parser.add_argument("--json")
    args = parser.parse_args()
    meter = CpuMeter([os.getpid()])
    method_rows, model_rows = compare_methods([m for m in args.models.split(",") if m],
                                              [m for m in args.methods.split(",") if m], args.threads)
    speed_rows = []
    for spec in [m for m in args.speed_models.split(",") if m]:
        speed_rows += measure_speed(spec, args, meter)
    text = "\n\n".join([machine(), "Command: `python benchmarks/bench_int8.py %s`" % " ".join(sys.argv[1:])]
                       + ([sensitivity_markdown(model_rows)] if model_rows else [])
                       + ([methods_markdown(method_rows)] if method_rows else [])
                       + ([speed_markdown(speed_rows)] if speed_rows else []))
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"models": model_rows, "methods": method_rows, "speed": speed_rows},
                                              indent=1))


if __name__ == "__main__":
    main()
