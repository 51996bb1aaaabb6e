"""edgepose webcam: live multi-person pose on a camera, video file, stream URL or GStreamer pipeline."""
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from edgepose.cli.commands.common import err, out, precision_option, target_option, use_model, warn_random_weights

DEFAULT_MODEL = "mobile_pose_mobilenetv3_small"


class Parallel(str, Enum):
    """--parallel: the ONNX Runtime backend's ``parallel`` modes."""

    ops = "ops"
    batch = "batch"


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


def _ort_options(model: str, **options: object) -> dict:
    """The ONNX Runtime ``options`` not None, for a model ONNX Runtime runs; nothing for engines and triton://."""
    from edgepose.backends import backend_for

    return {k: v for k, v in options.items() if v is not None} if backend_for(model) == "onnxruntime" else {}


def _interrupt_on_sigterm() -> None:
    """SIGTERM (systemd, docker stop) ends the run like Ctrl-C: outputs are finalised."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def webcam(
    source: List[str] = typer.Option(["0"], "--source", "-s", help="Camera index, video file, rtsp://, http:// URL, or a GStreamer pipeline string. Repeat for several sources: their persons go through the pose model in one batch per tick."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Pose model file or converted zoo name (default: mobile_pose_mobilenetv3_small; --precision int8 --target cpu is fastest on CPUs)."),
    precision: Optional[str] = precision_option(),
    target: Optional[str] = target_option(),
    detector: Optional[str] = typer.Option(None, "--detector", help="YOLOX person detector: .onnx, TensorRT engine or triton://HOST:PORT/NAME (default: YOLOX-Nano, downloaded once)."),
    detect_every: int = typer.Option(5, "--detect-every", min=1, help="Run the detector every N frames; in between, boxes follow the keypoints."),
    flip: bool = typer.Option(False, "--flip", help="Flip-test ensemble (2x pose compute)."),
    headless: bool = typer.Option(False, "--headless", help="No window (automatic when there is no display)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write the annotated video here (.mp4, .avi, ...). Several sources: put {source} in the name (out{source}.mp4 -> out0.mp4, out1.mp4, ...) or give a folder (out/ -> out/source0.mp4, ...)."),
    json_path: Optional[str] = typer.Option(None, "--json", help="Write one JSON line of results per frame here (with the source's position in \"source\"). Several sources: {source} in the name, or a folder (source0.jsonl, ...)."),
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
    parallel: Optional[Parallel] = typer.Option(None, "--parallel", help="How the pose model's threads share a batch (an .onnx model on the CPU): ops (each operator split over them) or batch (the batch split into parts, one thread each, nothing spinning between calls). Default: batch with several sources, ops with one."),
    detector_threads: int = typer.Option(1, "--detector-threads", min=1, help="ONNX Runtime threads of the detector, which runs beside the pose model (an .onnx detector only)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop each source after this many frames."),
    view: Optional[str] = typer.Option(None, "--view", help="Serve a live view in the browser at [HOST:]PORT (default host 127.0.0.1): each source's annotated video, stats and latest JSON. Another host is reachable from the network and needs --view-token."),
    view_token: Optional[str] = typer.Option(None, "--view-token", envvar="EDGEPOSE_VIEW_TOKEN", help="Secret the view's URL must carry (?token=...); required when --view binds beyond loopback."),
) -> None:
    """Live multi-person pose with tracking and smoothing on cameras, video files or streams.

    With several --source, each has its own reader, read timeout, reconnects, tracking and outputs, the
    window shows them in a grid, and a source that ends or stalls is reported while the others go on. The
    readers detect ahead together (one detector call for the sources due) and every tick makes one pose
    call over the persons of all sources.
    Ends when every source has ended (end of file, --max-frames), on 'q'/Esc in the window, Ctrl-C or
    SIGTERM (exit 130); exit 1 when a live stream ended, dropped or stalled once --reconnect attempts were
    spent. The --output videos and --json lines are finalised in every case.
    """
    from edgepose.detector import YoloxDetector, detector_model
    from edgepose.fileio import writable_file
    from edgepose.live import LivePose, LiveSession
    from edgepose.runtime import Runtime
    from edgepose.live.smooth import OneEuroFilter
    from edgepose.live.video import per_source_paths, window_problem

    from edgepose.live.view import LiveView, check_view_binding, parse_view_address

    view_address = parse_view_address(view) if view is not None else None
    if view_address is not None:
        warning = check_view_binding(view_address[0], view_token)  # refuses a network bind without a token
        if warning:
            err.print("warning: " + warning, style="yellow", highlight=False, markup=False)
    elif view_token is not None:
        raise typer.BadParameter("--view-token goes with --view")
    outputs = per_source_paths(output, len(source), ".mp4", "--output")
    json_paths = per_source_paths(json_path, len(source), ".jsonl", "--json")
    for paths, what in ((outputs, "--output video"), (json_paths, "--json file")):
        for path in paths:
            if path is not None:
                writable_file(path, what)
    one_euro = OneEuroFilter(min_cutoff, beta, d_cutoff)
    det_path = detector_model(detector) if detector is not None else None  # a missing file fails before any work
    model_path = _pose_model(model, precision, target)
    mode = parallel.value if parallel is not None else "batch" if len(source) > 1 else "ops"
    runtime = Runtime(model_path, **_ort_options(model_path, threads=threads, parallel=mode))
    det_path = det_path or detector_model()
    det = YoloxDetector(det_path, score_thresh=box_thresh, **_ort_options(det_path, intra_op_threads=detector_threads))
    show = not headless
    if show and window_problem():
        err.print("note: no window (%s); running headless" % window_problem())
        show = False
    live = LivePose(runtime, det, detect_every=detect_every, flip=flip, keypoint_thresh=keypoint_thresh,
                    smooth=smooth, one_euro=one_euro)
    observers = []
    if view_address is not None:
        observers.append(LiveView(source, *view_address, token=view_token,  # it prints its URL when started
                                  log=lambda line: err.print(line, highlight=False, markup=False)).start())
    session = LiveSession(
        live, source, source_options=dict(width=width, height=height, fps=fps, read_timeout=read_timeout),
        output=output, json_path=json_path, show=show,
        reconnect=reconnect, max_frames=max_frames, observers=observers,
        log=lambda line: err.print(line, highlight=False, markup=False), status_every=5.0 if not show else 0.0)
    err.print("pose model %s (%s, %s), detector %s every %d frame%s; source%s %s%s" % (
        model_path, runtime.meta.name, runtime.meta.precision, det_path, detect_every, "" if detect_every == 1 else "s",
        "s" if len(source) > 1 else "", ", ".join(source), "" if show else " (headless)"), highlight=False, markup=False)
    if runtime.meta.random_weights and "://" in model_path:  # a file's weights were announced by use_model
        warn_random_weights(model_path)
    _interrupt_on_sigterm()
    try:
        summary = session.run()
    finally:
        for observer in observers:
            observer.close()
    _report(summary, source, outputs + json_paths)
    if summary.interrupted or summary.failed:  # SystemExit: typer.Exit is only returned without standalone mode
        sys.exit(130 if summary.interrupted else 1)


def _report(summary, sources: List[str], paths: List[Optional[str]]) -> None:
    """The end of a run: frames, speed and stage times (overall, then per source when several), the
    files written, and why each source stopped."""
    from edgepose.live import STAGES

    def line(s) -> str:
        stages = ", ".join("%s %.1f" % (k, s.timings[k]) for k in STAGES)
        return "%d frames in %.1f s (%.1f fps), %.1f persons per frame; mean ms per frame: %s" % (
            s.frames, s.seconds, s.fps, s.persons / max(s.frames, 1), stages)

    def stopped(s) -> str:
        reconnects = " (%d reconnect%s)" % (s.reconnects, "" if s.reconnects == 1 else "s") if s.reconnects else ""
        return "stopped: %s%s" % (s.stop_reason, reconnects)

    out.print(line(summary), highlight=False)
    if len(sources) > 1:
        for i, (spec, part) in enumerate(zip(sources, summary.sources)):
            out.print("source %d (%s): %s; %s" % (i, spec, line(part), stopped(part)), highlight=False, markup=False)
    for path in paths:
        if path is not None and Path(path).exists():
            out.print("wrote %s" % path, highlight=False)
    out.print(stopped(summary), highlight=False)
