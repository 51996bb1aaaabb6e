"""Import hygiene: the runtime path never pulls in onnx, typer, rich, tensorrt or the converters."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import edgepose

HEAVY = ("onnx", "typer", "rich", "tensorrt", "tritonclient", "pytriton", "click", "edgepose.converters",
         "edgepose.calib")
# Modules that are the CLI (typer/rich by design) or need a backend's own package.
NOT_RUNTIME = ("edgepose.cli", "edgepose.__main__", "edgepose.cli.commands", "edgepose.serve")


def runtime_modules():
    root = Path(edgepose.__file__).parent
    for info in pkgutil.walk_packages([str(root)], "edgepose."):
        if not info.name.startswith(NOT_RUNTIME):
            yield info.name


def test_runtime_modules_import_without_heavy_packages():
    """Import every runtime module in a fresh interpreter where the heavy packages cannot load."""
    code = """
import sys
BLOCK = %r
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCK or name in BLOCK or any(name.startswith(b + '.') for b in BLOCK):
            raise ImportError('blocked for the hygiene test: ' + name)
sys.meta_path.insert(0, Blocker())
import importlib
for name in %r:
    importlib.import_module(name)
print('ok', len(%r))
""" % (HEAVY, list(runtime_modules()), list(runtime_modules()))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")


def test_import_edgepose_is_light():
    code = ("import sys, edgepose; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('cv2', 'onnxruntime', 'numpy', 'onnx', 'typer')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_optional_import_names_the_extra_that_installs_it():
    import pytest

    from edgepose.errors import MissingDependencyError
    from edgepose.optional import require

    assert require("json", "convert") is __import__("json")
    with pytest.raises(MissingDependencyError) as info:
        require("edgepose_absent_package.sub", "convert", "building models", "or use a prebuilt model")
    text = str(info.value)
    assert text.startswith("building models needs the Python package 'edgepose_absent_package' (")
    assert text.endswith("install it with `pip install 'edgepose[convert]'`. Or use a prebuilt model")
    with pytest.raises(ImportError, match="pip install edgepose_absent_package"):  # no extra: the package itself
        require("edgepose_absent_package", "")
