"""Shared test helpers: where ../shared is, and random-weight zoo exports made once per run.

Exports land in $EDGEPOSE_TEST_MODELS (default: a folder under the system temp dir), so a
second environment without onnx (the Python 3.8 runtime venv in CI) reuses the files the
first run made; there a missing file skips the test with the reason.
"""
import os
import tempfile
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("EDGEPOSE_SHARED") or Path(__file__).resolve().parents[2] / "shared")
DATA = SHARED / "data"
TEST_MODELS = Path(os.environ.get("EDGEPOSE_TEST_MODELS") or Path(tempfile.gettempdir()) / "edgepose-test-models")


def random_model(name: str, seed: int = 0) -> Path:
    """``<name>`` exported with random weights (seed), built on first use when onnx is installed."""
    path = TEST_MODELS / ("%s-random%d.onnx" % (name, seed))
    if path.exists():
        return path
    try:
        import onnx  # noqa: F401
    except ImportError:
        pytest.skip("%s is not built yet and onnx is not installed here; run the main test suite "
                    "first with EDGEPOSE_TEST_MODELS=%s" % (path.name, TEST_MODELS))
    from edgepose.converters.export import export_zoo_model
    from edgepose.converters.zoo import get_entry

    export_zoo_model(get_entry(name), path, random=True, seed=seed)
    return path
