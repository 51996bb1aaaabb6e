"""edgepose: GluonCV's pose model zoo on edge runtimes (ONNX Runtime, TensorRT).

``import edgepose`` stays light: the public classes load on first use, and nothing on the
runtime path imports onnx, typer or the converters.

    >>> import edgepose
    >>> rt = edgepose.Runtime("mobile_pose_mobilenetv3_small.onnx")
    >>> result = rt.estimate(image_bgr, boxes_xyxy)       # result.keypoints (N, 17, 2)
"""
from typing import Any

from edgepose.errors import EdgeposeError

__version__ = "0.1.0"

_LAZY = {
    "Runtime": "edgepose.runtime",
    "PoseResult": "edgepose.runtime",
    "ModelMeta": "edgepose.meta",
    "YoloxDetector": "edgepose.detector",
    "PosePipeline": "edgepose.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError("module 'edgepose' has no attribute %r" % name)


__all__ = ["EdgeposeError", "__version__", *_LAZY]
