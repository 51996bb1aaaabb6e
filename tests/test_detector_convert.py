"""The YOLOX detector through the converters: normalisation, FP16, gated INT8, engines, Triton, the cache.

Real YOLOX-Nano (../shared), real photos, real ONNX Runtime; the INT8 gate calibrates on the 8 photos of
../shared (30 persons), cross-validated.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepose.detector import PAD_VALUE, YoloxDetector, make_grid
from edgepose.errors import ModelFileError
from edgepose.meta import DetectorMeta, ModelMeta, onnx_metadata_props
from support import SHARED, require_shared, run_edgepose

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402

from edgepose.converters.detgate import (  # noqa: E402
    BoxAgreement, compare_boxes, decide_boxes, detect_all, match_count, wilson_lower)
from edgepose.converters.onnx_io import save_onnx  # noqa: E402
from edgepose.converters.yolox import is_yolox, normalize_yolox  # noqa: E402
from test_tensorrt import use_fake as use_fake  # noqa: E402 - the fake TensorRT fixture

MODEL = SHARED / "data" / "yolox_nano_coco" / "yolox_nano.onnx"
PHOTOS = sorted((SHARED / "data" / "demo_media").glob("*.jpg")) + [SHARED / "data" / "demo_media" / "soccer.png"] \
    + sorted((SHARED / "data" / "coco_kpt_mini").glob("*.jpg"))


def images() -> list:
    return [cv2.imread(str(p)) for p in PHOTOS]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    """The shared photos, linked into one folder (a calibration source of 8 images, 30 persons)."""
    require_shared()
    folder = tmp_path_factory.mktemp("photos")
    for path in PHOTOS:
        (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory, home, calib_dir) -> dict:
    """FP32 (normalised), FP16 and INT8 (tensorrt form) conversions made by the CLI."""
    out = tmp_path_factory.mktemp("converted")
    files = {"fp32": out / "det.onnx", "fp16": out / "det-fp16.onnx", "int8": out / "det-int8.onnx"}
    logs = {"fp32": run_edgepose("convert", MODEL, "-o", files["fp32"], home=home).stdout,
            "fp16": run_edgepose("convert", MODEL, "--fp16", "-o", files["fp16"], home=home).stdout,
            "int8": run_edgepose("convert", MODEL, "--int8", "--calib", calib_dir, "-o", files["int8"],
                                 home=home).stdout}
    return {"files": files, "logs": logs}


def run_ort(model, batch: np.ndarray) -> np.ndarray:
    data = model if isinstance(model, (str, Path)) else model.SerializeToString()
    session = ort.InferenceSession(str(data) if isinstance(data, Path) else data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def canvases(count: int = 3) -> np.ndarray:
    from edgepose.detector import letterbox

    return np.stack([letterbox(im, (416, 416))[0] for im in images()[:count]]).transpose(0, 3, 1, 2).astype(np.float32)


def test_normalising_the_release_file_gives_a_dynamic_batch_with_the_same_outputs():
    require_shared()
    assert is_yolox(MODEL)
    model = normalize_yolox(MODEL)
    assert next(o.version for o in model.opset_import if o.domain == "") == 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = DetectorMeta.from_props({p.key: p.value for p in model.metadata_props})
    assert (meta.input_size, meta.strides, meta.decode_in_graph) == ((416, 416), (8, 16, 32), False)
    assert meta.num_classes == 80 and meta.person_class == 0
    assert meta.precision == "fp32" and meta.source == "foreign:yolox_nano.onnx" and len(meta.weights_sha1) == 40
    batch = canvases(3)
    single = np.concatenate([run_ort(MODEL, batch[i:i + 1]) for i in range(3)])
    np.testing.assert_array_equal(np.concatenate([run_ort(model, batch[i:i + 1]) for i in range(3)]), single)
    np.testing.assert_allclose(run_ort(model, batch), single, rtol=0, atol=2e-4)  # batched kernels sum in another order


def decoded_variant() -> onnx.ModelProto:
    """The release file re-exported as YOLOX's ``--decode_in_inference`` would (grid add, exp, stride), with
    a dynamic batch dimension "N", at opset 13: another exporter's form of the same network."""
    from onnx import version_converter

    model = version_converter.convert_version(onnx.load(str(MODEL)), 13)
    graph = model.graph
    grid, stride = make_grid((416, 416))
    raw = graph.output[0].name
    graph.node[-1].output[0] = "raw"
    graph.initializer.extend([numpy_helper.from_array(grid[None], "grid"),
                              numpy_helper.from_array(stride[None], "stride"),
                              numpy_helper.from_array(np.array([2, 2, 81], np.int64), "splits")])
    graph.node.extend([
        helper.make_node("Split", ["raw", "splits"], ["xy", "wh", "rest"], axis=2),
        helper.make_node("Add", ["xy", "grid"], ["xy_g"]), helper.make_node("Mul", ["xy_g", "stride"], ["xy_px"]),
        helper.make_node("Exp", ["wh"], ["wh_e"]), helper.make_node("Mul", ["wh_e", "stride"], ["wh_px"]),
        helper.make_node("Concat", ["xy_px", "wh_px", "rest"], [raw], axis=2)])
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.checker.check_model(model)
    return model


def test_a_decoded_dynamic_batch_export_at_another_opset_is_normalised_and_detects_the_same(tmp_path):
    require_shared()
    source = tmp_path / "decoded.onnx"
    onnx.save(decoded_variant(), str(source))
    assert is_yolox(source)
    path = save_onnx(normalize_yolox(source), tmp_path / "decoded-edgepose.onnx")
    props = onnx_metadata_props(path)
    assert DetectorMeta.from_props(props).decode_in_graph is True
    with YoloxDetector(MODEL) as raw, YoloxDetector(path) as decoded, YoloxDetector(source) as unconverted:
        assert decoded.decode_in_graph and unconverted.decode_in_graph and not raw.decode_in_graph
        for image in images():
            expected = raw.detect(image)
            for other in (decoded, unconverted):
                got = other.detect(image)
                assert got.shape == expected.shape
                np.testing.assert_allclose(got, expected, rtol=0, atol=0.05)  # exp and the grid add in the graph


def test_detect_batch_is_one_call_for_a_dynamic_batch_and_a_loop_otherwise(converted, monkeypatch):
    photos = images()
    with YoloxDetector(MODEL) as fixed, YoloxDetector(converted["files"]["fp32"]) as dynamic:
        assert not fixed.batched and dynamic.batched
        calls = []
        for det in (fixed, dynamic):
            real = det.backend.run
            monkeypatch.setattr(det.backend, "run", lambda b, real=real: calls.append(len(b)) or real(b))
        single = fixed.detect_batch(photos)
        assert calls == [1] * len(photos)
        batched = dynamic.detect_batch(photos)
        assert calls[len(photos):] == [len(photos)]
        for a, b, image in zip(single, batched, photos):
            np.testing.assert_allclose(a, b, rtol=0, atol=0.01)
            np.testing.assert_array_equal(a, fixed.detect(image))
        assert dynamic.detect_batch([]) == []


def test_cli_conversions_run_in_the_detector_with_boxes_close_to_the_original(converted):
    files, logs = converted["files"], converted["logs"]
    assert "normalised to an edgepose FP32 detector" in logs["fp32"]
    assert "Detector gate: 5-fold cross-validation over all 8 images" in logs["int8"]
    assert "FP32 finds 30 persons" in logs["int8"] and "passed" in logs["int8"] and "INT8)" in logs["int8"]
    assert sorted(p.name for p in files["fp32"].parent.iterdir()) == sorted(p.name for p in files.values())
    props = {k: onnx_metadata_props(p) for k, p in files.items()}
    assert [DetectorMeta.from_props(p).precision for p in props.values()] == ["fp32", "fp16", "int8"]
    figures = json.loads(props["int8"]["edgepose.int8_agreement"])
    assert figures["passed"] and figures["fp32_boxes"] == 30 and figures["recall_lower"] >= 0.9
    photos = images()
    with YoloxDetector(MODEL) as original:
        reference = original.detect_batch(photos)
    for precision, path in files.items():
        with YoloxDetector(path) as det:
            boxes = det.detect_batch(photos)
        agreement = compare_boxes(reference, boxes)
        if precision == "fp32":
            for a, b in zip(reference, boxes):
                np.testing.assert_array_equal(a, b)
        elif precision == "fp16":  # measured: the same boxes, best IoU >= 0.85, scores within 0.002
            assert agreement.matched == agreement.reference_boxes == agreement.boxes == 30
            for a, b in zip(reference, boxes):
                np.testing.assert_allclose(a[:, 4], b[:, 4], atol=0.01)
        else:  # measured (in sample): 29 of 30 boxes found, none invented
            assert agreement.matched >= 28 and agreement.boxes <= 30


def test_the_cpu_form_fails_the_gate_falls_back_and_force_keeps_it(converted, calib_dir, home, tmp_path):
    out = tmp_path / "cpu.onnx"
    failed = run_edgepose("convert", converted["files"]["fp32"], "--int8", "--target", "cpu", "--calib", calib_dir,
                          "--no-fallback", "-o", out, home=home, check=False)
    assert failed.returncode == 1 and "INT8 failed the detector gate" in failed.stderr + failed.stdout
    assert not out.exists() and list(tmp_path.iterdir()) == []
    forced = run_edgepose("convert", converted["files"]["fp32"], "--int8", "--target", "cpu", "--calib", calib_dir,
                          "--force", "-o", out, home=home)
    assert "FAILED" in forced.stdout and "Kept INT8 anyway (--force)" in forced.stdout
    assert DetectorMeta.from_props(onnx_metadata_props(out)).precision == "int8"
    assert json.loads(onnx_metadata_props(out)["edgepose.int8_agreement"])["forced"] is True


def broken_scales(path: Path, factor: float, out: Path) -> Path:
    """The INT8 model with every activation scale multiplied by ``factor`` (wrong calibration)."""
    model = onnx.load(str(path))
    weights = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in weights:
            scale = weights[node.input[1]]
            scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
    onnx.save(model, str(out))
    return out


def test_the_gate_passes_a_good_int8_and_fails_broken_scales(converted, tmp_path):
    """The CLI's INT8 passed on cross-validation (test above); here the rule itself on other models: FP16
    passes, the INT8 model with its activation scales 8x too large fails (measured: 15 of 30 persons found)."""
    from edgepose.detector import letterbox

    files = converted["files"]
    photos = np.stack([letterbox(im, (416, 416))[0] for im in images()])
    reference = detect_all(files["fp32"], photos)
    good = decide_boxes(compare_boxes(reference, detect_all(files["fp16"], photos)))
    assert good.passed, good.why
    broken = compare_boxes(reference, detect_all(broken_scales(files["int8"], 8.0, tmp_path / "b.onnx"), photos))
    decision = decide_boxes(broken)
    assert not decision.passed and broken.recall <= 0.5 and "below the 0.90 required" in decision.why


def test_gate_rule_figures():
    assert wilson_lower(25, 25) == pytest.approx(0.902, abs=1e-3) and wilson_lower(24, 24) < 0.9
    assert wilson_lower(95, 100) > 0.9 > wilson_lower(94, 100) and wilson_lower(39, 40) < 0.9
    assert decide_boxes(BoxAgreement(30, 30, 30, 8)).passed and not decide_boxes(BoxAgreement(40, 40, 39, 8)).passed
    few = decide_boxes(BoxAgreement(24, 24, 24, 3))
    assert not few.passed and "too little evidence" in few.why
    ref = np.array([[0, 0, 10, 10, 0.9], [20, 20, 30, 30, 0.8]], np.float32)
    assert match_count(ref, ref) == 2 and match_count(ref, ref[:1] + [5, 5, 5, 5, 0]) == 0
    assert match_count(ref, np.zeros((0, 5))) == 0


def test_export_triton_of_the_converted_detector(converted, home, tmp_path):
    repo = tmp_path / "repo"
    run_edgepose("export-triton", converted["files"]["int8"], converted["files"]["fp32"], "-o", repo, home=home)
    config = (repo / "det-int8" / "config.pbtxt").read_text()
    assert "max_batch_size: 32" in config and "dims: [3, 416, 416]" in config and "dims: [3549, 85]" in config
    assert 'key: "edgepose.kind"' in config and "dynamic_batching" in config
    assert (repo / "det" / "1" / "model.onnx").read_bytes() == converted["files"]["fp32"].read_bytes()


def test_detector_on_triton_detects_a_batch_in_one_request(converted, server):
    from edgepose.converters.triton_repo import model_config, read_onnx
    from triton_loopback import serve_onnx

    url = serve_onnx(server, "det", model_config(read_onnx(converted["files"]["fp32"]), "det"),
                     converted["files"]["fp32"])
    photos = images()
    with YoloxDetector(url) as remote, YoloxDetector(converted["files"]["fp32"]) as local:
        assert remote.batched and remote.decode_in_graph is False
        before = server.hits.count("/v2/models/det/infer")
        boxes = remote.detect_batch(photos)
        assert server.hits.count("/v2/models/det/infer") == before + 1
        for a, b in zip(boxes, local.detect_batch(photos)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)


def test_engine_of_the_converted_detector_with_fake_tensorrt(converted, use_fake, tmp_path):
    from edgepose.converters import tensorrt_build as tb
    from edgepose.engine_info import read_sidecar

    trt, _ = use_fake("10.3.0")
    engine = tb.build_engine(converted["files"]["int8"], tmp_path / "det.engine", max_batch=8, opt_batch=4)
    side = read_sidecar(engine)
    assert side["precision"] == "int8" and side["input_shape"] == [None, 3, 416, 416]
    assert (side["min_batch"], side["opt_batch"], side["max_batch"]) == (1, 4, 8)
    assert side["metadata"]["edgepose.kind"] == '"detector"' and side["output_shape"] == [None, 3549, 85]
    cmd = tb.trtexec_command(converted["files"]["int8"], tmp_path / "det.engine", max_batch=8, opt_batch=4,
                             trt_version="10.3")
    assert "--minShapes=images:1x3x416x416" in cmd and "--maxShapes=images:8x3x416x416" in cmd


def test_converted_detectors_are_listed_as_detectors_and_never_taken_for_pose_models(converted, tmp_path, monkeypatch):
    from edgepose.detector import cached_detector
    from edgepose.models import find_model, list_conversions

    monkeypatch.setenv("EDGEPOSE_HOME", str(tmp_path))
    run_edgepose("convert", MODEL, "--fp16", home=tmp_path)  # no -o: both go to the detectors folder
    listed = {c.path.name: c for c in list_conversions()}
    assert set(listed) == {"yolox_nano-edgepose.onnx", "yolox_nano-fp16.onnx"}
    assert all(c.kind == "detector" for c in listed.values())
    assert cached_detector() == tmp_path / "detectors" / "yolox_nano-edgepose.onnx"  # FP32, not the newer FP16
    with pytest.raises(Exception, match="unknown model 'yolox_nano'"):
        find_model("yolox_nano")
    table = run_edgepose("models", home=tmp_path).stdout
    assert "detector" in table and "yolox_nano-fp16.onnx" in table
    with pytest.raises(ModelFileError, match="person detector"):
        ModelMeta.from_props(onnx_metadata_props(converted["files"]["fp16"]))


def test_detector_option_is_refused_for_a_detector_source(home, tmp_path):
    require_shared()
    proc = run_edgepose("convert", MODEL, "--int8", "--detector", MODEL, "-o", tmp_path / "x.onnx", home=home,
                        check=False)
    assert proc.returncode != 0 and "is itself a detector" in proc.stderr and not (tmp_path / "x.onnx").exists()


def test_a_grey_canvas_is_no_detection_in_any_precision(converted):
    grey = np.full((480, 640, 3), PAD_VALUE, np.uint8)
    for path in converted["files"].values():
        with YoloxDetector(path) as det:
            assert det.detect(grey).shape == (0, 5)

