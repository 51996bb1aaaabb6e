"""COCO keypoints: ground-truth boxes, results JSON and OKS AP (pycocotools, imported on use).

The evaluation follows GluonCV's ``validate.py`` (the path behind the published AP): persons from
the ground truth with their boxes and box score 1 (or detector boxes), instance score = mean of
the joint scores above ``keypoint_thresh`` (0 there) times the box score.
"""
import contextlib
import io
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from edgepose.errors import InputError, MissingDependencyError
from edgepose.runtime import PoseResult, Runtime
from edgepose.transforms import coco_xywh_to_xyxy

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
PathLike = Union[str, Path]


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise MissingDependencyError("COCO evaluation needs pycocotools: pip install 'edgepose[eval]'") from e
    return COCO, COCOeval


def load_coco(ann_file: PathLike):
    """A pycocotools COCO object for a keypoints annotation file (its chatter silenced)."""
    COCO, _ = _pycocotools()
    if not Path(ann_file).is_file():
        raise InputError("annotation file %s does not exist" % ann_file)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return COCO(str(ann_file))
        except (ValueError, KeyError, TypeError) as e:
            raise InputError("%s is not a COCO annotation file (%s)" % (ann_file, e)) from e


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
    import cv2

    coco = load_coco(ann_file)
    det_boxes = detection_boxes(dets) if dets is not None else None
    results: List[dict] = []
    for image_id, path in iter_images(coco, images_dir):
        boxes = gt_person_boxes(coco, image_id) if det_boxes is None else det_boxes.get(image_id, np.zeros((0, 5)))
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("cannot decode image %s" % path)
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
