"""Where calibration persons come from: frames (BGR images) with person boxes.

Four kinds of source, told apart by the path:

* a folder of images: persons found with the YOLOX detector (files sorted by name);
* a COCO keypoints annotation file (``.json``): ground-truth person boxes, chosen as GluonCV's
  evaluation chooses them (:func:`edgepose.coco.gt_person_boxes`); needs pycocotools;
* a video file (``.mp4``, ``.avi``, ...): evenly spaced frames, persons found with the detector;
* an edgepose calibration set (``.npz``, see :mod:`edgepose.calib.dataset`): stored image
  patches with ground-truth boxes.

Images (and video frames) are visited in a fixed, spread-out order, so that stopping early at
``max_persons`` still samples the whole source. Every source lists the files whose bytes define
it, for the crop cache key.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepose.errors import InputError
from edgepose.fileio import IMAGE_SUFFIXES, PathLike, file_hash, images_in, read_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
#: A video contributes at most this many frames (evenly spaced over its length).
MAX_VIDEO_FRAMES = 300
#: Seed of the order in which images are visited (a fixed permutation: early stops stay spread out).
ORDER_SEED = 0


@dataclass
class PersonFrame:
    """One image of a calibration source and the persons on it: ``boxes`` (N, 4) float64 x1, y1, x2, y2 in
    pixels (not :class:`edgepose.live.video.Frame`, a decoded frame of a live source)."""

    image: np.ndarray
    boxes: np.ndarray
    origin: str  # file name, or "video.mp4#frame"


def spread_order(n: int) -> np.ndarray:
    """Indices 0..n-1 in a fixed pseudo-random order (the same for every run)."""
    return np.random.default_rng(ORDER_SEED).permutation(n)


def read_calib_image(path: Path) -> np.ndarray:
    """An image of a calibration source; a bad one is an error that says to remove it."""
    return read_image(path, "remove it from the calibration source")


class PersonSource:
    """Frames with person boxes. Subclasses set ``kind`` and ``needs_detector``."""

    kind = "source"
    needs_detector = False

    def __init__(self, path: Path) -> None:
        self.path = path

    def files(self) -> List[Path]:
        """The files whose content defines what this source yields (for the cache key)."""
        raise NotImplementedError

    def __len__(self) -> int:
        """How many frames :meth:`frames` visits at most (for the progress bar)."""
        raise NotImplementedError

    def frames(self, detector=None) -> Iterator[PersonFrame]:
        """Frames in visiting order; ``detector`` (a YoloxDetector) when ``needs_detector``."""
        raise NotImplementedError

    def images(self) -> Iterator[Tuple[np.ndarray, str]]:
        """(BGR image, origin) of every frame in visiting order, persons or not (a detector's calibration)."""
        raise NotImplementedError

    def describe(self) -> str:
        return "%s %s" % (self.kind, self.path)

    def no_persons_hint(self) -> str:
        """What to do when this source yielded no person."""
        return "pass a source with people in it"


class ImageFolderSource(PersonSource):
    """Every image in a folder (not recursive), persons found by the detector."""

    kind = "image folder"
    needs_detector = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.paths = images_in(path)
        if not self.paths:
            raise InputError("calibration folder %s has no images (%s); pass a folder of photos with "
                             "people in them" % (path, ", ".join(IMAGE_SUFFIXES)))

    def files(self) -> List[Path]:
        return list(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def frames(self, detector=None) -> Iterator[PersonFrame]:
        for image, origin in self.images():
            yield PersonFrame(image, detector.detect(image)[:, :4].astype(np.float64), origin)

    def images(self) -> Iterator[Tuple[np.ndarray, str]]:
        for i in spread_order(len(self.files())):
            path = self.files()[i]
            yield read_calib_image(path), path.name

    def no_persons_hint(self) -> str:
        return ("the person detector found nobody in its %d images; pass a folder of photos with people "
                "in them" % len(self.paths))


class SampledVideoSource(PersonSource):
    """Up to :data:`MAX_VIDEO_FRAMES` evenly spaced frames of a video file, persons found by the detector
    (not :class:`edgepose.live.video.VideoSource`, which streams every frame of a camera, stream or file)."""

    kind = "video"
    needs_detector = True

    def __init__(self, path: Path, max_frames: int = MAX_VIDEO_FRAMES) -> None:
        super().__init__(path)
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise InputError("cannot open video %s (missing codec or not a video)" % path)
            self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        self.step = max(1, -(-self.frame_count // max_frames)) if self.frame_count > 0 else 1
        self.max_frames = max_frames

    def files(self) -> List[Path]:
        return [self.path]

    def __len__(self) -> int:
        if self.frame_count <= 0:
            return self.max_frames
        return min(self.max_frames, -(-self.frame_count // self.step))

    def frames(self, detector=None) -> Iterator[PersonFrame]:
        for image, origin in self.images():
            yield PersonFrame(image, detector.detect(image)[:, :4].astype(np.float64), origin)

    def images(self) -> Iterator[Tuple[np.ndarray, str]]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            index = used = 0
            while used < self.max_frames:
                ok, image = cap.read()
                if not ok:
                    break
                if index % self.step == 0:
                    used += 1
                    yield image, "%s#%d" % (self.path.name, index)
                index += 1
        finally:
            cap.release()

    def no_persons_hint(self) -> str:
        return "the person detector found nobody in its frames; pass a video (or photos) with people in it"


class CocoSource(PersonSource):
    """A COCO keypoints annotation file: ground-truth person boxes on its images.

    Images are looked up in ``images_dir``, else beside the file, else in COCO's own layout
    (``annotations/person_keypoints_val2017.json`` -> ``../val2017/``).
    """

    kind = "COCO keypoints file"

    def __init__(self, path: Path, images_dir: Optional[PathLike] = None) -> None:
        super().__init__(path)
        from edgepose.coco import load_coco

        self.coco = load_coco(path)
        self.image_ids = sorted(self.coco.getImgIds())
        if not self.image_ids:
            raise InputError("COCO file %s lists no images" % path)
        self.images_dir = self._find_images_dir(images_dir)

    def _find_images_dir(self, images_dir: Optional[PathLike]) -> Path:
        first = self.coco.loadImgs(self.image_ids[0])[0]["file_name"]
        split = self.path.stem.rsplit("_", 1)[-1]
        candidates = [Path(images_dir)] if images_dir is not None else [
            self.path.parent, self.path.parent / split, self.path.parent.parent / split]
        for folder in candidates:
            if (folder / first).is_file():
                return folder
        raise InputError("the images of %s (first: %s) are not in %s; put them beside the file or pass "
                         "their folder" % (self.path, first, " or ".join(str(c) for c in candidates)))

    def files(self) -> List[Path]:
        return [self.path] + [self.images_dir / self.coco.loadImgs(i)[0]["file_name"] for i in self.image_ids]

    def __len__(self) -> int:
        return len(self.image_ids)

    def frames(self, detector=None) -> Iterator[PersonFrame]:
        from edgepose.coco import gt_person_boxes

        for i in spread_order(len(self.image_ids)):
            image_id = self.image_ids[i]
            boxes = gt_person_boxes(self.coco, image_id)[:, :4]
            if len(boxes) == 0:
                continue
            name = self.coco.loadImgs(image_id)[0]["file_name"]
            yield PersonFrame(read_calib_image(self.images_dir / name), boxes, name)

    def images(self) -> Iterator[Tuple[np.ndarray, str]]:
        for i in spread_order(len(self.image_ids)):
            name = self.coco.loadImgs(self.image_ids[i])[0]["file_name"]
            yield read_calib_image(self.images_dir / name), name

    def no_persons_hint(self) -> str:
        return "it has no person annotations with labelled keypoints; pass a COCO person_keypoints file"


class CalibrationSetSource(PersonSource):
    """An edgepose calibration set (.npz of image patches with person boxes)."""

    kind = "calibration set"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from edgepose.calib.dataset import read_calibration_set

        self.patches = read_calibration_set(path)

    def files(self) -> List[Path]:
        return [self.path]

    def __len__(self) -> int:
        return len(self.patches)

    def frames(self, detector=None) -> Iterator[PersonFrame]:
        for i in range(len(self.patches)):
            yield PersonFrame(self.patches.image(i), self.patches.boxes[i:i + 1].astype(np.float64),
                        "%s#%d" % (self.path.name, i))

    def images(self) -> Iterator[Tuple[np.ndarray, str]]:
        for i in range(len(self.patches)):
            yield self.patches.image(i), "%s#%d" % (self.path.name, i)


def open_source(source: PathLike, images_dir: Optional[PathLike] = None) -> PersonSource:
    """The :class:`PersonSource` for a path: folder, ``.json``, video or ``.npz`` (see module doc)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError("calibration source %s does not exist; pass a folder of photos with people, a COCO "
                         "person_keypoints .json, a video or an edgepose calibration set .npz" % path)
    if path.is_dir():
        return ImageFolderSource(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return CocoSource(path, images_dir)
    if suffix == ".npz":
        return CalibrationSetSource(path)
    if suffix in VIDEO_SUFFIXES:
        return SampledVideoSource(path)
    if suffix in IMAGE_SUFFIXES:
        raise InputError("calibration source %s is a single image; put a few hundred photos with people in a "
                         "folder and pass the folder" % path)
    raise InputError("cannot tell what calibration source %s is (suffix %r); pass a folder of images, a COCO "
                     ".json, a video (%s) or a calibration set .npz" % (path, suffix, ", ".join(VIDEO_SUFFIXES)))


def describe_detector(detector) -> dict:
    """What makes a detector's boxes what they are: its model file's SHA-256 and thresholds."""
    return {"model_sha256": file_hash(detector.model_path, "sha256"), "score_thresh": detector.score_thresh,
            "nms_thresh": detector.nms_thresh, "input_size": list(detector.input_size)}


def source_fingerprint(source: PersonSource, extra: Sequence[object] = ()) -> str:
    """SHA-256 over the kind, the file names, sizes and contents of a source (and ``extra``)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([source.kind, list(extra)], sort_keys=True, default=str).encode())
    for path in source.files():
        digest.update(("%s\0%d\0%s\n" % (path.name, path.stat().st_size, file_hash(path, "sha256"))).encode())
    return digest.hexdigest()
