"""Every command over a corpus of malformed user files, run as a user runs it (a subprocess each).

Each case must end with exit code 1 and exactly one ``error:`` line that names the offending file and
the problem (or, for a bad option value, click's usage error: exit 2 naming the option), never a
``Traceback`` or an OpenCV ``[ WARN`` line, and leave no output behind.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from support import DATA, random_model
from support import run_edgepose as edgepose

SOCCER = DATA / "demo_media" / "soccer.png"
VIDEO = DATA / "demo_media" / "demo.mp4"
DETECTOR = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
GT = DATA / "coco_kpt_mini" / "test_coco.json"  # COCO ground truth
DETS = DATA / "coco_kpt_mini" / "test_coco_det_AP_H_56.json"  # COCO detection results
IMAGES = DATA / "coco_kpt_mini"
BAD_IMAGES = ("zero.jpg", "corrupt.png", "corrupt.jpg", "text.jpg")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Malformed files (written here, not by edgepose) and the good files the cases combine them with."""
    root = tmp_path_factory.mktemp("corpus")
    model = random_model("mobile_pose_mobilenetv3_small")
    files = {
        "empty.json": b"",
        "truncated.json": b'{"soccer.png": [[180, 420, 560',
        "notes.txt": b"some notes, not data\n",
        "binary.json": bytes(range(256)),
        "lists.json": json.dumps([[1, 2, 3, 4]]).encode(),
        "oops.json": json.dumps({"soccer.png": "oops"}).encode(),
        "ragged.json": json.dumps({"soccer.png": [[1, 2, 3]]}).encode(),
        "bad_dets.json": json.dumps([{"image_id": "785", "bbox": [1, 2]}]).encode(),
        "ok_boxes.json": json.dumps({n: [[10, 10, 100, 200]] for n in BAD_IMAGES + ("soccer.png", "missing.jpg")}
                                    ).encode(),
        "notes.onnx": b"some notes, not a model\n",
        "truncated.onnx": model.read_bytes()[:2000],
        "zero.jpg": b"",
        "corrupt.png": SOCCER.read_bytes()[:3000],
        "corrupt.jpg": (DATA / "demo_media" / "person.jpg").read_bytes()[:3000],
        "text.jpg": b"not an image\n",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "folder.json").mkdir()
    (root / "folder.onnx").mkdir()
    (root / "no_images").mkdir()
    (root / "no_images" / "readme.txt").write_text("no images here\n")
    shutil.copy(model, root / "model.onnx")
    return root


def needs(modules: str) -> list:
    missing = [m for m in modules.split() if importlib.util.find_spec(m) is None]
    return [pytest.mark.skip(reason="needs %s" % ", ".join(missing))] if missing else []


def case(case_id: str, args: str, named: str, problem: str, modules: str = "") -> pytest.param:
    """One malformed-input run: ``args`` split on spaces, ``{C}`` the corpus folder, ``{OUT}`` an output
    folder that must not appear; the error line names ``named`` (formatted alike) and holds ``problem``."""
    return pytest.param(args, named, problem, id=case_id, marks=needs(modules))


M = "-m {C}/model.onnx"
PREDICT = "predict %s %s --boxes {C}/ok_boxes.json -o {OUT}" % (SOCCER, M)
EVAL = "eval --ann %s --images %s %s --json {OUT}/res.json" % (GT, IMAGES, M)
WEBCAM = "webcam %s -s %s --detector %s --headless --max-frames 1 -o {OUT}/v.mp4 --json {OUT}/f.jsonl" % (
    M, VIDEO, DETECTOR)
CASES = [
    # predict --boxes: every kind of wrong file
    case("boxes-empty", PREDICT + " --boxes {C}/empty.json", "{C}/empty.json", "is empty"),
    case("boxes-truncated", PREDICT + " --boxes {C}/truncated.json", "{C}/truncated.json", "not valid JSON"),
    case("boxes-text", PREDICT + " --boxes {C}/notes.txt", "{C}/notes.txt", "not valid JSON"),
    case("boxes-binary", PREDICT + " --boxes {C}/binary.json", "{C}/binary.json", "not a text file"),
    case("boxes-list-of-lists", PREDICT + " --boxes {C}/lists.json", "{C}/lists.json", "not COCO detection results"),
    case("boxes-not-boxes", PREDICT + " --boxes {C}/oops.json", "{C}/oops.json", "\"oops\", not a list of"),
    case("boxes-three-numbers", PREDICT + " --boxes {C}/ragged.json", "{C}/ragged.json", "[[1, 2, 3]], not a list"),
    case("boxes-ground-truth", PREDICT + " --boxes %s" % GT, str(GT), "holds a COCO ground-truth file"),
    case("boxes-bad-detections", PREDICT + " --boxes {C}/bad_dets.json", "{C}/bad_dets.json", "is not a detection"),
    case("boxes-folder", PREDICT + " --boxes {C}/folder.json", "{C}/folder.json", "is a folder"),
    case("boxes-missing", PREDICT + " --boxes {C}/missing.json", "{C}/missing.json", "does not exist"),
    # predict: bad images, models, outputs and option values
    case("image-zero-bytes", PREDICT.replace(str(SOCCER), "{C}/zero.jpg"), "{C}/zero.jpg", "is empty (0 bytes)"),
    case("image-corrupt-png", PREDICT.replace(str(SOCCER), "{C}/corrupt.png"), "{C}/corrupt.png", "cannot be decoded"),
    case("image-corrupt-jpeg", PREDICT.replace(str(SOCCER), "{C}/corrupt.jpg"), "{C}/corrupt.jpg", "cannot be decoded"),
    case("image-text", PREDICT.replace(str(SOCCER), "{C}/text.jpg"), "{C}/text.jpg", "cannot be decoded"),
    case("image-missing", PREDICT.replace(str(SOCCER), "{C}/missing.jpg"), "{C}/missing.jpg", "does not exist"),
    case("image-folder-without-images", PREDICT.replace(str(SOCCER), "{C}/no_images"), "{C}/no_images",
         "holds no images"),
    case("image-glob-matching-nothing", PREDICT.replace(str(SOCCER), "{C}/nothing*.jpg"), "{C}/nothing*.jpg",
         "no image file matches"),
    case("model-text", PREDICT.replace(M, "-m {C}/notes.onnx"), "{C}/notes.onnx", "cannot load"),
    case("model-truncated", PREDICT.replace(M, "-m {C}/truncated.onnx"), "{C}/truncated.onnx", "cannot load"),
    case("detector-text", "predict %s %s --detector {C}/notes.onnx -o {OUT}" % (SOCCER, M), "{C}/notes.onnx",
         "cannot load"),
    case("detector-folder", "predict %s %s --detector {C}/folder.onnx -o {OUT}" % (SOCCER, M), "{C}/folder.onnx",
         "is a folder"),
    case("output-dir-is-a-file", PREDICT.replace("-o {OUT}", "-o {C}/notes.txt"), "{C}/notes.txt",
         "is a file, not a folder"),
    case("json-is-a-folder", PREDICT + " --json {C}/folder.json", "{C}/folder.json", "is a folder"),
    case("kpt-thresh-out-of-range", PREDICT + " --kpt-thresh 1.5", "--kpt-thresh", ""),
    case("box-thresh-out-of-range", "predict %s %s --detector %s --box-thresh -0.1 -o {OUT}" % (SOCCER, M, DETECTOR),
         "--box-thresh", ""),
    # eval: annotation file, detections, images folder, output
    case("ann-detections", EVAL.replace(str(GT), str(DETS)), str(DETS), "holds COCO detection results",
         "pycocotools"),
    case("ann-text", EVAL.replace(str(GT), "{C}/notes.txt"), "{C}/notes.txt", "not valid JSON", "pycocotools"),
    case("ann-empty", EVAL.replace(str(GT), "{C}/empty.json"), "{C}/empty.json", "is empty", "pycocotools"),
    case("ann-list", EVAL.replace(str(GT), "{C}/lists.json"), "{C}/lists.json", "not a COCO person_keypoints",
         "pycocotools"),
    case("ann-folder", EVAL.replace(str(GT), "{C}/folder.json"), "{C}/folder.json", "is a folder", "pycocotools"),
    case("ann-missing", EVAL.replace(str(GT), "{C}/missing.json"), "{C}/missing.json", "does not exist",
         "pycocotools"),
    case("dets-ground-truth", EVAL + " --dets %s" % GT, str(GT), "holds a COCO ground-truth file", "pycocotools"),
    case("dets-text", EVAL + " --dets {C}/notes.txt", "{C}/notes.txt", "not valid JSON", "pycocotools"),
    case("dets-bad-entries", EVAL + " --dets {C}/bad_dets.json", "{C}/bad_dets.json", "is not a detection",
         "pycocotools"),
    case("images-is-a-file", EVAL.replace("--images %s" % IMAGES, "--images {C}/notes.txt"), "{C}/notes.txt",
         "is a file, not a folder", "pycocotools"),
    case("eval-json-is-a-folder", EVAL.replace("{OUT}/res.json", "{C}/folder.json"), "{C}/folder.json",
         "is a folder", "pycocotools"),
    # convert: sources, calibration sets, weights
    case("convert-text-file", "convert {C}/notes.txt -o {OUT}/x.onnx", "{C}/notes.txt", "not a readable ONNX model",
         "onnx"),
    case("convert-text-onnx-fp16", "convert {C}/notes.onnx --fp16 -o {OUT}/x.onnx", "{C}/notes.onnx",
         "not a readable ONNX model", "onnx"),
    case("convert-truncated-onnx", "convert {C}/truncated.onnx -o {OUT}/x.onnx", "{C}/truncated.onnx",
         "not a readable ONNX model", "onnx"),
    case("calib-detections", "convert {C}/model.onnx --int8 --calib %s -o {OUT}/x.onnx" % DETS, str(DETS),
         "holds COCO detection results", "onnx pycocotools"),
    case("calib-empty-json", "convert {C}/model.onnx --int8 --calib {C}/empty.json -o {OUT}/x.onnx",
         "{C}/empty.json", "is empty", "onnx pycocotools"),
    case("calib-folder-without-images", "convert {C}/model.onnx --int8 --calib {C}/no_images -o {OUT}/x.onnx",
         "{C}/no_images", "has no images", "onnx"),
    case("weights-folder", "convert mobile_pose_mobilenetv3_small --weights {C}/folder.json -o {OUT}/x.onnx",
         "{C}/folder.json", "is a folder", "onnx"),
    case("weights-text", "convert mobile_pose_mobilenetv3_small --weights {C}/notes.txt -o {OUT}/x.onnx",
         "{C}/notes.txt", "not an MXNet .params file", "onnx"),
    # bench, export-triton, webcam
    case("bench-text-model", "bench {C}/notes.onnx --batch 1 --repeats 1 --json {OUT}/b.json", "{C}/notes.onnx",
         "cannot load"),
    case("bench-json-is-a-folder", "bench {C}/model.onnx --batch 1 --repeats 1 --json {C}/folder.json",
         "{C}/folder.json", "is a folder"),
    case("export-triton-text-model", "export-triton {C}/notes.onnx -o {OUT}", "{C}/notes.onnx",
         "not a readable ONNX model", "onnx"),
    case("export-triton-output-is-a-file", "export-triton {C}/model.onnx -o {C}/notes.txt", "{C}/notes.txt",
         "is not a folder", "onnx"),
    case("webcam-text-model", WEBCAM.replace(M, "-m {C}/notes.onnx"), "{C}/notes.onnx", "cannot load"),
    case("webcam-text-detector", WEBCAM.replace(str(DETECTOR), "{C}/notes.onnx"), "{C}/notes.onnx", "cannot load"),
    case("webcam-missing-video", WEBCAM.replace(str(VIDEO), "{C}/missing.mp4"), "{C}/missing.mp4", "does not exist"),
    case("webcam-text-video", WEBCAM.replace(str(VIDEO), "{C}/notes.txt"), "{C}/notes.txt", "cannot open video"),
    # (a folder is a valid --json/--output of webcam: it holds source0.jsonl, ...; a file in its place is not)
    case("webcam-json-folder-is-a-file", WEBCAM.replace("{OUT}/f.jsonl", "{C}/notes.txt/"), "{C}/notes.txt",
         "is a file, not a folder"),
    case("webcam-kpt-thresh-out-of-range", WEBCAM + " --kpt-thresh 2", "--kpt-thresh", ""),
    case("webcam-unknown-parallel-mode", WEBCAM + " --parallel spin", "--parallel", "'spin' is not one of"),
]


@pytest.mark.parametrize("args, named, problem", CASES)
def test_malformed_input_is_one_clear_error(corpus: Path, tmp_path: Path, args: str, named: str, problem: str):
    before = {p.name: p.read_bytes() if p.is_file() else sorted(q.name for q in p.iterdir())
              for p in corpus.iterdir()}
    out = tmp_path / "out"
    fill = {"C": str(corpus), "OUT": str(out)}
    proc = edgepose(*(a.format(**fill) for a in args.split(" ")), home=tmp_path / "home", check=False, timeout=120)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "[ WARN" not in text, text
    assert proc.returncode in (1, 2), text
    if proc.returncode == 2:  # click's usage error for an option value: it names the option
        assert named in proc.stderr and "Invalid value" in proc.stderr, text
    else:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, text
        assert named.format(**fill) in errors[0] and problem in errors[0], text
    assert not out.exists(), "output left behind: %s" % sorted(p.name for p in out.rglob("*"))
    after = {p.name: p.read_bytes() if p.is_file() else sorted(q.name for q in p.iterdir())
             for p in corpus.iterdir()}
    assert after == before  # nothing written into the corpus (outputs pointed at its files included)
