"""Detections of several reader threads in one detector call (edgepose.live.detect_batch), with the real
YOLOX-Nano on the shared photos."""
import threading
import time

import cv2
import numpy as np
import pytest

from edgepose.detector import YoloxDetector
from edgepose.errors import InputError
from edgepose.live.detect_batch import DetectionBatcher
from support import DATA, require_shared

pytestmark = pytest.mark.shared
PHOTOS = ("person.jpg", "soccer.png", "person.jpg", "soccer.png")


@pytest.fixture(scope="module")
def detector():
    require_shared()
    with YoloxDetector(DATA / "yolox_nano_coco" / "yolox_nano.onnx") as d:
        yield d


def images():
    return [cv2.imread(str(DATA / "demo_media" / name)) for name in PHOTOS]


def ask_together(batcher, members, images):
    """Each member asks for its image from its own thread, all at once -> [(boxes, ms) or the error]."""
    results = [None] * len(images)
    start = threading.Barrier(len(images))

    def ask(i):
        start.wait()
        try:
            results[i] = members[i].detect(images[i])
        except Exception as e:  # noqa: BLE001 - compared by the test
            results[i] = e

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_requests_of_all_members_form_one_call_with_the_boxes_of_single_calls(detector):
    batcher = DetectionBatcher(detector, max_wait=30.0)  # a long wait: the batch waits for all four
    members = [batcher.member() for _ in PHOTOS]
    imgs = images()
    results = ask_together(batcher, members, imgs)
    assert (batcher.calls, batcher.images) == (1, 4)
    for image, (boxes, ms) in zip(imgs, results):
        np.testing.assert_array_equal(boxes, detector.detect(image))
        assert ms > 0
    assert len(results[1][0]) >= 3  # soccer.png: several persons found
    shares = [ms for _, ms in results]
    assert max(shares) == min(shares)  # each image is charged an equal share of the one call


def test_a_member_that_left_or_never_asks_is_not_waited_for(detector):
    batcher = DetectionBatcher(detector, max_wait=30.0)
    first, second = batcher.member(), batcher.member()
    second.leave()
    second.leave()  # once only: the count of members stays right
    start = time.monotonic()
    boxes, _ = first.detect(images()[1])
    assert time.monotonic() - start < 10 and len(boxes) >= 3
    # a member that is still there but does not ask delays the others by max_wait only
    batcher = DetectionBatcher(detector, max_wait=0.3)
    alone, _silent = batcher.member(), batcher.member()
    start = time.monotonic()
    alone.detect(images()[0])
    assert 0.3 <= time.monotonic() - start < 10 and (batcher.calls, batcher.images) == (1, 1)


def test_an_error_reaches_every_thread_of_the_batch_and_the_next_batch_works(detector):
    batcher = DetectionBatcher(detector, max_wait=30.0)
    members = [batcher.member() for _ in range(2)]
    results = ask_together(batcher, members, [images()[0], np.zeros((0, 0, 3), np.uint8)])
    assert all(isinstance(r, InputError) for r in results), results
    results = ask_together(batcher, members, images()[:2])
    assert all(len(boxes) >= 1 for boxes, _ in results)
