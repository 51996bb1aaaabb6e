"""The per-frame loop of the live app (``edgepose.live``; the example is in its docstring).

:class:`LivePose` turns one frame into tracked, smoothed poses: the detector runs when
:class:`DetectionSchedule` says (every ``detect_every`` frames, and whenever nobody is tracked),
the frames in between reuse boxes built from the previous keypoints, all persons of a frame go
through the pose model in one batch, and every stage is timed.
:class:`LiveSession` runs it over a :class:`edgepose.live.video.VideoSource` with the outputs
(window, annotated video, JSON lines), reconnecting a live stream that stops when asked to.
"""
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Union

import cv2
import numpy as np

from edgepose.detector import YoloxDetector
from edgepose.live.draw import draw_label, draw_poses, plural
from edgepose.errors import EdgeposeError, InputError
from edgepose.runtime import PoseResult, Runtime
from edgepose.live.smooth import KeypointSmoother, OneEuroFilter
from edgepose.live.track import PoseTracker
from edgepose.transforms import clip_boxes
from edgepose.live.video import Frame, JsonlSink, VideoFileSink, VideoSource

#: Timed stages of a frame: crops, person detection, pose model, decoding + tracking + smoothing.
STAGES = ("pre", "detect", "pose", "post")
WINDOW = "edgepose"
_QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q or Esc


@dataclass
class LiveFrame:
    """Poses of one frame. ``poses.keypoints`` are smoothed; ``ids`` (N,) are track ids;
    ``detected`` says whether the detector ran; ``timings`` are milliseconds per stage."""

    index: int
    timestamp: float
    ids: np.ndarray
    poses: PoseResult
    detected: bool
    timings: Dict[str, float]

    def record(self) -> Dict[str, Any]:
        """The JSON-lines object of this frame."""
        p = self.poses
        columns = zip(self.ids.tolist(), _rounded(p.boxes, 2), _rounded(p.box_scores, 4),
                      _rounded(p.keypoints, 2), _rounded(p.scores, 4))
        persons = [{"id": i, "box": box, "score": score, "keypoints": kpts, "keypoint_scores": scores}
                   for i, box, score, kpts, scores in columns]
        return {"frame": self.index, "timestamp": round(self.timestamp, 4), "detected": self.detected,
                "timings_ms": {k: round(v, 3) for k, v in self.timings.items()}, "persons": persons}


def _rounded(values: np.ndarray, decimals: int) -> list:
    """Nested lists of Python floats (float32 would print 0.1 as 0.10000000149011612)."""
    return np.round(values.astype(np.float64), decimals).tolist()


def _take(result: PoseResult, keep: np.ndarray) -> PoseResult:
    return PoseResult(result.keypoints[keep], result.scores[keep], result.boxes[keep], result.box_scores[keep])


class DetectionSchedule:
    """When the person detector runs on a stream, the one rule :class:`LivePose` and the detect-ahead
    thread of :class:`LiveSession` follow.

    Frames are counted from 0 at the start (or restart) of a stream. Frames 0, N, 2N, ... are
    *scheduled* (``every`` = N); a frame is *due* for detection when it is scheduled or when nobody is
    tracked into it (the tracks were lost, or there were none), so a person who walks in is found at
    once rather than up to N - 1 frames later. The schedule does not shift after such an extra detection,
    which lets the detect-ahead thread know the scheduled frames before the poses of earlier frames exist.
    """

    def __init__(self, every: int) -> None:
        if every < 1:
            raise InputError("detect_every must be >= 1 (1: detect on every frame), got %r" % every)
        self.every = int(every)

    def scheduled(self, frame: int) -> bool:
        """Whether frame number ``frame`` (0: the first) is one of 0, N, 2N, ..."""
        return frame % self.every == 0

    def due(self, frame: int, tracked: int) -> bool:
        """Whether to detect on frame number ``frame`` when ``tracked`` persons are followed into it."""
        return self.scheduled(frame) or tracked == 0


class LivePose:
    """Per-frame tracked poses with one pose model and one person detector.

    ``detect_every``: run the detector on every N-th frame (1: every frame) and whenever nobody is
    tracked (:class:`DetectionSchedule`); in between, boxes come from each track's previous keypoints.
    ``flip``: flip-test ensemble (2x pose compute).
    ``keypoint_thresh``: joints above it count for tracking, box propagation and smoothing.
    ``smooth``: One Euro smoothing of the keypoints with ``one_euro`` (default parameters when None).
    ``tracker``: a configured :class:`PoseTracker` (default: one using ``keypoint_thresh``).
    """

    def __init__(self, runtime: Runtime, detector: YoloxDetector, *, detect_every: int = 5, flip: bool = False,
                 keypoint_thresh: float = 0.2, smooth: bool = True, one_euro: Optional[OneEuroFilter] = None,
                 tracker: Optional[PoseTracker] = None) -> None:
        self.schedule = DetectionSchedule(detect_every)
        self.runtime = runtime
        self.detector = detector
        self.flip = flip
        self.keypoint_thresh = float(keypoint_thresh)
        self.tracker = tracker or PoseTracker(keypoint_thresh=keypoint_thresh)
        self.smoother = KeypointSmoother(one_euro) if smooth else None
        self._frame = 0  # frames since the start or the last reset()

    @property
    def detect_every(self) -> int:
        """N of :attr:`schedule`: the detector runs at least every N frames."""
        return self.schedule.every

    def __call__(self, image: np.ndarray, timestamp: float, index: int = 0,
                 detections: Optional[np.ndarray] = None, detect_ms: float = 0.0) -> LiveFrame:
        """Tracked poses on ``image`` (H, W, 3) uint8 BGR taken at ``timestamp`` seconds.

        ``detections`` (N, 5): person boxes the caller already found on this frame (in another
        thread, say, taking ``detect_ms``); they make it a detection frame. Without them the
        detector runs when :attr:`schedule` says the frame is due.
        """
        t = dict.fromkeys(STAGES, 0.0)
        h, w = image.shape[:2]
        detected = detections is not None
        if not detected:
            start = time.perf_counter()
            boxes, ids = self.tracker.propagate((w, h))
            t["pre"] = time.perf_counter() - start
            detected = self.schedule.due(self._frame, len(boxes))
        if detected:
            ids = None
            if detections is None:
                start = time.perf_counter()
                boxes = self.detector.detect(image)
                t["detect"] = time.perf_counter() - start
            else:
                boxes, t["detect"] = detections, detect_ms / 1000.0
        self._frame += 1
        # Boxes must keep an area inside [0, W-1] x [0, H-1], where the crops clip them.
        clipped = clip_boxes(boxes[:, :4], w, h)
        usable = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        stages: Dict[str, float] = {}
        result = self.runtime.estimate(image, boxes[usable], flip=self.flip, timings=stages)
        t["pre"] += stages["pre"]
        t["pose"] = stages["infer"]
        t["post"] = stages["post"]
        start = time.perf_counter()
        ids = self.tracker.update(result, None if ids is None else ids[usable])
        kept = ids >= 0
        result, ids = _take(result, kept), ids[kept]
        if self.smoother is not None:
            smoothed = self.smoother(ids, result.keypoints, timestamp, result.scores > self.keypoint_thresh)
            result = PoseResult(smoothed, result.scores, result.boxes, result.box_scores)
        t["post"] += time.perf_counter() - start
        return LiveFrame(index, timestamp, ids, result, detected, {k: v * 1000.0 for k, v in t.items()})

    def reset(self) -> None:
        """Forget tracks and smoothing state and detect on the next frame (after a gap in the video)."""
        self.tracker.reset()
        if self.smoother is not None:
            self.smoother.reset()
        self._frame = 0


def overlay_text(frame: LiveFrame, fps: Optional[float] = None) -> str:
    """The status line of the overlay: frame rate once measured (``fps`` None or 0 leaves it out),
    stage milliseconds, number of persons."""
    stages = "%s ms" % " ".join("%s %.1f" % (k, frame.timings[k]) for k in STAGES)
    return "  ".join((["%.1f FPS" % fps] if fps else []) + [stages, plural(len(frame.ids), "person")])


def draw_overlay(image: np.ndarray, frame: LiveFrame, fps: Optional[float] = None,
                 keypoint_thresh: float = 0.2) -> np.ndarray:
    """``image`` with skeletons coloured by track id, each box labelled with its id and score, and
    :func:`overlay_text` at the top."""
    canvas = draw_poses(image, frame.poses, keypoint_thresh, ids=frame.ids.tolist())
    scale = max(0.4, image.shape[1] / 1600)
    draw_label(canvas, overlay_text(frame, fps), (8, int(24 * scale / 0.4)), scale)
    return canvas


@dataclass
class LiveSummary:
    """How a :class:`LiveSession` run went. ``stop_reason`` in words; ``failed``: the source stalled,
    dropped or could not be reopened; ``interrupted``: Ctrl-C; ``timings``: mean ms per frame."""

    frames: int = 0
    seconds: float = 0.0
    stop_reason: str = ""
    failed: bool = False
    interrupted: bool = False
    reconnects: int = 0
    persons: int = 0
    timings: Dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, frame: LiveFrame) -> None:
        self.frames += 1
        self.persons += len(frame.ids)
        for k in STAGES:
            self.timings[k] += frame.timings[k]

    def finish(self) -> None:
        """Turn the summed stage times into means per frame."""
        if self.frames:
            self.timings = {k: v / self.frames for k, v in self.timings.items()}


def _write_together(writes) -> None:
    """Call each ``[write, item]`` (None entries skipped) even when Ctrl-C or SIGTERM arrives between two of
    them, then raise it: the outputs of a frame are written all or none, so they stay in step."""
    interrupted = None
    for entry in writes:
        if entry is None:
            continue
        try:
            entry[0](entry[1])
        except KeyboardInterrupt as e:
            interrupted = e
    if interrupted is not None:
        raise interrupted


class LiveSession:
    """Runs :class:`LivePose` over a video source and writes the outputs; see :meth:`run`.

    ``source``: camera index, file, URL or GStreamer pipeline; ``source_options`` go to
    :class:`VideoSource` (width, height, fps, read_timeout, ...). ``output``: annotated video file;
    ``json_path``: JSON lines, one object per frame; ``show``: an OpenCV window ('q' or Esc quits).
    ``reconnect``: reopen a live source that ends, drops or stalls, up to this many attempts in a row
    (a frame resets the count), ``reconnect_delay`` seconds apart. ``max_frames``: stop after that many.
    ``on_frame``: called with each :class:`LiveFrame` (results for the caller's own use).
    ``log``: called with one line per event (source stopped, reconnecting, and a status line every
    ``status_every`` seconds; 0: none). ``overlap``: decode and detect in a second thread, ahead of
    the pose work on earlier frames (same results, higher frame rate).
    """

    def __init__(self, live: LivePose, source: Union[int, str], *, source_options: Optional[Dict[str, Any]] = None,
                 output: Optional[str] = None, json_path: Optional[str] = None, show: bool = False,
                 reconnect: int = 0, reconnect_delay: float = 1.0,
                 max_frames: Optional[int] = None, on_frame: Optional[Callable[[LiveFrame], None]] = None,
                 log: Optional[Callable[[str], None]] = None, status_every: float = 0.0,
                 overlap: bool = True) -> None:
        if reconnect < 0 or (max_frames is not None and max_frames < 1):
            raise InputError("reconnect must be >= 0 and max_frames >= 1; got %r and %r" % (reconnect, max_frames))
        self.live = live
        self.source = source
        self.source_options = dict(source_options or {})
        self.output = output
        self.json_path = json_path
        self.show = show
        self.reconnect = int(reconnect)
        self.reconnect_delay = float(reconnect_delay)
        self.max_frames = max_frames
        self.on_frame = on_frame
        self.log = log or (lambda line: None)
        self.status_every = float(status_every)
        self.overlap = overlap
        self._attempts = 0

    def run(self) -> LiveSummary:
        """Process frames until the source ends (or stalls / drops past ``reconnect``), ``max_frames``,
        'q' in the window, or Ctrl-C. Outputs are finalised in every case. Opening the source the
        first time raises when it fails; later failures end the run and are reported in the summary."""
        summary = LiveSummary()
        self._attempts = 0
        self.live.reset()
        feed: Optional[_Feed] = _Feed(VideoSource(self.source, **self.source_options), self.live, self.overlap)
        video = jsonl = None
        meter = _FpsMeter()
        try:
            if self.output:
                fps = feed.source.fps or self.source_options.get("fps") or 30.0
                video = VideoFileSink(self.output, fps)
            jsonl = JsonlSink(self.json_path) if self.json_path else None
            origin, status_at = time.monotonic(), time.monotonic() + self.status_every
            while feed is not None:
                if self.max_frames is not None and summary.frames >= self.max_frames:
                    summary.stop_reason = "stopped after %d frames (max_frames)" % summary.frames
                    break
                item = feed.read()
                if item is None:
                    feed.close()
                    source = self._source_stopped(feed.source, summary)
                    feed = _Feed(source, self.live, self.overlap) if source is not None else None
                    continue
                frame, detections, detect_ms = item
                meter.start()
                timestamp = frame.time - origin if feed.source.live else frame.time
                result = self.live(frame.image, timestamp, summary.frames, detections, detect_ms)
                summary.add(result)
                canvas = (draw_overlay(frame.image, result, meter.fps, self.live.keypoint_thresh)
                          if video is not None or self.show else None)
                _write_together(([jsonl.write, result.record()] if jsonl is not None else None,
                                 [video.write, canvas] if video is not None else None))
                if self.show and self._show(canvas):
                    summary.stop_reason = "quit from the window"
                    break
                if self.on_frame is not None:
                    self.on_frame(result)
                now = meter.stop()
                if self.status_every and now >= status_at:
                    status_at = now + self.status_every
                    self.log("frame %d: %.1f fps, %s" % (summary.frames, meter.fps, plural(len(result.ids), "person")))
        except KeyboardInterrupt:
            summary.stop_reason, summary.interrupted = "interrupted (Ctrl-C)", True
        finally:
            for closable in (feed, video, jsonl):
                if closable is not None:
                    closable.close()
            if self.show:
                cv2.destroyAllWindows()
        summary.seconds = meter.seconds
        summary.finish()
        return summary

    def _source_stopped(self, source: VideoSource, summary: LiveSummary) -> Optional[VideoSource]:
        """Report why ``source`` stopped; a reopened source when reconnecting is allowed, else None."""
        summary.stop_reason, summary.failed = source.stop_reason or "", source.failed
        self.log("%s stopped: %s" % (source.describe(), summary.stop_reason))
        if not source.live:
            return None
        if source.frames:
            self._attempts = 0  # attempts count since the last frame
        while self._attempts < self.reconnect:
            self._attempts += 1
            self.log("reconnecting to %s (attempt %d of %d)" % (source.describe(), self._attempts, self.reconnect))
            time.sleep(self.reconnect_delay)
            try:
                fresh = VideoSource(self.source, **self.source_options)
            except EdgeposeError as e:
                summary.stop_reason = "reconnecting failed: %s" % e
                self.log(summary.stop_reason)
                continue
            summary.reconnects += 1
            summary.failed = False
            self.live.reset()
            return fresh
        return None

    @staticmethod
    def _show(canvas: np.ndarray) -> bool:
        """Show a frame; True when the user asked to quit ('q', Esc, or the window closed)."""
        cv2.imshow(WINDOW, canvas)
        key = cv2.waitKey(1) & 0xFF
        return key in _QUIT_KEYS or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1


class _Feed:
    """Frames of a source, each with the person boxes found on it when it is due for detection.

    With ``ahead``, a thread reads and runs the detector on the frames ``live.schedule`` schedules
    while the caller estimates poses on earlier frames (ONNX Runtime and OpenCV release the GIL);
    :class:`LivePose` detects itself on the other frames it finds due (nobody tracked). Without it,
    frames are read on demand and :class:`LivePose` detects on every due frame. Frames are counted
    from the feed's start, with ``live`` freshly reset, so both count alike.
    """

    def __init__(self, source: VideoSource, live: LivePose, ahead: bool) -> None:
        self.source = source
        self._detector = live.detector
        self._schedule = live.schedule
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=2 if source.live else live.schedule.every + 1)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if ahead:
            self._thread = threading.Thread(target=self._run, name="edgepose-detect-ahead", daemon=True)
            self._thread.start()

    def read(self) -> Optional[Tuple[Frame, Optional[np.ndarray], float]]:
        """(frame, boxes or None, detection ms), or None when the source stopped."""
        if self._thread is None:
            frame = self.source.read()
            return None if frame is None else (frame, None, 0.0)
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _run(self) -> None:
        count = 0
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                boxes, ms = None, 0.0
                if self._schedule.scheduled(count):
                    start = time.perf_counter()
                    boxes = self._detector.detect(frame.image)
                    ms = (time.perf_counter() - start) * 1000.0
                count += 1
                self._put((frame, boxes, ms))
            self._put(None)
        except Exception as e:  # noqa: BLE001 - raised again in the caller's thread
            self._put(e)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self._stop.set()
        self.source.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)


class _FpsMeter:
    """Frame rate of the processing loop: a running average for the overlay, and the total time
    from the start of the first frame to the end of the last."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._first: Optional[float] = None
        self._prev: Optional[float] = None
        self._interval = 0.0  # running average of the time between frame starts

    @property
    def fps(self) -> float:
        return 1.0 / self._interval if self._interval > 0 else 0.0

    def start(self) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = now
        if self._prev is not None:
            step = now - self._prev
            self._interval = step if self._interval == 0 else 0.9 * self._interval + 0.1 * step
        self._prev = now

    def stop(self) -> float:
        now = time.monotonic()
        self.seconds = now - (self._first or now)
        return now
