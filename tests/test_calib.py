"""Calibration data: real persons from a COCO file, a photo folder and a video, crops made exactly as
the runtime makes them, the crop cache, and the default set downloaded from a loopback server."""
import hashlib
import time

import cv2
import numpy as np
import pytest

from edgepose.calib import HELD_OUT_EVERY, load_calibration
from edgepose.calib import cache as crop_cache
from edgepose.calib.dataset import build_calibration_set, default_calibration_set, read_calibration_set
from edgepose.detector import YoloxDetector
from edgepose.errors import DownloadError, InputError
from edgepose.meta import ModelMeta
from edgepose.transforms import preprocess
from loopback import LocalServer
from support import DATA, require_shared

pytest.importorskip("pycocotools")

COCO_FILE = DATA / "coco_kpt_mini" / "test_coco.json"
DEMO = DATA / "demo_media"
DETECTOR = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
META = ModelMeta()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Each test gets an empty edgepose cache."""
    monkeypatch.setenv("EDGEPOSE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEPOSE_CALIB_URL", raising=False)
    monkeypatch.delenv("EDGEPOSE_CALIB_SHA256", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def detector():
    require_shared()
    return YoloxDetector(DETECTOR)


def all_crops(calib):
    return np.concatenate([calib.crops, calib.held_out])


def assert_runtime_crops(calib, frames):
    """Every crop equals one that edgepose.transforms.preprocess makes for its frame's boxes."""
    crops = all_crops(calib)
    assert len(crops) == len(calib.origins)
    for crop, origin in zip(crops, calib.origins):
        image, boxes = frames[origin]
        assert any(np.array_equal(crop, c) for c in preprocess(image, boxes, META, image_is_rgb=False).batch), origin


# ------------------------------------------------------------------ sources
@pytest.mark.shared
def test_coco_file_gives_every_gt_person_as_runtime_crops():
    from edgepose.coco import gt_person_boxes, load_coco

    calib = load_calibration(COCO_FILE, META, progress=False)
    coco = load_coco(COCO_FILE)
    frames = {}
    for image_id in coco.getImgIds():
        name = coco.loadImgs(image_id)[0]["file_name"]
        frames[name] = (cv2.imread(str(COCO_FILE.parent / name)), gt_person_boxes(coco, image_id)[:, :4])
    assert calib.persons == sum(len(b) for _, b in frames.values()) == 12
    assert calib.crops.shape == (10, 3, 256, 192) and calib.crops.dtype == np.float32
    assert len(calib.held_out) == 12 // HELD_OUT_EVERY
    assert_runtime_crops(calib, frames)
    assert "coco_kpt_mini" in calib.source


def test_photo_folder_uses_the_detector(detector):
    calib = load_calibration(DEMO, META, detector=detector, progress=False)
    frames = {}
    for name in set(calib.origins):
        image = cv2.imread(str(DEMO / name))
        frames[name] = (image, detector.detect(image)[:, :4])
    assert calib.persons == sum(len(b) for _, b in frames.values()) >= 10
    assert_runtime_crops(calib, frames)


def test_video_frames(detector):
    calib = load_calibration(DEMO / "demo.mp4", META, detector=detector, progress=False)
    assert calib.persons > 5
    assert {o.split("#")[0] for o in calib.origins} == {"demo.mp4"}
    assert len({o for o in calib.origins}) > 1  # several frames


@pytest.mark.shared
def test_max_persons_and_crop_settings_follow_the_model():
    meta = ModelMeta(input_size=(128, 96), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), color_order="BGR")
    calib = load_calibration(COCO_FILE, meta, max_persons=5, progress=False)
    assert calib.persons == 5 and calib.crops.shape[1:] == (3, 128, 96)
    assert len(calib.held_out) == 1


@pytest.mark.shared
def test_alphapose_crops():
    meta = ModelMeta(input_size=(320, 256), mean=(0.406, 0.457, 0.480), std=(1, 1, 1), decoder="alphapose")
    calib = load_calibration(COCO_FILE, meta, max_persons=4, progress=False)
    assert calib.crops.shape[1:] == (3, 320, 256)


def test_no_persons_is_a_clear_error(tmp_path, detector):
    folder = tmp_path / "empty_scene"
    folder.mkdir()
    cv2.imwrite(str(folder / "wall.png"), np.full((240, 320, 3), 127, np.uint8))
    with pytest.raises(InputError, match=r"yielded no persons \(1 images searched\).*found nobody"):
        load_calibration(folder, META, detector=detector, progress=False)


@pytest.mark.parametrize("name, message", [
    ("missing", "does not exist"), ("", "has no images"), ("a.jpg", "single image"),
    ("a.txt", "cannot tell what calibration source"),
])
def test_bad_sources(tmp_path, name, message):
    if "." in name:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(InputError, match=message):
        load_calibration(tmp_path / name, META, progress=False)


@pytest.mark.shared
def test_too_few_persons(tmp_path):
    with pytest.raises(InputError, match="at least 2"):
        load_calibration(COCO_FILE, META, max_persons=1, progress=False)


@pytest.mark.shared
def test_progress_bar_goes_to_stderr(capfd):
    load_calibration(COCO_FILE, META, progress=True, use_cache=False)
    captured = capfd.readouterr()
    assert captured.out == ""


def test_progress_callback_counts_frames_and_persons(detector):
    calls = []
    calib = load_calibration(DEMO, META, detector=detector, use_cache=False,
                             progress=lambda frames, total, persons: calls.append((frames, total, persons)))
    images = len([p for p in DEMO.iterdir() if p.suffix in (".jpg", ".png")])
    assert calls[0] == (0, images, 0) and calls[-1] == (images, images, calib.persons)
    assert [c[0] for c in calls] == list(range(images + 1))  # once before the first frame, then per frame
    assert all(a[2] <= b[2] for a, b in zip(calls, calls[1:]))  # persons found so far never decrease


# ------------------------------------------------------------------ cache
@pytest.mark.shared
def test_cache_returns_the_same_crops_without_reading_the_source(monkeypatch, home):
    first = load_calibration(COCO_FILE, META, progress=False)
    files = list((home / "calib").glob("crops-*.npz"))
    assert len(files) == 1
    assert files[0].stat().st_size < all_crops(first).nbytes / 3  # stored as uint8 codes

    def no_reading(*args, **kwargs):
        raise AssertionError("the source was read again")

    with monkeypatch.context() as m:
        m.setattr("edgepose.calib._prepare", no_reading)
        second = load_calibration(COCO_FILE, META, progress=False)
    np.testing.assert_array_equal(all_crops(first), all_crops(second))  # bit for bit
    assert second.origins == first.origins and second.fingerprint == first.fingerprint
    load_calibration(COCO_FILE, ModelMeta(mean=(0.5, 0.5, 0.5)), progress=False)
    assert len(list((home / "calib").glob("crops-*.npz"))) == 2  # another normalisation, another entry


@pytest.mark.shared
def test_cache_codes_round_trip_and_fall_back_to_float():
    crops = load_calibration(COCO_FILE, META, max_persons=3, progress=False).crops
    codes = crop_cache.encode_crops(crops, META)
    np.testing.assert_array_equal(crop_cache.decode_crops(codes, META), crops)
    assert crop_cache.encode_crops(crops + 1e-3, META) is None
    crop_cache.save("k" * 64, META, crops + 1e-3, ["x"] * len(crops))
    loaded, origins = crop_cache.load("k" * 64, META)
    np.testing.assert_array_equal(loaded, crops + 1e-3)


@pytest.mark.shared
def test_a_corrupt_cache_entry_is_rebuilt(home):
    first = load_calibration(COCO_FILE, META, progress=False)
    (entry,) = (home / "calib").glob("crops-*.npz")
    entry.write_bytes(b"not a zip")
    again = load_calibration(COCO_FILE, META, progress=False)
    np.testing.assert_array_equal(all_crops(first), all_crops(again))


# ------------------------------------------------------------------ the default set
@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The calibration set built from coco_kpt_mini, published with its sidecar in a folder."""
    require_shared()
    folder = tmp_path_factory.mktemp("release")
    sha256 = build_calibration_set(COCO_FILE, COCO_FILE.parent, folder / "set.npz", licenses=None, progress=False)
    return folder, sha256


@pytest.fixture(scope="module")
def release_server(published):
    """The published folder on a loopback HTTP server."""
    with LocalServer(published[0]) as srv:
        yield srv


def test_build_is_deterministic_and_complete(published, tmp_path):
    folder, sha256 = published
    again = build_calibration_set(COCO_FILE, COCO_FILE.parent, tmp_path / "again.npz", licenses=None, progress=False)
    assert again == sha256 == hashlib.sha256((folder / "set.npz").read_bytes()).hexdigest()
    assert (folder / "set.npz.sha256").read_text() == "%s  set.npz\n" % sha256
    patches = read_calibration_set(folder / "set.npz")
    assert len(patches) == 4  # one person per image
    with np.load(str(folder / "set.npz")) as data:
        assert set(data["licenses"]) <= {1, 3, 4} and len(data["flickr_urls"]) == 4
        assert data["keypoints"].shape == (4, 17, 3)


@pytest.mark.shared
def test_licenses_filter(tmp_path):
    with pytest.raises(InputError, match="licenses"):
        build_calibration_set(COCO_FILE, COCO_FILE.parent, tmp_path / "x.npz", licenses=(99,), progress=False)


def test_patches_crop_like_the_full_images(published):
    """A patch holds everything a crop reads: cut losslessly, its crops equal the full image's but for an
    occasional 1/32-pixel rounding step of the fixed-point warp; stored as JPEG, ~2 grey levels off."""
    from edgepose.calib.dataset import patch_region
    from edgepose.coco import load_coco
    from edgepose.transforms import coco_xywh_to_xyxy

    with np.load(str(published[0] / "set.npz")) as data:
        stored = {int(a): i for i, a in enumerate(data["ann_ids"])}
    patches = read_calibration_set(published[0] / "set.npz")
    coco = load_coco(COCO_FILE)
    for meta in (META, ModelMeta(input_size=(320, 256), decoder="alphapose"), ModelMeta(input_size=(128, 256))):
        for ann in coco.loadAnns(coco.getAnnIds(catIds=[1])):
            info = coco.loadImgs(ann["image_id"])[0]
            image = cv2.imread(str(COCO_FILE.parent / info["file_name"]))
            box = coco_xywh_to_xyxy(np.array([ann["bbox"]]), info["width"], info["height"])
            full = preprocess(image, box, meta, image_is_rgb=False).batch
            x0, y0, x1, y1 = patch_region(box[0], info["width"], info["height"])
            cut = preprocess(image[y0:y1, x0:x1], box - [x0, y0, x0, y0], meta, image_is_rgb=False).batch
            assert np.mean(cut != full) < 0.02 and np.abs(cut - full).max() < 0.1
            if ann["id"] in stored:
                i = stored[ann["id"]]
                jpeg = preprocess(patches.image(i), patches.boxes[i:i + 1], meta, image_is_rgb=False).batch
                assert np.abs(jpeg - full).mean() < 0.05


def test_default_set_downloads_with_its_sidecar_hash(release_server, published, monkeypatch, home):
    monkeypatch.setenv("EDGEPOSE_CALIB_URL", release_server.url + "set.npz")
    calib = load_calibration(None, META, progress=False)
    assert calib.persons == 4 and (home / "calib" / "set.npz").is_file()
    assert "calibration set" in calib.source
    assert default_calibration_set() == home / "calib" / "set.npz"  # cached: no second download


def test_default_set_with_a_wrong_hash_is_not_kept(release_server, monkeypatch, home):
    monkeypatch.setenv("EDGEPOSE_CALIB_URL", release_server.url + "set.npz")
    monkeypatch.setenv("EDGEPOSE_CALIB_SHA256", "0" * 64)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        load_calibration(None, META, progress=False)
    assert not list((home / "calib").glob("*.npz"))


def test_default_set_without_a_sidecar_fails(server, published):
    (server.root / "lonely.npz").write_bytes((published[0] / "set.npz").read_bytes())
    url = server.url + "lonely.npz"
    with pytest.raises(DownloadError, match="HTTP 404.*--calib DIR"):
        default_calibration_set(url=url, progress=False)


def test_offline_fails_fast_and_says_how_to_pass_calib(monkeypatch, closed_port):
    monkeypatch.setenv("EDGEPOSE_CALIB_URL", "http://127.0.0.1:%d/set.npz" % closed_port)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"--calib DIR \(a folder of photos with people\)"):
        load_calibration(None, META, progress=False)
    assert time.monotonic() - start < 5
