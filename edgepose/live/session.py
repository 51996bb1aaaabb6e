"""The per-frame loop of the live app (``edgepose.live``; the example is in its docstring).

:class:`LivePose` turns frames into tracked, smoothed poses: the detector runs when
:class:`DetectionSchedule` says (every ``detect_every`` frames, and whenever nobody is tracked),
the frames in between reuse boxes built from the previous keypoints, all persons of a frame (or of one
frame of each of several streams, each with its own :class:`StreamState`) go through the pose model in
one batch, and every stage is timed.
:class:`LiveSession` runs it over one or several :class:`edgepose.live.video.VideoSource` with the
outputs (window, annotated videos, JSON lines, observers), reconnecting a live stream that stops when
asked to.
"""
import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Union

import cv2
import numpy as np

from edgepose.detector import YoloxDetector
from edgepose.live.detect_batch import BatchMember, DetectionBatcher
from edgepose.live.draw import draw_label, draw_poses, plural, tile_images
from edgepose.live.feed import Feed, FeedItem, Reopened, Stopped
from edgepose.errors import InputError
from edgepose.runtime import PoseResult, Runtime
from edgepose.live.smooth import KeypointSmoother, OneEuroFilter
from edgepose.live.track import PoseTracker
from edgepose.transforms import clip_boxes
from edgepose.live.video import Frame, JsonlSink, VideoFileSink, VideoSource, per_source_paths

#: Timed stages of a frame: crops, person detection, pose model, decoding + tracking + smoothing.
STAGES = ("pre", "detect", "pose", "post")
WINDOW = "edgepose"
_QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q or Esc


@dataclass
class LiveFrame:
    """Poses of one frame. ``poses.keypoints`` are smoothed; ``ids`` (N,) are track ids;
    ``detected`` says whether the detector ran; ``timings`` are milliseconds per stage (a call shared
    by several sources' frames counts for each by its share: persons for the pose model, frames for the
    detector); ``source``: the position of its source in a :class:`LiveSession` (0 for one source)."""

    index: int
    timestamp: float
    ids: np.ndarray
    poses: PoseResult
    detected: bool
    timings: Dict[str, float]
    source: int = 0

    def record(self) -> Dict[str, Any]:
        """The JSON-lines object of this frame."""
        p = self.poses
        columns = zip(self.ids.tolist(), _rounded(p.boxes, 2), _rounded(p.box_scores, 4),
                      _rounded(p.keypoints, 2), _rounded(p.scores, 4))
        persons = [{"id": i, "box": box, "score": score, "keypoints": kpts, "keypoint_scores": scores}
                   for i, box, score, kpts, scores in columns]
        return {"source": self.source, "frame": self.index, "timestamp": round(self.timestamp, 4),
                "detected": self.detected, "timings_ms": {k: round(v, 3) for k, v in self.timings.items()},
                "persons": persons}


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


class StreamState:
    """What :class:`LivePose` remembers of one video stream: its tracks, its smoothing state and the
    number of frames since the stream (re)started. :meth:`LivePose.new_stream` makes one."""

    def __init__(self, tracker: PoseTracker, smoother: Optional[KeypointSmoother]) -> None:
        self.tracker = tracker
        self.smoother = smoother
        self.frame = 0  # frames since the start or the last reset()

    def reset(self) -> None:
        """Forget tracks and smoothing state and detect on the next frame (after a gap in the video)."""
        self.tracker.reset()
        if self.smoother is not None:
            self.smoother.reset()
        self.frame = 0


@dataclass
class FrameInput:
    """One frame for :meth:`LivePose.process`: ``image`` of the stream ``stream`` taken at ``timestamp``
    seconds, numbered ``index``; ``detections`` (N, 5) found on it already (taking ``detect_ms``) or None."""

    stream: StreamState
    image: np.ndarray
    timestamp: float
    index: int = 0
    detections: Optional[np.ndarray] = None
    detect_ms: float = 0.0
    source: int = 0


def detect_all(detector: YoloxDetector, images: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Person boxes (N, 5) of each image: the detector calls of one tick of the loop, in one place (one
    batched call when the detector's batch is dynamic, e.g. a detector converted by `edgepose convert`)."""
    return detector.detect_batch(images) if images else []


class LivePose:
    """Per-frame tracked poses with one pose model and one person detector, for one stream or several.

    ``detect_every``: run the detector on every N-th frame (1: every frame) and whenever nobody is
    tracked (:class:`DetectionSchedule`); in between, boxes come from each track's previous keypoints.
    ``flip``: flip-test ensemble (2x pose compute).
    ``keypoint_thresh``: joints above it count for tracking, box propagation and smoothing.
    ``smooth``: One Euro smoothing of the keypoints with ``one_euro`` (default parameters when None).
    ``tracker``: a configured :class:`PoseTracker` (default: one using ``keypoint_thresh``); further
    streams (:meth:`new_stream`) get fresh copies of it.

    Calling it runs one frame of its own stream; :meth:`process` runs a frame of each of several
    streams with one detector call over those due and one pose-model batch over all their persons.
    """

    def __init__(self, runtime: Runtime, detector: YoloxDetector, *, detect_every: int = 5, flip: bool = False,
                 keypoint_thresh: float = 0.2, smooth: bool = True, one_euro: Optional[OneEuroFilter] = None,
                 tracker: Optional[PoseTracker] = None) -> None:
        self.schedule = DetectionSchedule(detect_every)
        self.runtime = runtime
        self.detector = detector
        self.flip = flip
        self.keypoint_thresh = float(keypoint_thresh)
        tracker = tracker or PoseTracker(keypoint_thresh=keypoint_thresh)
        self._blank_tracker = copy.deepcopy(tracker)
        self._smooth, self._one_euro = smooth, one_euro
        self.stream = StreamState(tracker, KeypointSmoother(one_euro) if smooth else None)

    @property
    def detect_every(self) -> int:
        """N of :attr:`schedule`: the detector runs at least every N frames."""
        return self.schedule.every

    @property
    def tracker(self) -> PoseTracker:
        """The tracker of the stream that calling this object runs."""
        return self.stream.tracker

    @property
    def smoother(self) -> Optional[KeypointSmoother]:
        """The smoother of the stream that calling this object runs (None without smoothing)."""
        return self.stream.smoother

    def new_stream(self) -> StreamState:
        """State for another stream, configured as this object's own."""
        return StreamState(copy.deepcopy(self._blank_tracker),
                           KeypointSmoother(self._one_euro) if self._smooth else None)

    def __call__(self, image: np.ndarray, timestamp: float, index: int = 0,
                 detections: Optional[np.ndarray] = None, detect_ms: float = 0.0) -> LiveFrame:
        """Tracked poses on ``image`` (H, W, 3) uint8 BGR taken at ``timestamp`` seconds.

        ``detections`` (N, 5): person boxes the caller already found on this frame (in another
        thread, say, taking ``detect_ms``); they make it a detection frame. Without them the
        detector runs when :attr:`schedule` says the frame is due.
        """
        return self.process([FrameInput(self.stream, image, timestamp, index, detections, detect_ms)])[0]

    def process(self, frames: Sequence[FrameInput]) -> List[LiveFrame]:
        """Tracked poses on one frame of each of several streams (each ``FrameInput.stream`` once):
        one detector call over the frames due for detection without ``detections``, one pose-model
        call over the persons of all frames, then tracking and smoothing per stream."""
        t = [dict.fromkeys(STAGES, 0.0) for _ in frames]
        boxes: List[Any] = [f.detections for f in frames]
        ids: List[Optional[np.ndarray]] = [None] * len(frames)
        due = []
        for n, f in enumerate(frames):
            if f.detections is not None:
                t[n]["detect"] = f.detect_ms / 1000.0
                continue
            start = time.perf_counter()
            h, w = f.image.shape[:2]
            boxes[n], ids[n] = f.stream.tracker.propagate((w, h))
            t[n]["pre"] = time.perf_counter() - start
            if self.schedule.due(f.stream.frame, len(boxes[n])):
                due.append(n)
                ids[n] = None
        if due:
            start = time.perf_counter()
            found = detect_all(self.detector, [frames[n].image for n in due])
            share = (time.perf_counter() - start) / len(due)
            for n, b in zip(due, found):
                boxes[n], t[n]["detect"] = b, share
        usable = []
        for f, b in zip(frames, boxes):
            f.stream.frame += 1
            # Boxes must keep an area inside [0, W-1] x [0, H-1], where the crops clip them.
            h, w = f.image.shape[:2]
            clipped = clip_boxes(b[:, :4], w, h)
            usable.append((clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]))
        stages: Dict[str, float] = {}
        results = self.runtime.estimate_many([f.image for f in frames], [b[u] for b, u in zip(boxes, usable)],
                                             flip=self.flip, timings=stages)
        persons = np.array([len(r) for r in results], np.float64)
        shares = persons / persons.sum() if persons.sum() else np.full(len(frames), 1.0 / len(frames))
        out = []
        for n, (f, result) in enumerate(zip(frames, results)):
            t[n]["pre"] += stages["pre"] * shares[n]
            t[n]["pose"] = stages["infer"] * shares[n]
            start = time.perf_counter()
            track_ids = f.stream.tracker.update(result, None if ids[n] is None else ids[n][usable[n]])
            kept = track_ids >= 0
            result, track_ids = _take(result, kept), track_ids[kept]
            if f.stream.smoother is not None:
                valid = result.scores > self.keypoint_thresh
                smoothed = f.stream.smoother(track_ids, result.keypoints, f.timestamp, valid)
                result = PoseResult(smoothed, result.scores, result.boxes, result.box_scores)
            t[n]["post"] = stages["post"] * shares[n] + time.perf_counter() - start
            out.append(LiveFrame(f.index, f.timestamp, track_ids, result, n in due or f.detections is not None,
                                 {k: v * 1000.0 for k, v in t[n].items()}, f.source))
        return out

    def reset(self) -> None:
        """Forget tracks and smoothing state of this object's own stream and detect on its next frame."""
        self.stream.reset()


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
    """How a :class:`LiveSession` run went. ``stop_reason`` in words; ``failed``: a source stalled,
    dropped or could not be reopened; ``interrupted``: Ctrl-C; ``timings``: mean ms per frame.
    ``sources``: one summary per source (for a run over one source, the same figures as this one);
    here ``frames``, ``persons`` and ``reconnects`` are their sums and ``seconds`` the loop's time."""

    frames: int = 0
    seconds: float = 0.0
    stop_reason: str = ""
    failed: bool = False
    interrupted: bool = False
    reconnects: int = 0
    persons: int = 0
    timings: Dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    sources: List["LiveSummary"] = field(default_factory=list)

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


class LiveObserver(Protocol):
    """What :class:`LiveSession` tells an observer (a browser view, say). Both calls come from the loop's
    thread and must return at once: an observer that cannot keep up drops frames itself."""

    def wants_image(self, source: int) -> bool:
        """Whether the next :meth:`publish` of ``source`` needs the annotated image (drawing it costs time).
        Optional: an observer without it gets every image."""

    def publish(self, source: int, image: Optional[np.ndarray], stats: Dict[str, Any],
                record: Dict[str, Any]) -> None:
        """A processed frame of ``source``: ``image`` annotated (BGR; None when :meth:`wants_image` said no),
        ``stats`` {"fps", "persons", "timings_ms", "frames", "state": "running"}, ``record`` its JSON-lines
        object. When the source stalls and a reconnect is tried, the last frame comes again with
        ``stats["state"] == "stalled"``."""

    def source_ended(self, source: int, reason: str) -> None:
        """``source`` ended or failed for good (once per source)."""


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
    """Runs :class:`LivePose` over one video source or several and writes the outputs; see :meth:`run`.

    ``source``: a camera index, file, URL or GStreamer pipeline, or a list of them; ``source_options``
    go to each :class:`VideoSource` (width, height, fps, read_timeout, ...). ``output``: annotated video
    file; ``json_path``: JSON lines, one object per frame. With several sources, both hold ``{source}``
    (the source's position: ``out{source}.mp4``) or name a folder (``out/``: ``source0.mp4``,
    ``source0.jsonl``, ...; :func:`edgepose.live.video.per_source_paths`). ``show``: an OpenCV window,
    the sources tiled in a grid ('q' or Esc quits). ``reconnect``: reopen a live source that ends,
    drops or stalls, up to this many attempts in a row (a frame resets the count), ``reconnect_delay``
    seconds apart. ``max_frames``: stop each source after that many. ``on_frame``: called with each
    :class:`LiveFrame` (results for the caller's own use). ``observers``: :class:`LiveObserver` objects
    told of every frame and of sources that end. ``log``: called with one line per event (source
    stopped, reconnecting, and a status line every ``status_every`` seconds; 0: none). ``overlap``
    (default on): detect ahead in the sources' reader threads, beside the pose work on earlier frames
    (same results); the scheduled frames of several sources go to the detector together, one call per
    batch (:class:`edgepose.live.detect_batch.DetectionBatcher`). Without it the detections of a
    tick are one call in the loop, before its pose call.

    Each tick of the loop takes the next frame of every source that has one (never waiting on a source
    that has none: a source that delivers nothing for its ``read_timeout`` is reported as stalled),
    runs them through :meth:`LivePose.process` together and writes each source's outputs.
    """

    def __init__(self, live: LivePose, source: Union[int, str, Sequence[Union[int, str]]], *,
                 source_options: Optional[Dict[str, Any]] = None,
                 output: Optional[str] = None, json_path: Optional[str] = None, show: bool = False,
                 reconnect: int = 0, reconnect_delay: float = 1.0,
                 max_frames: Optional[int] = None, on_frame: Optional[Callable[[LiveFrame], None]] = None,
                 log: Optional[Callable[[str], None]] = None, status_every: float = 0.0,
                 overlap: bool = True, observers: Sequence[LiveObserver] = ()) -> None:
        if reconnect < 0 or (max_frames is not None and max_frames < 1):
            raise InputError("reconnect must be >= 0 and max_frames >= 1; got %r and %r" % (reconnect, max_frames))
        self.live = live
        self.source = source
        self.sources = list(source) if isinstance(source, (list, tuple)) else [source]
        if not self.sources:
            raise InputError("give at least one video source")
        self.source_options = dict(source_options or {})
        self.outputs = per_source_paths(output, len(self.sources), ".mp4", "output")
        self.json_paths = per_source_paths(json_path, len(self.sources), ".jsonl", "JSON output")
        self.show = show
        self.reconnect = int(reconnect)
        self.reconnect_delay = float(reconnect_delay)
        self.max_frames = max_frames
        self.on_frame = on_frame
        self.observers = list(observers)
        self.log = log or (lambda line: None)
        self.status_every = float(status_every)
        self.overlap = bool(overlap)

    def run(self) -> LiveSummary:
        """Process frames until every source ended (or stalled / dropped past ``reconnect``) or reached
        ``max_frames``, or 'q' in the window, or Ctrl-C. Outputs are finalised in every case. Opening a
        source the first time raises when it fails; later failures end that source and are reported in
        its summary while the others go on."""
        summary = LiveSummary()
        opened: List[VideoSource] = []
        streams: List[_Stream] = []
        wake = threading.Event()
        meter = _FpsMeter()
        batcher = DetectionBatcher(self.live.detector) if self.overlap else None
        try:
            for spec in self.sources:  # all open before any output file is made
                opened.append(VideoSource(spec, **self.source_options))
            for i, source in enumerate(opened):
                state = self.live.stream if i == 0 else self.live.new_stream()
                state.reset()
                streams.append(_Stream(i, self, source, state, batcher.member() if batcher else None, wake))
            self._loop(streams, summary, wake, meter)
        except KeyboardInterrupt:
            summary.stop_reason, summary.interrupted = "interrupted (Ctrl-C)", True
            for stream in streams:
                stream.end(summary.stop_reason, False)
        finally:
            for source in opened[len(streams):]:
                source.close()
            for stream in streams:
                stream.close()
            if self.show:
                cv2.destroyAllWindows()
        summary.seconds = meter.seconds
        for stream in streams:
            part = stream.summary
            part.seconds = stream.meter.seconds
            summary.sources.append(part)
            summary.failed = summary.failed or part.failed
            summary.reconnects += part.reconnects
            summary.frames += part.frames
            summary.persons += part.persons
            summary.timings = {k: summary.timings[k] + part.timings[k] for k in STAGES}
            part.finish()
        if len(streams) == 1 and not summary.interrupted:
            summary.stop_reason = streams[0].summary.stop_reason
        elif not summary.stop_reason:
            summary.stop_reason = "all %d sources stopped" % len(streams)
        summary.finish()
        return summary

    def _loop(self, streams: List["_Stream"], summary: LiveSummary, wake: threading.Event,
              meter: "_FpsMeter") -> None:
        status_at = time.monotonic() + self.status_every
        while True:
            wake.clear()
            ready = [(stream, item) for stream, item in ((s, s.next()) for s in streams if not s.ended)
                     if item is not None]
            if not ready:
                if all(s.ended for s in streams):
                    return
                wake.wait(0.05)
                continue
            meter.start()
            for stream, _ in ready:
                stream.meter.start()
            inputs = [stream.input(*item) for stream, item in ready]
            for (stream, _), given, result in zip(ready, inputs, self.live.process(inputs)):
                stream.deliver(result, given.image)
            if self.show and self._show(streams):
                for stream in streams:
                    stream.end("quit from the window", False)
                summary.stop_reason = "quit from the window"
            now = meter.stop()
            if self.status_every and now >= status_at:
                status_at = now + self.status_every
                for stream in streams:
                    if not stream.ended:
                        self.log("%sframe %d: %.1f fps, %s" % (stream.prefix, stream.summary.frames, stream.meter.fps,
                                                               plural(stream.persons, "person")))

    def _show(self, streams: List["_Stream"]) -> bool:
        """Show the latest frames (one source: its frame; several: a grid); True when the user asked
        to quit ('q', Esc, or the window closed)."""
        if len(streams) == 1:
            canvas = streams[0].canvas
        else:
            canvas = tile_images([s.canvas for s in streams],
                                 ["%d: %s%s" % (s.index, s.spec, " (ended)" if s.ended else "") for s in streams])
        if canvas is None:
            return False
        cv2.imshow(WINDOW, canvas)
        key = cv2.waitKey(1) & 0xFF
        return key in _QUIT_KEYS or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1


class _Stream:
    """One source of a :class:`LiveSession` run: its feed, tracking state, outputs, summary and meter."""

    def __init__(self, index: int, session: LiveSession, source: VideoSource, state: StreamState,
                 detector: Optional[BatchMember], wake: threading.Event) -> None:
        self.index = index
        self.spec = str(session.sources[index])
        self.session = session
        self.state = state
        self.prefix = "source %d: " % index if len(session.sources) > 1 else ""
        self.summary = LiveSummary()
        self.meter = _FpsMeter()
        self.ended = False
        self.canvas: Optional[np.ndarray] = None
        self.persons = 0
        self._record: Optional[Dict[str, Any]] = None
        self._origin = time.monotonic()
        self._live = source.live
        output, json_path = session.outputs[index], session.json_paths[index]
        self.video = VideoFileSink(output, source.fps or session.source_options.get("fps") or 30.0) if output else None
        self.jsonl = JsonlSink(json_path) if json_path else None
        log = session.log
        self.feed = Feed(source, reopen=lambda: VideoSource(session.sources[index], **session.source_options),
                         schedule=session.live.schedule, detector=detector,
                         reconnect=session.reconnect, reconnect_delay=session.reconnect_delay, wake=wake,
                         log=(lambda line: log(self.prefix + line)) if self.prefix else log)

    def next(self) -> Optional[FeedItem]:
        """The next frame with its detections, or None (nothing yet, or the source ended)."""
        limit = self.session.max_frames
        if limit is not None and self.summary.frames >= limit:
            self.end("stopped after %d frames (max_frames)" % self.summary.frames, False)
            return None
        while True:
            item = self.feed.poll()
            if isinstance(item, Stopped):
                self.summary.stop_reason, self.summary.failed = item.reason, item.failed
                if not item.retrying:
                    self.end(item.reason, item.failed)
                    return None
                self._publish("stalled")
            elif isinstance(item, Reopened):
                self.summary.reconnects += 1
                self.summary.failed = False
                self.state.reset()
            else:
                return item

    def input(self, frame: Frame, detections: Optional[np.ndarray], detect_ms: float) -> FrameInput:
        timestamp = frame.time - self._origin if self._live else frame.time
        return FrameInput(self.state, frame.image, timestamp, self.summary.frames, detections, detect_ms, self.index)

    def deliver(self, result: LiveFrame, image: np.ndarray) -> None:
        """Write the outputs of ``result``, the poses on ``image``, and tell the observers."""
        session = self.session
        self.summary.add(result)
        self.persons = len(result.ids)
        watched = [getattr(o, "wants_image", lambda source: True)(self.index) for o in session.observers]
        self.canvas = (draw_overlay(image, result, self.meter.fps, session.live.keypoint_thresh)
                       if self.video is not None or session.show or any(watched) else None)
        record = result.record() if self.jsonl is not None or session.observers else None
        _write_together(([self.jsonl.write, record] if self.jsonl is not None else None,
                         [self.video.write, self.canvas] if self.video is not None else None))
        self._record = record
        self._publish("running", watched)
        if session.on_frame is not None:
            session.on_frame(result)
        self.meter.stop()

    def _publish(self, state: str, images: Optional[List[bool]] = None) -> None:
        """Tell the observers the latest stats and record, with the image to those that want it (``images``:
        one flag per observer; None: the image drawn last, to all, e.g. a stalled source's last frame)."""
        if self._record is None:
            return
        stats = {"fps": self.meter.fps, "persons": self.persons, "timings_ms": dict(self._record["timings_ms"]),
                 "frames": self.summary.frames, "state": state}
        for i, observer in enumerate(self.session.observers):
            observer.publish(self.index, self.canvas if images is None or images[i] else None, stats, self._record)

    def end(self, reason: str, failed: bool) -> None:
        """Stop this source for good (once): record why and tell the observers."""
        if self.ended:
            return
        self.ended = True
        self.summary.stop_reason, self.summary.failed = reason, failed
        self.feed.close()
        for observer in self.session.observers:
            observer.source_ended(self.index, reason)

    def close(self) -> None:
        self.feed.close()
        for sink in (self.video, self.jsonl):
            if sink is not None:
                sink.close()


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
