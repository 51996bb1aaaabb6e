"""The `edgepose convert` flow: variants, foreign sources, engine commands without TensorRT."""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("onnx")

from edgepose.converters.convert import convert_model, variant_name  # noqa: E402
from edgepose.errors import InputError  # noqa: E402
import support  # noqa: E402
from support import random_model  # noqa: E402
from support import run_edgepose as edgepose  # noqa: E402


def meta_of(path):
    props = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    return {k: json.loads(v) for k, v in props.items() if k.startswith("edgepose.")}


def test_variant_names():
    assert variant_name("m", "fp32", "") == "m.onnx"
    assert variant_name("m", "fp16", "tensorrt") == "m-fp16.onnx"
    assert variant_name("m", "int8", "tensorrt") == "m-int8.onnx"
    assert variant_name("m", "int8", "cpu") == "m-int8-cpu.onnx"


def test_fp16_variant_and_engine_command(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = edgepose("convert", "mobile_pose_mobilenetv3_small", "--random-weights", "--fp16", "--engine",
                    "--max-batch", "16", "-o", "small-fp16.onnx", home=tmp_path, cwd=work, check=False)
    fp16 = work / "small-fp16.onnx"
    assert meta_of(fp16)["edgepose.precision"] == "fp16"
    assert sorted(p.name for p in work.iterdir()) == ["small-fp16.onnx"]  # no intermediate beside the output
    try:
        import tensorrt  # noqa: F401
    except ImportError:  # no engine delivered: the commands to build it on the device, and a failure
        assert proc.returncode == 1 and "error: no TensorRT engine was built" in proc.stderr
        assert "trtexec --onnx=small-fp16.onnx" in proc.stdout and "--maxShapes=input:16x3x256x192" in proc.stdout
        assert "edgepose convert small-fp16.onnx --engine" in proc.stdout


def test_int8_output_is_a_promise_even_when_the_gate_falls_back(tmp_path):
    """-o FILE: FILE holds what was delivered (FP16 after a failed gate), said in the output and the metadata."""
    work = tmp_path / "work"
    work.mkdir()
    proc = edgepose("convert", "mobile_pose_mobilenetv3_small", "--random-weights", "--int8", "--calib",
                    support.DATA / "coco_kpt_mini" / "test_coco.json", "-o", "out/pose.onnx", home=tmp_path, cwd=work)
    assert "Accuracy gate" in proc.stdout and "FAILED" in proc.stdout  # random weights cannot pass
    assert "Wrote out/pose.onnx" in proc.stdout and "FP16)" in proc.stdout
    assert "Delivered FP16, not the INT8 asked for: out/pose.onnx" in proc.stdout
    assert meta_of(work / "out" / "pose.onnx")["edgepose.precision"] == "fp16"
    assert [str(p.relative_to(work)) for p in sorted(work.rglob("*"))] == ["out", "out/pose.onnx"]
    refused = edgepose("convert", "mobile_pose_mobilenetv3_small", "--random-weights", "--int8", "--no-fallback",
                       "--calib", support.DATA / "coco_kpt_mini" / "test_coco.json", "-o", "strict.onnx",
                       home=tmp_path, cwd=work, check=False)
    assert refused.returncode == 1 and "accuracy gate" in refused.stderr and not (work / "strict.onnx").exists()


def test_foreign_onnx_source_is_normalised(tmp_path):
    import onnx

    src = onnx.load(str(random_model("mobile_pose_mobilenetv3_small")))
    del src.metadata_props[:]
    src.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    foreign = tmp_path / "theirs.onnx"
    onnx.save(src, str(foreign))
    result = convert_model(str(foreign), output=tmp_path / "ours.onnx")
    meta = meta_of(result.final)
    assert meta["edgepose.source"] == "foreign:theirs.onnx" and meta["edgepose.input_size"] == [256, 192]
    sess = ort.InferenceSession(str(result.final), providers=["CPUExecutionProvider"])
    assert sess.run(None, {sess.get_inputs()[0].name: np.zeros((3, 3, 256, 192), np.float32)})[0].shape[0] == 3


def test_an_edgepose_model_is_used_as_is_for_variants(tmp_path):
    fp32 = random_model("mobile_pose_mobilenetv3_small")
    result = convert_model(str(fp32), precision="fp16", output=tmp_path / "v.onnx")
    assert result.files == [tmp_path / "v.onnx"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(precision="int4"), "precision"),
    (dict(output="model.bin"), "-o must end"),
    (dict(output="model.engine"), "--engine"),
    (dict(precision="int8", target="gpu"), "INT8 target"),
    (dict(precision="int8", method="mse"), "calibration method"),
    (dict(precision="int8", calib="no/such/photos"), "--calib no/such/photos does not exist"),
    (dict(output="."), "is a folder"),
    (dict(output="setup.py/model.onnx"), "is a file, not a folder"),
])
def test_bad_requests_are_refused_before_any_work(kwargs, message, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPOSE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(InputError, match=message):
        convert_model("mobile_pose_mobilenetv3_small", random=True, **kwargs)
    assert not (tmp_path / "home" / "models").exists() or not any((tmp_path / "home" / "models").iterdir())


def test_cli_rejects_conflicting_flags(tmp_path):
    for args in (["--fp16", "--int8"], ["--force"], ["--weights", "x.params", "--random-weights"]):
        proc = edgepose("convert", "mobile_pose_mobilenetv3_small", *args, home=tmp_path, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
