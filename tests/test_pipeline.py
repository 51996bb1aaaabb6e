"""PosePipeline (what `edgepose predict` runs): the YOLOX detector's boxes, then one batched pose call."""
import cv2
import numpy as np
import pytest

from edgepose import PosePipeline
from edgepose.detector import YoloxDetector
from edgepose.errors import InputError
from edgepose.runtime import Runtime
from support import DATA, random_model, require_shared

SOCCER = DATA / "demo_media" / "soccer.png"


@pytest.fixture(scope="module")
def parts():
    require_shared()
    runtime = Runtime(str(random_model("mobile_pose_mobilenetv3_small")))
    detector = YoloxDetector(DATA / "yolox_nano_coco" / "yolox_nano.onnx")
    yield runtime, detector
    detector.close()
    runtime.close()


def same(a, b) -> None:
    for field in ("keypoints", "scores", "boxes", "box_scores"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("flip", [False, True])
def test_pipeline_is_detector_then_pose_model(parts, flip):
    runtime, detector = parts
    image = cv2.imread(str(SOCCER))
    boxes = detector.detect(image)
    result = PosePipeline(runtime, detector, flip=flip)(image)
    assert len(result) == len(boxes) == 3
    np.testing.assert_array_equal(result.box_scores, boxes[:, 4])
    same(result, runtime.estimate(image, boxes, flip=flip))


def test_rgb_images_and_given_boxes(parts):
    runtime, detector = parts
    image = cv2.imread(str(SOCCER))
    pipeline = PosePipeline(runtime, detector)
    same(pipeline(np.ascontiguousarray(image[:, :, ::-1]), rgb=True), pipeline(image))
    given = np.array([[180, 420, 560, 920, 0.9]], np.float32)
    same(pipeline(image, boxes=given), runtime.estimate(image, given))
    assert len(pipeline(image, boxes=np.zeros((0, 4), np.float32))) == 0  # no persons: the detector is not asked


def test_without_a_detector_boxes_are_needed(parts):
    runtime, _ = parts
    image = cv2.imread(str(SOCCER))
    pipeline = PosePipeline(runtime)
    assert len(pipeline(image, boxes=np.array([[180, 420, 560, 920]], np.float32))) == 1
    with pytest.raises(InputError, match="no detector: pass boxes"):
        pipeline(image)
