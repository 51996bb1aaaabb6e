"""The helpers every command uses for the files a user gives: each problem is an InputError naming the file."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edgepose.errors import InputError, ModelFileError
from edgepose.fileio import (atomic_write_bytes, existing_file, images_in, read_image, read_json, writable_file,
                             writable_folder)
from support import DATA


def test_existing_file_tells_a_folder_from_a_missing_file(tmp_path: Path):
    (tmp_path / "a.json").write_text("{}")
    assert existing_file(tmp_path / "a.json", "boxes file") == tmp_path / "a.json"
    with pytest.raises(InputError, match="boxes file %s is a folder, not a file; pass X" % re.escape(str(tmp_path))):
        existing_file(tmp_path, "boxes file", "pass X")
    with pytest.raises(ModelFileError, match="model file .*b.onnx does not exist$"):
        existing_file(tmp_path / "b.onnx", "model file", error=ModelFileError)


@pytest.mark.parametrize("content, problem", [
    (b"", "is empty"), (b" \n", "is empty"), (b'{"a": [1, 2', r"is not valid JSON \(.*line 1 column"),
    (bytes(range(256)), "is not a text file"),
])
def test_read_json_names_the_file_and_the_problem(tmp_path: Path, content: bytes, problem: str):
    path = tmp_path / "f.json"
    path.write_bytes(content)
    expected = "^dets file %s %s.*; it should hold a list$" % (re.escape(str(path)), problem)
    with pytest.raises(InputError, match=expected):
        read_json(path, "dets file", "a list")


def test_read_json_reads_utf8_with_a_byte_order_mark(tmp_path: Path):
    (tmp_path / "f.json").write_bytes('\ufeff{"é": [1]}'.encode("utf-8"))
    assert read_json(tmp_path / "f.json", "f", "x") == {"é": [1]}


def test_output_paths_are_checked_before_any_work(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="is a folder; give a file name"):
        writable_file(tmp_path, "--json file")
    with pytest.raises(InputError, match="notes.txt is a file, not a folder"):
        writable_file(tmp_path / "notes.txt" / "sub" / "k.json")
    with pytest.raises(InputError, match="notes.txt is a file, not a folder"):
        writable_folder(tmp_path / "notes.txt")
    assert writable_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    with pytest.raises(InputError, match="is a folder"):
        atomic_write_bytes(tmp_path, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no temp file, no folder made


def test_read_image_matches_opencv_and_names_bad_files(tmp_path: Path):
    import cv2

    for name in ("soccer.png", "person.jpg"):
        assert np.array_equal(read_image(DATA / "demo_media" / name), cv2.imread(str(DATA / "demo_media" / name)))
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes((DATA / "demo_media" / "soccer.png").read_bytes()[:3000])
    with pytest.raises(InputError, match="zero.jpg is empty"):
        read_image(tmp_path / "zero.jpg")
    with pytest.raises(InputError, match="cut.png cannot be decoded .*; remove it"):
        read_image(tmp_path / "cut.png", "remove it")
    assert images_in(tmp_path) == [tmp_path / "cut.png", tmp_path / "zero.jpg"]
