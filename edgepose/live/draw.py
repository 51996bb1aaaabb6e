"""Drawing poses and outlined text labels on images (OpenCV only).

Labels are drawn once into a coverage mask and outlined by dilating that mask, so the outline
surrounds the glyphs exactly on any OpenCV: two ``cv2.putText`` calls with different thicknesses
(the usual outline trick) lay out the glyphs differently under OpenCV 5, where the text garbles.
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepose.keypoints import COCO_SKELETON
from edgepose.runtime import PoseResult

Color = Tuple[int, int, int]
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def plural(count: int, noun: str) -> str:
    """``"1 person"``, ``"2 persons"``, ``"0 persons"``."""
    return "%d %s%s" % (count, noun, "" if count == 1 else "s")


def text_thickness(scale: float) -> int:
    """Stroke width of label text at font ``scale``."""
    return max(1, int(round(2 * scale)))


def label_masks(text: str, scale: float) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
    """Coverage (uint8, 0..255) of ``text``'s glyphs and of their outline, and where the text's
    origin (``cv2.putText``'s bottom-left of the baseline) lies in them as (x, y).

    The outline is the glyph mask dilated by the stroke width, so it covers every glyph pixel
    at least as strongly as the glyph itself.
    """
    thickness = text_thickness(scale)
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    pad = 2 * thickness + 1 + height // 4  # Hershey glyphs may reach past getTextSize's box
    fill = np.zeros((height + baseline + 2 * pad, width + 2 * pad), np.uint8)
    origin = (pad, pad + height)
    cv2.putText(fill, text, origin, FONT, scale, 255, thickness, cv2.LINE_AA)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * thickness + 1, 2 * thickness + 1))
    return fill, cv2.dilate(fill, kernel), origin


def draw_label(canvas: np.ndarray, text: str, org: Tuple[int, int], scale: float,
               color: Color = WHITE, outline: Color = BLACK) -> None:
    """Draw ``text`` in ``color`` with an ``outline`` around it on ``canvas`` (BGR uint8, in place);
    ``org`` is the bottom-left of the text's baseline, as for ``cv2.putText``. Clipped to the canvas."""
    fill, edge, (ox, oy) = label_masks(text, scale)
    x0, y0 = int(org[0]) - ox, int(org[1]) - oy
    h, w = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + fill.shape[1], w), min(y0 + fill.shape[0], h)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    window = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    roi = canvas[cy0:cy1, cx0:cx1].astype(np.float32)
    for mask, paint in ((edge, outline), (fill, color)):
        alpha = mask[window].astype(np.float32)[..., None] / 255.0
        roi = roi * (1.0 - alpha) + np.asarray(paint, np.float32) * alpha
    canvas[cy0:cy1, cx0:cx1] = np.round(roi).astype(np.uint8)


def id_color(index: int) -> Color:
    """A distinct, stable BGR colour for person ``index`` (golden-ratio hue steps)."""
    hue = int((index * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_poses(image: np.ndarray, result: PoseResult, keypoint_thresh: float = 0.2,
               ids: Optional[Sequence[int]] = None, draw_boxes: bool = True,
               skeleton: Sequence[Tuple[int, int]] = tuple(COCO_SKELETON)) -> np.ndarray:
    """Draw boxes, limbs and joints on a copy of ``image`` (BGR uint8).

    A joint is drawn when its score exceeds ``keypoint_thresh``; a limb when both ends are.
    Persons are coloured by ``ids`` (tracking ids) or by their index. With ``draw_boxes``, each
    box is labelled with the person's score (GluonCV's, :meth:`PoseResult.instance_scores`),
    after ``#id`` when ``ids`` are given.
    """
    canvas = image.copy()
    scale = max(1, int(round(max(image.shape[:2]) / 640)))
    person_scores = result.instance_scores(keypoint_thresh)
    for i in range(len(result)):
        color = id_color(ids[i] if ids is not None else i)
        pts = result.keypoints[i]
        ok = result.scores[i] > keypoint_thresh
        if draw_boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in result.boxes[i])
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, scale)
            text = ("#%d " % ids[i] if ids is not None else "") + "%.2f" % person_scores[i]
            text_h = cv2.getTextSize(text, FONT, 0.5 * scale, text_thickness(0.5 * scale))[0][1]
            above = y1 - 4 * scale
            draw_label(canvas, text, (x1 + scale, above if above - text_h >= 0 else y1 + text_h + 4 * scale),
                       0.5 * scale, color=color)
        for a, b in skeleton:
            if ok[a] and ok[b]:
                cv2.line(canvas, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]),
                         color, 2 * scale, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            cv2.circle(canvas, (int(pts[j][0]), int(pts[j][1])), 2 * scale + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(canvas, (int(pts[j][0]), int(pts[j][1])), 2 * scale + 1, color, 1, cv2.LINE_AA)
    return canvas


def tile_images(images: Sequence[Optional[np.ndarray]], labels: Sequence[str],
                max_width: int = 1920) -> np.ndarray:
    """One BGR image with ``images`` in a grid (ceil(sqrt(N)) columns, filled row by row), each scaled
    to fit its cell with its aspect kept and ``labels[i]`` at its bottom-left; None is a grey cell
    (no frame yet). Cells take the first image's size (640x480 when there is none), shrunk so the
    grid is at most ``max_width`` wide."""
    if len(images) != len(labels) or not len(images):
        raise ValueError("tile_images needs one label per image and at least one image")
    first = next((im for im in images if im is not None), None)
    cell_h, cell_w = first.shape[:2] if first is not None else (480, 640)
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = -(-len(images) // cols)
    shrink = min(1.0, max_width / float(cols * cell_w))
    cell_w, cell_h = max(1, int(cell_w * shrink)), max(1, int(cell_h * shrink))
    grid = np.full((rows * cell_h, cols * cell_w, 3), 64, np.uint8)
    scale = max(0.4, cell_w / 1600)
    for i, (image, label) in enumerate(zip(images, labels)):
        y0, x0 = (i // cols) * cell_h, (i % cols) * cell_w
        if image is not None:
            h, w = image.shape[:2]
            f = min(cell_w / w, cell_h / h)
            fitted = cv2.resize(image, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
            grid[y0:y0 + fitted.shape[0], x0:x0 + fitted.shape[1]] = fitted
        draw_label(grid, label, (x0 + 8, y0 + cell_h - 10), scale)
    return grid
