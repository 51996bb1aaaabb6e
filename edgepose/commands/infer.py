"""edgepose predict / edgepose eval: poses on images and OKS AP on COCO sets."""
import json
from pathlib import Path
from typing import List, Optional

import typer
from rich import box
from rich.table import Table

from edgepose.commands.common import (
    err, out, precision_option, print_table, require, target_option, use_model, warn_random_weights,
)


def _read_image(path: Path):
    import cv2

    from edgepose.errors import InputError

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError("cannot read image %s (missing, or not an image OpenCV can decode)" % path)
    return image


def _image_id(path: Path, index: int) -> int:
    return int(path.stem) if path.stem.isdigit() else index


def _load_boxes(path: Path, images: List[Path]) -> dict:
    """--boxes FILE: {"file name": [[x1, y1, x2, y2(, score)], ...]} or COCO detection results."""
    import numpy as np

    from edgepose.coco import detection_boxes
    from edgepose.errors import InputError

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError("cannot read boxes file %s: %s" % (path, e)) from e
    if isinstance(data, list):  # COCO detection results, matched by numeric file names
        by_id = detection_boxes(data)
        return {p.name: by_id.get(_image_id(p, i), np.zeros((0, 5))) for i, p in enumerate(images)}
    if isinstance(data, dict):
        return {name: np.asarray(b, np.float64).reshape(-1, len(b[0]) if len(b) else 4) for name, b in data.items()}
    raise InputError("boxes file %s must hold a JSON object {image name: [[x1, y1, x2, y2, score], ...]} "
                     "or a COCO detection-results list" % path)


def predict(
    images: List[Path] = typer.Argument(..., help="Images to run on."),
    model: str = typer.Option(..., "--model", "-m", help="Model file (.onnx/.engine), triton:// URL, or a converted zoo name."),
    precision: Optional[str] = precision_option(),
    target: Optional[str] = target_option(),
    detector: Optional[Path] = typer.Option(None, "--detector", help="YOLOX ONNX person detector (default: YOLOX-Nano, downloaded once)."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="JSON person boxes instead of a detector."),
    flip: bool = typer.Option(False, "--flip", help="Flip-test ensemble (GluonCV's validation; 2x compute)."),
    output_dir: Path = typer.Option(Path("edgepose_out"), "--output-dir", "-o", help="Where annotated images go."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="COCO keypoint results (default OUTPUT_DIR/keypoints.json)."),
    keypoint_thresh: float = typer.Option(0.2, "--kpt-thresh", help="Draw joints whose score exceeds this."),
    box_thresh: float = typer.Option(0.5, "--box-thresh", help="Detector score threshold."),
    draw: bool = typer.Option(True, "--draw/--no-draw", help="Write annotated images."),
) -> None:
    """Estimate poses on images; write COCO keypoint results JSON and annotated images."""
    import cv2

    from edgepose.coco import result_records
    from edgepose.draw import draw_poses
    from edgepose.fileio import atomic_write_bytes
    from edgepose.runtime import Runtime

    if detector is not None and boxes is not None:
        raise typer.BadParameter("give --detector or --boxes, not both")
    runtime = Runtime(use_model(model, precision, target))
    given = _load_boxes(boxes, images) if boxes is not None else None
    if given is None:
        from edgepose.detector import YoloxDetector, default_detector_path

        det = YoloxDetector(str(detector) if detector else default_detector_path(), score_thresh=box_thresh)
    records: List[dict] = []
    for index, path in enumerate(images):
        image = _read_image(path)
        person_boxes = given.get(path.name, []) if given is not None else det.detect(image)
        result = runtime.estimate(image, person_boxes, flip=flip)
        records += [dict(r, file_name=path.name) for r in result_records(result, _image_id(path, index))]
        if draw:
            ok, buf = cv2.imencode(".jpg", draw_poses(image, result, keypoint_thresh))
            atomic_write_bytes(output_dir / (path.stem + ".jpg"), buf.tobytes())
        out.print("%s: %d person%s" % (path, len(result), "" if len(result) == 1 else "s"))
    json_path = json_path or output_dir / "keypoints.json"
    atomic_write_bytes(json_path, json.dumps(records).encode())
    out.print("Wrote %s (%d persons)%s" % (json_path, len(records), " and annotated images in %s" % output_dir if draw else ""))
    if runtime.meta.random_weights:
        warn_random_weights(runtime.model)


def evaluate(
    ann: Path = typer.Option(..., "--ann", help="COCO person_keypoints annotation file."),
    images: Path = typer.Option(..., "--images", help="Folder holding the annotated images."),
    model: str = typer.Option(..., "--model", "-m", help="Model file, triton:// URL, or a converted zoo name."),
    precision: Optional[str] = precision_option(),
    target: Optional[str] = target_option(),
    flip: bool = typer.Option(False, "--flip", help="Flip-test ensemble, as GluonCV's 'AP flip' column."),
    dets: Optional[Path] = typer.Option(None, "--dets", help="COCO detection results to use instead of GT boxes."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the keypoint results here."),
) -> None:
    """OKS AP/AR on a COCO keypoints set (GT boxes with score 1 as GluonCV reported, or --dets)."""
    require("pycocotools", "eval")
    from rich.progress import Progress

    from edgepose.coco import STAT_NAMES, evaluate as coco_evaluate, load_coco, predict_coco
    from edgepose.fileio import atomic_write_bytes
    from edgepose.runtime import Runtime

    runtime = Runtime(use_model(model, precision, target))
    det_list = json.loads(dets.read_text()) if dets is not None else None
    total = len(load_coco(ann).getImgIds())
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("evaluating", total=total)
        results = predict_coco(runtime, ann, images, flip=flip, dets=det_list,
                               progress=lambda: bar.advance(task))
    if json_path is not None:
        atomic_write_bytes(json_path, json.dumps(results).encode())
    stats = coco_evaluate(ann, results)
    table = Table(title="OKS on %s (%d images, %s boxes%s)" % (ann.name, total, "detector" if dets else "GT",
                                                                ", flip" if flip else ""), box=box.SIMPLE_HEAD)
    for name in STAT_NAMES:
        table.add_column(name, justify="right")
    table.add_row(*("%.3f" % stats[n] for n in STAT_NAMES))
    print_table(table)
    if runtime.meta.random_weights:
        warn_random_weights(runtime.model)
