"""TensorRT engine build, the TensorRT backend and the CUDA layer.

Most of this runs anywhere: the trtexec command lines, the precision decisions, the sidecar and its
compatibility check, atomic writes, import hygiene and the missing-dependency errors. The build and
the backend's run loop are also driven through a fake ``tensorrt`` module that follows TensorRT's
Python API (8.5/10/11 variants) over a fake CUDA whose "device" memory is host memory, so the data
path is checked byte for byte. Tests that need the real TensorRT and a GPU skip with the reason.
"""
import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

import edgepose.backends.tensorrt as trt_backend
import edgepose.backends.cuda as ecuda
from edgepose.backends.tensorrt import TensorRTBackend
from edgepose.converters import tensorrt_build as tb
from edgepose.backends.cuda import CtypesCuda, Cuda, CudaError, DeviceBuffer, DeviceInfo, PinnedBuffer, Stream
from edgepose.engine_info import (
    SIDECAR_FORMAT, check_engine_compatible, format_trtexec_command, import_tensorrt, make_sidecar, read_sidecar,
    rebuild_hint, sidecar_path, tensorrt_available, version_tuple,
)
from edgepose.errors import EdgeposeError, InputError, MissingDependencyError, ModelFileError
from edgepose.fileio import file_hash
from edgepose.meta import ModelMeta
from support import DATA, require_shared

H, W, K = 8, 6, 2
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- a tiny real ONNX model


def need_onnx():
    """The onnx package (the runtime-only test venv has none: those tests skip there)."""
    return pytest.importorskip("onnx", reason="onnx is not installed (it is needed to make test models)")


def tiny_onnx(path: Path, precision: str = "fp32", qdq: bool = False, batch: object = "batch",
              metadata: bool = True) -> Path:
    """One 1x1 Conv, stride 2: (N, 3, 8, 6) -> (N, 2, 4, 3), with edgepose metadata."""
    onnx = need_onnx()
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((K, 3, 1, 1)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.array([0.5, -0.5], np.float32), "b")
    nodes = []
    x = "input"
    inits = [weight, bias]
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "zero")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["xq"], name="quant_in"),
                  helper.make_node("DequantizeLinear", ["xq", "scale", "zero"], ["xdq"], name="dequant_in")]
        x = "xdq"
    nodes.append(helper.make_node("Conv", [x, "w", "b"], ["heatmaps"], strides=[2, 2], name="head_conv"))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, H, W])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [batch, K, H // 2, W // 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgepose-test")
    model.ir_version = 8
    if metadata:
        meta = ModelMeta(name="tiny", input_size=(H, W), keypoints=["a", "b"], flip_pairs=[], heatmap_stride=2,
                         precision=precision)
        helper.set_model_props(model, meta.to_props())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / "tiny.onnx")


# ---------------------------------------------------------------- imports and missing dependencies


def test_modules_import_without_tensorrt_or_cuda():
    """Importing the three modules loads neither tensorrt nor libcudart, and floor 1 stays off onnx."""
    code = textwrap.dedent("""
        import sys
        import edgepose.backends.cuda, edgepose.backends.tensorrt
        assert "onnx" not in sys.modules, "floor-1 modules imported onnx"
        import edgepose.converters.tensorrt_build
        assert "tensorrt" not in sys.modules, "tensorrt was imported at module import time"
        assert edgepose.backends.cuda._default is None, "the CUDA runtime was touched at import time"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_backend_without_tensorrt_raises_missing_dependency(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    engine = tmp_path / "pose.engine"
    engine.write_bytes(b"not used")
    with pytest.raises(MissingDependencyError) as info:
        TensorRTBackend(str(engine))
    text = str(info.value)
    assert "tensorrt" in text and "JetPack" in text and "pip install tensorrt" in text
    assert "onnxruntime" in text  # the way out without TensorRT
    assert not tensorrt_available()
    with pytest.raises(MissingDependencyError):
        tb.build_engine(tmp_path / "x.onnx", tmp_path / "x.engine")


def test_tensorrt_older_than_8_5_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.4.3.1"))
    with pytest.raises(MissingDependencyError, match=r"8\.4\.3\.1 is too old.*>= 8\.5"):
        import_tensorrt()


def test_version_tuple():
    assert version_tuple("10.3.0.26") == (10, 3, 0, 26)
    assert version_tuple("8.5.2.2") == (8, 5, 2, 2)
    assert version_tuple("11.0.0b1") == (11, 0, 0)
    assert version_tuple("") == ()


def test_missing_libcudart_is_a_missing_dependency(tmp_path: Path):
    cuda = CtypesCuda(candidates=[str(tmp_path / "libcudart.so.12"), "libcudart-edgepose-absent.so"])
    # constructing loads nothing; the first call does
    with pytest.raises(MissingDependencyError) as info:
        cuda.device_count()
    assert "libcudart" in str(info.value) and "EDGEPOSE_CUDART" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_library_override_is_tried_first(monkeypatch):
    monkeypatch.setenv("EDGEPOSE_CUDART", "/opt/custom/libcudart.so.12")
    candidates = ecuda._library_candidates()
    assert candidates[0] == "/opt/custom/libcudart.so.12"
    assert len(candidates) == len(set(candidates))
    if sys.platform != "win32":
        assert "libcudart.so.12" in candidates and "libcudart.so.11.0" in candidates


def test_real_libcudart_errors_name_the_call():
    """With a real libcudart (here: CUDA without a driver or GPU), failures name the call and CUDA's text."""
    cuda = CtypesCuda()
    try:
        cuda.runtime_version()  # loads the library; needs no driver
    except MissingDependencyError:
        pytest.skip("no CUDA runtime library on this machine")
    assert cuda.runtime_version()[0] >= 10
    try:
        count = cuda.device_count()
    except CudaError as e:
        assert e.call == "cudaGetDeviceCount" and e.status != 0
        assert str(e).startswith("CUDA call cudaGetDeviceCount failed with error %d: " % e.status)
        assert cuda.error_string(e.status) in str(e)
    else:
        assert count >= 0


# ---------------------------------------------------------------- the CUDA layer over a fake libcudart

FAKE_CUDART = r"""
#include <stdlib.h>
#include <string.h>
static int live = 0;
static char stream_token;
int cudaMalloc(void **p, size_t n) { *p = malloc(n); if (!*p) return 2; live++; return 0; }
int cudaFree(void *p) { free(p); live--; return 0; }
int cudaMallocHost(void **p, size_t n) { *p = malloc(n); if (!*p) return 2; live++; return 0; }
int cudaFreeHost(void *p) { free(p); live--; return 0; }
int cudaMemcpyAsync(void *d, const void *s, size_t n, int kind, void *stream) {
    if (kind != 1 && kind != 2) return 21;
    if (stream != &stream_token) return 400;
    memcpy(d, s, n); return 0;
}
int cudaStreamCreate(void **s) { *s = &stream_token; live++; return 0; }
int cudaStreamSynchronize(void *s) { return s == &stream_token ? 0 : 400; }
int cudaStreamDestroy(void *s) { if (s != &stream_token) return 400; live--; return 0; }
int cudaSetDevice(int d) { return d == 0 ? 0 : 101; }
int cudaGetDeviceCount(int *n) { *n = 1; return 0; }
int cudaDeviceGetAttribute(int *v, int attr, int dev) {
    if (dev != 0) return 101;
    if (attr == 75) *v = 8; else if (attr == 76) *v = 7; else return 1;
    return 0;
}
int cudaRuntimeGetVersion(int *v) { *v = 12020; return 0; }
int cudaGetDeviceProperties(void *prop, int dev) {
    if (dev != 0) return 101;
    memset(prop, 0, 1008); strcpy((char *)prop, "Fake Orin"); return 0;
}
const char *cudaGetErrorString(int e) { return e == 101 ? "invalid device ordinal" : "fake error"; }
const char *cudaGetErrorName(int e) { return e == 101 ? "cudaErrorInvalidDevice" : "cudaErrorFake"; }
int fake_live(void) { return live; }
"""


def compile_fake_cudart(folder: Path, file_name: str, soname: Optional[str] = None) -> Path:
    """Build FAKE_CUDART as ``folder/file_name`` (with that ELF soname, as CUDA's own libraries have one)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or sys.platform == "win32":
        pytest.skip("no C compiler to build the fake libcudart")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fake.c").write_text(FAKE_CUDART)
    lib = folder / file_name
    flags = ["-Wl,-soname," + soname] if soname else []
    subprocess.run([compiler, "-shared", "-fPIC", *flags, "-o", str(lib), str(folder / "fake.c")], check=True)
    return lib


@pytest.fixture(scope="module")
def fake_cudart(tmp_path_factory) -> str:
    return str(compile_fake_cudart(tmp_path_factory.mktemp("cudart"), "libcudart_fake.so"))


def test_cuda_runtime_already_in_the_process_is_used(tmp_path: Path):
    """TensorRT's pip wheels load their own libcudart; edgepose must use that one, not load a second by name."""
    wheel = compile_fake_cudart(tmp_path / "site-packages/nvidia/cuda_runtime/lib", "libcudart.so.12",
                                "libcudart.so.12")
    system = compile_fake_cudart(tmp_path / "cuda/lib64", "libcudart.so", "libcudart.so.11.0")
    env = dict(os.environ, LD_LIBRARY_PATH=str(system.parent))  # a CUDA 11 toolkit found first by name
    env.pop("EDGEPOSE_CUDART", None)
    code = textwrap.dedent("""
        import ctypes, sys
        if len(sys.argv) > 1:
            ctypes.CDLL(sys.argv[1])  # what importing tensorrt from its pip wheel does
        from edgepose.backends.cuda import CtypesCuda, mapped_cudart
        cuda = CtypesCuda()
        assert cuda.device_count() == 1
        print(cuda.lib._name)
        print(" ".join(mapped_cudart()))
    """)

    def run(*preload: Path) -> List[str]:
        result = subprocess.run([sys.executable, "-c", code, *map(str, preload)], capture_output=True, text=True,
                                cwd=str(REPO), env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    name, mapped = run()  # nothing loaded yet: the first library found by name
    assert name == "libcudart.so" and mapped == os.path.realpath(system)
    name, mapped = run(wheel)  # the wheel's runtime is already in the process: it is used, and no other loaded
    assert name == os.path.realpath(wheel) and mapped == os.path.realpath(wheel)


def test_mapped_cudart_reads_the_process_map(tmp_path: Path):
    lib = tmp_path / "libcudart.so.12.2.140"
    lib.write_bytes(b"")
    maps = tmp_path / "maps"
    maps.write_text(
        "7f0000000000-7f0000001000 r--p 00000000 08:01 1 %s\n"
        "7f0000001000-7f0000002000 r-xp 00001000 08:01 1 %s\n"
        "7f0000003000-7f0000004000 r--p 00000000 08:01 2 /usr/lib/libcudart_static_helper.so\n"
        "7f0000005000-7f0000006000 r--p 00000000 08:01 3 /gone/libcudart.so.11.0 (deleted)\n"
        "7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]\n" % (lib, lib))
    assert ecuda.mapped_cudart(str(maps)) == [str(lib)]
    assert ecuda.mapped_cudart(str(tmp_path / "no-such-file")) == []


def test_ctypes_cuda_over_fake_library(fake_cudart: str):
    cuda = CtypesCuda(library=fake_cudart)
    live = ctypes.CDLL(fake_cudart).fake_live
    assert cuda.device_count() == 1
    assert cuda.runtime_version() == (12, 2)
    assert cuda.device_info(0) == DeviceInfo(0, "Fake Orin", "8.7")
    with pytest.raises(CudaError) as info:
        cuda.set_device(1)
    assert "cudaSetDevice(1)" in str(info.value) and "invalid device ordinal" in str(info.value)
    assert "cudaErrorInvalidDevice" in str(info.value) and "CUDA_VISIBLE_DEVICES" in str(info.value)
    assert info.value.status == 101

    base = live()
    with Stream(cuda) as stream, PinnedBuffer(cuda=cuda) as host, DeviceBuffer(cuda=cuda) as dev:
        src = host.array((2, 3), np.float32)
        src[:] = np.arange(6, dtype=np.float32).reshape(2, 3)
        dev.copy_from_host(src, stream.handle)
        assert dev.capacity == 24
        ptr = dev.ptr
        dev.resize(8)  # big enough: reused
        assert dev.ptr == ptr and dev.capacity == 24
        out = np.zeros((2, 3), np.float32)
        dev.copy_to_host(out, stream.handle)
        stream.synchronize()
        np.testing.assert_array_equal(out, src)
        with pytest.raises(ValueError):
            dev.copy_to_host(np.zeros(100, np.float32), stream.handle)
        with pytest.raises(CudaError, match="cudaMemcpyAsync"):
            cuda.memcpy_htod_async(dev.ptr, out.ctypes.data, 4, 0)  # the fake wants its stream
        dev.resize(64)  # grows: a new allocation
        assert dev.capacity == 64
        assert live() == base + 3
    assert live() == base  # everything freed


# ---------------------------------------------------------------- trtexec command lines


def test_trtexec_command_tensorrt_8(model: Path, tmp_path: Path):
    cmd = tb.trtexec_command(model, tmp_path / "tiny.engine", trt_version="8.6.1")
    assert cmd == ("trtexec --onnx=%s --saveEngine=%s --minShapes=input:1x3x8x6 --optShapes=input:8x3x8x6 "
                   "--maxShapes=input:32x3x8x6 --memPoolSize=workspace:1024" % (model, tmp_path / "tiny.engine"))
    fp16 = tiny_onnx(tmp_path / "fp16.onnx", precision="fp16")
    cmd = tb.trtexec_command(fp16, "e.engine", trt_version="8.5.2", max_batch=16, opt_batch=4, min_batch=2,
                             workspace_mb=512, timing_cache="t.cache")
    assert cmd.endswith("--minShapes=input:2x3x8x6 --optShapes=input:4x3x8x6 --maxShapes=input:16x3x8x6 "
                        "--memPoolSize=workspace:512 --fp16 --timingCacheFile=t.cache")
    assert "--fp16" in tb.trtexec_command(model, "e.engine", trt_version="8.6", precision="fp16")
    qdq = tiny_onnx(tmp_path / "int8.onnx", precision="int8", qdq=True)
    assert tb.trtexec_command(qdq, "e.engine", trt_version="8.6.1").endswith("workspace:1024 --int8")
    # a Q/DQ graph always gets --int8 on 8.x; asked for fp16, the other layers run in FP16
    assert tb.trtexec_command(qdq, "e.engine", trt_version="8.5.2", precision="fp16").endswith("--int8 --fp16")
    # DLA: one batch size (opt), and no explicit INT8 on 8.x
    cmd = tb.trtexec_command(fp16, "e.engine", trt_version="8.6.1", dla_core=1)
    assert cmd.endswith("--minShapes=input:8x3x8x6 --optShapes=input:8x3x8x6 --maxShapes=input:8x3x8x6 "
                        "--memPoolSize=workspace:1024 --fp16 --useDLACore=1 --allowGPUFallback")
    assert "--allowGPUFallback" not in tb.trtexec_command(fp16, "e.engine", trt_version="8.6", dla_core=0,
                                                          gpu_fallback=False)
    assert "--stronglyTyped" not in cmd
    with pytest.raises(InputError, match=r"explicit \(Q/DQ\) INT8 on DLA.*--fp16"):
        tb.trtexec_command(qdq, "e.engine", trt_version="8.6.1", dla_core=1)


def test_trtexec_command_tensorrt_10_and_11(model: Path, tmp_path: Path):
    qdq = tiny_onnx(tmp_path / "int8.onnx", precision="int8", qdq=True)
    for path in (model, qdq):
        cmd = tb.trtexec_command(path, "e.engine", trt_version="10.3.0")
        assert cmd.endswith("--memPoolSize=workspace:1024 --stronglyTyped")
        assert "--fp16" not in cmd and "--int8" not in cmd
        cmd = tb.trtexec_command(path, "e.engine", trt_version="11.0.0")
        assert cmd.endswith("--memPoolSize=workspace:1024")  # always strongly typed, no flag
    with pytest.raises(InputError, match="strongly typed.*fp32"):
        tb.trtexec_command(model, "e.engine", trt_version="10.3", precision="fp16")


def test_trtexec_command_quotes_paths_and_handles_static_batch(tmp_path: Path):
    folder = tmp_path / "my models"
    folder.mkdir()
    static = tiny_onnx(folder / "static.onnx", batch=4)
    cmd = tb.trtexec_command(static, folder / "out.engine", trt_version="10.0")
    assert "'--onnx=%s'" % static in cmd and "'--saveEngine=%s'" % (folder / "out.engine") in cmd
    assert "Shapes" not in cmd  # a fixed batch needs no profile


def test_trtexec_command_checks_its_arguments(model: Path):
    with pytest.raises(InputError, match="min_batch <= opt_batch"):
        tb.trtexec_command(model, "e.engine", min_batch=8, opt_batch=4, trt_version="10")
    with pytest.raises(InputError, match="precision 'bf16'"):
        tb.trtexec_command(model, "e.engine", precision="bf16", trt_version="10")
    with pytest.raises(InputError, match="Q/DQ"):
        tb.trtexec_command(model, "e.engine", precision="int8", trt_version="8.6")
    with pytest.raises(ModelFileError, match="does not exist"):
        tb.trtexec_command("/nonexistent/m.onnx", "e.engine", trt_version="10")


def test_format_trtexec_command_directly():
    cmd = format_trtexec_command("m.onnx", "m.engine", "images", (3, 256, 192), 1, 8, 32, precision="fp16",
                                 trt_version="8.5.2.2")
    assert cmd == ("trtexec --onnx=m.onnx --saveEngine=m.engine --minShapes=images:1x3x256x192 "
                   "--optShapes=images:8x3x256x192 --maxShapes=images:32x3x256x192 "
                   "--memPoolSize=workspace:1024 --fp16")


# ---------------------------------------------------------------- reading the ONNX and deciding precision


def test_inspect_onnx(model: Path, tmp_path: Path):
    info = tb.inspect_onnx(model)
    assert info.input_name == "input" and info.input_shape == (None, 3, H, W)
    assert info.meta_precision == "fp32" and info.graph_precision == "fp32"
    assert info.node_names == [("head_conv", "Conv")]
    assert json.loads(info.props["edgepose.name"]) == "tiny"
    qdq = tb.inspect_onnx(tiny_onnx(tmp_path / "q.onnx", precision="int8", qdq=True))
    assert qdq.graph_precision == "int8" and qdq.meta_precision == "int8"
    bare = tb.inspect_onnx(tiny_onnx(tmp_path / "bare.onnx", metadata=False))
    assert bare.meta_precision is None and bare.props == {}
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not a protobuf")
    with pytest.raises(ModelFileError):
        tb.inspect_onnx(tmp_path / "junk.onnx")


def _info(meta: Optional[str], graph: str) -> tb.OnnxInfo:
    return tb.OnnxInfo("input", (None, 3, H, W), {}, meta, graph, [])


def test_plan_precision():
    plan = tb.plan_precision
    # TensorRT 8.x: builder flags, from the request or the metadata
    assert plan("auto", _info("fp16", "fp32"), "8.6.1") == ("fp16", False, ("FP16",))
    assert plan("auto", _info(None, "fp32"), "8.5.2") == ("fp32", False, ())
    assert plan("fp16", _info("fp32", "fp32"), "8.5") == ("fp16", False, ("FP16",))
    assert plan("auto", _info("int8", "int8"), "8.6") == ("int8", False, ("INT8",))
    assert plan("auto", _info(None, "fp16"), "8.6") == ("fp16", False, ("FP16",))
    with pytest.raises(InputError, match="Q/DQ"):
        plan("int8", _info("fp32", "fp32"), "8.6")
    # TensorRT 10/11: strongly typed, the ONNX decides
    assert plan("auto", _info("fp16", "fp16"), "10.3.0") == ("fp16", True, ())
    assert plan("int8", _info("int8", "int8"), "11.0") == ("int8", True, ())
    assert plan("auto", _info("fp16", "fp32"), "10.0") == ("fp32", True, ())  # the graph wins
    with pytest.raises(InputError, match="FP16 weights"):
        plan("fp16", _info("fp32", "fp32"), "10.3")
    with pytest.raises(InputError):
        plan("best", _info(None, "fp32"), "10.3")


def test_profile_shapes():
    assert tb.profile_shapes((None, 3, 8, 6), {}, 1, 4, 16) == ((1, 3, 8, 6), (4, 3, 8, 6), (16, 3, 8, 6))
    props = {"edgepose.input_size": "[256, 192]"}
    assert tb.profile_shapes((None, 3, None, None), props, 1, 1, 2)[2] == (2, 3, 256, 192)
    with pytest.raises(InputError, match="input_size"):
        tb.profile_shapes((None, 3, None, None), {}, 1, 1, 2)


# ---------------------------------------------------------------- sidecar and compatibility

SIDECAR = {
    "format": SIDECAR_FORMAT, "engine": "pose.engine", "onnx": "/models/pose.onnx",
    "tensorrt_version": "8.5.2.2", "gpu_name": "Orin", "compute_capability": "8.7", "precision": "fp16",
    "input_name": "input", "input_shape": [None, 3, 256, 192], "min_batch": 1, "opt_batch": 8, "max_batch": 32,
    "workspace_mb": 1024, "dla_core": None, "gpu_fallback": None, "metadata": {"edgepose.name": '"pose"'},
}


def test_compatible_engine_passes():
    check_engine_compatible(SIDECAR, "8.5.2.2", "Orin", "8.7")
    check_engine_compatible(SIDECAR, "8.5.2.1", " orin ", (8, 7))  # build number, case and spaces don't matter
    check_engine_compatible(dict(SIDECAR, gpu_name="unknown", compute_capability="unknown"), "8.5.2", "Xavier", "7.2")


def test_other_tensorrt_is_refused_with_rebuild_hint():
    with pytest.raises(ModelFileError) as info:
        check_engine_compatible(SIDECAR, "10.3.0", "Orin", "8.7", engine_path="/models/pose.engine")
    text = str(info.value)
    assert "TensorRT 8.5.2.2 (this machine has 10.3.0)" in text
    assert "edgepose convert /models/pose.onnx --engine" in text
    assert ("trtexec --onnx=/models/pose.onnx --saveEngine=/models/pose.engine --minShapes=input:1x3x256x192 "
            "--optShapes=input:8x3x256x192 --maxShapes=input:32x3x256x192 --memPoolSize=workspace:1024 "
            "--stronglyTyped") in text  # flags of the TensorRT on this machine


def test_other_gpu_is_refused():
    with pytest.raises(ModelFileError, match=r"compute capability 8\.7 \(this one, NVIDIA GeForce RTX 3090, is 8\.6\)"):
        check_engine_compatible(SIDECAR, "8.5.2.2", "NVIDIA GeForce RTX 3090", "8.6")
    with pytest.raises(ModelFileError, match=r"a GPU named Orin \(this one is Jetson AGX Orin\)") as info:
        check_engine_compatible(SIDECAR, "8.5.2.2", "Jetson AGX Orin", "8.7")
    assert "--fp16" in str(info.value)  # TensorRT 8 rebuild: precision from the sidecar
    with pytest.raises(ModelFileError, match="TensorRT 8.5.2.2.* and a GPU of compute capability"):
        check_engine_compatible(SIDECAR, "8.6.1", "V100", "7.0")


def test_rebuild_hint_without_sidecar():
    assert rebuild_hint(None) == "Run `edgepose convert MODEL.onnx --engine`."


def test_read_sidecar(tmp_path: Path):
    engine = tmp_path / "pose.engine"
    assert sidecar_path(engine) == tmp_path / "pose.engine.json"
    assert read_sidecar(engine) is None
    sidecar_path(engine).write_text(json.dumps(SIDECAR))
    assert read_sidecar(engine) == SIDECAR
    sidecar_path(engine).write_text("{broken")
    with pytest.raises(ModelFileError, match="cannot be read"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ModelFileError, match="not an edgepose engine sidecar"):
        read_sidecar(engine)


def test_make_sidecar(model: Path, tmp_path: Path):
    info = tb.inspect_onnx(model)
    plan = tb.PrecisionPlan("fp16", False, ("FP16",))
    side = make_sidecar(
        engine_path=tmp_path / "tiny.engine", engine_bytes=b"abc", onnx_path=model,
        onnx_sha256=file_hash(model, "sha256"), info=info, plan=plan, trt_version="8.6.1", gpu_name="Orin",
        compute_capability="8.7", cuda_runtime="11.4",
        input_shape=(None, 3, H, W), min_batch=1, opt_batch=8, max_batch=32, workspace_mb=1024, dla_core=None,
        gpu_fallback=True, timing_cache=None)
    assert side["format"] == SIDECAR_FORMAT and side["engine"] == "tiny.engine"
    assert side["engine_sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert side["onnx_sha256"] == file_hash(model, "sha256") and len(side["onnx_sha256"]) == 64
    assert side["input_shape"] == [None, 3, H, W] and side["gpu_fallback"] is None
    assert side["input_dtype"] == side["output_dtype"] == "FLOAT"  # ONNX type names, read by triton_repo
    assert json.loads(side["metadata"]["edgepose.precision"]) == "fp16"  # the engine's, not the ONNX's
    assert ModelMeta.from_props(side["metadata"]).keypoints == ["a", "b"]
    assert side["built_at"].endswith("+00:00")
    json.dumps(side)  # serialisable
    bare = tb.inspect_onnx(tiny_onnx(tmp_path / "bare.onnx", metadata=False))
    side = make_sidecar(
        engine_path="e", engine_bytes=b"", onnx_path=model, onnx_sha256="", info=bare, plan=plan, trt_version="8.6",
        gpu_name="x", compute_capability="8.7", cuda_runtime="", input_shape=(None, 3, H, W), min_batch=1,
        opt_batch=1, max_batch=1, workspace_mb=1, dla_core=0, gpu_fallback=False, timing_cache="t")
    assert side["metadata"] == {}  # no edgepose keys invented for a foreign model
    assert side["dla_core"] == 0 and side["gpu_fallback"] is False


def test_write_engine_is_atomic(tmp_path: Path, monkeypatch):
    engine = tmp_path / "out" / "pose.engine"
    tb.write_engine(engine, b"ENGINE-1", dict(SIDECAR))
    assert engine.read_bytes() == b"ENGINE-1"
    assert json.loads(sidecar_path(engine).read_text())["gpu_name"] == "Orin"
    assert sorted(p.name for p in engine.parent.iterdir()) == ["pose.engine", "pose.engine.json"]

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        tb.write_engine(engine, b"ENGINE-2", dict(SIDECAR))
    assert engine.read_bytes() == b"ENGINE-1"  # the old engine is intact
    assert sorted(p.name for p in engine.parent.iterdir()) == ["pose.engine", "pose.engine.json"]  # no temp left


# ---------------------------------------------------------------- a fake TensorRT over a fake CUDA


class FakeCuda(Cuda):
    """CUDA whose device memory is host memory; counts what is still allocated."""

    name = "fake"

    def __init__(self, gpu: str = "Fake GPU", cc=(8, 7)) -> None:
        self.blocks: Dict[int, ctypes.Array] = {}
        self.streams = set()
        self.gpu, self.cc = gpu, cc
        self.devices: List[int] = []

    def _alloc(self, nbytes: int) -> int:
        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        return ctypes.addressof(block)

    malloc = malloc_host = _alloc

    def free(self, ptr: int) -> None:
        del self.blocks[ptr]

    free_host = free

    def memcpy_htod_async(self, dst, src, nbytes, stream):
        assert stream in self.streams
        ctypes.memmove(dst, src, nbytes)

    memcpy_dtoh_async = memcpy_htod_async

    def stream_create(self):
        handle = 1000 + len(self.streams)
        self.streams.add(handle)
        return handle

    def stream_synchronize(self, stream):
        assert stream in self.streams

    def stream_destroy(self, stream):
        self.streams.remove(stream)

    def set_device(self, device):
        self.devices.append(device)

    def device_count(self):
        return 1

    def device_name(self, device):
        return self.gpu

    def compute_capability(self, device):
        return self.cc

    def runtime_version(self):
        return (12, 2)


def floats_at(address: int, shape) -> np.ndarray:
    """The float32 array of ``shape`` at ``address`` (the fake CUDA's "device" memory is host memory)."""
    return np.ctypeslib.as_array((ctypes.c_float * int(np.prod(shape))).from_address(address)).reshape(shape)


def onnx_engine(path: Path, onnx_path: Path) -> Path:
    """An engine for the fake TensorRT of a whole fixed-shape ONNX model (its network is that model, which the
    fake runs with ONNX Runtime), written the way ``trtexec --onnx=... --saveEngine=...`` writes one: no sidecar."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    spec = {"input": inp.name, "shape": list(inp.shape), "onnx": str(onnx_path),
            "outputs": {o.name: list(o.shape) for o in session.get_outputs()}}
    path.write_bytes(b"FAKEENGINE" + json.dumps(spec).encode())
    return path


def fake_tensorrt(version: str, gpu: str = "Fake GPU") -> types.ModuleType:
    """A ``tensorrt`` module following the Python API of ``version`` (8.5/8.6, 10.x or 11.x) on GPU ``gpu``.

    Version-specific behaviour, as read in NVIDIA/TensorRT's sources and documentation:

    * ``nptype``: 8.5.1/8.5.2 build their table with ``np.bool`` (AttributeError on NumPy 1.24-1.26),
      8.6 and later with ``np.bool_`` (python/packaging/tensorrt/__init__.py, bindings_wheel/ from 10).
    * ``DataType`` members per release (python/src/infer/pyFoundationalTypes.cpp).
    * a Q/DQ network built without the INT8 flag fails on 8.x ("Int8 precision has been set for a layer
      or layer output, but int8 is not configured in the builder"); 10+ are strongly typed.
    * ``create_timing_cache`` logs an error and returns None (the C++ nullptr) for a cache of another
      version or a damaged blob; ``set_timing_cache`` returns False for another GPU's cache unless
      ``ignore_mismatch``, and, as a pybind11 binding taking a reference, raises TypeError for None.
    * DLA needs min = opt = max: with GPU fallback every layer of a dynamic-profile network falls back to
      the GPU (warning per layer), without it the build fails. ``DeviceType.DLA`` exists in every release,
      but ``num_DLA_cores`` is 0 from 10.8 to 11.4.0 (no DLA in those releases); 2 otherwise (an Orin).
    """
    major = version_tuple(version)[0]
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.gpu = gpu
    trt.calls = []  # what the build asked for
    trt.parse_errors = []  # set to make the parser fail

    def record(*item):
        trt.calls.append(item)

    class ILogger:
        def __init__(self):
            pass

    trt.ILogger = ILogger
    ERROR, WARNING = 1, 2  # ILogger.Severity values
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    names = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"]
    if version_tuple(version)[:2] >= (8, 6):
        names.append("FP8")
    if major >= 10:
        names += ["BF16", "INT64", "INT4"]
    trt.DataType = types.SimpleNamespace(**{n: "DataType." + n for n in names})
    dt = trt.DataType

    def nptype(trt_type):
        bool_type = np.bool if version_tuple(version)[:2] == (8, 5) else np.bool_
        mapping = {dt.FLOAT: np.float32, dt.HALF: np.float16, dt.INT8: np.int8, dt.INT32: np.int32,
                   dt.BOOL: bool_type, dt.UINT8: np.uint8}
        if major >= 10:
            mapping[dt.INT64] = np.int64
        if trt_type in mapping:
            return mapping[trt_type]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    trt.nptype = nptype
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.NetworkDefinitionCreationFlag = (types.SimpleNamespace(EXPLICIT_BATCH=0) if major < 10 else
                                         types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1) if major == 10 else
                                         types.SimpleNamespace(STRONGLY_TYPED=0))
    flags = {"GPU_FALLBACK": "GPU_FALLBACK"}
    if major < 11:
        flags.update(FP16="FP16", INT8="INT8")
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    trt.DeviceType = types.SimpleNamespace(GPU="GPU", DLA="DLA")
    trt.dla_cores = 0 if (10, 8) <= version_tuple(version) < (11, 4, 1) else 2

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags):
            record("create_network", flags)
            self.inputs: List[Tensor] = []
            self.out_channels = 0
            self.layers: List[str] = []
            self.has_qdq = False

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class ParserError:
        def __init__(self, node, desc, node_name=None):
            self._node, self._desc = node, desc
            if node_name is not None and major >= 10:  # node_name()/node_operator() are the newer API
                self.node_name = lambda: node_name
                self.node_operator = lambda: "Conv"

        def code(self):
            return "ErrorCode.UNSUPPORTED_NODE"

        def desc(self):
            return self._desc

        def node(self):
            return self._node

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            import onnx

            record("parse", path)
            if trt.parse_errors:
                self.errors = [ParserError(*e) for e in trt.parse_errors]
                return False
            m = onnx.load(path)
            inp = m.graph.input[0]
            dims = tuple(d.dim_value or -1 for d in inp.type.tensor_type.shape.dim)
            self.network.inputs.append(Tensor(inp.name, dims))
            self.network.out_channels = m.graph.output[0].type.tensor_type.shape.dim[1].dim_value
            self.network.layers = [n.name or n.op_type for n in m.graph.node]
            self.network.has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class TimingCache:
        """Serialized as a header naming the TensorRT version and GPU, then the timings."""

        def __init__(self, gpu_name, timings=b""):
            self.gpu, self.timings = gpu_name, timings

        def serialize(self):
            return memoryview(b"FAKECACHE|%s|%s|" % (version.encode(), self.gpu.encode()) + self.timings + b"+t")

    class Config:
        def __init__(self, logger):
            self.logger = logger
            self.profiles = []
            self.flags = set()
            self.cache = None
            self.default_device_type = "GPU"
            self.DLA_core = -1

        def set_memory_pool_limit(self, pool, size):
            record("pool", pool, size)

        def set_flag(self, flag):
            record("flag", flag)
            self.flags.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, blob):
            blob = bytes(blob)
            if not blob:
                return TimingCache(trt.gpu)
            parts = blob.split(b"|", 3)
            if len(parts) != 4 or parts[0] != b"FAKECACHE":
                self.logger.log(ERROR, "1: [stdArchiveReader.cpp::StdArchiveReaderInitCommon::47] Error Code 1: "
                                       "Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed."
                                       "Magic tag does not match)")
                return None
            if parts[1] != version.encode():
                self.logger.log(ERROR, "1: [stdArchiveReader.cpp::StdArchiveReaderInitCommon::47] Error Code 1: "
                                       "Serialization (Serialization assertion stdVersionRead == "
                                       "kSERIALIZATION_VERSION failed.Version tag does not match)")
                return None
            return TimingCache(parts[2].decode(), parts[3])

        def set_timing_cache(self, cache, ignore_mismatch):
            if not isinstance(cache, TimingCache):
                raise TypeError("set_timing_cache(): incompatible function arguments. The following argument "
                                "types are supported: (self, cache: tensorrt.ITimingCache, ignore_mismatch: bool)")
            record("timing_cache", cache.gpu, cache.timings, ignore_mismatch)
            if cache.gpu != trt.gpu and not ignore_mismatch:
                self.logger.log(ERROR, "The timing cache was created on a different device")
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            assert isinstance(logger, ILogger)
            self.logger = logger
            self.num_DLA_cores = trt.dla_cores

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config(self.logger)

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            record("device", config.default_device_type, config.DLA_core)
            if network.has_qdq and major < 10 and "INT8" not in config.flags:
                self.logger.log(ERROR, "4: [network.cpp::validate::2925] Error Code 4: Internal Error (Int8 "
                                       "precision has been set for a layer or layer output, but int8 is not "
                                       "configured in the builder)")
                return None
            placement = config.default_device_type
            if placement == "DLA" and config.profiles:
                _, lo, _, hi = config.profiles[0].shapes
                if lo != hi:  # DLA takes no dynamic dimensions
                    if "GPU_FALLBACK" not in config.flags:
                        self.logger.log(ERROR, "DLA does not support dynamic shapes and GPU fallback is off")
                        return None
                    for layer in network.layers:
                        self.logger.log(WARNING, "Default DLA is enabled but layer %s is not supported on DLA, "
                                                 "falling back to GPU." % layer)
                    placement = "GPU"
            record("placement", placement)
            inp = network.inputs[0]
            spec = {"input": inp.name, "shape": list(inp.shape), "k": network.out_channels}
            if config.profiles:
                _, lo, opt, hi = config.profiles[0].shapes
                spec["profile"] = [list(lo), list(opt), list(hi)]
            return memoryview(b"FAKEENGINE" + json.dumps(spec).encode())

    class Context:
        def __init__(self, engine):
            self.engine, self.shape, self.addresses = engine, None, {}

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.profile
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            spec = self.engine.spec
            if name == spec["input"]:
                return self.shape
            if "outputs" in spec:  # an engine of a whole ONNX model: its output dims, at this batch
                return (self.shape[0],) + tuple(spec["outputs"][name][1:])
            n, _, h, w = self.shape
            return (n, spec["k"], h // 2, w // 2)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def execute_async_v3(self, stream):
            x = floats_at(self.addresses[self.engine.spec["input"]], self.shape)
            if "onnx" in self.engine.spec:  # the network is the ONNX model's: ONNX Runtime computes it
                outputs = list(self.engine.spec["outputs"])
                for name, value in zip(outputs, self.engine.session().run(outputs, {self.engine.spec["input"]: x})):
                    floats_at(self.addresses[name], self.get_tensor_shape(name))[...] = value
                return True
            # heatmap k = (k + 1) * channel 0 at stride 2, read from and written to the "device" addresses
            out_shape = self.get_tensor_shape("heatmaps")
            y = floats_at(self.addresses["heatmaps"], out_shape)
            for k in range(out_shape[1]):
                y[:, k] = (k + 1) * x[:, 0, ::2, ::2]
            return True

    class Engine:
        def __init__(self, spec):
            self.spec = spec
            shape = tuple(spec["shape"])
            self.profile = [tuple(p) for p in spec.get("profile", [shape] * 3)]
            self.names = [spec["input"]] + list(spec.get("outputs", ["heatmaps"]))
            self._session = None

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return "in" if name == self.spec["input"] else "out"

        def get_tensor_shape(self, name):
            n, c, h, w = self.spec["shape"]
            if name == self.spec["input"]:
                return (n, c, h, w)
            return tuple(self.spec["outputs"][name]) if "outputs" in self.spec else (n, self.spec["k"], h // 2, w // 2)

        def session(self):
            """ONNX Runtime on the model an ONNX engine was built from (made once)."""
            if self._session is None:
                import onnxruntime as ort

                self._session = ort.InferenceSession(self.spec["onnx"], providers=["CPUExecutionProvider"])
            return self._session

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_profile_shape(self, name, index):
            assert index == 0
            return self.profile

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            self.DLA_core = -1

        def deserialize_cuda_engine(self, data):
            record("deserialize", self.DLA_core)
            data = bytes(data)
            if not data.startswith(b"FAKEENGINE"):
                return None
            return Engine(json.loads(data[len(b"FAKEENGINE"):]))

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


@pytest.fixture
def use_fake(monkeypatch):
    """Install a fake tensorrt of a given version and a fake CUDA; returns (trt, cuda)."""

    def install(version: str, gpu: str = "Fake GPU", cc=(8, 7)):
        trt = fake_tensorrt(version, gpu)
        cuda = FakeCuda(gpu, cc)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(ecuda, "_default", cuda)
        return trt, cuda

    yield install
    monkeypatch.setattr(trt_backend, "_LOGGER", None)


@pytest.mark.parametrize("version, flags, precision_flags", [
    ("8.5.2.2", 1 << 0, [("flag", "FP16")]),
    ("8.6.1", 1 << 0, [("flag", "FP16")]),
    ("10.3.0", 1 << 1, []),
    ("11.0.0", 1 << 0, []),
])
def test_build_engine_with_fake_tensorrt(use_fake, tmp_path: Path, version, flags, precision_flags):
    trt, _ = use_fake(version)
    legacy = version_tuple(version)[0] < 10  # weakly typed: FP16 from the metadata, by builder flag
    onnx_path = tiny_onnx(tmp_path / "tiny.onnx", precision="fp16" if legacy else "fp32")
    cache = tmp_path / "timing.cache"
    engine = tb.build_engine(onnx_path, tmp_path / "tiny.engine", max_batch=16, opt_batch=4, workspace_mb=256,
                             timing_cache=cache)
    assert engine == tmp_path / "tiny.engine" and engine.read_bytes().startswith(b"FAKEENGINE")
    assert ("create_network", flags) in trt.calls
    assert ("pool", "workspace", 256 << 20) in trt.calls
    assert [c for c in trt.calls if c[0] == "flag"] == precision_flags
    assert ("timing_cache", "Fake GPU", b"", False) in trt.calls
    assert cache.read_bytes() == b"FAKECACHE|%s|Fake GPU|+t" % version.encode()
    assert ("device", "GPU", -1) in trt.calls
    side = read_sidecar(engine)
    assert side["tensorrt_version"] == version and side["gpu_name"] == "Fake GPU"
    assert side["compute_capability"] == "8.7" and side["cuda_runtime"] == "12.2"
    assert (side["min_batch"], side["opt_batch"], side["max_batch"]) == (1, 4, 16)
    assert side["strongly_typed"] == (not legacy) and side["precision"] == ("fp16" if legacy else "fp32")
    assert side["onnx_sha256"] == file_hash(onnx_path, "sha256")
    assert ModelMeta.from_props(side["metadata"]).name == "tiny"
    # a second build reuses the timing cache
    tb.build_engine(onnx_path, tmp_path / "tiny.engine", timing_cache=cache)
    assert ("timing_cache", "Fake GPU", b"+t", False) in trt.calls


def test_build_engine_dla_options(use_fake, tmp_path: Path):
    trt, _ = use_fake("8.5.2.2")
    onnx_path = tiny_onnx(tmp_path / "tiny.onnx", precision="fp16")
    engine = tb.build_engine(onnx_path, tmp_path / "dla.engine", dla_core=1)
    assert ("device", "DLA", 1) in trt.calls and ("flag", "GPU_FALLBACK") in trt.calls
    assert read_sidecar(engine)["dla_core"] == 1
    with pytest.raises(InputError, match="2 DLA cores"):
        tb.build_engine(onnx_path, tmp_path / "dla.engine", dla_core=2)


@pytest.mark.parametrize("version, fallback", [("8.5.2.2", True), ("8.6.1", False), ("10.3.0", True)])
def test_dla_engine_has_one_batch_size(use_fake, tmp_path: Path, caplog, version, fallback):
    """DLA takes no dynamic shapes: a min != max profile sends every layer to the GPU (or fails the build)."""
    trt, _ = use_fake(version)
    onnx_path = tiny_onnx(tmp_path / "tiny.onnx", precision="fp16" if version < "10" else "fp32")
    with caplog.at_level("WARNING"):
        engine = tb.build_engine(onnx_path, tmp_path / "dla.engine", dla_core=0, max_batch=32, opt_batch=4,
                                 gpu_fallback=fallback)
    assert ("placement", "DLA") in trt.calls and "falling back to GPU" not in caplog.text
    side = read_sidecar(engine)
    assert (side["min_batch"], side["opt_batch"], side["max_batch"]) == (4, 4, 4)
    assert "--minShapes=input:4x3x8x6 --optShapes=input:4x3x8x6 --maxShapes=input:4x3x8x6" in rebuild_hint(side)
    with TensorRTBackend(engine) as backend:  # the backend pads to the engine's batch; Runtime splits above it
        assert (backend.min_batch, backend.max_batch) == (4, 4)
        out = backend.run(np.ones((1, 3, H, W), np.float32))
        assert out.shape == (1, K, H // 2, W // 2)


def test_dla_refuses_explicit_int8_on_tensorrt_8(use_fake, tmp_path: Path):
    trt, _ = use_fake("8.6.1")
    qdq = tiny_onnx(tmp_path / "int8.onnx", precision="int8", qdq=True)
    with pytest.raises(InputError, match=r"explicit \(Q/DQ\) INT8 on DLA.*--fp16.*without dla_core"):
        tb.build_engine(qdq, tmp_path / "dla.engine", dla_core=0)
    assert not any(c[0] == "parse" for c in trt.calls)  # refused before the parse
    tb.build_engine(qdq, tmp_path / "gpu.engine")  # the same model builds for the GPU


@pytest.mark.parametrize("version", ["10.8.0", "11.0.0", "11.3.0", "11.4.0"])
def test_dla_absent_from_tensorrt_releases_without_it(use_fake, tmp_path: Path, version):
    trt, _ = use_fake(version)
    assert trt.DeviceType.DLA and trt.Builder(trt_backend.trt_logger(trt)).num_DLA_cores == 0
    message = r"TensorRT %s has no DLA support.*10\.7.*11\.4\.1" % version.replace(".", r"\.")
    with pytest.raises(InputError, match=message):
        tb.build_engine(tiny_onnx(tmp_path / "f32.onnx"), tmp_path / "dla.engine", dla_core=0)
    with pytest.raises(InputError, match="no DLA support"):
        tb.trtexec_command(tiny_onnx(tmp_path / "f32.onnx"), "e.engine", trt_version=version, dla_core=0)


def test_dla_on_tensorrt_11_4_1(use_fake, tmp_path: Path):
    trt, _ = use_fake("11.4.1")
    engine = tb.build_engine(tiny_onnx(tmp_path / "fp16.onnx"), tmp_path / "dla.engine", dla_core=1)
    assert ("device", "DLA", 1) in trt.calls and ("placement", "DLA") in trt.calls
    assert read_sidecar(engine)["strongly_typed"] is True


@pytest.mark.parametrize("version", ["8.5.2.2", "8.6.1"])
def test_qdq_graph_gets_the_int8_flag_on_tensorrt_8(use_fake, tmp_path: Path, version):
    """Asked for fp16, a Q/DQ graph still needs INT8 on 8.x; without it the build failed blaming the workspace."""
    trt, _ = use_fake(version)
    qdq = tiny_onnx(tmp_path / "int8.onnx", precision="int8", qdq=True)
    engine = tb.build_engine(qdq, tmp_path / "fp16.engine", precision="fp16")
    assert [c for c in trt.calls if c[0] == "flag"] == [("flag", "INT8"), ("flag", "FP16")]
    side = read_sidecar(engine)
    assert side["precision"] == "int8" and side["builder_flags"] == ["INT8", "FP16"]
    assert rebuild_hint(side, version).endswith("--int8 --fp16`.")
    with pytest.raises(InputError, match="precision fp32: the ONNX holds Q/DQ INT8 nodes"):
        tb.build_engine(qdq, tmp_path / "fp32.engine", precision="fp32")
    assert tb.plan_precision("auto", _info(None, "int8"), version) == ("int8", False, ("INT8",))


def unsigned_qdq_onnx(path: Path) -> Path:
    """The tiny model with ONNX Runtime's CPU form of Q/DQ: UINT8, zero point 128."""
    onnx = need_onnx()
    from onnx import numpy_helper

    model = onnx.load(str(tiny_onnx(path, precision="int8", qdq=True)))
    for init in model.graph.initializer:
        if init.name == "zero":
            init.CopyFrom(numpy_helper.from_array(np.array(128, np.uint8), "zero"))
    onnx.save(model, str(path))
    return path


def test_unsigned_qdq_is_refused_before_any_work(use_fake, tmp_path: Path):
    assert tb.inspect_onnx(unsigned_qdq_onnx(tmp_path / "cpu.onnx")).unsigned_qdq
    assert not tb.inspect_onnx(tiny_onnx(tmp_path / "trt.onnx", precision="int8", qdq=True)).unsigned_qdq
    trt, _ = use_fake("10.3.0")
    for call in (lambda: tb.build_engine(tmp_path / "cpu.onnx", tmp_path / "cpu.engine"),
                 lambda: tb.trtexec_command(tmp_path / "cpu.onnx", "cpu.engine", trt_version="8.6")):
        with pytest.raises(InputError, match="UINT8 with non-zero, asymmetric zero points.*--target tensorrt"):
            call()
    assert not any(c[0] == "parse" for c in trt.calls)


def test_convert_refuses_int8_cpu_engine_before_any_work(tmp_path: Path, monkeypatch):
    need_onnx()
    from edgepose.converters.convert import convert_model

    monkeypatch.setenv("EDGEPOSE_HOME", str(tmp_path / "home"))
    with pytest.raises(InputError, match=r"--int8 --target cpu cannot be built into a TensorRT engine.*UINT8"
                                         r".*Use --int8 --target tensorrt"):
        convert_model("mobile_pose_mobilenetv3_small", random=True, precision="int8", target="cpu", engine=True,
                      output=tmp_path / "out" / "pose.engine")
    assert not (tmp_path / "out").exists() and not (tmp_path / "home").exists()  # nothing written
    tb.check_int8_target_for_engine("int8", "tensorrt")
    tb.check_int8_target_for_engine("fp16", "cpu")


@pytest.mark.parametrize("case", ["other version", "other gpu", "damaged"])
def test_unusable_timing_cache_is_ignored_with_a_warning(use_fake, tmp_path: Path, caplog, case):
    cache = tmp_path / "timing.cache"
    cache.write_bytes({"other version": b"FAKECACHE|10.0.1|Fake GPU|old", "other gpu": b"FAKECACHE|10.3.0|V100|old",
                       "damaged": b"\x00garbage"}[case])
    trt, _ = use_fake("10.3.0")
    with caplog.at_level("WARNING", logger="edgepose.converters.tensorrt_build"):
        engine = tb.build_engine(tiny_onnx(tmp_path / "tiny.onnx"), tmp_path / "tiny.engine", timing_cache=cache)
    assert engine.is_file() and "ignoring it and starting a new one" in caplog.text
    assert ("timing_cache", "Fake GPU", b"", False) in trt.calls  # a fresh cache was attached
    assert cache.read_bytes() == b"FAKECACHE|10.3.0|Fake GPU|+t"  # and replaced the unusable one
    assert list(trt_backend.trt_logger(trt).errors) == []  # TensorRT's refusal is not kept as a build error


def test_engine_loads_on_tensorrt_8_5_under_numpy_1_24(use_fake, tmp_path: Path, monkeypatch):
    """TensorRT 8.5's nptype uses np.bool, which NumPy 1.24-1.26 (Python 3.8's last) do not have."""
    trt, _ = use_fake("8.5.2.2")
    engine = fake_engine(tmp_path, "8.5.2.2")
    with monkeypatch.context() as numpy_1_24:  # NumPy 1.24-1.26 (2.0 brought np.bool back; its own code uses it)
        numpy_1_24.delattr(np, "bool", raising=False)
        with pytest.raises(AttributeError, match="bool"):
            trt.nptype(trt.DataType.FLOAT)  # the fake fails as the real 8.5.2 does there
        with TensorRTBackend(engine) as backend:
            dtypes = dict(backend.dtypes)
            out = backend.run(np.ones((2, 3, H, W), np.float32))
    assert dtypes == {"input": np.dtype(np.float32), "heatmaps": np.dtype(np.float32)}
    np.testing.assert_array_equal(out[:, 1], 2.0)


def test_numpy_dtype_of_tensorrt_types():
    new, old = fake_tensorrt("10.3.0"), fake_tensorrt("8.5.2")
    dt = new.DataType
    assert trt_backend.numpy_dtype(new, dt.HALF) == np.float16 and trt_backend.numpy_dtype(new, dt.INT64) == np.int64
    assert trt_backend.numpy_dtype(new, dt.BOOL) == np.bool_ and trt_backend.numpy_dtype(old, dt.UINT8) == np.uint8
    assert trt_backend.numpy_dtype(new, dt.BF16) is None and trt_backend.numpy_dtype(old, dt.INT64) is None


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_parse_failure_lists_every_error(use_fake, tmp_path: Path, version):
    trt, _ = use_fake(version)
    trt.parse_errors = [(0, "Conv with this padding is not supported", "head_conv"), (-1, "graph has no outputs")]
    with pytest.raises(tb.OnnxParseError) as info:
        tb.build_engine(tiny_onnx(tmp_path / "tiny.onnx"), tmp_path / "x.engine")
    assert info.value.errors == [
        # the node name comes from the ONNX on 8.5
        "node 'head_conv' (Conv): UNSUPPORTED_NODE: Conv with this padding is not supported",
        "graph: UNSUPPORTED_NODE: graph has no outputs"]
    assert "(2 errors)" in str(info.value) and isinstance(info.value, EdgeposeError)
    assert not (tmp_path / "x.engine").exists()


def fake_engine(folder: Path, trt_version: str, gpu: str = "Fake GPU", cc: str = "8.7", min_batch: int = 1,
                opt_batch: int = 2, max_batch: int = 4, dla_core: Optional[int] = None) -> Path:
    """An engine file for the fake TensorRT and its sidecar, written the way build_engine writes them."""
    spec = {"input": "input", "shape": [-1, 3, H, W], "k": K,
            "profile": [[b, 3, H, W] for b in (min_batch, opt_batch, max_batch)]}
    data = b"FAKEENGINE" + json.dumps(spec).encode()
    props = ModelMeta(name="tiny", input_size=(H, W), keypoints=["a", "b"], flip_pairs=[], heatmap_stride=2).to_props()
    info = tb.OnnxInfo("input", (None, 3, H, W), props, "fp32", "fp32", [("head_conv", "Conv")])
    side = make_sidecar(
        engine_path=folder / "tiny.engine", engine_bytes=data, onnx_path=folder / "tiny.onnx", onnx_sha256="0" * 64,
        info=info, plan=tb.PrecisionPlan("fp32", True, ()), trt_version=trt_version, gpu_name=gpu,
        compute_capability=cc, cuda_runtime="12.2", input_shape=(None, 3, H, W), min_batch=min_batch,
        opt_batch=opt_batch, max_batch=max_batch, workspace_mb=1024, dla_core=dla_core, gpu_fallback=True,
        timing_cache=None)
    return tb.write_engine(folder / "tiny.engine", data, side)


def test_backend_runs_a_fake_engine(use_fake, tmp_path: Path):
    _, cuda = use_fake("10.3.0")
    backend = TensorRTBackend(str(fake_engine(tmp_path, "10.3.0", max_batch=4)))
    assert backend.input_shape == (None, 3, H, W) and backend.max_batch == 4 and backend.min_batch == 1
    assert ModelMeta.from_props(backend.metadata).input_size == (H, W)
    assert backend.gpu == DeviceInfo(0, "Fake GPU", "8.7") and cuda.devices[0] == 0
    rng = np.random.default_rng(1)
    for n in (3, 1, 4, 2):  # buffers grow to the largest batch, then are reused
        batch = rng.standard_normal((n, 3, H, W)).astype(np.float32)
        out = backend.run(batch)
        assert out.shape == (n, K, H // 2, W // 2) and out.dtype == np.float32
        np.testing.assert_array_equal(out[:, 0], batch[:, 0, ::2, ::2])
        np.testing.assert_array_equal(out[:, 1], 2 * batch[:, 0, ::2, ::2])
    assert len(cuda.blocks) == 4  # input + output, device + pinned: no reallocation per call
    with pytest.raises(InputError, match="exceeds"):
        backend.run(np.zeros((5, 3, H, W), np.float32))
    with pytest.raises(InputError, match="does not fit"):
        backend.run(np.zeros((1, 3, H + 2, W), np.float32))
    backend.close()
    assert cuda.blocks == {} and cuda.streams == set()  # every buffer and the stream released
    with pytest.raises(InputError, match="closed"):
        backend.run(np.zeros((1, 3, H, W), np.float32))


@pytest.mark.parametrize("version", ["8.5.2.2", "10.3.0"])
def test_yolox_engine_gives_the_onnx_boxes(use_fake, tmp_path: Path, version):
    """A YOLOX engine (as trtexec builds it: fixed shape, no sidecar) runs the detector through the
    TensorRT backend, with the boxes of the ONNX model on ONNX Runtime."""
    require_shared()
    import cv2

    from edgepose.detector import YoloxDetector

    use_fake(version)
    yolox = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
    engine = onnx_engine(tmp_path / "yolox.engine", yolox)
    with pytest.warns(RuntimeWarning, match="has no sidecar"):
        detector = YoloxDetector(str(engine))
    assert detector.backend.name == "tensorrt" and detector.backend.input_shape == (1, 3, 416, 416)
    assert detector.backend.outputs == {"output": (1, 3549, 85)} and detector.num_classes == 80
    reference = YoloxDetector(yolox)
    for name in ("person.jpg", "soccer.png", "biking.jpg", "street_small.jpg"):
        image = cv2.imread(str(DATA / "demo_media" / name))
        boxes = detector.detect(image)
        assert len(boxes) > 0
        np.testing.assert_array_equal(boxes, reference.detect(image))
    detector.close()
    with pytest.raises(InputError, match="ONNX Runtime options.*tensorrt backend"):
        YoloxDetector(engine, intra_op_threads=2)


def test_build_then_run_with_fake_tensorrt(use_fake, tmp_path: Path):
    use_fake("8.6.1")
    engine = tb.build_engine(tiny_onnx(tmp_path / "tiny.onnx"), tmp_path / "tiny.engine", max_batch=4, opt_batch=2)
    with TensorRTBackend(engine) as backend:
        assert backend.max_batch == 4 and ModelMeta.from_props(backend.metadata).name == "tiny"
        batch = np.full((3, 3, H, W), 2.0, np.float32)
        np.testing.assert_array_equal(backend.run(batch)[:, 1], 4.0)


def test_backend_pads_to_the_profile_minimum(use_fake, tmp_path: Path):
    use_fake("8.6.1")
    with TensorRTBackend(fake_engine(tmp_path, "8.6.1", min_batch=2, opt_batch=2, max_batch=4)) as backend:
        out = backend.run(np.ones((1, 3, H, W), np.float32))
        assert out.shape == (1, K, H // 2, W // 2)
        np.testing.assert_array_equal(out[0, 0], 1.0)


def test_backend_refuses_an_engine_from_another_gpu(use_fake, tmp_path: Path):
    engine = fake_engine(tmp_path, "10.3.0", gpu="NVIDIA A100-SXM4-40GB", cc="8.0")
    _, cuda = use_fake("10.3.0", gpu="Orin", cc=(8, 7))
    with pytest.raises(ModelFileError, match="compute capability 8.0.*edgepose convert .*--engine.*trtexec"):
        TensorRTBackend(engine)
    assert cuda.blocks == {}
    use_fake("10.4.0", gpu="NVIDIA A100-SXM4-40GB", cc=(8, 0))
    with pytest.raises(ModelFileError, match=r"TensorRT 10\.3\.0 \(this machine has 10\.4\.0\)"):
        TensorRTBackend(engine)
    use_fake("10.3.0", gpu="NVIDIA A100-SXM4-40GB", cc=(8, 0))
    TensorRTBackend(engine).close()


def test_backend_without_sidecar_warns_and_runs(use_fake, tmp_path: Path):
    use_fake("10.3.0")
    engine = fake_engine(tmp_path, "10.3.0")
    sidecar_path(engine).unlink()
    with pytest.warns(RuntimeWarning, match="no sidecar"):
        backend = TensorRTBackend(engine)
    assert backend.metadata == {}
    assert backend.run(np.zeros((2, 3, H, W), np.float32)).shape == (2, K, H // 2, W // 2)
    backend.close()


def test_backend_rejects_bad_engine_files(use_fake, tmp_path: Path):
    trt, cuda = use_fake("8.6.1")
    with pytest.raises(ModelFileError, match="does not exist.*edgepose convert"):
        TensorRTBackend(tmp_path / "missing.engine")
    junk = tmp_path / "junk.engine"
    junk.write_bytes(b"this is not an engine")
    with pytest.warns(RuntimeWarning):
        with pytest.raises(ModelFileError, match="cannot load engine .*junk.engine"):
            TensorRTBackend(junk)
    engine = fake_engine(tmp_path, "8.6.1", dla_core=0)
    TensorRTBackend(engine).close()
    assert ("deserialize", 0) in trt.calls  # the DLA core is set on the runtime before deserialising
    engine.write_bytes(engine.read_bytes() + b" ")  # the sidecar now describes another file
    with pytest.raises(ModelFileError, match="SHA-256 differs"):
        TensorRTBackend(engine)
    assert cuda.blocks == {} and cuda.streams == set()


# ---------------------------------------------------------------- the real TensorRT (GPU machines only)


@pytest.fixture(scope="module")
def real_trt():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack or `pip install tensorrt`)")
    if version_tuple(trt.__version__)[:2] < (8, 5):
        pytest.skip("TensorRT %s is older than 8.5" % trt.__version__)
    try:
        ecuda.CtypesCuda().device_count()
    except (MissingDependencyError, CudaError) as e:
        pytest.skip("no usable CUDA GPU: %s" % e)
    return trt


def test_real_build_and_run_matches_onnxruntime(real_trt, tmp_path: Path):
    ort = pytest.importorskip("onnxruntime")
    onnx_path = tiny_onnx(tmp_path / "tiny.onnx")
    engine = tb.build_engine(onnx_path, tmp_path / "tiny.engine", max_batch=8, opt_batch=4,
                             timing_cache=tmp_path / "timing.cache")
    side = read_sidecar(engine)
    assert side["tensorrt_version"] == real_trt.__version__
    assert (tmp_path / "timing.cache").stat().st_size > 0
    batch = np.random.default_rng(2).standard_normal((5, 3, H, W)).astype(np.float32)
    expected = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": batch})[0]
    with TensorRTBackend(engine) as backend:
        assert backend.input_shape == (None, 3, H, W) and backend.max_batch == 8
        np.testing.assert_allclose(backend.run(batch), expected, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(backend.run(batch[:2]), expected[:2], rtol=1e-3, atol=1e-3)


def test_real_parse_error_is_reported(real_trt, tmp_path: Path):
    onnx = need_onnx()
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("EdgeposeNoSuchOp", ["input"], ["heatmaps"], name="mystery", domain="edgepose.test")],
        "bad", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, H, W])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["batch", 3, H, W])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("edgepose.test", 1)])
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(tb.OnnxParseError) as info:
        tb.build_engine(tmp_path / "bad.onnx", tmp_path / "bad.engine")
    assert info.value.errors and "mystery" in str(info.value)


def test_tensorrt_logger_forwards_and_keeps_errors(use_fake, caplog):
    trt, _ = use_fake("10.3.0")
    logger = trt_backend.trt_logger(trt)
    assert isinstance(logger, trt.ILogger) and trt_backend.trt_logger(trt) is logger  # one per process
    with caplog.at_level("DEBUG", logger="edgepose.backends.tensorrt"):
        logger.log(1, "engine plan is corrupt")
        logger.log(2, "a warning")
        logger.log(4, "verbose detail")
    assert list(logger.errors) == ["engine plan is corrupt"]
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"]  # verbose only when asked
    other, _ = use_fake("8.6.1")
    assert trt_backend.trt_logger(other) is not logger  # another tensorrt module gets its own
