"""The contract every inference backend meets: load a model, run one batch, close.

A backend knows nothing about images or keypoints: it maps a float32 (N, 3, H, W) batch of
crops to (N, K, h, w) heatmaps. The public :meth:`Backend.run` checks the batch; subclasses
write only ``_run`` (and ``_close`` where they hold resources).
"""
from typing import Dict, Optional, Tuple

import numpy as np

from edgepose.errors import InputError, InputTypeError

Shape = Tuple[Optional[int], ...]  # None marks a dynamic dimension


class Backend:
    """One loaded model. Attributes are filled by the subclass constructor."""

    name = "base"
    input_shape: Shape  # (N, 3, H, W); N is None when the batch is dynamic
    max_batch: Optional[int]  # largest batch one call accepts; None = no limit
    metadata: Dict[str, str]  # the model's edgepose metadata (may be empty)

    def __init__(self) -> None:
        self._closed = False

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Heatmaps (N, K, h, w) float32 for a float32 batch (N, 3, H, W) of at most ``max_batch``."""
        if self._closed:
            raise InputError("this %s backend was closed; create a new Runtime" % self.name)
        if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
            raise InputTypeError("a backend batch must be a float32 NumPy array, got %s"
                                 % getattr(batch, "dtype", type(batch).__name__))
        want = self.input_shape
        if batch.ndim != 4 or any(w is not None and w != g for w, g in zip(want[1:], batch.shape[1:])):
            raise InputError("batch shape %s does not fit the model input %s"
                             % (batch.shape, tuple("N" if d is None else d for d in want)))
        if self.max_batch is not None and batch.shape[0] > self.max_batch:
            raise InputError("batch of %d exceeds the model's limit of %d" % (batch.shape[0], self.max_batch))
        return self._run(np.ascontiguousarray(batch))

    def run_chunked(self, batch: np.ndarray, step: Optional[int] = None) -> np.ndarray:
        """Heatmaps for a batch of any size, run in calls of at most ``step`` crops and :attr:`max_batch`."""
        limits = [s for s in (step, self.max_batch) if s]
        step = min(limits) if limits else len(batch)
        if len(batch) <= step:
            return self.run(batch)
        return np.concatenate([self.run(batch[i:i + step]) for i in range(0, len(batch), step)])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        """Release resources (sessions, device buffers)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
