"""Latency of a Runtime split into pre-processing, inference and post-processing."""
import statistics
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from edgepose.runtime import Runtime


@dataclass
class StageTimes:
    """Median milliseconds per call for ``batch`` persons."""

    batch: int
    pre_ms: float
    infer_ms: float
    post_ms: float

    @property
    def total_ms(self) -> float:
        return self.pre_ms + self.infer_ms + self.post_ms

    @property
    def persons_per_s(self) -> float:
        return 1000.0 * self.batch / self.total_ms


def synthetic_frame(persons: int, height: int = 1080, width: int = 1920, seed: int = 0):
    """A textured (height, width, 3) uint8 frame and ``persons`` person-shaped boxes spread over it."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    import cv2

    frame = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    cols = max(1, int(np.ceil(np.sqrt(persons * width / height))))
    rows = int(np.ceil(persons / cols))
    cell_w, cell_h = width / cols, height / rows
    boxes = []
    for i in range(persons):
        r, c = divmod(i, cols)
        x1, y1 = c * cell_w + 0.2 * cell_w, r * cell_h + 0.05 * cell_h
        boxes.append([x1, y1, x1 + 0.5 * cell_w, y1 + 0.9 * cell_h, 0.9])
    return frame, np.array(boxes, np.float32)


def measure(runtime: Runtime, batch: int, repeats: int = 20, warmup: int = 3, flip: bool = False) -> StageTimes:
    """Median stage times of ``runtime.estimate`` on a 1080p frame with ``batch`` persons."""
    frame, boxes = synthetic_frame(batch)
    samples: Dict[str, List[float]] = {"pre": [], "infer": [], "post": []}
    for i in range(warmup + repeats):
        t: Dict[str, float] = {}
        runtime.estimate(frame, boxes, flip=flip, timings=t)
        if i >= warmup:
            for k in samples:
                samples[k].append(t[k])
    med = {k: 1000.0 * statistics.median(v) for k, v in samples.items()}
    return StageTimes(batch, med["pre"], med["infer"], med["post"])
