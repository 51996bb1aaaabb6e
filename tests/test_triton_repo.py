"""edgepose export-triton: every written config.pbtxt parsed with the model-configuration schema
tritonclient ships and checked against the model it was written for."""
import json
import shutil
from pathlib import Path

import pytest
from support import DATA, fake_engine, random_model
from support import run_edgepose as edgepose

onnx = pytest.importorskip("onnx", reason="export-triton reads models with onnx (edgepose[convert])")
model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="the schema comes with tritonclient[grpc] (edgepose[dev])")
from google.protobuf import json_format, text_format  # noqa: E402 (comes with tritonclient[grpc])

from edgepose.converters.triton_repo import Batching, config_pbtxt, model_config, read_model, read_onnx  # noqa: E402
from edgepose.errors import InputError, ModelFileError  # noqa: E402
from edgepose.meta import ModelMeta  # noqa: E402

POSE = "mobile_pose_mobilenetv3_small"
YOLOX = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
TYPES = {onnx.TensorProto.FLOAT: model_config_pb2.DataType.TYPE_FP32}


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def onnx_io(path):
    """(name, Triton type, shape with -1 for dynamic) of every input and output, read with onnx."""
    model = onnx.load(str(path))
    weights = {t.name for t in model.graph.initializer}

    def one(vi):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        return vi.name, TYPES[vi.type.tensor_type.elem_type], dims

    return ([one(i) for i in model.graph.input if i.name not in weights], [one(o) for o in model.graph.output],
            {p.key: p.value for p in model.metadata_props})


def io_of(config):
    return ([(t.name, t.data_type, list(t.dims)) for t in config.input],
            [(t.name, t.data_type, list(t.dims)) for t in config.output])


@pytest.fixture(scope="module")
def pose_model():
    return random_model(POSE)


@pytest.mark.shared
def test_export_pose_model_and_detector(tmp_path, pose_model):
    (tmp_path / "detectors").mkdir()
    shutil.copy(YOLOX, tmp_path / "detectors" / "yolox_nano.onnx")  # what --detector finds in the cache
    repo = tmp_path / "repo"
    proc = edgepose("export-triton", pose_model, "--detector", "-o", repo, home=tmp_path)
    name = pose_model.stem
    assert sorted(p.name for p in repo.iterdir()) == sorted([name, "yolox_nano"])
    assert name in proc.stdout and "yolox_nano" in proc.stdout
    assert not list(tmp_path.glob(".edgepose-triton-*"))  # the staging folder is gone

    pose = parse(repo / name / "config.pbtxt")
    assert pose.name == name and pose.platform == "onnxruntime_onnx"
    assert (repo / name / "1" / "model.onnx").read_bytes() == pose_model.read_bytes()
    inputs, outputs, props = onnx_io(pose_model)
    assert inputs[0][2][0] == -1  # dynamic batch: Triton batches it, dims leave the batch out
    assert io_of(pose) == ([(n, t, d[1:]) for n, t, d in inputs], [(n, t, d[1:]) for n, t, d in outputs])
    assert list(pose.input[0].dims) == [3, 256, 192] and list(pose.output[0].dims) == [17, 64, 48]
    assert pose.max_batch_size == 32
    assert list(pose.dynamic_batching.preferred_batch_size) == [8, 32]
    assert pose.dynamic_batching.max_queue_delay_microseconds == 1000
    assert [(g.count, g.kind) for g in pose.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_GPU)]
    params = {k: v.string_value for k, v in pose.parameters.items()}
    assert params == {k: v for k, v in props.items() if k.startswith("edgepose.")}
    assert ModelMeta.from_props(params) == ModelMeta.from_props(props)
    assert ModelMeta.from_props(params).name == POSE

    det = parse(repo / "yolox_nano" / "config.pbtxt")
    inputs, outputs, _ = onnx_io(YOLOX)
    assert det.max_batch_size == 0 and not det.HasField("dynamic_batching")  # a fixed batch of 1
    assert io_of(det) == (inputs, outputs)
    assert list(det.input[0].dims) == [1, 3, 416, 416] and not det.parameters
    assert (repo / "yolox_nano" / "1" / "model.onnx").read_bytes() == YOLOX.read_bytes()


@pytest.mark.shared
def test_detector_offline_advice_works_as_given(tmp_path, pose_model, closed_port, monkeypatch):
    """Offline with an empty cache, export-triton --detector says how to give the file, and each way works."""
    monkeypatch.setenv("EDGEPOSE_YOLOX_URL", "http://127.0.0.1:%d/yolox" % closed_port)
    monkeypatch.delenv("EDGEPOSE_DETECTOR", raising=False)
    proc = edgepose("export-triton", pose_model, "--detector", "-o", tmp_path / "r0", home=tmp_path, check=False,
                    timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and not (tmp_path / "r0").exists()
    assert "EDGEPOSE_DETECTOR=FILE" in proc.stderr and "pass --detector-file FILE" in proc.stderr
    assert str(tmp_path / "detectors") in proc.stderr

    def exported(repo):
        return (repo / "yolox_nano" / "1" / "model.onnx").read_bytes() == YOLOX.read_bytes()

    edgepose("export-triton", pose_model, "--detector-file", YOLOX, "-o", tmp_path / "r1", home=tmp_path)
    monkeypatch.setenv("EDGEPOSE_DETECTOR", str(YOLOX))
    edgepose("export-triton", pose_model, "--detector", "-o", tmp_path / "r2", home=tmp_path)
    monkeypatch.delenv("EDGEPOSE_DETECTOR")
    shutil.copy(YOLOX, tmp_path / "detectors" / "yolox_nano.onnx")
    edgepose("export-triton", pose_model, "--detector", "-o", tmp_path / "r3", home=tmp_path)
    assert all(exported(tmp_path / r) for r in ("r1", "r2", "r3"))


def test_detector_file_must_be_a_yolox_detector(tmp_path, pose_model):
    proc = edgepose("export-triton", pose_model, "--detector-file", pose_model, "-o", tmp_path / "r",
                    home=tmp_path, check=False)
    assert proc.returncode == 1 and "does not look like a YOLOX ONNX export" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


def test_batching_options_reach_the_config(tmp_path, pose_model):
    repo = tmp_path / "repo"
    edgepose("export-triton", pose_model, "-o", repo, "--max-batch", "16", "--preferred-batch", "4",
             "--preferred-batch", "16", "--max-queue-delay-us", "250", "--instances", "3", "--instance-kind", "cpu",
             home=tmp_path)
    config = parse(repo / pose_model.stem / "config.pbtxt")
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.count, g.kind) for g in config.instance_group] == [(3, model_config_pb2.ModelInstanceGroup.KIND_CPU)]


@pytest.mark.shared
def test_text_and_json_forms_are_the_same_config(tmp_path, pose_model):
    """The pbtxt printer agrees with protobuf on the JSON config serve binds, odd strings included."""
    model = onnx.load(str(pose_model))
    odd = ["n\u00f6se \"tip\"", "back\\slash", "tab\there"] + json.loads(
        {p.key: p.value for p in model.metadata_props}["edgepose.keypoints"])[3:]
    for prop in model.metadata_props:
        if prop.key == "edgepose.keypoints":
            prop.value = json.dumps(odd)
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    for info in (read_onnx(path), read_onnx(YOLOX)):
        config = model_config(info, info.path.stem, Batching(max_batch=8, preferred=(2, 8)))
        text = text_format.Parse(config_pbtxt(config, "a comment\non two lines"), model_config_pb2.ModelConfig())
        assert text == json_format.ParseDict(config, model_config_pb2.ModelConfig())
    assert json.loads(text_format.Parse(config_pbtxt(model_config(read_onnx(path), "odd")),
                                        model_config_pb2.ModelConfig()).parameters["edgepose.keypoints"]
                      .string_value)[:3] == odd[:3]


def test_engine_gets_a_tensorrt_plan_entry(tmp_path, pose_model):
    engine = fake_engine(tmp_path, pose_model)
    repo = tmp_path / "repo"
    edgepose("export-triton", pose_model, engine, "-o", repo, home=tmp_path)
    name = pose_model.stem + "-trt"
    config = parse(repo / name / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.name == name
    assert (repo / name / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert config.max_batch_size == 16  # the engine's profile limit
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]  # its optimum and its max
    inputs, outputs, _ = onnx_io(pose_model)
    assert io_of(config) == ([(n, t, d[1:]) for n, t, d in inputs], [(n, t, d[1:]) for n, t, d in outputs])
    meta = ModelMeta.from_props({k: v.string_value for k, v in config.parameters.items()})
    assert meta.precision == "fp16" and meta.name == POSE
    assert (repo / pose_model.stem / "1" / "model.onnx").exists()  # the ONNX entry beside it

    proc = edgepose("export-triton", engine, "-o", tmp_path / "r2", "--max-batch", "64", home=tmp_path, check=False)
    assert proc.returncode == 1 and "up to 16" in proc.stderr and not (tmp_path / "r2" / name).exists()
    proc = edgepose("export-triton", engine, "-o", tmp_path / "r3", "--instance-kind", "cpu", home=tmp_path,
                    check=False)
    assert proc.returncode == 1 and "GPU only" in proc.stderr


def test_engine_sidecar_output_fields_are_enough(tmp_path, pose_model):
    """A sidecar that records its output needs no source ONNX."""
    engine = fake_engine(tmp_path, pose_model, onnx=str(tmp_path / "gone.onnx"), output_name="heatmaps",
                         output_shape=[None, 17, 64, 48])
    info = read_model(engine)
    assert [(t.name, t.shape) for t in info.outputs] == [("heatmaps", (None, 17, 64, 48))]
    assert info.max_batch == 16 and info.opt_batch == 4
    side_path = Path(str(engine) + ".json")
    side = json.loads(side_path.read_text())
    del side["output_name"], side["output_shape"]
    side_path.write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match="source ONNX"):
        read_model(engine)


def test_bad_inputs_are_clear_errors(tmp_path, pose_model):
    repo = tmp_path / "repo"
    edgepose("export-triton", pose_model, "-o", repo, home=tmp_path)
    config = repo / pose_model.stem / "config.pbtxt"
    before = config.read_text()
    proc = edgepose("export-triton", pose_model, "-o", repo, "--max-batch", "8", home=tmp_path, check=False)
    assert proc.returncode == 1 and "--overwrite" in proc.stderr and config.read_text() == before
    edgepose("export-triton", pose_model, "-o", repo, "--max-batch", "8", "--overwrite", home=tmp_path)
    assert parse(config).max_batch_size == 8

    other = tmp_path / "other" / pose_model.name
    other.parent.mkdir()
    shutil.copy(pose_model, other)
    proc = edgepose("export-triton", pose_model, other, "-o", tmp_path / "r2", home=tmp_path, check=False)
    assert proc.returncode == 1 and "rename one" in proc.stderr and not (tmp_path / "r2").exists()

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(pose_model.read_bytes()[:5000])
    for bad, message in ((tmp_path / "missing.onnx", "does not exist"), (truncated, "not a readable ONNX")):
        proc = edgepose("export-triton", bad, "-o", tmp_path / "r3", home=tmp_path, check=False)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    engine = tmp_path / "bare.engine"
    engine.write_bytes(b"plan without sidecar")
    with pytest.raises(ModelFileError, match="no sidecar"):
        read_model(engine)
    with pytest.raises(InputError, match="at least 1"):
        model_config(read_onnx(pose_model), "x", Batching(max_batch=0))
    with pytest.raises(InputError, match="preferred"):
        model_config(read_onnx(pose_model), "x", Batching(max_batch=8, preferred=(16,)))
    with pytest.raises(InputError, match="not usable"):
        model_config(read_onnx(pose_model), "a/b")
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = edgepose("export-triton", pose_model, "-o", afile, home=tmp_path, check=False)
    assert proc.returncode == 1 and "not a folder" in proc.stderr


def test_serve_without_pytriton_says_how_to_install(tmp_path, pose_model):
    try:
        import pytriton.triton  # noqa: F401
    except ImportError:
        proc = edgepose("serve", pose_model, home=tmp_path, check=False)
        assert proc.returncode == 1 and "edgepose[serve]" in proc.stderr and "system Python" in proc.stderr
    else:
        pytest.skip("PyTriton is installed here; tests/test_serve.py covers serving")
