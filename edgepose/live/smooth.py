"""Keypoint smoothing with the One Euro filter (Casiez, Roussel and Vogel, CHI 2012).

Each coordinate of each joint of each tracked person is one signal. The filter is a low-pass
whose cut-off rises with the signal's speed: ``cutoff = min_cutoff + beta * |dx/dt|`` (Hz, with
speed in pixels per second), so a still joint stops jittering while a fast one lags little.
Everything is vectorised over persons x joints x coordinates.
"""
import math
from typing import Dict, Optional, Tuple

import numpy as np

from edgepose.errors import InputError

#: Smallest time step used (seconds): frames with equal or decreasing timestamps count as 1 ms apart.
MIN_DT = 1e-3


def smoothing_factor(cutoff: np.ndarray, dt: float) -> np.ndarray:
    """Exponential-smoothing weight of the new sample for a low-pass at ``cutoff`` Hz over ``dt`` s."""
    r = 2 * math.pi * cutoff * dt
    return r / (r + 1)


class OneEuroFilter:
    """One Euro parameters and the vectorised update step.

    ``min_cutoff`` (Hz): cut-off at rest; lower removes more jitter from still joints.
    ``beta``: how fast the cut-off grows with speed (per pixel/s); higher means less lag when moving.
    ``d_cutoff`` (Hz): cut-off of the low-pass on the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.01, d_cutoff: float = 1.0) -> None:
        if not (min_cutoff > 0 and d_cutoff > 0 and beta >= 0):
            raise InputError("One Euro parameters need min_cutoff > 0, d_cutoff > 0 and beta >= 0; got "
                             "min_cutoff=%r, beta=%r, d_cutoff=%r" % (min_cutoff, beta, d_cutoff))
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)

    def step(self, x: np.ndarray, x_prev: np.ndarray, dx_prev: np.ndarray,
             dt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """One update: new samples ``x``, previous filtered values ``x_prev`` and speeds ``dx_prev``,
        ``dt`` seconds later (all broadcastable) -> (filtered values, filtered speeds)."""
        dt = np.maximum(dt, MIN_DT)
        dx = (x - x_prev) / dt
        dx_hat = dx_prev + smoothing_factor(self.d_cutoff, dt) * (dx - dx_prev)
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
        x_hat = x_prev + smoothing_factor(cutoff, dt) * (x - x_prev)
        return x_hat, dx_hat


class KeypointSmoother:
    """One Euro smoothing of tracked persons' keypoints, with state per track id.

    Call it once per frame with the ids and keypoints of that frame. A person seen for the first
    time, and a joint that was not ``valid`` in the previous or the current frame, restart from the
    raw value. State of ids absent from a call is dropped, so memory stays bounded.
    """

    def __init__(self, one_euro: Optional[OneEuroFilter] = None) -> None:
        self.filter = one_euro or OneEuroFilter()
        self._state: Dict[int, Tuple[float, np.ndarray, np.ndarray, np.ndarray]] = {}

    def __call__(self, ids: np.ndarray, keypoints: np.ndarray, timestamp: float,
                 valid: Optional[np.ndarray] = None) -> np.ndarray:
        """Smoothed copy of ``keypoints`` (N, K, 2) for persons ``ids`` (N,) at ``timestamp`` seconds;
        ``valid`` (N, K) marks joints worth smoothing (default: all)."""
        kpts = np.asarray(keypoints, dtype=np.float32)
        ok = np.ones(kpts.shape[:2], bool) if valid is None else np.asarray(valid, bool)
        ids = [int(i) for i in ids]
        if len(ids) != len(kpts) or ok.shape != kpts.shape[:2]:
            raise InputError("ids (%d,), keypoints %s and valid %s disagree on the number of persons"
                             % (len(ids), kpts.shape, ok.shape))
        t_prev = np.full((len(ids), 1, 1), timestamp, np.float64)
        x_prev = kpts.copy()
        dx_prev = np.zeros_like(kpts)
        ok_prev = np.zeros_like(ok)  # new persons: nothing to smooth against
        for row, i in enumerate(ids):
            if i in self._state:
                t_prev[row], x_prev[row], dx_prev[row], ok_prev[row] = self._state[i]
        x_hat, dx_hat = self.filter.step(kpts, x_prev, dx_prev, timestamp - t_prev)
        keep = (ok & ok_prev)[..., None]
        out = np.where(keep, x_hat, kpts).astype(np.float32)
        speed = np.where(keep, dx_hat, 0).astype(np.float32)
        self._state = {i: (timestamp, out[n], speed[n], ok[n]) for n, i in enumerate(ids)}
        return out

    def reset(self) -> None:
        """Forget every person (after a jump in time, e.g. a reconnected stream)."""
        self._state = {}
