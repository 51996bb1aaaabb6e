"""Detector + pose model for whole images and video frames (``edgepose predict`` runs it)."""
from typing import Optional

import numpy as np

from edgepose.detector import YoloxDetector
from edgepose.errors import InputError
from edgepose.runtime import PoseResult, Runtime


class PosePipeline:
    """Find persons with ``detector``, then estimate all of them in one batched ``runtime`` call.

    ``detector`` may be None when every call passes its own ``boxes``. ``flip``: flip-test ensemble.
    """

    def __init__(self, runtime: Runtime, detector: Optional[YoloxDetector] = None, flip: bool = False) -> None:
        self.runtime = runtime
        self.detector = detector
        self.flip = flip

    def __call__(self, image: np.ndarray, rgb: bool = False, boxes: Optional[np.ndarray] = None) -> PoseResult:
        """Poses on ``image`` (H, W, 3) uint8 (BGR unless ``rgb``); ``boxes`` (N, 4|5) skip detection."""
        if boxes is None:
            if self.detector is None:
                raise InputError("this PosePipeline has no detector: pass boxes=(N, 4) person boxes, or create it "
                                 "with a YoloxDetector")
            boxes = self.detector.detect(image, image_is_rgb=rgb)
        return self.runtime.estimate(image, boxes, flip=self.flip, rgb=rgb)
