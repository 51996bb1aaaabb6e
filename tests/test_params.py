"""Tests for the MXNet .params reader: real GluonCV files, every record form, hostile files."""
from __future__ import annotations

import json
import random
import struct
import time
import tracemalloc
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import pytest

from edgepose.converters.params import read_params
from edgepose.errors import ModelFileError
from support import SHARED

FIXTURES = SHARED / "parity" / "fixtures"
CASES = sorted(p.stem for p in FIXTURES.glob("*.json") if "params" in json.loads(p.read_text()))

# The container as MXNet writes it (reference §3.1), spelled out independently of the reader.
MAGICS = {"v1": 0xF993FAC8, "v2": 0xF993FAC9, "v3": 0xF993FACA}
FLAGS = {"float32": 0, "float64": 1, "float16": 2, "uint8": 3, "int32": 4, "int8": 5, "int64": 6,
         "bool": 7, "int16": 8, "uint16": 9, "uint32": 10, "uint64": 11}
BFLOAT16 = 12


def record(array: Optional[np.ndarray], version: str = "v2", storage: int = 0,
           flag: Optional[int] = None, shape: Optional[Sequence[int]] = None) -> bytes:
    """One NDArray record; ``array=None`` writes a "none" record.

    ``flag``/``shape`` override what is derived from ``array`` (to write bfloat16 bits or
    hostile shapes); the data written is always ``array``'s bytes.
    """
    if array is not None and shape is None:
        shape = array.shape
    head = b"" if version == "legacy" else struct.pack("<I", MAGICS[version])
    if version in ("v2", "v3"):
        head += struct.pack("<i", storage)
    if shape is None:
        ndim_none = -1 if version == "v3" else 0
        return head + struct.pack("<I" if version == "legacy" else "<i", ndim_none)
    if version == "legacy":
        head += struct.pack("<I%dI" % len(shape), len(shape), *shape)
    else:
        head += struct.pack("<i%dq" % len(shape), len(shape), *shape)
    if flag is None:
        flag = FLAGS[array.dtype.name]
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    return head + struct.pack("<iii", 1, 0, flag) + data


def container(records: List[bytes], names: Sequence[Union[str, bytes]] = (),
              count: Optional[int] = None) -> bytes:
    """The NDArray-list file: header, records, names."""
    encoded = [n.encode("utf-8") if isinstance(n, str) else n for n in names]
    return (struct.pack("<QQQ", 0x112, 0, len(records) if count is None else count) + b"".join(records)
            + struct.pack("<Q", len(encoded)) + b"".join(struct.pack("<Q", len(n)) + n for n in encoded))


def sample_arrays() -> List[np.ndarray]:
    """One small array of every plain dtype, values spread over the dtype's range."""
    rng = np.random.default_rng(0)
    arrays = []
    for i, name in enumerate(FLAGS):
        dtype = np.dtype(name)
        shape = [(3,), (2, 3), (2, 1, 4), (1, 2, 2, 2)][i % 4]
        if dtype.kind == "f":
            values = rng.standard_normal(shape) * 100
        elif dtype.kind == "b":
            values = rng.integers(0, 2, shape)
        else:
            info = np.iinfo(dtype)
            values = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        arrays.append(values.astype(dtype))
    return arrays


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ModelFileError) as info:
        read_params(path)
    message = str(info.value)
    for fragment in (str(path),) + fragments:
        assert fragment in message
    return message


def small_file() -> bytes:
    """A multi-record file mixing every record form, names included."""
    records = [record(np.arange(6, dtype=np.float32).reshape(2, 3), "v2"),
               record(np.array([1, -2], dtype=np.int64), "v1"),
               record(np.array(7.5, dtype=np.float16), "v3"),
               record(np.array([[3]], dtype=np.uint8), "legacy"),
               record(None, "v2")]
    return container(records, ["arg:a.w", "aux:b", "c", "d", "e"])


@pytest.mark.shared
@pytest.mark.parametrize("case", CASES)
def test_gluoncv_fixture(case: str) -> None:
    meta = json.loads((FIXTURES / (case + ".json")).read_text())
    params = read_params(FIXTURES / meta["params_file"])
    assert params.scheme == "structural"
    assert [(name, list(a.shape)) for name, a in params.arrays.items()] == \
        [(p["name"], p["shape"]) for p in meta["params"]]
    assert {a.dtype for a in params.arrays.values()} == {np.dtype(np.float32)}
    assert sum(a.size for a in params.arrays.values()) == meta["num_params_total"]


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "legacy"])
def test_round_trip_every_dtype(tmp_path: Path, version: str) -> None:
    arrays = sample_arrays()
    names = ["%s:p%d" % ("arg" if i % 2 else "aux", i) for i in range(len(arrays))]
    params = read_params(write(tmp_path / "x.params", container([record(a, version) for a in arrays], names)))
    assert params.scheme == "prefixed"
    assert list(params.arrays) == ["p%d" % i for i in range(len(arrays))]
    for want, got in zip(arrays, params.arrays.values()):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "legacy"])
def test_bfloat16_becomes_float32(tmp_path: Path, version: str) -> None:
    values = np.array([[1.5, -2.0, 0.15625], [0.0, -0.0, 65280.0]], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    params = read_params(write(tmp_path / "x.params", container([record(bits, version, flag=BFLOAT16)])))
    got = params.arrays["0"]
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_array_equal(got.view(np.uint32), values.view(np.uint32))


def test_v3_scalar_and_none_records(tmp_path: Path) -> None:
    records = [record(np.array(2.5, dtype=np.float64), "v3"),
               record(None, "v3"), record(None, "v2"), record(None, "v1"), record(None, "legacy"),
               record(np.zeros((2, 0), dtype=np.int32), "v2")]
    params = read_params(write(tmp_path / "x.params", container(records)))
    scalar, *nones, empty = params.arrays.values()
    assert scalar.shape == () and scalar.dtype == np.float64 and scalar == 2.5
    for none in nones:
        assert none.shape == (0,) and none.dtype == np.float32
    assert empty.shape == (2, 0) and empty.dtype == np.int32


def test_names(tmp_path: Path) -> None:
    unnamed = read_params(write(tmp_path / "a.params", container([record(np.ones(2, np.float32))] * 3)))
    assert list(unnamed.arrays) == ["0", "1", "2"] and unnamed.scheme == "prefixed"
    named = read_params(write(tmp_path / "b.params", small_file()))
    assert list(named.arrays) == ["a.w", "b", "c", "d", "e"] and named.scheme == "structural"
    assert named.path == str(tmp_path / "b.params")


def test_truncation_at_every_offset(tmp_path: Path) -> None:
    data = small_file()
    path = tmp_path / "cut.params"
    for cut in range(len(data)):
        expect_error(write(path, data[:cut]), "offset")


def test_random_byte_corruption(tmp_path: Path) -> None:
    data = small_file()
    path = write(tmp_path / "bad.params", data)
    rng = random.Random(1234)
    with path.open("r+b") as file:  # patch one byte in place: cheaper than rewriting the file
        for _ in range(2000):
            where = rng.randrange(len(data))
            file.seek(where)
            file.write(bytes([(data[where] + rng.randrange(1, 256)) % 256]))
            file.flush()
            try:
                read_params(path)
            except ModelFileError as err:
                assert str(path) in str(err) and "offset" in str(err)
            file.seek(where)
            file.write(data[where:where + 1])


ONE = np.ones(1, np.float32)
HUGE = {
    "array count 2**62": container([record(ONE)], count=2 ** 62),
    "v2 ndim 2**31": container([struct.pack("<IiI", MAGICS["v2"], 0, 2 ** 31)]),
    "v1 ndim 2**31-1": container([struct.pack("<Ii", MAGICS["v1"], 2 ** 31 - 1)]),
    "legacy ndim 2**31": container([struct.pack("<I", 2 ** 31)]),
    "dim 2**40": container([record(ONE, shape=(2 ** 40,))]),
    "dims 2**40 x 2**40": container([record(ONE, shape=(2 ** 40, 2 ** 40))]),
    "zero-size dims 2**62": container([record(ONE, shape=(0, 2 ** 62, 2 ** 62))]),
    "legacy dims 2**32-1": container([record(ONE, "legacy", shape=(2 ** 32 - 1,) * 4)]),
    "name length 2**60": container([record(ONE)], ["x"]).replace(struct.pack("<Q", 1) + b"x",
                                                                 struct.pack("<Q", 2 ** 60) + b"x"),
    "name count 2**62": container([record(ONE)])[:-8] + struct.pack("<Q", 2 ** 62),
}


@pytest.mark.parametrize("case", sorted(HUGE))
def test_huge_claims_fail_fast_without_allocating(tmp_path: Path, case: str) -> None:
    path = write(tmp_path / "huge.params", HUGE[case])
    tracemalloc.start()
    start = time.perf_counter()
    try:
        expect_error(path, "offset")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 50 * 2 ** 20


@pytest.mark.parametrize("storage", [1, 2])
def test_sparse_is_refused(tmp_path: Path, storage: int) -> None:
    expect_error(write(tmp_path / "s.params", container([record(ONE, storage=storage)])), "sparse", "offset")


def test_not_a_params_file(tmp_path: Path) -> None:
    expect_error(write(tmp_path / "x.params", b"PK\x03\x04" + bytes(60)), "not an MXNet .params file")


@pytest.mark.parametrize("data, fragment", [
    (container([record(ONE, storage=7)]), "storage type"),
    (container([record(ONE, flag=13)]), "dtype flag"),
    (container([record(ONE, shape=(1, -1))]), "non-negative dims"),
    (container([struct.pack("<Ii", MAGICS["v2"], 0) + struct.pack("<i", -1)]), "ndim"),
    (container([record(ONE), record(ONE)], ["a"]), "name count"),
    (container([record(ONE)], [b"arg:\xff"]), "UTF-8"),
    (container([record(ONE), record(ONE)], ["arg:w", "aux:w"]), "unique"),
    (container([record(ONE)]) + b"\0", "end of the file"),
])
def test_malformed_records(tmp_path: Path, data: bytes, fragment: str) -> None:
    expect_error(write(tmp_path / "m.params", data), fragment, "offset")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    expect_error(tmp_path / "absent.params", "does not exist")
    expect_error(tmp_path, "directory")
