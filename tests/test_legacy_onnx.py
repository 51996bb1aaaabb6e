"""ONNX files from MXNet's exporter (opset 7-9, IR 3, initializers as inputs, batch 1, BatchNorm with
spatial=0, Clip attributes; tests/legacy_models.py) through normalisation, ``edgepose convert`` and the
runtime. Runs in the main suite and, on the files the main suite built, in the Python 3.8 runtime suite
with ONNX Runtime 1.19 (JetPack 5), where the tests that need onnx skip."""
import re

import cv2
import numpy as np
import onnxruntime as ort
import pytest

import legacy_models as legacy
from edgepose.backends.onnxruntime import OnnxRuntimeBackend
from edgepose.errors import ModelFileError
from edgepose.meta import ModelMeta
from edgepose.runtime import Runtime
from support import DATA, run_edgepose

ORT_VERSION = tuple(int(p) for p in ort.__version__.split(".")[:2])
BOXES = np.array([[180, 420, 560, 920], [480, 40, 710, 440], [590, 70, 930, 470]], np.float32)


def rel_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def legacy_runtime(path) -> Runtime:
    """The runtime on a model without edgepose metadata, told its pre-processing."""
    return Runtime(str(path), input_size=legacy.HW, mean=legacy.MEAN, std=legacy.STD)


def fix_named(path) -> str:
    """The message part naming the fix for the model at ``path``."""
    stem = re.escape(str(path)[:-len(".onnx")])
    return r"cannot run .*Invalid input scale.*`edgepose convert %s\.onnx -o %s-edgepose\.onnx`" % (stem, stem)


@pytest.mark.converter
# ------------------------------------------------------------------ normalisation (needs onnx)
@pytest.mark.parametrize("name", sorted(legacy.CORPUS))
def test_normalised_legacy_model_matches_the_oracle(name, tmp_path):
    onnx = pytest.importorskip("onnx")
    from edgepose.converters.onnx_io import save_onnx
    from edgepose.converters.graph import ALLOWED_OPS, OPSET
    from edgepose.converters.normalize import normalize_foreign

    traits = legacy.CORPUS[name]
    source = save_onnx(legacy.build(name)[0], tmp_path / (name + ".onnx"))
    model = normalize_foreign(source)
    assert (model.opset_import[0].version, model.ir_version) == (OPSET, 8)
    assert {n.op_type for n in model.graph.node} <= ALLOWED_OPS  # no BatchNormalization left
    assert [i.name for i in model.graph.input] == ["data" if "batch1" in traits else "input"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    if "clip" in traits:  # min/max moved from attributes to initialisers
        clips = [n for n in model.graph.node if n.op_type == "Clip"]
        assert clips and all(len(n.input) == 3 and not n.attribute for n in clips)
    if traits & {"bn_input", "bn_plain"}:  # the input BatchNorm: exact per-channel Mul + Add
        _, _, params = legacy.build(name)
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        mul, add = model.graph.node[:2]
        assert (mul.op_type, add.op_type, add.input[0]) == ("Mul", "Add", mul.output[0])
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + legacy.BN_EPS)
        np.testing.assert_array_equal(inits[mul.input[1]], scale.astype(np.float32).reshape(1, 3, 1, 1))
        np.testing.assert_array_equal(inits[add.input[1]], (beta - mean * scale).astype(np.float32).reshape(1, 3, 1, 1))
    x = legacy.sample_input(3)
    ref = legacy.oracle(name, x)
    assert rel_error(legacy.run_ort(model, x), ref) <= 1e-5  # batch 3 although the source may fix 1
    meta = ModelMeta.from_props({p.key: p.value for p in model.metadata_props})
    assert meta.input_size == legacy.HW and meta.heatmap_stride == 4 and meta.source == "foreign:%s.onnx" % name


@pytest.mark.converter
def test_onnx_version_converter_alone_refuses_spatial0():
    """Why BatchNorm is folded before the opset upgrade: ONNX's converter asserts on MXNet's spatial=0."""
    pytest.importorskip("onnx")
    from onnx import version_converter

    with pytest.raises(Exception, match="spatial"):
        version_converter.convert_version(legacy.build("bn_deconv")[0], 17)


@pytest.mark.converter
def test_per_activation_batchnorm_becomes_mul_add(tmp_path):
    """A real spatial=0 BatchNorm (parameters (C, H, W)) is kept per activation: (1, C, H, W) constants."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from edgepose.converters.normalize import normalize_foreign

    rng = np.random.default_rng(5)
    shape = (3, *legacy.HW)
    params = [rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.2, shape), rng.normal(0, 0.2, shape),
              rng.uniform(0.5, 1.5, shape)]
    names = ["bn_gamma", "bn_beta", "bn_mean", "bn_var"]
    inits = [numpy_helper.from_array(p.astype(np.float32), n) for p, n in zip(params, names)]
    inits.append(numpy_helper.from_array((rng.normal(size=(17, 3, 4, 4)) / 7).astype(np.float32), "w"))
    nodes = [helper.make_node("BatchNormalization", ["data"] + names, ["normed"], spatial=0, epsilon=1e-3),
             helper.make_node("Conv", ["normed", "w"], ["heat"], kernel_shape=[4, 4], strides=[4, 4])]
    graph = helper.make_graph(nodes, "mxnet", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, *shape])],
                              [helper.make_tensor_value_info("heat", TensorProto.FLOAT, [1, 17, 32, 24])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    model.graph.input.extend(helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims)) for i in inits)
    x = legacy.sample_input(1)
    ref = legacy.run_ort(model, x)  # ORT's kernel runs the genuine per-activation form
    normalised = normalize_foreign(model)
    assert [n.op_type for n in normalised.graph.node] == ["Mul", "Add", "Conv"]
    assert {tuple(i.dims) for i in normalised.graph.initializer if i.name.endswith(("bn_scale", "bn_shift"))} == {
        (1, *shape)}
    assert rel_error(legacy.run_ort(normalised, x), ref) <= 1e-5


@pytest.mark.converter
# ------------------------------------------------------------------ the CLI, as a user runs it (needs onnx)
def test_convert_cli_on_a_legacy_model(tmp_path):
    pytest.importorskip("onnx")
    files = legacy.legacy_file("mxnet")
    expected = np.load(files["expected"])
    home = tmp_path / "home"
    fixed = tmp_path / "fixed.onnx"
    proc = run_edgepose("convert", files["legacy"], "-o", fixed, home=home)
    assert "normalised" in proc.stdout + proc.stderr
    with OnnxRuntimeBackend(str(fixed)) as backend:
        assert backend.input_shape[0] is None
        assert rel_error(backend.run(expected["x"]), expected["fp32"]) <= 1e-5
    for args, suffix, tolerance in ((["--fp16"], "-fp16", 2e-3),
                                    (["--int8", "--force", "--calib", legacy.CALIB], "-int8", 5e-2)):
        out = tmp_path / ("fixed%s.onnx" % suffix)
        run_edgepose("convert", files["legacy"], *args, "-o", out, home=home, timeout=600)
        with OnnxRuntimeBackend(str(out)) as backend:
            assert rel_error(backend.run(expected["x"]), expected["fp32"]) <= tolerance, suffix


# ------------------------------------------------------------------ the runtime (also Python 3.8, ORT 1.19)
@pytest.mark.parametrize("name", ["bn_input", "mxnet"])
def test_runtime_names_the_fix_for_a_standalone_spatial0_batchnorm(name):
    """No ONNX Runtime fuses a BatchNorm on the input away, and its kernel refuses spatial=0 (1.19 and 1.2x)."""
    path = legacy.legacy_file(name)["legacy"]
    with legacy_runtime(path) as rt:
        with pytest.raises(ModelFileError, match=fix_named(path)):
            rt.estimate(cv2.imread(str(DATA / "demo_media" / "soccer.png")), BOXES)


def test_runtime_on_batchnorm_after_convtranspose():
    """ONNX Runtime 1.19 (JetPack 5) does not fuse spatial=0 BatchNorm after a ConvTranspose and fails in its
    kernel: edgepose's error names the fix; newer versions fuse it and match the oracle."""
    files = legacy.legacy_file("bn_deconv")
    expected = np.load(files["expected"])
    with OnnxRuntimeBackend(str(files["legacy"])) as backend:
        if ORT_VERSION <= (1, 19):
            with pytest.raises(ModelFileError, match=fix_named(files["legacy"])):
                backend.run(expected["x"][:1])
        else:
            assert rel_error(backend.run(expected["x"][:1]), expected["fp32"][:1]) <= 1e-5


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("fp16", 2e-3), ("int8", 5e-2)])
def test_normalised_variants_run_on_this_onnxruntime(precision, tolerance):
    """The normalised FP32/FP16/INT8 models of the all-traits model run here with correct heatmaps: against the
    oracle (measured on ORT 1.19: 2.8e-7, 3.6e-4, 1.2e-2 of the peak), and FP16/INT8 against the outputs
    ONNX Runtime of the main suite gave (1.6e-4, 1.3e-2 on 1.19)."""
    files = legacy.normalised_files("mxnet")
    expected = np.load(files["expected"])
    with OnnxRuntimeBackend(str(files[precision])) as backend:
        assert backend.input_shape[0] is None and ModelMeta.from_props(backend.metadata).precision == precision
        out = backend.run(expected["x"])
    assert rel_error(out, expected["fp32"]) <= tolerance
    if precision != "fp32":
        assert rel_error(out, expected[precision]) <= tolerance
    with Runtime(str(files[precision])) as rt:  # configured from the metadata normalisation wrote
        result = rt.estimate(cv2.imread(str(DATA / "demo_media" / "soccer.png")), BOXES, flip=True)
    assert result.keypoints.shape == (3, 17, 2) and np.isfinite(result.keypoints).all()
