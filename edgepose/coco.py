"""COCO keypoints: ground-truth boxes, results JSON and OKS AP (pycocotools, imported on use).

The evaluation follows GluonCV's ``validate.py`` (the path behind the published AP): persons from
the ground truth with their boxes and box score 1 (or detector boxes), instance score = mean of
the joint scores above ``keypoint_thresh`` (0 there) times the box score.
"""
import contextlib
import io
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from edgepose.errors import InputError
from edgepose.fileio import PathLike, read_image, read_json
from edgepose.optional import require
from edgepose.runtime import PoseResult, Runtime
from edgepose.transforms import coco_xywh_to_xyxy

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
#: What a COCO annotation (ground-truth) file holds, for messages.
ANNOTATIONS = 'a COCO person_keypoints annotation file (a JSON object with "images", "annotations", "categories")'
#: What a COCO detection-results file holds, for messages.
DETECTIONS = ('COCO detection results (a JSON list of {"image_id": int, "category_id": 1, "bbox": [x, y, w, h], '
              '"score": float})')
#: Fields pycocotools and edgepose read from every image and every annotation of a ground-truth file.
_IMAGE_FIELDS = ("id", "file_name", "width", "height")
_ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox")


def _pycocotools():
    coco = require("pycocotools.coco", "eval", "COCO evaluation")
    return coco.COCO, require("pycocotools.cocoeval", "eval", "COCO evaluation").COCOeval


def is_ground_truth(data: object) -> bool:
    """Whether parsed JSON is a COCO ground-truth file (an object with "images" and "annotations")."""
    return isinstance(data, dict) and "images" in data and "annotations" in data


def describe_json(data: object) -> str:
    """What parsed JSON looks like, for messages that say which file was given instead of which."""
    if is_ground_truth(data):
        return "a COCO ground-truth file (an object with \"images\" and \"annotations\")"
    if isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
        if all("keypoints" in d for d in data):
            return "COCO keypoint results"
        if all("bbox" in d for d in data):
            return "COCO detection results (a list of {\"image_id\", \"bbox\", ...})"
    if isinstance(data, list):
        return "a JSON list" + (" of %s" % type(data[0]).__name__ if data else " (empty)")
    return "a JSON %s" % {"dict": "object", "str": "string", "int": "number", "float": "number"}.get(
        type(data).__name__, type(data).__name__)


def load_coco(ann_file: PathLike):
    """A pycocotools COCO object for a keypoints annotation file (its chatter silenced).

    InputError naming the file when it is missing, not JSON, another kind of COCO file (detection
    results) or lacks the fields every image and annotation needs.
    """
    COCO, _ = _pycocotools()
    data = read_json(ann_file, "annotation file", ANNOTATIONS)
    if not (is_ground_truth(data) and isinstance(data["images"], list) and isinstance(data["annotations"], list)):
        hint = "; detection results go to `edgepose eval --dets`" if isinstance(data, list) else ""
        raise InputError("annotation file %s holds %s, not %s%s" % (ann_file, describe_json(data), ANNOTATIONS, hint))
    for key, fields in (("images", _IMAGE_FIELDS), ("annotations", _ANNOTATION_FIELDS)):
        for i, item in enumerate(data[key]):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                raise InputError("annotation file %s: %s[%d] lacks %s; every entry of %r needs %s"
                                 % (ann_file, key, i, ", ".join(missing), key, ", ".join(fields)))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            coco.createIndex()
        except (ValueError, KeyError, TypeError) as e:
            raise InputError("annotation file %s is not a valid COCO file (%s: %s)"
                             % (ann_file, type(e).__name__, e)) from e
    return coco


def check_detections(data: object, label: str) -> List[dict]:
    """``data`` (parsed JSON) when it is COCO detection results; else InputError starting with ``label``
    (e.g. "detections file PATH") that says what was given instead."""
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        hint = "; ground-truth files go to `edgepose eval --ann`" if is_ground_truth(data) else ""
        raise InputError("%s holds %s, not %s%s" % (label, describe_json(data), DETECTIONS, hint))
    for i, d in enumerate(data):
        bbox = d.get("bbox")
        ok = (isinstance(d.get("image_id"), int) and isinstance(bbox, list) and len(bbox) == 4
              and all(isinstance(v, (int, float)) for v in bbox) and isinstance(d.get("score", 1.0), (int, float)))
        if not ok:
            raise InputError("%s: entry %d %s is not a detection; each needs an integer \"image_id\" and "
                             "\"bbox\": [x, y, w, h] (\"score\", \"category_id\" optional)"
                             % (label, i, json.dumps(d)[:120]))
    return data


def load_detections(path: PathLike) -> List[dict]:
    """COCO detection results from a file (``--dets``), checked (see :func:`check_detections`)."""
    return check_detections(read_json(path, "detections file", DETECTIONS), "detections file %s" % path)


def gt_person_boxes(coco, image_id: int) -> np.ndarray:
    """(N, 5) x1, y1, x2, y2, score=1 of the persons GluonCV evaluates on one image.

    As GluonCV's dataset: person category, not crowd, with at least one labelled keypoint,
    boxes converted with x2 = x + w - 1 and clipped to the image.
    """
    info = coco.loadImgs(image_id)[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=[1], iscrowd=False))
    anns = [a for a in anns if a.get("num_keypoints", 0) > 0 and max(a.get("keypoints", [0])) > 0
            and a["bbox"][2] > 0 and a["bbox"][3] > 0]
    if not anns:
        return np.zeros((0, 5), np.float64)
    boxes = coco_xywh_to_xyxy(np.array([a["bbox"] for a in anns]), info["width"], info["height"])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return np.hstack([boxes[keep], np.ones((int(keep.sum()), 1))])


def detection_boxes(dets: List[dict], min_score: float = 0.0) -> Dict[int, np.ndarray]:
    """COCO detection results (bbox x, y, w, h; score) -> {image_id: (N, 5) x1, y1, x2, y2, score}."""
    out: Dict[int, List[List[float]]] = {}
    for d in dets:
        if d.get("category_id", 1) != 1 or d.get("score", 1.0) < min_score:
            continue
        x, y, w, h = d["bbox"]
        out.setdefault(int(d["image_id"]), []).append([x, y, x + w, y + h, d.get("score", 1.0)])
    return {k: np.array(v, np.float64) for k, v in out.items()}


def result_records(result: PoseResult, image_id: int, keypoint_thresh: float = 0.0) -> List[dict]:
    """COCO keypoint-results entries (x, y, score per joint; instance score) for one image."""
    scores = result.instance_scores(keypoint_thresh)
    records = []
    for i in range(len(result)):
        kps = np.concatenate([result.keypoints[i], result.scores[i][:, None]], axis=1)
        records.append({"image_id": int(image_id), "category_id": 1,
                        "keypoints": [round(float(v), 3) for v in kps.ravel()],
                        "score": round(float(scores[i]), 5)})
    return records


def iter_images(coco, images_dir: PathLike) -> Iterator[Tuple[int, Path]]:
    """(image id, file path) of every annotated image; a missing file is an error naming it."""
    for image_id in sorted(coco.getImgIds()):
        path = Path(images_dir) / coco.loadImgs(image_id)[0]["file_name"]
        if not path.is_file():
            raise InputError("image %s of the annotation file is not in %s" % (path.name, images_dir))
        yield image_id, path


def predict_coco(runtime: Runtime, ann_file: PathLike, images_dir: PathLike, flip: bool = False,
                 dets: Optional[List[dict]] = None, progress=None) -> List[dict]:
    """Keypoint results for every image of ``ann_file``, on GT boxes or on ``dets``."""
    coco = load_coco(ann_file)
    det_boxes = detection_boxes(dets) if dets is not None else None
    results: List[dict] = []
    for image_id, path in iter_images(coco, images_dir):
        boxes = gt_person_boxes(coco, image_id) if det_boxes is None else det_boxes.get(image_id, np.zeros((0, 5)))
        image = read_image(path, "replace it or remove it from %s" % Path(ann_file).name)
        results += result_records(runtime.estimate(image, boxes, flip=flip), image_id)
        if progress is not None:
            progress()
    return results


def evaluate(ann_file: PathLike, results: List[dict]) -> Dict[str, float]:
    """OKS AP/AR of keypoint ``results`` against ``ann_file`` (the 10 COCO statistics)."""
    _, COCOeval = _pycocotools()
    coco = load_coco(ann_file)
    if not results:
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(json.loads(json.dumps(results)))
        ev = COCOeval(coco, dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
