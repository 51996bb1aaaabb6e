"""Shared test helpers: where ../shared is, random-weight zoo exports made once per run, loopback
ports, small file helpers. Imports only the standard library (pytest when a test must skip): the Python
3.8 runtime venv and the benchmarks import it too.

Exports land in $EDGEPOSE_TEST_MODELS (default: a folder under the system temp dir), so a
second environment without onnx (the Python 3.8 runtime venv in CI) reuses the files the
first run made; there a missing file skips the test with the reason.
"""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    import onnx

SHARED = Path(os.environ.get("EDGEPOSE_SHARED") or Path(__file__).resolve().parents[2] / "shared")
DATA = SHARED / "data"
#: The sample data (COCO images, YOLOX-Nano, GluonCV parity fixtures) lives beside the repository, not in it.
HAVE_SHARED = DATA.is_dir() and (SHARED / "parity").is_dir()
SHARED_REASON = ("needs the sample data, not found at %s: set EDGEPOSE_SHARED to the folder that holds data/ and "
                 "parity/ (the shared/ folder beside the repository)" % SHARED)
TEST_MODELS = Path(os.environ.get("EDGEPOSE_TEST_MODELS") or Path(tempfile.gettempdir()) / "edgepose-test-models")
LOOPBACK = "127.0.0.1"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's chromium, chromium-driver
_port_bases = random.Random()  # unaffected by tests that seed the global generator


def built_once(done: Path, make: Callable[[], None]) -> None:
    """Run ``make`` unless ``done`` exists (the file it writes last). Making models needs onnx: where it is not
    installed (the Python 3.8 runtime suite) the calling test skips and says how to build them first."""
    if done.exists():
        return
    try:
        import onnx  # noqa: F401
    except ImportError:
        import pytest

        pytest.skip("%s is not built yet and onnx is not installed here; build the test models first with "
                    "`python tests/build_test_models.py` (EDGEPOSE_TEST_MODELS=%s)" % (done.name, TEST_MODELS))
    make()


def random_model(name: str, seed: int = 0) -> Path:
    """``<name>`` exported with random weights (seed), built on first use when onnx is installed."""
    path = TEST_MODELS / ("%s-random%d.onnx" % (name, seed))

    def make() -> None:
        from edgepose.converters.export import export_zoo_model
        from edgepose.converters.zoo import get_entry

        export_zoo_model(get_entry(name), path, random=True, seed=seed)

    built_once(path, make)
    return path


def prepost_fixture() -> dict:
    """GluonCV's evaluation-path pre/post-processing oracle (../shared/parity/fixtures/prepost_eval.npz)."""
    import numpy as np

    require_shared()
    with np.load(SHARED / "parity" / "fixtures" / "prepost_eval.npz") as data:
        return {k: data[k] for k in data.files}


def heatmap_model(name: str, hw: tuple, nodes: list, initializers: list) -> "onnx.ModelProto":
    """A small edgepose heatmap model (input "input" (N, 3, H, W) -> "heatmaps" (N, 17, H, W), stride 1,
    opset 17, edgepose metadata) made of ``nodes`` and ``initializers``."""
    from onnx import TensorProto, helper

    from edgepose.meta import ModelMeta

    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, *hw])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["batch", 17, *hw])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, ModelMeta(name=name, input_size=hw, heatmap_stride=1).to_props())
    return model


def fake_engine(folder: Path, onnx_path: Path, *, name: Optional[str] = None, precision: str = "fp16",
                **extra: object) -> Path:
    """An engine file (``name``, default ONNX stem + .engine) in ``folder`` with the sidecar the TensorRT
    build writes (made by its own function, for TensorRT 8.6.1 on a V100, batches 1/4/16); the plan
    bytes are opaque to everything that runs without TensorRT, which only copies or lists them."""
    from edgepose.converters.tensorrt_build import inspect_onnx, plan_precision, write_engine
    from edgepose.engine_info import make_sidecar

    info = inspect_onnx(onnx_path)
    engine = folder / (name or Path(onnx_path).stem + ".engine")
    data = b"serialized TensorRT plan"
    sidecar = make_sidecar(
        engine_path=engine, engine_bytes=data, onnx_path=onnx_path, onnx_sha256="0" * 64, info=info,
        plan=plan_precision(precision, info, "8.6.1"), trt_version="8.6.1", gpu_name="Tesla V100-SXM2-16GB",
        compute_capability="7.0", cuda_runtime="12.2", input_shape=(None, 3, 256, 192), min_batch=1,
        opt_batch=4, max_batch=16, workspace_mb=1024, dla_core=None, gpu_fallback=True, timing_cache=None)
    sidecar.update(extra)
    return write_engine(engine, data, sidecar)


def require_shared() -> None:
    """Skip the calling test or fixture, with :data:`SHARED_REASON`, when the sample data is missing."""
    if not HAVE_SHARED:
        import pytest

        pytest.skip(SHARED_REASON)


def chromium_driver(width: int, height: int):
    """Debian's headless Chromium through Debian's chromedriver, a ``width`` x ``height`` window (Selenium
    downloads nothing); skips the calling test where they or selenium are missing."""
    import pytest

    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("needs Debian's chromium and chromium-driver (%s, %s; apt install chromium chromium-driver)"
                    % (CHROMIUM, CHROMEDRIVER))
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=%d,%d" % (width, height), "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def closed_port() -> int:
    """A loopback port nobody listens on (bound to an ephemeral port, then closed): connections are refused."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def free_ports(count: int = 1, tries: int = 200) -> int:
    """The first port P of ``count`` consecutive ports P .. P+count-1 all free on 127.0.0.1."""
    for _ in range(tries):
        base = _port_bases.randint(20000, 60000)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                socks.append(socket.socket())
                socks[-1].bind((LOOPBACK, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports found on {LOOPBACK} in {tries} tries")


def leftovers(folder: Path) -> list[str]:
    """Every entry in ``folder``, hidden temp files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A zip at ``path`` (parents made) holding ``members`` (name -> content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def cli_env(home: Path) -> dict[str, str]:
    """Environment of an ``edgepose`` subprocess: caches under ``home``, a terminal too wide to wrap lines."""
    return dict(os.environ, EDGEPOSE_HOME=str(home), MXNET_HOME=str(Path(home) / "mxnet"), COLUMNS="300",
                PYTHONUNBUFFERED="1")


def edgepose_command() -> list[str]:
    """How a person runs edgepose: the console script installed beside this Python (not ``python -m``,
    which would import the source tree from the working folder instead of the installed package)."""
    script = Path(sys.executable).with_name("edgepose.exe" if os.name == "nt" else "edgepose")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "edgepose"]


def run_edgepose(*args: object, home: Path, check: bool = True, timeout: float = 300,
                 cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """``edgepose ARGS`` run to its end; ``check`` raises with its output when it fails."""
    proc = subprocess.run([*edgepose_command(), *map(str, args)], capture_output=True, text=True,
                          env=cli_env(home), cwd=None if cwd is None else str(cwd), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("edgepose %s failed (%d):\n%s\n%s" % (args, proc.returncode, proc.stdout, proc.stderr))
    return proc


def start_edgepose(*args: object, home: Path, cwd: Optional[Path] = None) -> subprocess.Popen:
    """``edgepose ARGS`` started in its own session (signals reach only it), output piped."""
    return subprocess.Popen([*edgepose_command(), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(home),
                            cwd=None if cwd is None else str(cwd), start_new_session=True)
