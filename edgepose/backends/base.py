"""The contract every inference backend meets: load a model, run one batch, close.

A backend knows nothing about images, keypoints or boxes: it runs a model with one float32
(N, C, H, W) input and returns one of its outputs (:attr:`Backend.output_name`, the first unless
the caller selects another). What the output must look like is the caller's business: the pose
:class:`edgepose.Runtime` wants (N, K, h, w) heatmaps, :class:`edgepose.detector.YoloxDetector`
(N, anchors, 5 + classes) rows. The public :meth:`Backend.run` checks the batch; subclasses write
only ``_run`` (and ``_close`` where they hold resources).
"""
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from edgepose.errors import InputError, InputTypeError

Shape = Tuple[Optional[int], ...]  # None marks a dynamic dimension
Item = TypeVar("Item")
Result = TypeVar("Result")


def to_shape(dims: Iterable[Any]) -> Shape:
    """A model's dims as a :data:`Shape`: positive integers stay, anything else (-1, 0, names, None) is dynamic."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)


class Backend:
    """One loaded model. Attributes are filled by the subclass constructor."""

    name = "base"
    input_shape: Shape  # (N, C, H, W); N is None when the batch is dynamic
    outputs: Dict[str, Shape]  # every output of the model, in its order, with N as in input_shape
    output_name: str  # the output run() returns: the first one unless select_output() chose another
    max_batch: Optional[int]  # largest batch one call accepts; None = no limit
    metadata: Dict[str, str]  # the model's edgepose metadata (may be empty)
    workers = 1  # CPU threads map() spreads work over

    def __init__(self) -> None:
        self._closed = False

    def map(self, fn: Callable[[Item], Result], items: Sequence[Item]) -> List[Result]:
        """``[fn(item) for item in items]``, spread over :attr:`workers` threads where the backend has them
        (for work that releases the GIL, as ONNX Runtime and OpenCV calls do)."""
        return [fn(item) for item in items]

    @property
    def output_shape(self) -> Shape:
        """The shape of what :meth:`run` returns (None marks a dynamic dimension)."""
        return self.outputs[self.output_name]

    def select_output(self, name: str) -> None:
        """Make :meth:`run` return output ``name`` (one of :attr:`outputs`)."""
        if name not in self.outputs:
            raise InputError("the model has no output %r; its outputs are %s" % (name, ", ".join(self.outputs)))
        self.output_name = name

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Output :attr:`output_name` as float32 for a float32 batch (N, C, H, W) of at most ``max_batch``."""
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
