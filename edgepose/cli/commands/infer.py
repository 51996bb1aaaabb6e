"""edgepose predict / edgepose eval: poses on images and OKS AP on COCO sets."""
import json
from pathlib import Path
from typing import Dict, List, Optional

import typer
from rich import box
from rich.table import Table

from edgepose.cli.commands.common import (
    err, out, precision_option, print_table, require, target_option, use_model, warn_random_weights,
)


#: The --boxes file format (bracket-free where rich markup would eat "[x1, ...]" in --help).
BOXES_FORMAT = ('a JSON object {"photo.jpg": [[120, 40, 380, 610], ...], ...} keyed by image file name, each box '
                'x1, y1, x2, y2 in pixels (a fifth number is its score), or COCO detection results: a list of '
                '{"image_id", "bbox" (x, y, w, h), "score"}, image_id being the number in the file name')


def _image_id(path: Path, index: int) -> int:
    return int(path.stem) if path.stem.isdigit() else index


def _expand_images(inputs: List[Path]) -> List[Path]:
    """Image files from files, folders (their images, sorted) and globs (expanded here: quoted or on Windows).

    A path that does not exist stays in the list (it is reported and skipped like an unreadable image).
    InputError when a folder or glob yields no image, or when two inputs share a file name.
    """
    import glob

    from edgepose.errors import InputError
    from edgepose.fileio import IMAGE_SUFFIXES, images_in

    found: List[Path] = []
    for given in inputs:
        text = str(given)
        if given.is_dir():
            images = images_in(given)
            if not images:
                raise InputError("folder %s holds no images (%s); pass image files, folders of images or a glob "
                                 "such as 'photos/*.jpg'" % (given, ", ".join(IMAGE_SUFFIXES)))
            found += images
        elif not given.exists() and any(c in text for c in "*?["):
            images = [Path(m) for m in sorted(glob.glob(text)) if Path(m).suffix.lower() in IMAGE_SUFFIXES
                      and Path(m).is_file()]
            if not images:
                raise InputError("no image file matches %s (%s)" % (text, ", ".join(IMAGE_SUFFIXES)))
            found += images
        else:
            found.append(given)
    unique = list(dict((p.resolve(), p) for p in found).values())
    by_name: Dict[str, Path] = {}
    for path in unique:
        if path.name in by_name:
            raise InputError("two inputs are named %s (%s and %s): annotated images, results and --boxes go by file "
                             "name; run them separately or rename one" % (path.name, by_name[path.name], path))
        by_name[path.name] = path
    return unique


def _load_boxes(path: Path, images: List[Path]) -> dict:
    """--boxes FILE (:data:`BOXES_FORMAT`) -> {image file name: (N, 4|5) boxes}, checked before any work."""
    import numpy as np

    from edgepose.coco import check_detections, detection_boxes, describe_json, is_ground_truth
    from edgepose.errors import InputError
    from edgepose.fileio import read_json

    data = read_json(path, "boxes file", BOXES_FORMAT)
    if isinstance(data, list):  # COCO detection results, matched by numeric file names
        by_id = detection_boxes(check_detections(data, "boxes file %s" % path))
        return {p.name: by_id.get(_image_id(p, i), np.zeros((0, 5))) for i, p in enumerate(images)}
    if not isinstance(data, dict) or is_ground_truth(data):
        hint = ("; ground-truth files go to `edgepose eval --ann FILE --images FOLDER`" if is_ground_truth(data)
                else "")
        raise InputError("boxes file %s holds %s, not person boxes: it should hold %s%s"
                         % (path, describe_json(data), BOXES_FORMAT, hint))
    boxes = {}
    for name, value in data.items():
        rows = value if isinstance(value, list) else [None]
        sizes = {len(r) if isinstance(r, list) and all(isinstance(v, (int, float)) for v in r) else 0 for r in rows}
        if not sizes <= {4} and not sizes <= {5}:
            raise InputError("boxes file %s: the boxes of %r are %s, not a list of [x1, y1, x2, y2] or [x1, y1, x2, "
                             "y2, score] (all alike); it should hold %s"
                             % (path, name, json.dumps(value)[:80], BOXES_FORMAT))
        boxes[name] = np.asarray(value, np.float64).reshape(-1, sizes.pop() if sizes else 4)
    if images and not set(boxes) & {p.name for p in images}:
        raise InputError("boxes file %s has no entry for any of the images (its keys: %s; the images: %s); key the "
                         "boxes by image file name" % (path, ", ".join(sorted(boxes)[:3]) or "none",
                                                       ", ".join(p.name for p in images[:3])))
    return boxes


def _drawn_name(path: Path) -> str:
    """The annotated image's file name: the input's (so .png stays .png); .jpg added to other suffixes."""
    from edgepose.fileio import IMAGE_SUFFIXES

    return path.name if path.suffix.lower() in IMAGE_SUFFIXES else path.name + ".jpg"


def predict(
    images: List[Path] = typer.Argument(..., help="Image files, folders of images, or globs ('photos/*.jpg')."),
    model: str = typer.Option(..., "--model", "-m", help="Model file (.onnx/.engine), triton:// URL, or a converted zoo name."),
    precision: Optional[str] = precision_option(),
    target: Optional[str] = target_option(),
    detector: Optional[str] = typer.Option(None, "--detector", help="YOLOX person detector: .onnx, TensorRT engine or triton://HOST:PORT/NAME (default: YOLOX-Nano, downloaded once)."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="Person boxes instead of a detector, in %s." % BOXES_FORMAT),
    flip: bool = typer.Option(False, "--flip", help="Flip-test ensemble (GluonCV's validation; 2x compute)."),
    output_dir: Path = typer.Option(Path("edgepose_out"), "--output-dir", "-o", help="Where annotated images go (same names as the inputs)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="COCO keypoint results (default OUTPUT_DIR/keypoints.json)."),
    keypoint_thresh: float = typer.Option(0.2, "--kpt-thresh", min=0.0, max=1.0, help="Draw joints whose score exceeds this (0 to 1)."),
    box_thresh: float = typer.Option(0.5, "--box-thresh", min=0.0, max=1.0, help="Detector score threshold (0 to 1)."),
    draw: bool = typer.Option(True, "--draw/--no-draw", help="Write annotated images."),
) -> None:
    """Estimate poses on images; write COCO keypoint results JSON and annotated images.

    An image that cannot be read (or whose --boxes do not fit it) is reported and skipped; the command fails
    only when every image failed.
    """
    import cv2

    from edgepose.coco import result_records
    from edgepose.detector import YoloxDetector, detector_model
    from edgepose.live.draw import draw_poses
    from edgepose.live.draw import plural
    from edgepose.errors import InputError
    from edgepose.fileio import atomic_write_bytes, read_image, writable_file, writable_folder
    from edgepose.pipeline import PosePipeline
    from edgepose.runtime import Runtime

    if detector is not None and boxes is not None:
        raise typer.BadParameter("give --detector or --boxes, not both")
    paths = _expand_images(images)
    if draw:
        writable_folder(output_dir, "--output-dir")
        inputs = {p.resolve() for p in paths}
        clash = next((p for p in paths if (output_dir / _drawn_name(p)).resolve() in inputs), None)
        if clash is not None:
            raise InputError("the annotated image would overwrite the input %s; choose another --output-dir" % clash)
    json_path = writable_file(json_path or output_dir / "keypoints.json", "--json file")
    given = _load_boxes(boxes, paths) if boxes is not None else None
    det_model = detector_model(detector) if detector is not None else None  # a missing file fails before any work
    runtime = Runtime(use_model(model, precision, target))
    det = YoloxDetector(det_model or detector_model(), score_thresh=box_thresh) if given is None else None
    pipeline = PosePipeline(runtime, det, flip=flip)

    def pose(path: Path):
        image = read_image(path)
        if given is None:
            return image, pipeline(image)
        try:
            return image, pipeline(image, boxes=given.get(path.name, []))
        except InputError as e:  # a box of the file that does not fit this image
            raise InputError("boxes file %s, image %s: %s" % (boxes, path.name, e)) from e

    records: List[dict] = []
    skipped = 0
    for index, path in enumerate(paths):
        try:
            image, result = pose(path)
        except InputError as e:
            if len(paths) == 1:
                raise
            err.print("warning: %s; skipped" % e, highlight=False, markup=False, soft_wrap=True)
            skipped += 1
            continue
        records += [dict(r, file_name=path.name) for r in result_records(result, _image_id(path, index))]
        if draw:
            ok, buf = cv2.imencode(Path(_drawn_name(path)).suffix.lower(), draw_poses(image, result, keypoint_thresh))
            atomic_write_bytes(output_dir / _drawn_name(path), buf.tobytes())
        out.print("%s: %s" % (path, plural(len(result), "person")))
    if skipped == len(paths):
        raise InputError("none of the %d images could be processed (each one is reported above); nothing was written"
                         % len(paths))
    atomic_write_bytes(json_path, json.dumps(records).encode())
    out.print("Wrote %s (%s)%s%s" % (
        json_path, plural(len(records), "person"), " and annotated images in %s" % output_dir if draw else "",
        "; %s skipped (see the warnings)" % plural(skipped, "image") if skipped else ""))
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

    from edgepose.coco import STAT_NAMES, evaluate as coco_evaluate, load_coco, load_detections, predict_coco
    from edgepose.errors import InputError
    from edgepose.fileio import atomic_write_bytes, writable_file
    from edgepose.runtime import Runtime

    total = len(load_coco(ann).getImgIds())
    det_list = load_detections(dets) if dets is not None else None
    if not images.is_dir():
        raise InputError("--images %s %s; pass the folder that holds the images of %s"
                         % (images, "is a file, not a folder" if images.exists() else "does not exist", ann.name))
    if json_path is not None:
        writable_file(json_path, "--json file")
    runtime = Runtime(use_model(model, precision, target))
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
