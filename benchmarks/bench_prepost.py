#!/usr/bin/env python
"""CPU time of edgepose's pre- and post-processing (``edgepose.transforms``, ``edgepose.decode``).

Run from the project venv:

    python benchmarks/bench_prepost.py [--repeats 50] [--image PATH]

Post-processing: decode of 64 persons (64 x 17 x 64 x 48 simple-pose heatmaps; 64 x 17 x 80 x 64
for AlphaPose), with and without the flip-test merge. Pre-processing: 16 crops from a real photo
(``shared/data/demo_media/soccer.png``) resized to 1920 x 1080, from validation to the normalised
float32 batch; crop and normalisation are also timed alone, next to OpenCV's own warpAffine (which
edgepose does not use: OpenCV 5's differs from the fixed-point warp GluonCV ran).

Each row is the median wall time of ``--repeats`` runs after 3 warm-up runs, also given per 8
persons, against GluonCV's figures as stated in the project brief (6.1 ms per 8 persons for
``heatmap_to_coord``; 286 ms for AlphaPose's decode, batch not stated). Heatmaps are synthetic
(one Gaussian blob per map plus noise); the work done does not depend on their content.
"""
import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np

from edgepose.decode import decode, merge_flip
from edgepose.keypoints import COCO_FLIP_PAIRS
from edgepose.meta import ModelMeta
from edgepose.transforms import (Crops, affine_matrices, alphapose_boxes, boxes_to_center_scale,
                                 crop_persons, normalize, preprocess)

SHARED = Path(os.environ.get("EDGEPOSE_SHARED") or Path(__file__).resolve().parents[2] / "shared")
DEFAULT_IMAGE = SHARED / "data" / "demo_media" / "soccer.png"
SIMPLE = ModelMeta()
ALPHA = ModelMeta(input_size=(320, 256), mean=(0.406, 0.457, 0.480), std=(1.0, 1.0, 1.0), decoder="alphapose")
YARDSTICK_DECODE_MS_PER_8 = 6.1  # GluonCV heatmap_to_coord, per 8 persons (project brief)
YARDSTICK_ALPHA_MS = 286.0  # GluonCV AlphaPose decode (project brief; batch not stated)


def median_ms(fn: Callable[[], object], repeats: int) -> Tuple[float, float]:
    """Median and minimum wall time of ``fn`` in ms over ``repeats`` runs, after 3 warm-up runs."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times), 1000.0 * min(times)


def synthetic_heatmaps(rng: np.random.Generator, n: int, hw: Tuple[int, int]) -> np.ndarray:
    """(n, 17, H, W) float32: one Gaussian blob (sigma 2) per map at a random place, plus noise."""
    h, w = hw
    centre = rng.uniform((0, 0), (w, h), size=(n, 17, 1, 1, 2))
    ys, xs = np.mgrid[0:h, 0:w]
    d2 = (xs - centre[..., 0]) ** 2 + (ys - centre[..., 1]) ** 2
    peak = rng.uniform(0.3, 1.0, size=(n, 17, 1, 1))
    return (peak * np.exp(-d2 / 8.0) + rng.normal(0, 0.01, size=(n, 17, h, w))).astype(np.float32)


def person_boxes(rng: np.random.Generator, n: int, img_w: int, img_h: int) -> np.ndarray:
    """(n, 4) x1, y1, x2, y2 person-shaped boxes (120-600 px tall) inside a img_w x img_h frame."""
    h = rng.uniform(120, 600, n)
    w = h * rng.uniform(0.3, 0.6, n)
    x1 = rng.uniform(0, img_w - w)
    y1 = rng.uniform(0, img_h - h)
    return np.stack([x1, y1, x1 + w, y1 + h], axis=1)


def simple_crops_of(n: int, rng: np.random.Generator) -> Crops:
    """Decode parameters (no pixels) of n random person boxes in a 1920x1080 frame."""
    center, scale = boxes_to_center_scale(person_boxes(rng, n, 1920, 1080), 0.75)
    return Crops(np.zeros((n, 3, 1, 1), np.float32), np.zeros((n, 4)), center=center, scale=scale)


def alpha_crops_of(n: int, rng: np.random.Generator) -> Crops:
    """AlphaPose decode parameters (no pixels) of n random person boxes in a 1920x1080 frame."""
    lurb = alphapose_boxes(person_boxes(rng, n, 1920, 1080), 1920, 1080)
    return Crops(np.zeros((n, 3, 1, 1), np.float32), np.zeros((n, 4)), alpha_boxes=lurb)


def row(step: str, workload: str, persons: int, ms: Tuple[float, float], yardstick: str = "",
        yardstick_per_8: Optional[float] = None) -> List[str]:
    """One table row; ``ms`` = (median, min)."""
    per_8 = ms[0] * 8 / persons
    return [step, workload, "%.2f" % ms[0], "%.2f" % ms[1], "%.3f" % per_8, yardstick,
            "%.0fx" % (yardstick_per_8 / per_8) if yardstick_per_8 else ""]


def markdown(rows: List[List[str]]) -> str:
    head = ["step", "workload", "median ms", "min ms", "median ms per 8 persons", "GluonCV yardstick",
            "faster by"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo to resize to 1920x1080")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []

    heatmaps = synthetic_heatmaps(rng, 64, (64, 48))
    flipped = synthetic_heatmaps(rng, 64, (64, 48))
    crops64 = simple_crops_of(64, rng)
    ms = median_ms(lambda: decode(heatmaps, crops64, SIMPLE), args.repeats)
    rows.append(row("decode (argmax, 1/4 px, inverse affine)", "64 x 17 x 64x48", 64, ms,
                    "6.1 ms / 8 (heatmap_to_coord)", YARDSTICK_DECODE_MS_PER_8))
    ms = median_ms(lambda: decode(merge_flip(heatmaps, flipped, COCO_FLIP_PAIRS), crops64, SIMPLE),
                   args.repeats)
    rows.append(row("flip merge + decode", "2 x 64 x 17 x 64x48", 64, ms))
    alpha_maps = synthetic_heatmaps(rng, 64, (80, 64))
    alpha64 = alpha_crops_of(64, rng)
    ms = median_ms(lambda: decode(alpha_maps, alpha64, ALPHA), args.repeats)
    rows.append(row("AlphaPose decode", "64 x 17 x 80x64", 64, ms,
                    "286 ms (batch not stated; ratio reads it as per 8)", YARDSTICK_ALPHA_MS))

    photo = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
    if photo is None:
        raise SystemExit("cannot read %s (set EDGEPOSE_SHARED or pass --image)" % args.image)
    frame = cv2.resize(photo, (1920, 1080), interpolation=cv2.INTER_LINEAR)
    boxes = person_boxes(rng, 16, 1920, 1080)
    ms = median_ms(lambda: preprocess(frame, boxes, SIMPLE, image_is_rgb=False), args.repeats)
    rows.append(row("preprocess (crop + normalise)", "16 crops 256x192 from 1920x1080", 16, ms))
    center, scale = boxes_to_center_scale(boxes, 0.75)
    ms = median_ms(lambda: crop_persons(frame, center, scale, (256, 192)), args.repeats)
    rows.append(row("  crop only (fixed-point warp)", "16 x 256x192", 16, ms))
    matrices = affine_matrices(center, scale, (256, 192))
    ms = median_ms(lambda: [cv2.warpAffine(frame, m, (192, 256), flags=cv2.INTER_LINEAR) for m in matrices],
                   args.repeats)
    rows.append(row("  (cv2.warpAffine, not used)", "16 x 256x192", 16, ms))
    crops_u8 = crop_persons(frame, center, scale, (256, 192))
    ms = median_ms(lambda: normalize(crops_u8, SIMPLE.mean, SIMPLE.std, swap_rb=True), args.repeats)
    rows.append(row("  normalise only (LUT)", "16 x 256x192", 16, ms))
    ms = median_ms(lambda: preprocess(frame, boxes, ALPHA, image_is_rgb=False), args.repeats)
    rows.append(row("AlphaPose preprocess", "16 crops 320x256 from 1920x1080", 16, ms))

    print("edgepose pre/post-processing, %s, %d CPU(s), Python %s, NumPy %s, OpenCV %s (%d threads), "
          "median and min of %d runs" % (platform.processor() or platform.machine(), os.cpu_count() or 0,
                            platform.python_version(), np.__version__, cv2.__version__,
                            cv2.getNumThreads(), args.repeats))
    print()
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
