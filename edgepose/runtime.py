"""``edgepose.Runtime``: a pose model behind a backend, with NumPy/OpenCV pre- and post-processing.

Data flows one way: image(s) + boxes -> :func:`edgepose.transforms.preprocess_many` -> backend (in
chunks the model accepts) -> :func:`edgepose.decode.decode` -> keypoints in image pixels.
Everything the pipeline needs (input size, normalisation, decoder, flip pairs) is read once
from the model's metadata into :attr:`Runtime.meta`.
"""
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgepose.backends import Backend, open_backend
from edgepose.decode import decode, merge_flip
from edgepose.errors import InputError, ModelFileError
from edgepose.meta import ModelMeta
from edgepose.models import find_model, resolve_model, warn_if_random
from edgepose.transforms import flip_batch, preprocess_many


@dataclass
class PoseResult:
    """Keypoints of N persons. ``keypoints`` (N, K, 2) float32 x, y image pixels; ``scores`` (N, K)
    float32 heatmap peaks; ``boxes`` (N, 4) float32 x1, y1, x2, y2 as used (clipped to the image);
    ``box_scores`` (N,) float32 (1 where the caller gave no scores)."""

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def instance_scores(self, keypoint_thresh: float = 0.2) -> np.ndarray:
        """COCO result score per person, as GluonCV computes it: mean of the joint scores above
        ``keypoint_thresh`` (0 where none) times the box score."""
        above = self.scores > keypoint_thresh
        total = np.where(above, self.scores, 0).sum(axis=1)
        count = above.sum(axis=1)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        return (mean * self.box_scores).astype(np.float32)


class Runtime:
    """Top-down pose estimation with one model.

    ``model``: an ``.onnx`` file (ONNX Runtime), an engine (``.engine``/``.plan``/``.trt``, TensorRT), a
    ``triton://HOST:PORT/NAME`` URL, or a model name (zoo ``NAME`` or ``NAME:HASHTAG``) whose conversion
    in the edgepose cache is chosen by ``precision`` (fp32, fp16, int8) and ``target`` (INT8: tensorrt,
    cpu) and the default order of :mod:`edgepose.models`; :attr:`model` is the file used.
    ``backend`` overrides the choice made from the file name.
    A model without edgepose metadata (a COCO-17 heatmap model from elsewhere) takes its input
    size from its input shape or ``input_size``, and ImageNet mean/std on RGB in [0, 1] unless
    ``mean``/``std``/``color_order`` say otherwise. Other keyword arguments go to the backend
    (for ONNX Runtime: ``providers``, ``threads``, ``parallel``).
    """

    def __init__(self, model: str, backend: str = "auto", *,
                 precision: Optional[str] = None, target: Optional[str] = None,
                 input_size: Optional[Tuple[int, int]] = None,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 color_order: Optional[str] = None, decoder: Optional[str] = None,
                 **backend_options: Any) -> None:
        self.model = self._resolve(str(model), precision, target)
        self.backend: Backend = open_backend(self.model, backend, **backend_options)
        try:
            self.meta = self._configure(input_size, mean, std, color_order, decoder)
        except Exception:
            self.backend.close()
            raise

    @staticmethod
    def _resolve(model: str, precision: Optional[str], target: Optional[str]) -> str:
        """The file (or URL) ``model`` means; a name that resolves to random weights warns."""
        if "://" in model:
            return resolve_model(model, precision, target)
        conversion = find_model(model, precision, target)
        if not Path(model).expanduser().is_file():  # chosen by name
            warn_if_random(conversion)
        return str(conversion.path)

    def _configure(self, input_size: Optional[Tuple[int, int]], mean: Optional[Sequence[float]],
                   std: Optional[Sequence[float]], color_order: Optional[str],
                   decoder: Optional[str]) -> ModelMeta:
        heatmaps = [name for name, shape in self.backend.outputs.items() if len(shape) == 4]
        if not heatmaps:
            raise ModelFileError("%s is not a top-down heatmap model: expected a (N, K, h, w) heatmap output, found "
                                 "outputs %s" % (self.model, list(self.backend.outputs.items())))
        self.backend.select_output(heatmaps[0])
        model_hw = self.backend.input_shape[2:]
        if input_size is None and not ModelMeta.has_edgepose_props(self.backend.metadata):
            if None in model_hw:
                raise InputError("%s has no edgepose metadata and a dynamic input size; pass "
                                 "input_size=(H, W)" % self.model)
            input_size = (int(model_hw[0]), int(model_hw[1]))  # type: ignore[arg-type]
        meta = ModelMeta.from_props(
            self.backend.metadata, input_size=tuple(input_size) if input_size else None,
            mean=tuple(mean) if mean is not None else None, std=tuple(std) if std is not None else None,
            color_order=color_order, decoder=decoder)
        if None not in model_hw and tuple(model_hw) != meta.input_size:
            raise ModelFileError("%s takes %s inputs but its metadata / arguments say %s"
                                 % (self.model, tuple(model_hw), meta.input_size))
        return meta

    @property
    def max_batch(self) -> Optional[int]:
        """Largest batch one backend call takes (None: no limit); persons are chunked to it."""
        return self.backend.max_batch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Heatmaps (N, K, h, w) for a normalised (N, 3, H, W) batch, chunked to :attr:`max_batch`."""
        return self.backend.run_chunked(batch)

    def estimate(self, image: np.ndarray, boxes: np.ndarray, flip: bool = False,
                 rgb: bool = False, timings: Optional[Dict[str, float]] = None) -> PoseResult:
        """Keypoints of the persons in ``boxes`` ((N, 4) x1, y1, x2, y2 pixels, or (N, 5) with scores)
        on ``image`` (H, W, 3) uint8, BGR as OpenCV reads it unless ``rgb``.

        ``flip`` averages with the mirrored crops, as GluonCV's flip test (better AP, 2x compute).
        ``timings``, when given, receives the seconds spent in "pre", "infer" and "post".
        """
        return self.estimate_many([image], [boxes], flip=flip, rgb=rgb, timings=timings)[0]

    def estimate_many(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], flip: bool = False,
                      rgb: bool = False, timings: Optional[Dict[str, float]] = None) -> List[PoseResult]:
        """:meth:`estimate` on several images at once (``boxes[i]`` on ``images[i]``): the persons of all
        images go through the model in one batch (several camera frames of one instant, say); one
        :class:`PoseResult` per image. ``timings`` receives the seconds of the whole call."""
        t0 = time.perf_counter()
        crops, counts = preprocess_many(images, boxes, self.meta, image_is_rgb=rgb, map_each=self.backend.map)
        box_scores = []
        for b, n in zip(boxes, counts):
            arr = np.asarray(b, dtype=np.float32)
            box_scores.append(arr[:, 4].copy() if arr.ndim == 2 and arr.shape[1] == 5 else np.ones(n, np.float32))
        n = len(crops)
        k = self.meta.num_keypoints
        t1 = time.perf_counter()
        if n == 0:
            heatmaps = None
        elif flip:
            both = self.infer(np.concatenate([crops.batch, flip_batch(crops.batch)]))
            heatmaps = merge_flip(both[:n], both[n:], self.meta.flip_pairs)
        else:
            heatmaps = self.infer(crops.batch)
        t2 = time.perf_counter()
        if heatmaps is None:
            keypoints, scores = np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32)
        else:
            keypoints, scores = decode(heatmaps, crops, self.meta)
        used = crops.boxes.astype(np.float32).reshape(-1, 4)
        cuts = np.cumsum(counts)[:-1]
        results = [PoseResult(kp, sc, bx, bs) for kp, sc, bx, bs in zip(
            np.split(keypoints, cuts), np.split(scores, cuts), np.split(used, cuts), box_scores)]
        if timings is not None:
            timings.update(pre=t1 - t0, infer=t2 - t1, post=time.perf_counter() - t2)
        return results

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Runtime(%r, backend=%s, model=%s %dx%d, decoder=%s)" % (
            self.model, self.backend.name, self.meta.name, self.meta.input_size[0],
            self.meta.input_size[1], self.meta.decoder)
