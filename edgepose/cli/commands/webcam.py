"""edgepose webcam: live multi-person pose on a camera, video file, stream URL or GStreamer pipeline."""
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from edgepose.cli.commands.common import err, out, precision_option, target_option, use_model, warn_random_weights

DEFAULT_MODEL = "mobile_pose_mobilenetv3_small"


def _pose_model(model: Optional[str], precision: Optional[str], target: Optional[str]) -> str:
    """--model, or the default model's conversion in the cache chosen by --precision/--target."""
    from edgepose.errors import ModelFileError

    if model is not None:
        return use_model(model, precision, target)
    try:
        return use_model(DEFAULT_MODEL, precision, target)
    except ModelFileError as e:
        if precision or target:  # the conversion asked for is missing: that error says which
            raise
        raise ModelFileError(
            "no pose model given and no %s conversion in the edgepose cache yet: make it with "
            "`edgepose convert %s` (add --random-weights to try the plumbing offline), or pass "
            "--model FILE.onnx (and --detector YOLOX.onnx for the person detector)" % (DEFAULT_MODEL, DEFAULT_MODEL)
        ) from e


def _ort_threads(model: str, keyword: str, threads: Optional[int]) -> dict:
    """``{keyword: threads}`` for a model ONNX Runtime runs; nothing for engines and triton:// models."""
    from edgepose.backends import backend_for

    return {keyword: threads} if threads is not None and backend_for(model) == "onnxruntime" else {}


def _interrupt_on_sigterm() -> None:
    """SIGTERM (systemd, docker stop) ends the run like Ctrl-C: outputs are finalised."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def webcam(
    source: str = typer.Option("0", "--source", "-s", help="Camera index, video file, rtsp://, http:// URL, or a GStreamer pipeline string."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Pose model file or converted zoo name (default: mobile_pose_mobilenetv3_small; --precision int8 --target cpu is fastest on CPUs)."),
    precision: Optional[str] = precision_option(),
    target: Optional[str] = target_option(),
    detector: Optional[str] = typer.Option(None, "--detector", help="YOLOX person detector: .onnx, TensorRT engine or triton://HOST:PORT/NAME (default: YOLOX-Nano, downloaded once)."),
    detect_every: int = typer.Option(5, "--detect-every", min=1, help="Run the detector every N frames; in between, boxes follow the keypoints."),
    flip: bool = typer.Option(False, "--flip", help="Flip-test ensemble (2x pose compute)."),
    headless: bool = typer.Option(False, "--headless", help="No window (automatic when there is no display)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the annotated video here (.mp4, .avi, ...)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write one JSON line of results per frame here."),
    width: Optional[int] = typer.Option(None, "--width", min=1, help="Frame width (asked of cameras; other sources are resized)."),
    height: Optional[int] = typer.Option(None, "--height", min=1, help="Frame height (asked of cameras; other sources are resized)."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.1, help="Frame rate asked of cameras and pipelines."),
    read_timeout: float = typer.Option(10.0, "--read-timeout", min=0.1, help="Seconds without a frame before a stream counts as stalled."),
    reconnect: int = typer.Option(0, "--reconnect", min=0, help="Reopen a stream that ends, drops or stalls, up to N attempts in a row."),
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="One Euro smoothing of the keypoints."),
    min_cutoff: float = typer.Option(1.0, "--min-cutoff", min=0.0, help="One Euro cut-off at rest (Hz); lower = steadier still joints."),
    beta: float = typer.Option(0.01, "--beta", min=0.0, help="One Euro speed coefficient (per pixel/s); higher = less lag on fast motion."),
    d_cutoff: float = typer.Option(1.0, "--d-cutoff", min=0.0, help="One Euro cut-off of the speed estimate (Hz)."),
    keypoint_thresh: float = typer.Option(0.2, "--kpt-thresh", min=0.0, max=1.0, help="A joint is drawn, tracked and smoothed when its score exceeds this."),
    box_thresh: float = typer.Option(0.5, "--box-thresh", min=0.0, max=1.0, help="Detector score threshold."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="ONNX Runtime threads of the pose model (default: one per core; an .onnx model only)."),
    detector_threads: int = typer.Option(1, "--detector-threads", min=1, help="ONNX Runtime threads of the detector, which runs beside the pose model (an .onnx detector only)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many frames."),
) -> None:
    """Live multi-person pose with tracking and smoothing on a camera, video file or stream.

    Ends at the end of a file, after --max-frames, on 'q'/Esc in the window, Ctrl-C or SIGTERM (exit 130),
    and when a live stream ends, drops or stalls (exit 1 once --reconnect attempts are spent);
    the --output video and --json lines are finalised in every case.
    """
    from edgepose.detector import YoloxDetector, detector_model
    from edgepose.fileio import writable_file
    from edgepose.live import STAGES, LivePose, LiveSession
    from edgepose.runtime import Runtime
    from edgepose.live.smooth import OneEuroFilter
    from edgepose.live.video import window_problem

    for path, what in ((output, "--output video"), (json_path, "--json file")):
        if path is not None:
            writable_file(path, what)
    one_euro = OneEuroFilter(min_cutoff, beta, d_cutoff)
    det_path = detector_model(detector) if detector is not None else None  # a missing file fails before any work
    model_path = _pose_model(model, precision, target)
    runtime = Runtime(model_path, **_ort_threads(model_path, "threads", threads))
    det_path = det_path or detector_model()
    det = YoloxDetector(det_path, score_thresh=box_thresh, **_ort_threads(det_path, "intra_op_threads",
                                                                         detector_threads))
    show = not headless
    if show and window_problem():
        err.print("note: no window (%s); running headless" % window_problem())
        show = False
    live = LivePose(runtime, det, detect_every=detect_every, flip=flip, keypoint_thresh=keypoint_thresh,
                    smooth=smooth, one_euro=one_euro)
    session = LiveSession(
        live, source, source_options=dict(width=width, height=height, fps=fps, read_timeout=read_timeout),
        output=str(output) if output else None, json_path=str(json_path) if json_path else None, show=show,
        reconnect=reconnect, max_frames=max_frames,
        log=lambda line: err.print(line, highlight=False, markup=False), status_every=5.0 if not show else 0.0)
    err.print("pose model %s (%s, %s), detector %s every %d frame%s; source %s%s" % (
        model_path, runtime.meta.name, runtime.meta.precision, det_path, detect_every, "" if detect_every == 1 else "s",
        source, "" if show else " (headless)"), highlight=False, markup=False)
    if runtime.meta.random_weights and "://" in model_path:  # a file's weights were announced by use_model
        warn_random_weights(model_path)
    _interrupt_on_sigterm()
    summary = session.run()
    stages = ", ".join("%s %.1f" % (k, summary.timings[k]) for k in STAGES)
    out.print("%d frames in %.1f s (%.1f fps), %.1f persons per frame; mean ms per frame: %s" % (
        summary.frames, summary.seconds, summary.fps, summary.persons / max(summary.frames, 1), stages),
        highlight=False)
    for path in (output, json_path):
        if path is not None and Path(path).exists():
            out.print("wrote %s" % path, highlight=False)
    out.print("stopped: %s%s" % (summary.stop_reason,
                                 " (%d reconnect%s)" % (summary.reconnects, "" if summary.reconnects == 1 else "s")
                                 if summary.reconnects else ""), highlight=False)
    if summary.interrupted or summary.failed:  # SystemExit: typer.Exit is only returned without standalone mode
        sys.exit(130 if summary.interrupted else 1)
