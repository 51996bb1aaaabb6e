"""The built wheel holds exactly the source tree's modules (an editable install would hide a missing one)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: installed package -> source folder (setup.py's ROOTS)
FOLDERS = {"edgepose": "edgepose", "edgepose/converters": "converters", "edgepose/calib": "calib"}


def source_modules() -> set[str]:
    """Every .py file of the three source folders, named as it must appear in the wheel."""
    names = set()
    for package, folder in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            names.add("%s/%s" % (package, path.relative_to(ROOT / folder).as_posix()))
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the source tree (a stale build/ folder here must not leak into it)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    for folder in FOLDERS.values():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("edgepose-*.whl")
    return built


def test_wheel_holds_every_source_module(wheel: Path) -> None:
    files = set(zipfile.ZipFile(wheel).namelist())
    packaged = {name for name in files if name.endswith(".py")}
    assert source_modules() - packaged == set(), "modules missing from the wheel"
    assert packaged - source_modules() == set(), "files in the wheel that are not in the source tree"


def test_wheel_declares_the_console_script(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "edgepose = edgepose.cli:main" in archive.read(entry_points).decode()
