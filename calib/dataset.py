"""The default calibration set: COCO val2017 person patches, published as an edgepose release asset.

Format (version 1), an ``.npz`` readable without pickle:

* ``jpeg`` uint8 (bytes,): the patches' JPEG files, concatenated; ``offsets`` int64 (P + 1,);
* ``boxes`` float32 (P, 4): the person's x1, y1, x2, y2 inside its patch (GluonCV's GT box rule);
* ``keypoints`` float32 (P, 17, 3): its COCO keypoints (x, y, visibility) in patch pixels;
* ``image_ids``, ``ann_ids``, ``licenses`` int64 (P,) and ``flickr_urls`` (P,) unicode: provenance;
* ``version`` int64 scalar.

A patch is the person's image region grown to 1.35 x max(w, h) + 2 px around the box centre on
every side (clipped to the image): more than any zoo crop reads (simple crops reach 0.625 x 2 x
max(w, h) for input aspect ratios in [1/2, 2]; AlphaPose crops 1.3 x max(w, h)), so cropping a patch
gives the crop of the full image up to the JPEG re-encoding (and, rarely, a 1/32-pixel rounding step
of the fixed-point warp, whose source coordinates depend on the image origin).

The SHA-256 of the published file: a pinned constant cannot be computed before the file exists
(it depends on the COCO images and on the JPEG encoder of the machine that builds it), and an invented
one would fail every download. So :data:`CALIB_SET_SHA256` stays ``None`` until the asset is published
(``benchmarks/tools/make_calib_set.py`` prints the value to pin); while it is ``None`` the expected
hash is read from the ``.sha256`` file published beside the asset (``sha256sum`` format). That sidecar
detects corrupt and truncated transfers, though not a compromised host: pin the constant (or set
``$EDGEPOSE_CALIB_SHA256``) to protect against that.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

import cv2
import numpy as np

from edgepose.cache import cache_dir
from edgepose.errors import DownloadError, InputError
from edgepose.fileio import PathLike

FORMAT_VERSION = 1
CALIB_SET_FILE = "coco_val2017_person_crops_v1.npz"
DEFAULT_CALIB_URL = "https://github.com/edgepose/edgepose/releases/download/calib-v1/" + CALIB_SET_FILE
#: SHA-256 of the published asset; None until it is published (then the ``.sha256`` sidecar is used).
CALIB_SET_SHA256: Optional[str] = None
#: Persons in the published set (NVIDIA advises 500+ calibration samples).
DEFAULT_PERSONS = 512
#: COCO license ids whose terms allow redistributing crops: CC BY, CC BY-SA, no known copyright,
#: US government work (NC and ND licenses excluded).
REDISTRIBUTABLE_LICENSES = (4, 5, 7, 8)
PATCH_GROWTH = 1.35
JPEG_QUALITY = 95
_KEYS = ("jpeg", "offsets", "boxes", "keypoints", "image_ids", "ann_ids", "licenses", "flickr_urls", "version")
_HOW_TO_CALIBRATE = ("Pass your own calibration images instead: --calib DIR (a folder of photos with people), "
                     "--calib person_keypoints.json (COCO, ground-truth boxes) or --calib VIDEO.")


@dataclass
class PatchSet:
    """A calibration set in memory: JPEG patches and one person box per patch."""

    jpeg: np.ndarray
    offsets: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def image(self, i: int) -> np.ndarray:
        """Patch ``i`` decoded to a BGR uint8 image."""
        image = cv2.imdecode(self.jpeg[self.offsets[i]:self.offsets[i + 1]], cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("patch %d of the calibration set is not a valid JPEG; delete the file and "
                             "download or build it again" % i)
        return image


def read_calibration_set(path: PathLike) -> PatchSet:
    """Load and check an edgepose calibration set ``.npz`` (no pickle)."""
    try:
        with np.load(str(path), allow_pickle=False) as data:
            missing = [k for k in _KEYS if k not in data.files]
            if missing:
                raise InputError("%s is not an edgepose calibration set (missing %s); make one with "
                                 "benchmarks/tools/make_calib_set.py" % (path, ", ".join(missing)))
            arrays = {k: data[k] for k in ("jpeg", "offsets", "boxes", "keypoints", "version")}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError("cannot read calibration set %s (%s); download or build it again" % (path, e)) from e
    if int(arrays["version"]) != FORMAT_VERSION:
        raise InputError("calibration set %s has format version %d; this edgepose reads version %d"
                         % (path, int(arrays["version"]), FORMAT_VERSION))
    n = arrays["boxes"].shape[0]
    offsets = arrays["offsets"]
    if (arrays["boxes"].shape != (n, 4) or offsets.shape != (n + 1,) or offsets[0] != 0
            or offsets[-1] != arrays["jpeg"].size or np.any(np.diff(offsets) <= 0)):
        raise InputError("calibration set %s is inconsistent (boxes %s, offsets %s, %d JPEG bytes); build or "
                         "download it again" % (path, arrays["boxes"].shape, offsets.shape, arrays["jpeg"].size))
    return PatchSet(arrays["jpeg"], offsets, arrays["boxes"], arrays["keypoints"])


# --------------------------------------------------------------------------- building
def patch_region(box: np.ndarray, img_w: int, img_h: int) -> np.ndarray:
    """Integer x0, y0, x1, y1 (exclusive) of the patch kept around an x1, y1, x2, y2 ``box``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = PATCH_GROWTH * max(box[2] - box[0], box[3] - box[1]) + 2
    return np.array([max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half))),
                     min(img_w, int(np.ceil(cx + half)) + 1), min(img_h, int(np.ceil(cy + half)) + 1)])


def npz_bytes(arrays: Dict[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` with fixed timestamps (same arrays -> same bytes), as bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def build_calibration_set(ann_file: PathLike, images_dir: PathLike, out: PathLike, *,
                          persons: int = DEFAULT_PERSONS, licenses: Optional[Sequence[int]] = REDISTRIBUTABLE_LICENSES,
                          min_keypoints: int = 1, progress: bool = True) -> str:
    """Write a calibration set of ``persons`` COCO persons to ``out`` (+ ``out.sha256``); return its SHA-256.

    Persons are those GluonCV evaluates (:func:`edgepose.coco.gt_person_boxes` rules) with at least
    ``min_keypoints`` labelled keypoints, on images whose COCO license id is in ``licenses`` (None: any);
    one person per image, images taken in the fixed order of :func:`edgepose.calib.sources.spread_order`.
    The same inputs and OpenCV build give the same bytes.
    """
    import hashlib

    from edgepose.calib.sources import CocoSource, read_calib_image, spread_order
    from edgepose.fileio import atomic_write_bytes
    from edgepose.transforms import coco_xywh_to_xyxy

    source = CocoSource(Path(ann_file), images_dir)
    coco = source.coco
    picked = []
    for i in spread_order(len(source.image_ids)):
        info = coco.loadImgs(source.image_ids[i])[0]
        if licenses is not None and info.get("license") not in licenses:
            continue
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=info["id"], catIds=[1], iscrowd=False))
                if a.get("num_keypoints", 0) >= min_keypoints and a["bbox"][2] > 1 and a["bbox"][3] > 1]
        if anns:
            picked.append((info, max(anns, key=lambda a: a["bbox"][2] * a["bbox"][3])))
        if len(picked) == persons:
            break
    if not picked:
        raise InputError("%s has no person with %d+ labelled keypoints on images with licenses %s"
                         % (ann_file, min_keypoints, list(licenses or [])))
    blobs, boxes, keypoints = [], [], []
    for info, ann in _progress(picked, progress, "Building calibration set"):
        image = read_calib_image(source.images_dir / info["file_name"])
        box = coco_xywh_to_xyxy(np.array([ann["bbox"]]), info["width"], info["height"])[0]
        x0, y0, x1, y1 = patch_region(box, info["width"], info["height"])
        ok, jpeg = cv2.imencode(".jpg", image[y0:y1, x0:x1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise InputError("OpenCV could not encode a JPEG patch of %s" % info["file_name"])
        blobs.append(jpeg.reshape(-1))
        boxes.append(box - [x0, y0, x0, y0])
        kps = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)
        kps[:, :2] -= np.where(kps[:, 2:] > 0, [x0, y0], 0)
        keypoints.append(kps)
    arrays = {
        "jpeg": np.concatenate(blobs),
        "offsets": np.concatenate([[0], np.cumsum([b.size for b in blobs])]).astype(np.int64),
        "boxes": np.asarray(boxes, np.float32),
        "keypoints": np.asarray(keypoints, np.float32),
        "image_ids": np.array([info["id"] for info, _ in picked], np.int64),
        "ann_ids": np.array([ann["id"] for _, ann in picked], np.int64),
        "licenses": np.array([info.get("license", 0) for info, _ in picked], np.int64),
        "flickr_urls": np.array([info.get("flickr_url", "") for info, _ in picked], dtype=str),
        "version": np.array(FORMAT_VERSION, np.int64),
    }
    out = Path(out)
    data = npz_bytes(arrays)
    sha256 = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(out, data)
    atomic_write_bytes(out.with_name(out.name + ".sha256"), ("%s  %s\n" % (sha256, out.name)).encode())
    return sha256


def _progress(items: Sequence, enabled: bool, title: str) -> Iterable:
    if not enabled:
        return items
    from edgepose.calib import ProgressBar

    return ProgressBar(title, persons=False).track(items)


# --------------------------------------------------------------------------- download
def _sidecar_sha256(url: str, timeout: float) -> str:
    """The SHA-256 published beside ``url`` as ``url.sha256`` (``sha256sum`` format)."""
    from edgepose.download import download

    with tempfile.TemporaryDirectory(prefix="edgepose-calib-") as tmp:
        path = download(url + ".sha256", Path(tmp) / "asset.sha256", timeout=timeout, progress=False,
                        hint=_HOW_TO_CALIBRATE)
        text = path.read_text(errors="replace").strip()
    match = re.match(r"([0-9a-fA-F]{64})\b", text)
    if not match:
        raise DownloadError("%s.sha256 does not start with a 64-hex SHA-256 (got %r); the mirror is not "
                            "publishing the checksum file. %s" % (url, text[:80], _HOW_TO_CALIBRATE))
    return match.group(1).lower()


def default_calibration_set(*, url: Optional[str] = None, sha256: Optional[str] = None,
                            timeout: float = 10.0, progress: bool = True) -> Path:
    """The default calibration set in ``cache_dir("calib")``, downloaded (and SHA-256 checked) when missing.

    ``url`` defaults to ``$EDGEPOSE_CALIB_URL``, else :data:`DEFAULT_CALIB_URL`; ``sha256`` to
    ``$EDGEPOSE_CALIB_SHA256``, else :data:`CALIB_SET_SHA256` for the default URL, else the ``.sha256``
    file published beside the asset. Offline, this fails within ``timeout`` with a DownloadError that
    says how to pass ``--calib`` instead.
    """
    from edgepose.download import download

    url = url or os.environ.get("EDGEPOSE_CALIB_URL") or DEFAULT_CALIB_URL
    sha256 = sha256 or os.environ.get("EDGEPOSE_CALIB_SHA256") or (
        CALIB_SET_SHA256 if url == DEFAULT_CALIB_URL else None)
    dest = cache_dir("calib") / url.rstrip("/").rsplit("/", 1)[-1]
    if dest.is_file():
        return dest
    expected = sha256 or _sidecar_sha256(url, timeout)
    return download(url, dest, sha256=expected, timeout=timeout, progress=progress, hint=_HOW_TO_CALIBRATE)
