"""The edgepose command as a user runs it (a real subprocess each time)."""
import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from support import DATA, SHARED, random_model
from support import run_edgepose as edgepose

FIXTURES = SHARED / "parity" / "fixtures"


def test_help_lists_the_commands(tmp_path):
    text = edgepose("--help", home=tmp_path).stdout
    for command in ("zoo", "convert", "predict", "eval"):
        assert command in text


def test_zoo_json(tmp_path):
    entries = json.loads(edgepose("zoo", "--json", home=tmp_path).stdout)
    assert len(entries) == 16
    for e in entries:
        assert {"name", "input_size", "hashtag", "ap", "ap_flip", "params", "gflops"} <= set(e)
    names = {e["name"] for e in entries}
    assert {"simple_pose_resnet18_v1b_128x96", "simple_pose_resnet152_v1d_384x288"} <= names
    table = edgepose("zoo", home=tmp_path).stdout
    assert "mobile_pose_mobilenetv3_small" in table and "c2a11fae" in table


@pytest.mark.shared
def test_convert_with_gluoncv_weights_reproduces_gluoncv(tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "small.onnx"
    proc = edgepose("convert", "mobile_pose_mobilenetv3_small", "--weights",
                    FIXTURES / "mobile_pose_mobilenetv3_small.params", "-o", out, home=tmp_path)
    assert str(out) in proc.stdout and out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".small")] == []  # no temp left
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["edgepose.name"]) == "mobile_pose_mobilenetv3_small"
    ref = np.load(FIXTURES / "mobile_pose_mobilenetv3_small.output.npy")
    y = sess.run(None, {"input": np.load(FIXTURES / "mobile_pose_mobilenetv3_small.input.npy")})[0]
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()


def test_convert_random_weights_is_loud_and_recorded(tmp_path):
    pytest.importorskip("onnx")
    proc = edgepose("convert", "mobile_pose_mobilenetv3_small", "--random-weights", "--seed", "3", home=tmp_path)
    assert "RANDOM WEIGHTS" in proc.stderr
    path = tmp_path / "models" / "mobile_pose_mobilenetv3_small-random.onnx"
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert json.loads(meta["edgepose.weights_sha1"]) == "random"


def test_convert_offline_fails_fast_with_advice(tmp_path, monkeypatch, closed_port):
    pytest.importorskip("onnx")
    monkeypatch.setenv("MXNET_GLUON_REPO", "http://127.0.0.1:%d/" % closed_port)
    proc = edgepose("convert", "mobile_pose_mobilenetv3_small", home=tmp_path, check=False, timeout=30)
    assert proc.returncode == 1
    assert "--weights" in proc.stderr and "Traceback" not in proc.stderr
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no model, no partial download, anywhere


@pytest.mark.shared
def test_convert_refuses_another_models_weights(tmp_path):
    pytest.importorskip("onnx")
    proc = edgepose("convert", "simple_pose_resnet18_v1b", "--weights",
                    FIXTURES / "mobile_pose_mobilenet1.0.params", "-o", tmp_path / "x.onnx",
                    home=tmp_path, check=False)
    assert proc.returncode == 1 and "does not fit" in proc.stderr and "missing" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_unknown_model_suggests_names(tmp_path):
    proc = edgepose("convert", "mobile_pose_mobilenet3_small", "--random-weights", home=tmp_path, check=False)
    assert proc.returncode == 1 and "did you mean" in proc.stderr


@pytest.mark.shared
def test_predict_with_detector_and_with_boxes(tmp_path):
    model = random_model("mobile_pose_mobilenetv3_small")
    soccer = DATA / "demo_media" / "soccer.png"
    edgepose("predict", soccer, "-m", model, "--detector", DATA / "yolox_nano_coco" / "yolox_nano.onnx",
             "-o", tmp_path / "det", home=tmp_path)
    results = json.loads((tmp_path / "det" / "keypoints.json").read_text())
    assert len(results) == 3 and all(len(r["keypoints"]) == 51 for r in results)
    assert (tmp_path / "det" / "soccer.png").exists()  # a PNG input keeps its extension
    assert (tmp_path / "det" / "soccer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"soccer.png": [[180, 420, 560, 920, 0.9]]}))
    edgepose("predict", soccer, "-m", model, "--boxes", boxes, "-o", tmp_path / "box", "--no-draw", home=tmp_path)
    assert len(json.loads((tmp_path / "box" / "keypoints.json").read_text())) == 1
    assert not (tmp_path / "box" / "soccer.png").exists()


@pytest.mark.shared
def test_predict_with_a_detector_on_triton(tmp_path, server):
    """--detector triton://HOST:PORT/NAME: the YOLOX ONNX on a scripted Triton (loopback HTTP, configured as
    export-triton --detector configures it) gives the poses of the same ONNX as a file."""
    pytest.importorskip("tritonclient.http")
    pytest.importorskip("onnx")
    from edgepose.converters.triton_repo import model_config, read_onnx
    from triton_loopback import serve_onnx

    model = random_model("mobile_pose_mobilenetv3_small")
    yolox = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
    url = serve_onnx(server, "yolox_nano", model_config(read_onnx(yolox), "yolox_nano"), yolox)
    images = [DATA / "demo_media" / name for name in ("soccer.png", "biking.jpg")]
    for name, detector in (("file", yolox), ("triton", url)):
        edgepose("predict", *images, "-m", model, "--detector", detector, "-o", tmp_path / name, "--no-draw",
                 home=tmp_path)
    results = json.loads((tmp_path / "triton" / "keypoints.json").read_text())
    assert len(results) == 3 + 8 and results == json.loads((tmp_path / "file" / "keypoints.json").read_text())
    assert server.hits.count("/v2/models/yolox_nano/infer") == 1 + len(images)
    proc = edgepose("predict", *images, "-m", model, "--detector", "triton://127.0.0.1/yolox_nano", "-o",
                    tmp_path / "bad", home=tmp_path, check=False)
    assert proc.returncode == 1 and "not a Triton model URL" in proc.stderr and "Traceback" not in proc.stderr


def test_predict_unreadable_image_is_a_clear_error(tmp_path):
    model = random_model("mobile_pose_mobilenetv3_small")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"bad.jpg": [[10, 10, 100, 200]]}))  # valid boxes: the image itself must fail
    proc = edgepose("predict", bad, "-m", model, "--boxes", boxes, "-o", tmp_path / "out", home=tmp_path,
                    check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "cannot be decoded" in errors[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.shared
def test_predict_folders_globs_and_unreadable_images(tmp_path):
    model = random_model("mobile_pose_mobilenetv3_small")
    photos, more = tmp_path / "photos", tmp_path / "more"
    for folder, names in ((photos, ("soccer.png", "person.jpg")), (more, ("street_small.jpg", "biking.jpg"))):
        folder.mkdir()
        for name in names:
            shutil.copy(DATA / "demo_media" / name, folder)
    (photos / "broken.jpg").write_bytes(b"not an image")
    (photos / "notes.txt").write_text("not an image either")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({n: [[10, 10, 100, 200]] for n in ("soccer.png", "person.jpg", "street_small.jpg",
                                                                   "biking.jpg", "broken.jpg")}))
    out = tmp_path / "out"
    proc = edgepose("predict", photos, more / "s*.jpg", "-m", model, "--boxes", boxes, "-o", out, home=tmp_path)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(photos / "broken.jpg") in warnings[0] and "skipped" in warnings[0]
    assert "1 image skipped" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["keypoints.json", "person.jpg", "soccer.png", "street_small.jpg"]
    results = json.loads((out / "keypoints.json").read_text())
    assert [r["file_name"] for r in results] == ["person.jpg", "soccer.png", "street_small.jpg"]  # folder sorted

    proc = edgepose("predict", photos / "broken.jpg", tmp_path / "gone.jpg", "-m", model, "--boxes", boxes,
                    "-o", tmp_path / "none", home=tmp_path, check=False)
    assert proc.returncode == 1 and "none of the 2 images could be processed" in proc.stderr
    assert not (tmp_path / "none").exists()

    shutil.copy(DATA / "demo_media" / "soccer.png", more)
    proc = edgepose("predict", photos, more, "-m", model, "--boxes", boxes, "-o", tmp_path / "clash", home=tmp_path,
                    check=False)
    assert proc.returncode == 1 and "two inputs are named soccer.png" in proc.stderr
    assert not (tmp_path / "clash").exists()


@pytest.mark.shared
def test_eval_on_coco_mini(tmp_path):
    pytest.importorskip("pycocotools")
    model = random_model("mobile_pose_mobilenetv3_small")
    proc = edgepose("eval", "--ann", DATA / "coco_kpt_mini" / "test_coco.json", "--images",
                    DATA / "coco_kpt_mini", "-m", model, "--json", tmp_path / "res.json", home=tmp_path)
    assert "AP50" in proc.stdout and "random weights" in proc.stderr
    assert len(json.loads((tmp_path / "res.json").read_text())) == 12  # the 12 persons with keypoints
