"""One source of the live loop: a thread that reads its frames, detects ahead on the scheduled ones
and reopens a live stream that stops, so the loop can poll every source without waiting on any.

The thread hands the loop, in order: ``(frame, boxes or None, detection ms)`` for each frame,
:class:`Stopped` when the source stops (``retrying``: a reconnect follows), :class:`Reopened` when a
reconnect succeeded (frames count from 0 again), and any exception it met.
"""
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from edgepose.errors import EdgeposeError
from edgepose.live.detect_batch import BatchMember
from edgepose.live.video import Frame, VideoSource

FeedItem = Tuple[Frame, Optional[np.ndarray], float]
#: What :meth:`Feed.poll` returns when nothing is waiting.
NOTHING = None


@dataclass
class Stopped:
    """The source stopped: ``reason`` in words, ``failed`` when unexpected; ``retrying``: reconnecting now."""

    reason: str
    failed: bool
    retrying: bool


class Reopened:
    """A reconnect succeeded: the frames that follow start the stream afresh."""


class Feed:
    """Frames of one opened :class:`VideoSource`, read in a thread.

    ``detector``: a :class:`BatchMember` to detect ahead with, in that thread, on the frames ``schedule``
    schedules, while the loop estimates poses on earlier frames (ONNX Runtime and OpenCV release the GIL;
    the detections of several sources go in one batch); None: no detect-ahead. Frames count from 0 at the
    start and after each reconnect, as :class:`edgepose.live.LivePose` counts them. The feed leaves
    ``detector`` when it stops reading.
    ``reopen``: opens the source again; a live source that ends, drops or stalls is reopened up to
    ``reconnect`` attempts in a row (a frame resets the count), ``reconnect_delay`` seconds apart.
    ``wake`` is set whenever something is handed over. ``log`` gets one line per event.
    """

    def __init__(self, source: VideoSource, *, reopen: Callable[[], VideoSource], schedule: Any,
                 detector: Optional[BatchMember], reconnect: int, reconnect_delay: float, wake: threading.Event,
                 log: Callable[[str], None]) -> None:
        self.source = source
        self._reopen = reopen
        self._schedule = schedule
        self._detector = detector
        self._reconnect = reconnect
        self._delay = reconnect_delay
        self._wake = wake
        self._log = log
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=2 if source.live else schedule.every + 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgepose-feed", daemon=True)
        self._thread.start()

    def poll(self) -> Any:
        """The next item (a frame tuple, :class:`Stopped` or :class:`Reopened`), or :data:`NOTHING` yet."""
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return NOTHING
        if isinstance(item, BaseException):
            raise item
        return item

    def _run(self) -> None:
        attempts = 0
        try:
            while True:
                self._read(self.source)
                if self._stop.is_set():
                    return
                source = self.source
                reason, failed = source.stop_reason or "", source.failed
                self._log("%s stopped: %s" % (source.describe(), reason))
                if source.frames:
                    attempts = 0  # attempts count since the last frame
                fresh = None
                if source.live and attempts < self._reconnect:
                    self._put(Stopped(reason, failed, retrying=True))
                while fresh is None and source.live and attempts < self._reconnect and not self._stop.is_set():
                    attempts += 1
                    self._log("reconnecting to %s (attempt %d of %d)" % (source.describe(), attempts, self._reconnect))
                    self._stop.wait(self._delay)
                    try:
                        fresh = self._reopen()
                    except EdgeposeError as e:
                        reason = "reconnecting failed: %s" % e
                        self._log(reason)
                if fresh is None:
                    self._put(Stopped(reason, failed, retrying=False))
                    return
                self.source = fresh
                if self._stop.is_set():
                    fresh.close()
                    return
                self._put(Reopened())
        except Exception as e:  # noqa: BLE001 - raised again in the loop's thread
            self._put(e)
        finally:
            if self._detector is not None:
                self._detector.leave()  # the other sources' detections stop waiting for this one

    def _read(self, source: VideoSource) -> None:
        """Hand over the frames of ``source`` until it stops or :meth:`close`."""
        count = 0
        while not self._stop.is_set():
            frame = source.read()
            if frame is None:
                return
            boxes, ms = None, 0.0
            if self._detector is not None and self._schedule.scheduled(count):
                boxes, ms = self._detector.detect(frame.image)
            count += 1
            self._put((frame, boxes, ms))

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                self._wake.set()
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self._stop.set()
        self.source.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self.source.close()  # a source reopened meanwhile
