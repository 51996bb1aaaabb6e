"""Video in and out for live pose: sources read by a background thread, and finalised sinks.

A :class:`VideoSource` opens a camera index (or ``/dev/videoN``), a video file, a stream URL
(``rtsp://``, ``http://``, ...) or a GStreamer pipeline string (Jetson CSI cameras) with OpenCV,
and decodes frames in a daemon thread. The consumer waits for each frame at most
``read_timeout`` seconds, so a stream that stalls (connection open, no frames) is noticed even
though OpenCV's own read would block much longer. Files are read without dropping frames; live
sources keep only the newest frames when the consumer is slower than the camera.

:class:`VideoFileSink` writes an annotated video under a temporary name and renames it when
closed; :class:`JsonlSink` writes one JSON object per line and flushes each line.
"""
import collections
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, List, Optional, Union

import cv2
import numpy as np

from edgepose.errors import EdgeposeError, InputError
from edgepose.fileio import PathLike


CAMERA, FILE, URL, GSTREAMER = "camera", "file", "url", "gstreamer"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: Container -> FourCC OpenCV's bundled FFmpeg can encode.
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


class VideoSourceError(EdgeposeError, OSError):
    """A video source cannot be opened, or OpenCV lacks what it needs."""


def source_kind(spec: Union[int, str]) -> str:
    """``camera`` (an index or /dev/videoN), ``gstreamer`` (a pipeline: elements joined by ``!``),
    ``url`` (scheme://...) or ``file``."""
    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit() or text.startswith("/dev/video"):
        return CAMERA
    if _URL.match(text):
        return URL
    if "!" in text and not os.path.exists(text):
        return GSTREAMER
    return FILE


def has_gstreamer() -> bool:
    """Whether this OpenCV was built with GStreamer (pip wheels never are)."""
    return re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None


def window_problem() -> Optional[str]:
    """Why no OpenCV window can open here (no display, or an OpenCV without GUI), or None."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    if re.search(r"GUI:\s*NONE", cv2.getBuildInformation()):
        return ("this OpenCV has no GUI support (opencv-python-headless); install opencv-python instead "
                "for a window")
    return None


@dataclass
class Frame:
    """A decoded frame: BGR uint8 ``image``, its 0-based ``index`` in the source, and ``time`` in
    seconds (the video time for files, ``time.monotonic()`` at capture for live sources)."""

    image: np.ndarray
    index: int
    time: float


class _End:
    """Queue marker: the reader stopped; ``reason`` says why, ``failed`` whether it was unexpected."""

    def __init__(self, reason: str, failed: bool) -> None:
        self.reason = reason
        self.failed = failed


class VideoSource:
    """Frames from a camera, file, URL or GStreamer pipeline, decoded in a background thread.

    ``width``/``height``/``fps`` are requested from cameras and pipelines; frames of another size
    (from any source) are resized to ``width`` x ``height`` (one of them alone keeps the aspect).
    Opening waits at most ``open_timeout`` seconds (default ``read_timeout``), each :meth:`read`
    at most ``read_timeout``. ``drop_frames`` (default: for live sources) keeps only the newest
    ``buffer`` frames instead of making the reader wait. ``loop``: a file starts again at its end (frame
    indices and times go on growing), for demos and soak tests. Raises VideoSourceError (or InputError for
    a missing file) naming the source when it cannot be opened.
    """

    def __init__(self, spec: Union[int, str], *, width: Optional[int] = None, height: Optional[int] = None,
                 fps: Optional[float] = None, read_timeout: float = 10.0, open_timeout: Optional[float] = None,
                 drop_frames: Optional[bool] = None, buffer: int = 4, loop: bool = False) -> None:
        if read_timeout <= 0 or buffer < 1:
            raise InputError("read_timeout must be > 0 and buffer >= 1; got %r and %r" % (read_timeout, buffer))
        if any(v is not None and v <= 0 for v in (width, height, fps)):
            raise InputError("width, height and fps must be positive; got %r, %r, %r" % (width, height, fps))
        self.spec = str(spec).strip()
        self.kind = source_kind(spec)
        self.live = self.kind != FILE
        self.size = (width, height)
        self.requested_fps = fps
        self.read_timeout = float(read_timeout)
        self.drop_frames = self.live if drop_frames is None else bool(drop_frames)
        self.buffer = int(buffer)
        self.loop = bool(loop) and self.kind == FILE
        self.fps: Optional[float] = None  # reported by OpenCV once open (None when unknown)
        self.frames = 0  # frames handed out by read()
        self.dropped = 0  # frames discarded because the consumer was slower (live sources)
        self.stop_reason: Optional[str] = None
        self.failed = False  # True when the source stopped unexpectedly (stall, drop, error)
        self._queue: Deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._open_error: Optional[BaseException] = None
        self._last_time = 0.0
        self._check_openable()
        self._thread = threading.Thread(target=self._reader, name="edgepose-video-reader", daemon=True)
        self._thread.start()
        wait = self.read_timeout if open_timeout is None else float(open_timeout)
        if not self._opened.wait(wait):
            self.close()
            raise VideoSourceError("opening video source %s took more than %g s; is the camera or server "
                                   "responding? (raise --read-timeout for slow streams)" % (self.describe(), wait))
        if self._open_error is not None:
            self.close()
            raise self._open_error

    def describe(self) -> str:
        """The source as a user named it, with its kind."""
        return "%s %r" % (self.kind, self.spec)

    def _check_openable(self) -> None:
        if self.kind == FILE and not os.path.isfile(self.spec):
            raise InputError("video file %r does not exist; pass a camera index (0), a file, an rtsp:// or "
                             "http:// URL, or a GStreamer pipeline to --source" % self.spec)
        if self.kind == GSTREAMER and not has_gstreamer():
            raise VideoSourceError(
                "the source %r looks like a GStreamer pipeline, but this OpenCV (%s) was built without "
                "GStreamer (cv2.getBuildInformation() says 'GStreamer: NO'; pip wheels never have it). Use "
                "an OpenCV with GStreamer: on Jetson, JetPack's (`sudo apt install python3-opencv` and "
                "`pip uninstall opencv-python opencv-python-headless`), elsewhere a build with "
                "-DWITH_GSTREAMER=ON; or read the camera by index or URL." % (self.spec, cv2.__version__))

    def _open(self) -> "cv2.VideoCapture":
        """The OpenCV capture for this source (may block: runs in the reader thread)."""
        w, h = self.size
        if self.kind == CAMERA:
            cap = cv2.VideoCapture(int(self.spec) if self.spec.isdigit() else self.spec)
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, w), (cv2.CAP_PROP_FRAME_HEIGHT, h),
                                (cv2.CAP_PROP_FPS, self.requested_fps)):
                if value:
                    cap.set(prop, value)
        elif self.kind == GSTREAMER:
            pipeline = self.spec if "appsink" in self.spec else self.spec + " ! videoconvert ! appsink"
            cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        elif self.kind == URL:
            # FFmpeg's own timeouts, longer than ours (read() reports the stall), let a reader thread
            # blocked by a stalled stream end on its own.
            ms = int((2 * self.read_timeout + 1) * 1000)
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(self.spec)
        if not cap.isOpened():
            cap.release()
            hints = {
                CAMERA: "no such camera, or it is busy (ls /dev/video*; check permissions)",
                FILE: "not a video, or a codec OpenCV's FFmpeg cannot decode",
                URL: "server unreachable, wrong path, or a protocol OpenCV's FFmpeg does not speak",
                GSTREAMER: "check the pipeline with gst-launch-1.0; it must end in BGR frames to appsink",
            }
            raise VideoSourceError("cannot open video source %s: %s" % (self.describe(), hints[self.kind]))
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 0 < fps < 1000 else None
        return cap

    def _reader(self) -> None:
        """Thread body: open, then decode frames into the queue until the end, an error or close()."""
        try:
            cap = self._open()
        except BaseException as e:  # handed to the constructor
            self._open_error = e
            self._opened.set()
            return
        self._opened.set()
        index = 0
        end = _End("stream closed by the caller", False)
        offset, start = 0.0, 0  # time and index of the first frame after the last rewind (loop)
        try:
            while not self._stop.is_set():
                ok, image = cap.read()
                if (not ok or image is None) and self.loop and index > 0 and cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
                    offset, start = self._last_time + 1.0 / (self.fps or 30.0), index
                    ok, image = cap.read()
                if not ok or image is None:
                    end = (_End("end of file after %d frames" % index, False) if not self.live else
                           _End("the stream ended or dropped after %d frames" % index, True))
                    break
                self._last_time = offset + self._frame_time(cap, index - start)
                self._put(Frame(self._resize(image), index, self._last_time))
                index += 1
        except Exception as e:  # noqa: BLE001 - reported to the consumer, not lost in the thread
            end = _End("reading failed after %d frames: %s" % (index, e), True)
        finally:
            cap.release()
            self._put(end, force=True)

    def _frame_time(self, cap: "cv2.VideoCapture", index: int) -> float:
        if self.live:
            return time.monotonic()
        msec = cap.get(cv2.CAP_PROP_POS_MSEC)
        if msec > 0 or index == 0 or not self.fps:
            return msec / 1000.0
        return index / self.fps

    def _resize(self, image: np.ndarray) -> np.ndarray:
        w, h = self.size
        if w is None and h is None:
            return image
        ih, iw = image.shape[:2]
        w = w or max(1, round(iw * h / ih))
        h = h or max(1, round(ih * w / iw))
        return image if (iw, ih) == (w, h) else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)

    def _put(self, item: Any, force: bool = False) -> None:
        with self._cond:
            while len(self._queue) >= self.buffer and not force and not self._stop.is_set():
                if self.drop_frames:
                    self._queue.popleft()
                    self.dropped += 1
                    break
                self._cond.wait(0.1)
            if not self._stop.is_set() or force:
                self._queue.append(item)
                self._cond.notify_all()

    def read(self) -> Optional[Frame]:
        """The next frame, or None when the source stopped: see :attr:`stop_reason` and :attr:`failed`.

        Waits at most ``read_timeout`` seconds; a source that delivers nothing for that long is
        reported as stalled (failed) and closed.
        """
        if self.stop_reason is not None:
            return None
        deadline = time.monotonic() + self.read_timeout
        with self._cond:
            while not self._queue and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            item = self._queue.popleft() if self._queue else None
            self._cond.notify_all()
        if isinstance(item, Frame):
            self.frames += 1
            return item
        if item is None and self._stop.is_set():
            self.stop_reason = "closed by the caller"
        elif item is None:
            self.stop_reason = "no frame for %g s after %d frames: the stream stalled" % (
                self.read_timeout, self.frames)
            self.failed = True
        else:
            self.stop_reason, self.failed = item.reason, item.failed
        self.close()
        return None

    def close(self) -> None:
        """Stop the reader. A reader blocked inside OpenCV is left to finish on its own (daemon thread)."""
        self._stop.set()
        with self._cond:
            self._queue.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=1.0)

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self):
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame


#: In an output path, stands for the source's position (0, 1, ...).
SOURCE_FIELD = "{source}"


def per_source_paths(path: Optional[PathLike], count: int, suffix: str, what: str = "output") -> List[Optional[str]]:
    """The output file of each of ``count`` sources from one ``path``: ``{source}`` in it becomes the
    source's position (``out{source}.mp4`` -> out0.mp4, out1.mp4, ...); a folder (existing, or a path
    ending in ``/``) holds ``source0<suffix>``, ``source1<suffix>``, ...; a plain file name serves one
    source only (InputError for several, before anything is written)."""
    if path is None:
        return [None] * count
    text = str(path)
    if SOURCE_FIELD in text:
        return [text.replace(SOURCE_FIELD, str(i)) for i in range(count)]
    if text.endswith(("/", os.sep)) or os.path.isdir(text):
        return [os.path.join(text, "source%d%s" % (i, suffix)) for i in range(count)]
    if count == 1:
        return [text]
    stem, ext = os.path.splitext(text)
    raise InputError("%s %s is one file for %d sources: put {source} in the name (%s{source}%s -> %s0%s, %s1%s, "
                     "...) or give a folder (%s/ -> source0%s, ...)"
                     % (what, text, count, stem, ext or suffix, stem, ext or suffix, stem, ext or suffix, stem, suffix))


class VideoFileSink:
    """Writes frames to a video file, opened at the first frame (its size fixes the video's).

    Frames go to a hidden temporary file next to ``path`` that :meth:`close` finalises and renames,
    so ``path`` is always either absent or a complete video. The container comes from the suffix
    (.mp4, .m4v, .mov, .mkv: MPEG-4 Part 2; .avi: Motion JPEG).
    """

    def __init__(self, path: PathLike, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise InputError("cannot write video %s: use one of the suffixes %s" % (self.path, ", ".join(FOURCC)))
        if not fps > 0:
            raise InputError("video fps must be positive, got %r" % fps)
        self.fps = float(fps)
        self.frames = 0
        self._tmp = self.path.with_name(".%s.partial%s" % (self.path.stem, suffix))
        self._writer: Optional["cv2.VideoWriter"] = None

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                self._writer = None
                raise VideoSourceError("OpenCV cannot write %s (codec %s, %dx%d); try an .avi output"
                                       % (self.path, FOURCC[self.path.suffix.lower()], w, h))
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Finalise the file and move it into place (nothing is written when no frame came)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self._tmp, self.path)

    def __enter__(self) -> "VideoFileSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonlSink:
    """One JSON object per line, each line flushed as written (readable while the run goes on)."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lines = 0
        self._file = open(self.path, "w", encoding="utf-8")

    def write(self, record: Any) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "JsonlSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

