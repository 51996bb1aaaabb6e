"""Overlay drawing: outlined labels legible on any OpenCV (fill inside its outline), the webcam status
line, and the id and score labels of the persons."""
import cv2
import numpy as np
import pytest

from edgepose.live.draw import draw_label, draw_poses, label_masks, plural, tile_images
from edgepose.live import LiveFrame, draw_overlay, overlay_text
from edgepose.runtime import PoseResult

GREEN = (0, 255, 0)
TEXTS = ["3 persons", "42.1 FPS  pre 1.2 detect 3.4 pose 17.3 post 0.5 ms  1 person", "#12 0.87", "Wg|q,()[]{}jy_"]


@pytest.mark.parametrize("scale", [0.4, 0.5, 1.0, 1.7, 3.0])
@pytest.mark.parametrize("text", TEXTS)
def test_label_fill_lies_inside_its_outline(text, scale):
    fill, outline, (x, y) = label_masks(text, scale)
    assert fill.any() and fill.shape == outline.shape
    assert (outline[fill > 0] > 0).all()  # every glyph pixel has outline under it ...
    assert (outline >= fill).all()  # ... at least as strongly (anti-aliased edges included)
    assert (outline > 0).sum() > 1.3 * (fill > 0).sum()  # and the outline shows around the glyphs
    assert not outline[[0, -1]].any() and not outline[:, [0, -1]].any()  # nothing cut off
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    assert 0 < x < fill.shape[1] - w // 2 and h <= y < fill.shape[0]


@pytest.mark.parametrize("text", TEXTS)
def test_drawn_label_never_puts_fill_next_to_the_background(text):
    """What garbled the old overlay under OpenCV 5: fill strokes drawn beside (not inside) their
    outline. Rendered on green, no clearly filled pixel may touch untouched background."""
    canvas = np.full((80, 900, 3), GREEN, np.uint8)
    draw_label(canvas, text, (10, 50), 0.8, color=(255, 255, 255), outline=(0, 0, 0))
    filled = canvas[..., 2] >= 128  # red only comes from the white fill
    background = (canvas == GREEN).all(axis=2)
    assert filled.sum() > 100 and background.sum() > canvas.shape[0] * canvas.shape[1] // 2
    touching = cv2.dilate(background.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert not (filled & touching).any()


def test_label_is_clipped_at_the_canvas_edges():
    canvas = np.zeros((30, 40, 3), np.uint8)
    for org in [(-15, 10), (30, 5), (5, 40), (-500, -500), (500, 500)]:
        draw_label(canvas, "3 persons", org, 0.6)
    assert canvas.any()


def test_plural():
    assert [plural(n, "person") for n in (0, 1, 2)] == ["0 persons", "1 person", "2 persons"]


def frame(persons: int, image_size=(480, 640)) -> LiveFrame:
    h, w = image_size
    keypoints = np.tile(np.linspace([w * 0.3, h * 0.2], [w * 0.4, h * 0.8], 17, dtype=np.float32), (persons, 1, 1))
    boxes = np.tile(np.array([w * 0.25, h * 0.15, w * 0.45, h * 0.85], np.float32), (persons, 1))
    poses = PoseResult(keypoints, np.full((persons, 17), 0.9, np.float32), boxes, np.full(persons, 0.8, np.float32))
    return LiveFrame(0, 0.0, np.arange(1, persons + 1), poses, True,
                     {"pre": 1.25, "detect": 3.5, "pose": 17.25, "post": 0.5})


def test_status_line_shows_fps_only_once_measured():
    assert overlay_text(frame(1)) == "pre 1.2 detect 3.5 pose 17.2 post 0.5 ms  1 person"
    assert overlay_text(frame(1), 0.0) == overlay_text(frame(1))  # the meter before a second frame
    assert overlay_text(frame(2), 29.96) == "30.0 FPS  pre 1.2 detect 3.5 pose 17.2 post 0.5 ms  2 persons"
    assert overlay_text(frame(0), 12.0).endswith("ms  0 persons")


def test_overlay_draws_the_status_line_and_the_persons():
    image = np.full((480, 640, 3), 90, np.uint8)
    first, measured = draw_overlay(image, frame(1)), draw_overlay(image, frame(1), 25.0)
    assert (image == 90).all()  # drawn on a copy
    assert (first[:40] != 90).any() and (first[:40] != measured[:40]).any()  # the FPS makes the difference
    assert (first[40:] == measured[40:]).all()


def test_person_labels_carry_id_and_score():
    image = np.full((480, 640, 3), 90, np.uint8)
    result = frame(1).poses
    x1, y1 = int(result.boxes[0, 0]), int(result.boxes[0, 1])
    plain = draw_poses(image, result, draw_boxes=False)
    with_ids = draw_poses(image, result, ids=[7])
    without_ids = draw_poses(image, result)
    above = (slice(y1 - 25, y1 - 1), slice(x1, x1 + 120))
    assert (plain[above] == 90).all()
    assert (with_ids[above] != 90).any() and (without_ids[above] != 90).any()
    assert (with_ids[above] != without_ids[above]).any()  # "#7 0.72" against "0.72"
    # a box at the top edge gets its label inside the box instead of losing it above the image
    top = PoseResult(result.keypoints, result.scores, np.array([[100, 0, 300, 400]], np.float32), result.box_scores)
    drawn = draw_poses(image, top, ids=[7])
    assert (drawn[3:25, 102:200] != draw_poses(image, top, draw_boxes=False)[3:25, 102:200]).any()


def test_tile_images_puts_each_source_in_its_cell_with_its_label():
    a = np.full((120, 160, 3), (255, 0, 0), np.uint8)
    b = np.full((60, 160, 3), (0, 0, 255), np.uint8)  # another aspect: fitted, not stretched
    grid = tile_images([a, b, None], ["0: a", "1: b", "2: c (ended)"])
    assert grid.shape == (240, 320, 3)  # 2 columns x 2 rows of 160x120 cells
    assert (grid[10, 80] == (255, 0, 0)).all() and (grid[10, 240] == (0, 0, 255)).all()
    assert (grid[100, 240] == 64).all()  # below the fitted 160x60 frame
    assert (grid[130, 150] == 64).all() and (grid[230, 300] == 64).all()  # no frame yet; the empty cell
    assert (grid[100:120, 0:60] != (255, 0, 0)).any(axis=-1).any()  # a label at the cell's bottom-left
    wide = tile_images([np.zeros((480, 640, 3), np.uint8)] * 9, [str(i) for i in range(9)], max_width=960)
    assert wide.shape == (3 * 240, 960, 3)
