"""Calibration data for INT8 quantisation: real person crops, made exactly as the runtime makes them.

``load_calibration(source, meta)`` turns a folder of photos (persons found by the YOLOX detector), a
COCO keypoints file (ground-truth boxes), a video, or an edgepose calibration set ``.npz`` into
normalised crops via :func:`edgepose.transforms.preprocess`, caches them, and splits off held-out
crops for the accuracy gate. Without a source the default public set (COCO val2017 persons) is
downloaded once (:mod:`edgepose.calib.dataset`).

A person detector calibrates on whole images instead: :func:`load_detector_calibration` letterboxes
every image of the same sources as the detector does (:func:`edgepose.detector.letterbox`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, TypeVar, Union

import numpy as np

from edgepose.errors import InputError
from edgepose.fileio import PathLike
from edgepose.meta import ModelMeta

#: Persons used by default (NVIDIA advises 500+ calibration samples).
DEFAULT_MAX_PERSONS = 512
#: Every HELD_OUT_EVERY-th crop is held out for the accuracy gate (20 %), never calibrated on.
HELD_OUT_EVERY = 5
#: Images a detector calibrates on by default (whole images: each holds many activations' worth of persons).
DEFAULT_MAX_IMAGES = 100

#: Called as persons are found: (frames searched, frames to search at most, persons found so far).
ProgressCallback = Callable[[int, int, int], None]
T = TypeVar("T")

__all__ = ["CalibrationSet", "DEFAULT_MAX_IMAGES", "DEFAULT_MAX_PERSONS", "ImageSet", "ProgressCallback",
           "load_calibration", "load_detector_calibration"]


@dataclass
class CalibrationSet:
    """Normalised person crops, (N, 3, H, W) float32 in the model's input format.

    ``crops`` calibrate the quantiser; ``held_out`` (every :data:`HELD_OUT_EVERY`-th person of the
    source, at least one) measure the quantised model. ``origins`` name each person's frame, calibration
    crops first. ``fingerprint`` identifies the data (the cache key).
    """

    crops: np.ndarray
    held_out: np.ndarray
    source: str
    fingerprint: str
    origins: List[str] = field(default_factory=list)

    @property
    def persons(self) -> int:
        return len(self.crops) + len(self.held_out)


def split_held_out(crops: np.ndarray, origins: List[str]) -> tuple:
    """(calibration crops, held-out crops, origins reordered calibration-first)."""
    n = len(crops)
    held = np.zeros(n, bool)
    held[HELD_OUT_EVERY - 1::HELD_OUT_EVERY] = True
    if not held.any():
        held[-1] = True
    order = np.concatenate([np.flatnonzero(~held), np.flatnonzero(held)])
    return crops[~held], crops[held], [origins[i] for i in order]


def _make_detector(detector):
    from edgepose.detector import YoloxDetector, default_detector_path

    if detector is None:
        return YoloxDetector(default_detector_path())
    if isinstance(detector, (str, Path)):
        return YoloxDetector(detector)
    return detector


def _prepare(source, meta: ModelMeta, max_persons: int, detector, report: ProgressCallback) -> tuple:
    """Crop persons from ``source`` until ``max_persons``: (crops (N, 3, H, W), origins)."""
    from edgepose.transforms import preprocess

    batches, origins = [], []
    count = frames = 0
    total = len(source)
    report(0, total, 0)
    for frame in source.frames(detector):
        frames += 1
        boxes = frame.boxes[:max_persons - count]
        if len(boxes):
            batches.append(preprocess(frame.image, boxes, meta, image_is_rgb=False).batch)
            origins += [frame.origin] * len(boxes)
            count += len(boxes)
        report(frames, total, count)
        if count >= max_persons:
            break
    if count == 0:
        raise InputError("calibration source %s yielded no persons (%d %s searched): %s"
                         % (source.path, frames, "frames" if source.kind == "video" else "images",
                            source.no_persons_hint()))
    return np.concatenate(batches), origins


class ProgressBar:
    """A rich progress bar on stderr, gone when closed. As a :data:`ProgressCallback` it shows frames searched
    and (``persons``) persons found; :meth:`track` walks a sequence with it."""

    def __init__(self, title: str, persons: bool = True) -> None:
        from rich.console import Console
        from rich.progress import Progress

        columns = Progress.get_default_columns() + (("{task.fields[persons]} persons found",) if persons else ())
        self.progress = Progress(*columns, console=Console(stderr=True), transient=True)
        self.task = self.progress.add_task(title, total=None, persons=0)
        self.progress.start()

    def track(self, items: Sequence[T]) -> Iterator[T]:
        """The items of ``items``, advancing the bar after each; the bar closes at the end."""
        try:
            for done, item in enumerate(items, 1):
                yield item
                self(done, len(items), 0)
        finally:
            self.close()

    def __call__(self, frames: int, total: int, persons: int) -> None:
        self.progress.update(self.task, completed=frames, total=total, persons=persons)

    def close(self) -> None:
        self.progress.stop()


def _no_progress(frames: int, total: int, persons: int) -> None:
    """The :data:`ProgressCallback` that shows nothing."""


def load_calibration(source: Optional[PathLike], meta: ModelMeta, *, max_persons: int = DEFAULT_MAX_PERSONS,
                     detector=None, progress: Union[bool, ProgressCallback] = True, use_cache: bool = True,
                     images_dir: Optional[PathLike] = None) -> CalibrationSet:
    """Person crops for ``meta``'s model from ``source`` (see the module doc), at most ``max_persons``.

    ``source`` None: the default public set (downloaded once; offline this raises a DownloadError that
    says how to pass ``--calib``). ``detector``: a YoloxDetector or the path of a YOLOX ONNX, for
    folders and videos (default: YOLOX-Nano from the cache, downloaded once). ``images_dir``: where a
    COCO file's images are when not in the usual places. ``progress``: True draws a progress bar on
    stderr while persons are found (frames searched, persons found), False shows nothing, a callable
    receives :data:`ProgressCallback`'s figures instead. Raises InputError when the source yields no
    persons, or fewer than 2 (nothing to hold out).
    """
    from edgepose.calib import cache
    from edgepose.calib.dataset import default_calibration_set
    from edgepose.calib.sources import describe_detector, open_source, source_fingerprint

    if max_persons < 2:
        raise InputError("max_persons must be at least 2 (calibration plus held-out crops), got %d" % max_persons)
    path = default_calibration_set(progress=progress is True) if source is None else source
    src = open_source(path, images_dir)
    det = _make_detector(detector) if src.needs_detector else None
    fingerprint = source_fingerprint(src, [describe_detector(det)] if det is not None else [])
    key = cache.cache_key(fingerprint, meta, max_persons)
    cached = cache.load(key, meta) if use_cache else None
    if cached is not None:
        crops, origins = cached
    else:
        bar = ProgressBar("Finding calibration persons in %s" % src.describe()) if progress is True else None
        try:
            crops, origins = _prepare(src, meta, max_persons, det, bar or progress or _no_progress)
        finally:
            if bar is not None:
                bar.close()
        if use_cache:
            cache.save(key, meta, crops, origins)
    if len(crops) < 2:
        raise InputError("calibration source %s yielded only %d person; pass a source with more people "
                         "(a few hundred is best)" % (src.path, len(crops)))
    calib, held_out, ordered = split_held_out(crops, origins)
    return CalibrationSet(calib, held_out, src.describe(), key, ordered)


@dataclass
class ImageSet:
    """Whole images letterboxed to a detector's input, (N, H, W, 3) uint8 BGR canvases.

    ``images`` calibrate the quantiser; ``held_out`` (every :data:`HELD_OUT_EVERY`-th image, at least one)
    measure the quantised detector. ``origins`` name each image, calibration images first.
    """

    images: np.ndarray
    held_out: np.ndarray
    source: str
    origins: List[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.images) + len(self.held_out)

    @staticmethod
    def blob(canvases: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 canvases -> the detector's (N, 3, H, W) float32 input."""
        return np.ascontiguousarray(canvases.transpose(0, 3, 1, 2), dtype=np.float32)


def load_detector_calibration(source: Optional[PathLike], input_size, *, max_images: int = DEFAULT_MAX_IMAGES,
                              progress: Union[bool, ProgressCallback] = True,
                              images_dir: Optional[PathLike] = None) -> ImageSet:
    """Up to ``max_images`` whole images of ``source`` (as for :func:`load_calibration`; None: the default
    set) letterboxed to ``input_size`` (H, W). Raises InputError when the source has fewer than 2 images."""
    from edgepose.calib.dataset import default_calibration_set
    from edgepose.calib.sources import open_source
    from edgepose.detector import letterbox

    if max_images < 2:
        raise InputError("max_images must be at least 2 (calibration plus held-out images), got %d" % max_images)
    src = open_source(default_calibration_set(progress=progress is True) if source is None else source, images_dir)
    title = "Reading calibration images from %s" % src.describe()
    bar = ProgressBar(title, persons=False) if progress is True else None
    report = bar or progress or _no_progress
    canvases, origins = [], []
    total = min(len(src), max_images)
    try:
        for image, origin in src.images():
            canvases.append(letterbox(image, tuple(input_size))[0])
            origins.append(origin)
            report(len(canvases), total, 0)
            if len(canvases) >= max_images:
                break
    finally:
        if bar is not None:
            bar.close()
    if len(canvases) < 2:
        raise InputError("calibration source %s gave %d image%s; a detector needs at least 2 (a few hundred is best)"
                         % (src.path, len(canvases), "" if len(canvases) == 1 else "s"))
    images, held_out, ordered = split_held_out(np.stack(canvases), origins)
    return ImageSet(images, held_out, src.describe(), ordered)
