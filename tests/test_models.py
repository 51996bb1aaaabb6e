"""Which file a model name means: the lookup rules on real conversions in a private cache,
``Runtime(NAME)``, and the CLI (``edgepose models``, ``--precision``, the "Using" line)."""
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from support import DATA, SHARED, fake_engine, random_model
from support import run_edgepose as edgepose

from edgepose.errors import InputError, ModelFileError
from edgepose.meta import onnx_metadata_props
from edgepose.models import Conversion, find_model, list_conversions, parse_file_name
from edgepose.runtime import Runtime

NAME = "mobile_pose_mobilenetv3_small"
SOCCER = DATA / "demo_media" / "soccer.png"


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Real conversions of NAME, each what its metadata says: FP32, FP16 and INT8 (both forms) from a
    weights file (GluonCV's parity fixture), and FP32 and CPU-form INT8 with random weights."""
    onnx = pytest.importorskip("onnx")
    from edgepose.converters.export import export_zoo_model
    from edgepose.converters.onnx_io import save_onnx
    from edgepose.converters.fp16 import to_fp16
    from edgepose.converters.quantize import quantize_int8
    from edgepose.converters.zoo import get_entry

    store = tmp_path_factory.mktemp("variants")
    params = SHARED / "parity" / "fixtures" / (NAME + ".params")
    real = export_zoo_model(get_entry(NAME), store / "real.onnx", weights=params).path
    crops = np.random.default_rng(0).normal(size=(4, 3, 256, 192)).astype(np.float32)
    files = {"real": real, "random": random_model(NAME),
             "real-fp16": save_onnx(to_fp16(onnx.load(str(real))), store / "real-fp16.onnx")}
    for target in ("tensorrt", "cpu"):
        files["real-int8-" + target] = quantize_int8(real, crops, store / ("real-int8-%s.onnx" % target),
                                                     target=target, method="minmax")
    files["random-int8-cpu"] = quantize_int8(files["random"], crops, store / "random-int8-cpu.onnx", target="cpu",
                                             method="minmax")
    return files


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private edgepose cache; returns its model folder."""
    monkeypatch.setenv("EDGEPOSE_HOME", str(tmp_path / "home"))
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    return models


def place(models: Path, source: Path, file_name: str, age_s: float = 0.0) -> Path:
    """Copy ``source`` into the cache as ``file_name``, last modified ``age_s`` seconds ago."""
    path = models / file_name
    shutil.copyfile(str(source), str(path))
    stamp = time.time() - age_s
    os.utime(str(path), (stamp, stamp))
    return path


def test_file_names_and_metadata_describe_a_conversion(variants, home):
    assert parse_file_name(NAME + "-random-int8-cpu.onnx") == (NAME, "int8", "cpu", True)
    assert parse_file_name(NAME + "-int8.engine") == (NAME, "int8", "tensorrt", False)
    assert parse_file_name(NAME + "-random-fp16.onnx") == (NAME, "fp16", None, True)  # the INT8 gate's fallback
    assert parse_file_name("theirs-edgepose.onnx") == ("theirs", "fp32", None, False)
    assert parse_file_name("pose.trt") == ("pose", "fp32", None, False)
    props = onnx_metadata_props(variants["real-int8-cpu"])
    assert json.loads(props["edgepose.precision"]) == "int8" and json.loads(props["edgepose.int8_target"]) == "cpu"
    c = Conversion.from_file(place(home, variants["random-int8-cpu"], NAME + "-random-int8-cpu.onnx"))
    assert (c.name, c.precision, c.target, c.weights, c.engine) == (NAME, "int8", "cpu", "random", False)
    assert c.size == variants["random-int8-cpu"].stat().st_size
    # the file's own metadata wins over a misleading name
    c = Conversion.from_file(place(home, variants["real"], NAME + "-random-int8.onnx"))
    assert (c.precision, c.target, c.weights) == ("fp32", None, "real")
    assert len(c.weights_sha1) == 40
    # a file that is no ONNX at all is described by its name
    (home / "notes-fp16.onnx").write_text("not a model")
    assert Conversion.from_file(home / "notes-fp16.onnx").precision == "fp16"


@pytest.mark.parametrize("random_age", [0, 1000])
def test_real_weights_beat_random_whatever_their_precision_and_age(variants, home, random_age):
    """The issue's case: an INT8 random-weight conversion (older or newer) never beats real FP32."""
    real = place(home, variants["real"], NAME + ".onnx", age_s=500)
    place(home, variants["random-int8-cpu"], NAME + "-random-int8-cpu.onnx", age_s=random_age)
    place(home, variants["random"], NAME + "-random.onnx", age_s=random_age)
    chosen = find_model(NAME)
    assert chosen.path == real and chosen.weights == "real"
    # asked for explicitly, the only INT8 conversion is used, and it says what it is
    chosen = find_model(NAME, precision="int8")
    assert chosen.path.name == NAME + "-random-int8-cpu.onnx" and chosen.random_weights


def test_default_order_and_precision_choice(variants, home):
    fp32 = place(home, variants["real"], NAME + ".onnx", age_s=400)
    fp16 = place(home, variants["real-fp16"], NAME + "-fp16.onnx", age_s=300)
    trt = place(home, variants["real-int8-tensorrt"], NAME + "-int8.onnx", age_s=200)
    cpu = place(home, variants["real-int8-cpu"], NAME + "-int8-cpu.onnx", age_s=100)
    place(home, variants["random"], NAME + "-random.onnx", age_s=0)
    engine = fake_engine(home, fp32, precision="fp32")  # NAME.engine: same precision, ONNX first
    os.utime(str(engine))
    assert find_model(NAME).path == fp32
    assert find_model(NAME + ":c2a11fae").path == fp32
    assert find_model(NAME, precision="fp16").path == fp16
    assert find_model(NAME, precision="int8").path == cpu  # the newer INT8 form
    os.utime(str(trt))
    assert find_model(NAME, precision="int8").path == trt
    assert find_model(NAME, target="cpu").path == cpu
    assert find_model(NAME, precision="int8", target="tensorrt").path == trt
    with pytest.raises(InputError, match="does not go with precision fp16"):
        find_model(NAME, precision="fp16", target="cpu")
    with pytest.raises(InputError, match="precision must be one of"):
        find_model(NAME, precision="int4")
    with pytest.raises(InputError, match="not the fp16 asked for"):
        find_model(str(fp32), precision="fp16")
    assert find_model(str(cpu), precision="int8", target="cpu").path == cpu
    listed = [c.path for c in list_conversions() if c.name == NAME]
    assert listed == [fp32, engine, fp16, trt, cpu, home / (NAME + "-random.onnx")]


def test_engines_are_found_with_their_precision(variants, home):
    source = place(home, variants["real-fp16"], "pose-fp16.onnx")
    engine = fake_engine(home, source, name="pose-fp16.trt", precision="fp16")
    source.unlink()
    chosen = find_model("pose")
    assert chosen.path == engine and chosen.engine and chosen.precision == "fp16"
    assert "TensorRT engine" in chosen.describe()
    assert find_model("pose-fp16.trt").path == engine  # a file name from `edgepose models`
    with pytest.raises(ModelFileError, match="no int8 conversion.*pose-fp16.trt"):
        find_model("pose", precision="int8")


def test_unknown_names_files_and_folders(variants, home, tmp_path, monkeypatch):
    place(home, variants["random"], "x.onnx")
    monkeypatch.chdir(tmp_path)
    assert find_model("x.onnx").path == home / "x.onnx"
    with pytest.raises(InputError, match=r"unknown model 'x.o'.*did you mean x.onnx"):
        find_model("x.o")
    with pytest.raises(InputError, match="did you mean %s" % NAME):
        find_model("mobile_pose_mobilenet3_small")
    with pytest.raises(ModelFileError, match="nope.onnx does not exist"):
        find_model("nope.onnx")
    with pytest.raises(ModelFileError, match="is a folder"):
        find_model(str(tmp_path) + "/")
    with pytest.raises(ModelFileError, match="edgepose convert simple_pose_resnet18_v1b:ccd24037"):
        find_model("simple_pose_resnet18_v1b:ccd24037")
    with pytest.raises(InputError, match="known for simple_pose_resnet18_v1b_128x96: "
                                         "simple_pose_resnet18_v1b_128x96:ccd24037"):
        find_model("simple_pose_resnet18_v1b_128x96:f63d42ac")


def test_every_zoo_name_and_hashtag_is_accepted():
    from edgepose.converters.zoo import get_entry, list_models
    from edgepose.models import zoo_name

    for entry in list_models():
        for spec in (entry.name, "%s:%s" % (entry.name, entry.hashtag), "%s:%s" % (entry.gluoncv_name, entry.hashtag)):
            assert get_entry(spec) is entry and zoo_name(spec) == entry.name


def test_runtime_resolves_names_like_the_cli(variants, home):
    place(home, variants["real"], NAME + ".onnx", age_s=100)
    place(home, variants["random-int8-cpu"], NAME + "-random-int8-cpu.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real weights: no warning
        with Runtime(NAME) as rt:
            assert rt.model == str(home / (NAME + ".onnx")) and not rt.meta.random_weights
    with pytest.warns(UserWarning, match="RANDOM weights"):
        rt = Runtime(NAME, precision="int8", target="cpu")
    with rt:
        assert rt.model.endswith("-random-int8-cpu.onnx") and rt.meta.precision == "int8"
    with pytest.raises(InputError, match="did you mean"):
        Runtime("mobile_pose_mobilenetv3_smal")


# ---------------------------------------------------------------- the command line


def _boxes(tmp_path: Path) -> Path:
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({SOCCER.name: [[100, 50, 300, 450]]}))
    return path


def test_predict_says_which_file_and_warns_of_random_weights(variants, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    real = place(models, variants["real"], NAME + ".onnx", age_s=100)
    random_int8 = place(models, variants["random-int8-cpu"], NAME + "-random-int8-cpu.onnx")
    args = ("predict", SOCCER, "-m", NAME, "--boxes", _boxes(tmp_path), "--no-draw", "--json", tmp_path / "k.json")
    proc = edgepose(*args, home=tmp_path)
    assert "Using %s (fp32, real weights)" % real in proc.stderr
    assert "RANDOM" not in proc.stderr
    proc = edgepose(*args, "--precision", "int8", "--target", "cpu", home=tmp_path)
    assert "Using %s (int8, cpu target, random weights)" % random_int8 in proc.stderr
    assert proc.stderr.count("WARNING: %s has RANDOM weights" % random_int8) == 2  # at the start and in the summary
    proc = edgepose(*args, "--precision", "fp16", home=tmp_path, check=False)
    assert proc.returncode == 1 and "no fp16 conversion" in proc.stderr and "--fp16" in proc.stderr
    proc = edgepose("predict", SOCCER, "-m", "mobile_pose_mobilenet3_small", home=tmp_path, check=False)
    assert proc.returncode == 1 and "did you mean %s" % NAME in proc.stderr and "Traceback" not in proc.stderr


def test_eval_summary_repeats_the_random_weights_warning(variants, tmp_path):
    pytest.importorskip("pycocotools")
    models = tmp_path / "models"
    models.mkdir()
    place(models, variants["random"], NAME + "-random.onnx")
    proc = edgepose("eval", "--ann", DATA / "coco_kpt_mini" / "test_coco.json", "--images", DATA / "coco_kpt_mini",
                    "-m", NAME, home=tmp_path)
    assert "AP50" in proc.stdout and proc.stderr.count("has RANDOM weights") == 2


def test_models_lists_and_removes(variants, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    place(models, variants["real"], NAME + ".onnx", age_s=100)
    place(models, variants["real-int8-cpu"], NAME + "-int8-cpu.onnx")
    place(models, variants["random-int8-cpu"], NAME + "-random-int8-cpu.onnx")
    rows = json.loads(edgepose("models", "--json", home=tmp_path).stdout)
    assert [(r["file"], r["precision"], r["target"], r["weights"], r["default"]) for r in rows] == [
        (NAME + ".onnx", "fp32", None, "real", True), (NAME + "-int8-cpu.onnx", "int8", "cpu", "real", False),
        (NAME + "-random-int8-cpu.onnx", "int8", "cpu", "random", False)]
    assert rows[0]["size"] == variants["real"].stat().st_size and rows[0]["format"] == "onnx"
    table = edgepose("models", home=tmp_path).stdout
    assert NAME + "-random-int8-cpu.onnx" in table and "RANDOM" in table and "default" in table
    assert len(json.loads(edgepose("models", NAME + ":c2a11fae", "--target", "cpu", "--json",
                                   home=tmp_path).stdout)) == 2
    proc = edgepose("models", NAME, "--precision", "int8", "--remove", home=tmp_path, check=False)
    assert proc.returncode == 1 and "--yes" in proc.stderr and len(list(models.iterdir())) == 3  # no prompt, no loss
    proc = edgepose("models", NAME, "--precision", "int8", "--remove", "--yes", home=tmp_path)
    assert proc.stdout.count("Removed") == 2
    assert sorted(p.name for p in models.iterdir()) == [NAME + ".onnx"]
    proc = edgepose("models", "mobile_pose_mobilenet3_small", home=tmp_path, check=False)
    assert proc.returncode == 1 and "did you mean %s" % NAME in proc.stderr


def test_convert_takes_every_zoo_name_and_hashtag(tmp_path):
    pytest.importorskip("onnx")
    edgepose("convert", "simple_pose_resnet18_v1b_128x96:ccd24037", "--random-weights", home=tmp_path)
    [row] = json.loads(edgepose("models", "simple_pose_resnet18_v1b:ccd24037", "--json", home=tmp_path).stdout)
    assert row["file"] == "simple_pose_resnet18_v1b_128x96-random.onnx" and row["weights"] == "random"


def test_export_triton_fits_the_instance_kind_to_the_model(variants, tmp_path):
    pytest.importorskip("onnx")
    models = tmp_path / "models"
    models.mkdir()
    place(models, variants["random-int8-cpu"], NAME + "-random-int8-cpu.onnx")
    proc = edgepose("export-triton", NAME, "-o", tmp_path / "repo", home=tmp_path)
    assert "random weights" in proc.stderr
    config = (tmp_path / "repo" / (NAME + "-random-int8-cpu") / "config.pbtxt").read_text()
    assert "kind: KIND_CPU" in config and "KIND_GPU" not in config
    proc = edgepose("export-triton", NAME, "-o", tmp_path / "repo2", "--instance-kind", "gpu", home=tmp_path,
                    check=False)
    assert proc.returncode == 1 and "CPU form of INT8" in proc.stderr and not (tmp_path / "repo2").exists()


def test_cli_finds_trt_engines_and_answers_a_near_miss(variants, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    place(models, variants["random"], "x.onnx")
    source = place(tmp_path, variants["real-fp16"], "pose-fp16.onnx")
    engine = fake_engine(models, source, name="pose-fp16.trt", precision="fp16")
    rows = {r["file"]: r for r in json.loads(edgepose("models", "--json", home=tmp_path).stdout)}
    assert rows["pose-fp16.trt"]["format"] == "engine" and rows["pose-fp16.trt"]["precision"] == "fp16"
    proc = edgepose("predict", SOCCER, "-m", "x.o", home=tmp_path, check=False)
    assert proc.returncode == 1 and "did you mean x.onnx" in proc.stderr and "Traceback" not in proc.stderr
    proc = edgepose("bench", "pose", "--repeats", "1", home=tmp_path, check=False)  # no TensorRT here
    assert "Using %s (fp16, TensorRT engine, real weights)" % engine in proc.stderr
    assert proc.returncode == 1 and "TensorRT" in proc.stderr and "Traceback" not in proc.stderr
    edgepose("models", "pose-fp16.trt", "--remove", "--yes", home=tmp_path)
    assert sorted(p.name for p in models.iterdir()) == ["x.onnx"]  # the engine and its sidecar
