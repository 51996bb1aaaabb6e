"""Drawing poses on images (OpenCV only)."""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepose.keypoints import COCO_SKELETON
from edgepose.runtime import PoseResult

Color = Tuple[int, int, int]


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
    Persons are coloured by ``ids`` (tracking ids) or by their index.
    """
    canvas = image.copy()
    scale = max(1, int(round(max(image.shape[:2]) / 640)))
    for i in range(len(result)):
        color = id_color(ids[i] if ids is not None else i)
        pts = result.keypoints[i]
        ok = result.scores[i] > keypoint_thresh
        if draw_boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in result.boxes[i])
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, scale)
            if ids is not None:
                cv2.putText(canvas, str(ids[i]), (x1, max(0, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.5 * scale, color, scale, cv2.LINE_AA)
        for a, b in skeleton:
            if ok[a] and ok[b]:
                cv2.line(canvas, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]),
                         color, 2 * scale, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            cv2.circle(canvas, (int(pts[j][0]), int(pts[j][1])), 2 * scale + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(canvas, (int(pts[j][0]), int(pts[j][1])), 2 * scale + 1, color, 1, cv2.LINE_AA)
    return canvas
