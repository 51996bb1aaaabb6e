#!/usr/bin/env python
"""YOLOX-Nano on this CPU: FP32 vs FP16 vs INT8 (tensorrt and cpu forms), batch 1, 416x416, ONNX Runtime.

Run from the project venv (shared data: ``$EDGEPOSE_SHARED`` or ``../shared``):

    python benchmarks/bench_detector_int8.py --rounds 30 --threads 2 --profile --markdown det.md

1. converts the shared YOLOX-Nano release file with ``convert_model`` (FP32 normalised, ``--fp16``,
   ``--int8`` in both forms with ``force`` so every variant exists, calibrated on the 8 shared photos);
   the gate's figures (recall and precision vs FP32 with their 95 % bounds) come from each report;
2. adds the lever variant "cpu form, depthwise FP32" (the cpu form with the tensorrt form's FP32 nodes);
3. times every model on one letterboxed photo at batch 1: rounds interleave the models, so machine noise
   (two cores shared with others) hits all alike; per model the median ms, per variant the median of the
   per-round ratios FP32 / variant and their spread (min..max over rounds);
4. with ``--profile``, ONNX Runtime's per-op-type time of FP32 and both INT8 forms.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHARED = Path(os.environ.get("EDGEPOSE_SHARED") or HERE.parents[1] / "shared")
MODEL = SHARED / "data" / "yolox_nano_coco" / "yolox_nano.onnx"
PHOTOS = [SHARED / "data" / "demo_media" / n for n in ("biking.jpg", "person.jpg", "soccer.png", "street_small.jpg")] \
    + sorted((SHARED / "data" / "coco_kpt_mini").glob("*.jpg"))

from bench_zoo_cpu import cpu_flags, cpu_model, make_session, ort_profile  # noqa: E402


def convert_all(folder: Path) -> tuple:
    """{variant: path} and {variant: gate line} of every conversion (module docstring, steps 1-2)."""
    from edgepose.converters import quantize
    from edgepose.converters.convert import convert_model
    from edgepose.converters.detector_int8 import make_detector_int8

    calib = folder / "photos"
    calib.mkdir()
    for photo in PHOTOS:
        (calib / photo.name).symlink_to(photo)
    paths, gates = {}, {}
    paths["fp32"] = convert_model(str(MODEL), output=folder / "fp32.onnx").final
    paths["fp16"] = convert_model(str(MODEL), output=folder / "fp16.onnx", precision="fp16").final
    for target in ("tensorrt", "cpu"):
        report = make_detector_int8(paths["fp32"], folder / ("int8-%s.onnx" % target), calib_source=calib,
                                    target=target, force=True, progress=False)
        paths["int8 " + target], gates["int8 " + target] = report.path, report.lines()[2]
    plain = quantize.float_nodes
    quantize.float_nodes = lambda model, target: plain(model, "tensorrt")  # the lever: depthwise convs in FP32
    try:
        report = make_detector_int8(paths["fp32"], folder / "int8-cpu-dw.onnx", calib_source=calib, target="cpu",
                                    force=True, progress=False)
    finally:
        quantize.float_nodes = plain
    paths["int8 cpu, depthwise FP32"], gates["int8 cpu, depthwise FP32"] = report.path, report.lines()[2]
    return paths, gates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--opt-level", default="all", choices=("disable", "basic", "extended", "all"))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    from edgepose.detector import letterbox

    image = cv2.imread(str(SHARED / "data" / "demo_media" / "street_small.jpg"))
    x = np.ascontiguousarray(letterbox(image, (416, 416))[0].transpose(2, 0, 1)[None], dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="bench-det-") as tmp:
        paths, gates = convert_all(Path(tmp))
        sessions = {k: make_session(p.read_bytes(), args.threads, args.opt_level) for k, p in paths.items()}
        feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
        for k, s in sessions.items():
            for _ in range(3):
                s.run(None, feeds[k])
        times = {k: [] for k in sessions}
        for _ in range(args.rounds):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, feeds[k])
                times[k].append(1000 * (time.perf_counter() - t))
        profiles = {}
        if args.profile:
            for k in ("fp32", "int8 tensorrt", "int8 cpu"):
                profiles[k] = ort_profile(paths[k].read_bytes(), x, args.threads, args.opt_level, 20,
                                          Path(tmp) / "prof", k.replace(" ", "-"))
    lines = ["Detector INT8 benchmark, %s" % datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
             "", "- CPU: %s (%s), %d logical CPUs; ONNX Runtime %s, %d threads, graph optimisation %s, batch 1, "
             "416x416, %d interleaved rounds" % (cpu_model(), cpu_flags(), os.cpu_count(), ort_version(), args.threads,
                                                 args.opt_level, args.rounds), "",
             "| model | median ms | FP32 / model (median of rounds) | spread (min..max) | detector gate |",
             "|---|---:|---:|---:|---|"]
    for k, t in times.items():
        ratios = [a / b for a, b in zip(times["fp32"], t)]
        lines.append("| %s | %.1f | %.2fx | %.2f..%.2f | %s |" % (
            k, statistics.median(t), statistics.median(ratios), min(ratios), max(ratios),
            gates.get(k, "-").replace("Detector gate: ", "").split("; required")[0]))
    for k, rows in profiles.items():
        lines += ["", "ORT profile, %s: %s" % (k, ", ".join("%s %.1f ms (%.0f%%)" % (op, ms, 100 * share)
                                                             for op, ms, share in rows[:8]))]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
