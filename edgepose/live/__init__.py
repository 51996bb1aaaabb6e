"""The live app: video sources and sinks (:mod:`.video`), tracking (:mod:`.track`), One Euro smoothing
(:mod:`.smooth`), drawing (:mod:`.draw`), the per-frame loop (:mod:`.session`) and the browser view
(:mod:`.view`) behind ``edgepose webcam``.

    from edgepose import Runtime
    from edgepose.detector import YoloxDetector
    from edgepose.live import LivePose, LiveSession

    live = LivePose(Runtime("pose.onnx"), YoloxDetector("yolox_nano.onnx"), detect_every=5)
    summary = LiveSession(live, "street.mp4", json_path="poses.jsonl").run()
"""
from edgepose.live.session import (
    STAGES, DetectionSchedule, LiveFrame, LivePose, LiveSession, LiveSummary, draw_overlay, overlay_text,
)
from edgepose.live.view import LiveView

__all__ = ["STAGES", "DetectionSchedule", "LiveFrame", "LivePose", "LiveSession", "LiveSummary", "LiveView",
           "draw_overlay", "overlay_text"]
