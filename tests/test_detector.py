"""YoloxDetector on the real YOLOX-Nano ONNX and real photos, plus its download."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepose.cache import cache_dir
from edgepose.detector import (
    YOLOX_NANO_FILE, YoloxDetector, decode_boxes, default_detector_path, download_yolox_nano, letterbox,
    make_grid, nms,
)
from edgepose.errors import DownloadError, InputError, InputTypeError, ModelFileError
from support import SHARED, require_shared
from triton_loopback import serve_onnx

MODEL = SHARED / "data" / "yolox_nano_coco" / "yolox_nano.onnx"
DEMO = SHARED / "data" / "demo_media"
COCO = SHARED / "data" / "coco_kpt_mini"
PHOTOS = ("person.jpg", "soccer.png", "biking.jpg", "street_small.jpg")


@pytest.fixture(scope="module")
def detector() -> YoloxDetector:
    require_shared()
    return YoloxDetector(MODEL)


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N, 4) against b (M, 4) -> (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:4] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def check_detections(det: np.ndarray, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    assert det.dtype == np.float32 and det.ndim == 2 and det.shape[1] == 5
    assert (det[:, :4] >= 0).all() and (det[:, 2] <= w).all() and (det[:, 3] <= h).all()
    assert (det[:, 2] > det[:, 0]).all() and (det[:, 3] > det[:, 1]).all()
    assert (np.diff(det[:, 4]) <= 0).all() and (det[:, 4] > 0.5).all() and (det[:, 4] <= 1).all()


def test_model_facts(detector):
    assert detector.input_size == (416, 416)
    assert detector.num_classes == 80


def test_coco_images_match_ground_truth_persons(detector):
    gt = json.loads((COCO / "test_coco.json").read_text())
    for info in gt["images"]:
        image = read(COCO / info["file_name"])
        det = detector.detect(image)
        check_detections(det, image)
        boxes = np.array([a["bbox"] for a in gt["annotations"] if a["image_id"] == info["id"]])
        areas = np.array([a["area"] for a in gt["annotations"] if a["image_id"] == info["id"]])
        boxes[:, 2:] += boxes[:, :2]
        overlap = iou(boxes, det)
        # every large person is found, and every detection is a real person
        assert (overlap[areas > 5000].max(axis=1) > 0.7).all(), (info["file_name"], overlap)
        assert (overlap.max(axis=0) > 0.5).all(), (info["file_name"], overlap)


@pytest.mark.parametrize(
    "name, count", [("person.jpg", 1), ("soccer.png", 3), ("biking.jpg", 8), ("street_small.jpg", 7)]
)
def test_demo_photos(detector, name, count):
    image = read(DEMO / name)
    det = detector.detect(image)
    check_detections(det, image)
    assert len(det) == count


def test_rgb_input_gives_the_same_boxes(detector):
    image = read(DEMO / "soccer.png")
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    np.testing.assert_array_equal(detector.detect(rgb, image_is_rgb=True), detector.detect(image))


def test_providers_and_threads(detector):
    image = read(DEMO / "person.jpg")
    single = YoloxDetector(MODEL, providers=["CPUExecutionProvider"], intra_op_threads=1)
    np.testing.assert_allclose(single.detect(image), detector.detect(image), rtol=1e-4)


@pytest.mark.parametrize("name", PHOTOS + tuple(p.name for p in sorted(COCO.glob("*.jpg"))))
def test_boxes_are_those_of_the_model_run_directly(detector, name):
    """Behind the backend, the detector gives exactly the boxes of the YOLOX ONNX run in its own ONNX Runtime
    session, as the detector did before it had a backend."""
    import onnxruntime as ort

    image = read((DEMO if name in PHOTOS else COCO) / name)
    assert detector.backend.name == "onnxruntime" and detector.backend.providers == ["CPUExecutionProvider"]
    canvas, ratio = letterbox(image, detector.input_size)
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    raw = session.run(None, {"images": canvas.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
    expected = detector._postprocess(raw, ratio, image.shape[:2])
    assert len(expected) > 0
    np.testing.assert_array_equal(detector.detect(image), expected)


def _need_tritonclient() -> None:
    try:
        import tritonclient.http  # noqa: F401 (raises RuntimeError when installed without its http extra)
    except (ImportError, RuntimeError) as e:
        pytest.skip("the triton backend needs tritonclient[http] (edgepose[triton]): %s" % e)


@pytest.fixture
def yolox_on_triton(server):
    """The YOLOX-Nano ONNX on a scripted Triton (loopback HTTP), configured as `export-triton --detector`
    configures it: fixed batch, max_batch_size 0."""
    require_shared()
    _need_tritonclient()
    pytest.importorskip("onnx", reason="reading the model's Triton configuration needs onnx")
    from edgepose.converters.triton_repo import model_config, read_onnx

    config = model_config(read_onnx(MODEL), "yolox_nano")
    assert config["max_batch_size"] == 0 and config["input"][0]["dims"] == [1, 3, 416, 416]
    return serve_onnx(server, "yolox_nano", config, MODEL)


@pytest.mark.converter  # the Triton configuration is read with onnx
def test_detector_on_triton_gives_the_onnx_boxes(detector, yolox_on_triton, server):
    with YoloxDetector(yolox_on_triton) as remote:
        assert remote.backend.name == "triton" and remote.backend.max_batch == 1
        assert remote.input_size == (416, 416) and remote.num_classes == 80
        assert remote.model_path == yolox_on_triton
        for name in PHOTOS:
            image = read(DEMO / name)
            np.testing.assert_array_equal(remote.detect(image), detector.detect(image))
    assert server.hits.count("/v2/models/yolox_nano/infer") == 1 + len(PHOTOS)  # the warm-up, then each photo
    with pytest.raises(InputError, match="ONNX Runtime options.*triton backend"):
        YoloxDetector(yolox_on_triton, intra_op_threads=1)


@pytest.mark.converter  # the models are made with onnx
def test_a_pose_model_is_no_detector_on_any_backend(tmp_path, server):
    """A heatmap model behind Triton is refused by the detector's own output check, as the ONNX is."""
    _need_tritonclient()
    pose = _constant_model(tmp_path / "pose.onnx", np.zeros((1, 17, 104, 104)))
    config = {"name": "pose", "max_batch_size": 0,
              "input": [{"name": "images", "data_type": "TYPE_FP32", "dims": [1, 3, 416, 416]}],
              "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [1, 17, 104, 104]}]}
    for model in (str(pose), serve_onnx(server, "pose", config, pose)):
        with pytest.raises(ModelFileError, match="does not look like a YOLOX ONNX export: it needs one output"):
            YoloxDetector(model)


@pytest.mark.shared
def test_class_filter():
    image = read(DEMO / "biking.jpg")
    person, bike, both = (YoloxDetector(MODEL, classes=c).detect(image) for c in [(0,), (1,), (0, 1)])
    assert len(bike) == 3 and iou(bike, person).max() < 0.9
    assert len(both) == len(person) + len(bike)  # class-aware NMS: people do not suppress bicycles
    np.testing.assert_allclose(np.sort(both[:, 4]), np.sort(np.concatenate([person, bike])[:, 4]))


def test_no_person_in_a_grey_image(detector):
    det = detector.detect(np.full((480, 640, 3), 128, np.uint8))
    assert det.shape == (0, 5) and det.dtype == np.float32


def test_nms_hand_made_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.7], np.float32)
    # IoU(1, 0) = 9/11 and IoU(1, 3) = 81/109 are above 0.5; box 2 overlaps nothing
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.8).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.9).tolist() == [1, 2, 3, 0]
    assert nms(boxes, scores, 0.5, labels=np.array([0, 0, 0, 1])).tolist() == [1, 2, 3]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)


def test_grid_and_decode():
    grid, stride = make_grid((416, 416))
    assert grid.shape == (3549, 2) and stride.shape == (3549, 1)
    assert grid[1].tolist() == [1, 0] and grid[52].tolist() == [0, 1] and stride[52 * 52, 0] == 16
    pred = np.array([[0.5, 0.25, np.log(2), 0.0]], np.float32)
    box = decode_boxes(pred, np.array([[3, 4]], np.float32), np.array([[16]], np.float32))
    np.testing.assert_allclose(box, [[56 - 16, 68 - 8, 56 + 16, 68 + 8]], rtol=1e-6)


def test_letterbox_and_scale_back(detector):
    image = np.zeros((300, 500, 3), np.uint8)
    image[100:200, 250:400] = 255
    canvas, ratio = letterbox(image, (416, 416))
    assert canvas.shape == (416, 416, 3) and ratio == pytest.approx(416 / 500)
    assert (canvas[int(300 * ratio) + 1:] == 114).all()  # padded below, placed top-left
    ys, xs = np.nonzero(canvas[..., 0] > 128)
    assert abs(xs.min() / ratio - 250) < 2 and abs(ys.max() / ratio - 200) < 2
    # one fake YOLOX row on the stride-8 cell (x=10, y=20): back in image pixels, clipped
    grid, _ = make_grid(detector.input_size)
    pred = np.zeros((len(grid), 85), np.float32)
    row = int(np.flatnonzero((grid == [10, 20]).all(axis=1))[0])
    pred[row, :6] = [0.5, 0.5, np.log(4), np.log(2), 1.0, 0.9]
    det = detector._postprocess(pred, ratio, image.shape[:2])
    cx, cy = 10.5 * 8 / ratio, 20.5 * 8 / ratio
    half_w, half_h = 16 / ratio, 8 / ratio
    np.testing.assert_allclose(det, [[cx - half_w, cy - half_h, cx + half_w, cy + half_h, 0.9]], rtol=1e-5)
    pred[row, :4] = [-20, -20, 0, 0]  # a box above the image's top-left corner is dropped
    assert detector._postprocess(pred, ratio, image.shape[:2]).shape == (0, 5)


@pytest.mark.parametrize("image, error", [
    (np.zeros((480, 640, 3), np.float32), InputTypeError),
    (np.zeros((480, 640), np.uint8), InputTypeError),
    (np.zeros((480, 640, 4), np.uint8), InputTypeError),
    ([[0, 0, 0]], InputTypeError),
    (np.zeros((0, 0, 3), np.uint8), InputError),
])
def test_bad_images(detector, image, error):
    with pytest.raises(error):
        detector.detect(image)


@pytest.mark.shared
@pytest.mark.parametrize(
    "kwargs", [{"classes": (80,)}, {"classes": ()}, {"score_thresh": 1.5}, {"nms_thresh": 0}]
)
def test_bad_options(kwargs):
    with pytest.raises(InputError):
        YoloxDetector(MODEL, **kwargs)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="nothing.onnx does not exist; pass the path of a YOLOX"):
        YoloxDetector(tmp_path / "nothing.onnx")


@pytest.mark.shared
def test_truncated_model_file(tmp_path):
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(MODEL.read_bytes()[: MODEL.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="cut.onnx.*truncated"):
        YoloxDetector(truncated)


def _constant_model(path: Path, output: np.ndarray) -> Path:
    """An ONNX model with YOLOX's input that returns ``output`` whatever the image."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    node = helper.make_node("Identity", ["const"], ["output"])
    graph = helper.make_graph(
        [node], "fake",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 416, 416])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, list(output.shape))],
        initializer=[numpy_helper.from_array(output.astype(np.float32), "const")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    return path


@pytest.mark.converter  # the models are made with onnx
@pytest.mark.parametrize("output, reason", [
    (np.zeros((1, 1000)), "one output of shape"),
    (np.full((1, 3549, 85), -3.0), "not probabilities"),
])
def test_model_that_is_not_raw_yolox(tmp_path, output, reason):
    with pytest.raises(ModelFileError, match=reason):
        YoloxDetector(_constant_model(tmp_path / "fake.onnx", output))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPOSE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEPOSE_YOLOX_URL", raising=False)
    monkeypatch.delenv("EDGEPOSE_DETECTOR", raising=False)
    return tmp_path / "home"


@pytest.mark.shared
def test_download_from_loopback_server(server, home):
    root, url = server.root, server.url + "yolox"
    (root / "yolox").mkdir()
    shutil.copy(MODEL, root / "yolox" / YOLOX_NANO_FILE)
    sha256 = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    path = download_yolox_nano(base_url=url, sha256=sha256, timeout=5)
    assert path == home / "detectors" / YOLOX_NANO_FILE
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    assert default_detector_path(download=False) == path
    assert len(YoloxDetector(path).detect(read(DEMO / "person.jpg"))) == 1


@pytest.mark.shared
def test_corrupt_download_leaves_nothing(server, home, monkeypatch):
    root, url = server.root, server.url + "yolox"
    (root / "yolox").mkdir()
    data = bytearray(MODEL.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / "yolox" / YOLOX_NANO_FILE).write_bytes(bytes(data))
    sha256 = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_yolox_nano(base_url=url, sha256=sha256, timeout=5)
    # default_detector_path (here through the env override) expects the official release hash
    monkeypatch.setenv("EDGEPOSE_YOLOX_URL", url)
    with pytest.raises(DownloadError, match="--detector FILE"):
        default_detector_path()
    assert list(cache_dir("detectors").iterdir()) == []


def test_default_detector_path_offline(server, home, monkeypatch):
    with pytest.raises(ModelFileError, match="--detector FILE"):
        default_detector_path(download=False)
    monkeypatch.setenv("EDGEPOSE_YOLOX_URL", server.url + "yolox")  # the server has no such file: HTTP 404
    with pytest.raises(DownloadError, match="HTTP 404.*--detector FILE"):
        default_detector_path()
    assert list(cache_dir("detectors").iterdir()) == []


# ------------------------------------------------------------------ which detector a command uses
def test_lookup_order_env_then_cache_then_download(home, monkeypatch, tmp_path, closed_port):
    monkeypatch.setenv("EDGEPOSE_YOLOX_URL", "http://127.0.0.1:%d/yolox" % closed_port)  # offline
    folder = cache_dir("detectors")
    older, newer = folder / "yolox_s.onnx", folder / "yolox_tiny.onnx"
    for age, path in ((200, older), (100, newer)):
        path.write_bytes(b"onnx")
        stamp = path.stat().st_mtime - age
        os.utime(path, (stamp, stamp))
    (folder / ".yolox_nano.onnx.abc.part").write_bytes(b"half a download")  # never picked
    assert default_detector_path() == newer  # no download tried: the newest .onnx in the cache
    (folder / YOLOX_NANO_FILE).write_bytes(b"onnx")
    assert default_detector_path() == folder / YOLOX_NANO_FILE  # the known name before any other
    mine = tmp_path / "my-yolox.onnx"
    mine.write_bytes(b"onnx")
    monkeypatch.setenv("EDGEPOSE_DETECTOR", str(mine))
    assert default_detector_path() == mine  # the environment before the cache
    for missing in (tmp_path / "nope.onnx", tmp_path):
        monkeypatch.setenv("EDGEPOSE_DETECTOR", str(missing))
        with pytest.raises(ModelFileError, match="EDGEPOSE_DETECTOR=.* is not a file"):
            default_detector_path()
    with pytest.raises(ModelFileError, match=r"\(it is a folder\)"):
        default_detector_path()


def test_offline_advice_lists_every_way_and_names_the_commands_option(home, monkeypatch, closed_port):
    monkeypatch.setenv("EDGEPOSE_YOLOX_URL", "http://127.0.0.1:%d/yolox" % closed_port)
    for option in ("--detector FILE", "--detector-file FILE"):
        with pytest.raises(DownloadError) as info:
            default_detector_path(option=option)
        message = str(info.value)
        assert "could not download" in message and str(home / "detectors") in message
        assert "EDGEPOSE_DETECTOR=FILE" in message and message.endswith("or pass %s." % option)
    assert list(cache_dir("detectors").iterdir()) == []
