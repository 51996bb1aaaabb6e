"""One person detector shared by the reader threads of the sources, called once per batch.

Each reader thread detects ahead on its scheduled frames (see :class:`edgepose.live.feed.Feed`) beside
the pose work of the loop; with one source every batch is its one frame, run at once. Several sources
reach their scheduled frames at about the same time, so :class:`DetectionBatcher` gathers those requests
and runs them as one ``detect_batch`` call: the first thread to ask waits until every member still reading has asked,
or ``max_wait`` seconds, then runs the batch for all of them; requests arriving meanwhile form the next.
"""
import threading
import time
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np


class _Request:
    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.boxes: Optional[np.ndarray] = None
        self.ms = 0.0
        self.error: Optional[BaseException] = None
        self.done = False


class DetectionBatcher:
    """Batches ``detector.detect`` calls from several threads; :meth:`member` gives each thread its handle.

    ``max_wait``: seconds the first request of a batch waits for the other members (a source that is
    slower or stalled only delays the others by this much).
    """

    def __init__(self, detector: Any, max_wait: float = 0.02) -> None:
        self.detector = detector
        self.max_wait = float(max_wait)
        self._cond = threading.Condition()
        self._members = 0
        self._pending: List[_Request] = []
        self.calls = 0  # detector calls made, and the images they covered
        self.images = 0

    def member(self) -> "BatchMember":
        """A handle for one reader thread (its ``detect`` joins the batches); ``leave()`` it when done."""
        with self._cond:
            self._members += 1
        return BatchMember(self)

    def _leave(self) -> None:
        with self._cond:
            self._members -= 1
            self._cond.notify_all()  # a leader waiting for this member need not

    def _detect(self, image: np.ndarray) -> Tuple[np.ndarray, float]:
        request = _Request(image)
        with self._cond:
            self._pending.append(request)
            leader = len(self._pending) == 1
            if not leader:
                self._cond.notify_all()
                while not request.done:
                    self._cond.wait()
            else:
                deadline = time.monotonic() + self.max_wait
                while len(self._pending) < self._members and time.monotonic() < deadline:
                    self._cond.wait(max(deadline - time.monotonic(), 0.0))
                batch, self._pending = self._pending, []
        if leader:
            self._run(batch)
        if request.error is not None:
            raise request.error
        return request.boxes, request.ms

    def _run(self, batch: Sequence[_Request]) -> None:
        start = time.perf_counter()
        try:
            found = self.detector.detect_batch([r.image for r in batch])
            error = None
        except Exception as e:  # noqa: BLE001 - handed to every thread of the batch
            found, error = [None] * len(batch), e
        share = (time.perf_counter() - start) * 1000.0 / len(batch)
        with self._cond:
            self.calls += 1
            self.images += len(batch)
            for r, boxes in zip(batch, found):
                r.boxes, r.ms, r.error, r.done = boxes, share, error, True
            self._cond.notify_all()


class BatchMember:
    """One thread's way into a :class:`DetectionBatcher`."""

    def __init__(self, batcher: DetectionBatcher) -> None:
        self._batcher = batcher
        self._left = False

    def detect(self, image: np.ndarray) -> Tuple[np.ndarray, float]:
        """Person boxes (N, 5) on ``image`` and this image's share of the batch's milliseconds."""
        return self._batcher._detect(image)

    def leave(self) -> None:
        """This thread detects no more (once; later calls do nothing)."""
        if not self._left:
            self._left = True
            self._batcher._leave()
