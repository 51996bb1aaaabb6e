"""Fixtures shared by the test modules. Imports only the standard library, pytest, numpy and cv2: the
Python 3.8 runtime venv (numpy, opencv, onnxruntime, pytest) and the serving venv load it too."""
from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

import support
from loopback import LocalServer

HAVE_ONNX = importlib.util.find_spec("onnx") is not None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shared: needs the sample data of ../shared (EDGEPOSE_SHARED); skipped "
                                       "with one reason where it is missing")
    config.addinivalue_line("markers", "converter: needs edgepose[convert] (onnx); deselected where it is not "
                                       "installed (the runtime-only Python 3.8 suite), as the main suite runs it")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without onnx, tests marked ``converter`` are deselected; without the sample data, tests marked
    ``shared`` skip with :data:`support.SHARED_REASON`."""
    if not HAVE_ONNX:
        deselected = [item for item in items if item.get_closest_marker("converter")]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if not item.get_closest_marker("converter")]
    if support.HAVE_SHARED:
        return
    skip = pytest.mark.skip(reason=support.SHARED_REASON)
    for item in items:
        if item.get_closest_marker("shared"):
            item.add_marker(skip, append=False)  # before parametrize's "empty parameter set" skip


PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables; loopback traffic must never go through a proxy."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    """A loopback HTTP server on tmp_path/"www" (empty at first)."""
    root = tmp_path / "www"
    root.mkdir()
    with LocalServer(root) as srv:
        yield srv


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    return support.closed_port()


@pytest.fixture(scope="module")
def model_path() -> str:
    """mobile_pose_mobilenetv3_small with random weights (seed 0)."""
    return str(support.random_model("mobile_pose_mobilenetv3_small"))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """soccer.png (three persons), BGR."""
    support.require_shared()
    return cv2.imread(str(support.DATA / "demo_media" / "soccer.png"))
