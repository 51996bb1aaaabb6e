"""The `edgepose convert` flow: variants, foreign sources, engine commands without TensorRT."""
import json

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("onnx")

from edgepose.converters.convert import convert_model, variant_name  # noqa: E402
from edgepose.errors import InputError  # noqa: E402
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
    proc = edgepose("convert", "mobile_pose_mobilenetv3_small", "--random-weights", "--fp16", "--engine",
                    "--max-batch", "16", "-o", tmp_path / "small-fp16.onnx", home=tmp_path)
    fp16, fp32 = tmp_path / "small-fp16.onnx", tmp_path / "mobile_pose_mobilenetv3_small-random.onnx"
    assert fp16.exists() and fp32.exists()
    assert meta_of(fp16)["edgepose.precision"] == "fp16" and meta_of(fp32)["edgepose.precision"] == "fp32"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "trtexec --onnx=%s" % fp16 in proc.stdout and "--maxShapes=input:16x3x256x192" in proc.stdout
        assert "edgepose convert %s --engine" % fp16 in proc.stdout


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
])
def test_bad_requests_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        convert_model("mobile_pose_mobilenetv3_small", random=True, **kwargs)


def test_cli_rejects_conflicting_flags(tmp_path):
    for args in (["--fp16", "--int8"], ["--force"], ["--weights", "x.params", "--random-weights"]):
        proc = edgepose("convert", "mobile_pose_mobilenetv3_small", *args, home=tmp_path, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
