"""Read MXNet ``.params`` files (the NDArray-list container) with NumPy alone.

The format (reference §3.1, MXNet ``src/ndarray/ndarray.cc``), little-endian:
list magic ``0x112`` and a reserved uint64; a uint64 count N and N NDArray records
(V1/V2/V3 or the magic-less legacy form); a uint64 name count (0 or N) and the names.

The reader treats the file as hostile: every count, ndim, dimension and length is checked
against the bytes left before anything is allocated, and every problem is raised as
:class:`~edgepose.errors.ModelFileError` naming the file and the byte offset.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple, Union

import numpy as np

from edgepose.errors import ModelFileError

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
MAX_NDIM = 32
#: The smallest record: a legacy "none" array, which is only its uint32 ndim of 0.
MIN_RECORD_BYTES = 4
BFLOAT16 = 12
#: MXNet dtype flag -> stored NumPy dtype (bfloat16 is read as its uint16 bit pattern).
DTYPES = {
    0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<f2"), 3: np.dtype("u1"),
    4: np.dtype("<i4"), 5: np.dtype("i1"), 6: np.dtype("<i8"), 7: np.dtype("?"),
    8: np.dtype("<i2"), 9: np.dtype("<u2"), 10: np.dtype("<u4"), 11: np.dtype("<u8"),
    BFLOAT16: np.dtype("<u2"),
}
SPARSE_STORAGE = {1: "row_sparse", 2: "csr"}
NAME_PREFIXES = ("arg:", "aux:")
CORRUPT = "the file is truncated or corrupt: delete it and download it again, or pass another --weights FILE"
NOT_PARAMS = "this is not an MXNet .params file: pass GluonCV weights (a .params file) with --weights FILE"
SPARSE = ("sparse arrays are not supported: convert them to dense in MXNet "
          "(`arr.tostype('default')`) and save the file again")


@dataclass
class ParamsFile:
    """The arrays of one ``.params`` file, in file order."""

    path: str
    arrays: Dict[str, np.ndarray]  # "arg:"/"aux:" prefixes stripped from names
    scheme: str  # "structural" if any name contains "." (save_parameters files), else "prefixed"


class _Reader:
    """A bounds-checked cursor over the file's bytes."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def error(self, offset: int, expected: str, found: str, advice: str = CORRUPT) -> ModelFileError:
        return ModelFileError("%s: at byte offset %d: expected %s, found %s; %s"
                              % (self.path, offset, expected, found, advice))

    def take(self, size: int, what: str) -> int:
        """Reserve ``size`` bytes of ``what``; return their offset."""
        if size > self.left:
            raise self.error(self.pos, "%d bytes of %s" % (size, what),
                             "only %d bytes before the end of the file" % self.left)
        start = self.pos
        self.pos += size
        return start

    def unpack(self, fmt: str, what: str) -> Tuple[int, ...]:
        return struct.unpack_from("<" + fmt, self.data, self.take(struct.calcsize("<" + fmt), what))

    def u32(self, what: str) -> int:
        return self.unpack("I", what)[0]

    def i32(self, what: str) -> int:
        return self.unpack("i", what)[0]

    def u64(self, what: str) -> int:
        return self.unpack("Q", what)[0]


def read_params(path: Union[str, os.PathLike]) -> ParamsFile:
    """Read an MXNet ``.params`` file; raise ModelFileError if it is missing or malformed."""
    name = str(path)
    file = Path(path)
    if file.is_dir():
        raise ModelFileError("%s is a directory, not a weights file; pass a .params file with --weights FILE"
                             % name)
    try:
        data = file.read_bytes()
    except FileNotFoundError as err:
        raise ModelFileError("weights file %s does not exist; check the path or pass another --weights FILE"
                             % name) from err
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise ModelFileError("cannot read weights file %r (%s); check the path and its permissions, or pass "
                             "another --weights FILE" % (name, getattr(err, "strerror", None) or err)) from err
    r = _Reader(name, data)
    magic = r.u64("the NDArray-list magic")
    if magic != LIST_MAGIC:
        raise r.error(0, "the NDArray-list magic 0x%x" % LIST_MAGIC, "0x%x" % magic, NOT_PARAMS)
    r.u64("the reserved header field")
    count_at = r.pos
    count = r.u64("the array count")
    if count > r.left // MIN_RECORD_BYTES:
        raise r.error(count_at, "an array count of at most %d (the %d bytes left cannot hold more records)"
                      % (r.left // MIN_RECORD_BYTES, r.left), "%d" % count)
    arrays = [_read_record(r) for _ in range(count)]
    names = _read_names(r, count)
    if r.left:
        raise r.error(r.pos, "the end of the file after the names", "%d more bytes" % r.left)
    named = dict(zip(names, arrays))
    scheme = "structural" if any("." in key for key in named) else "prefixed"
    return ParamsFile(path=name, arrays=named, scheme=scheme)


def _read_record(r: _Reader) -> np.ndarray:
    """Read one NDArray record; a "none" array comes back as an empty float32 array."""
    start = r.pos
    magic = r.u32("an NDArray record magic or legacy ndim")
    if magic in (V2_MAGIC, V3_MAGIC):
        at = r.pos
        storage = r.i32("the storage type")
        if storage in SPARSE_STORAGE:
            raise r.error(at, "dense storage (0)", "%s storage (%d)" % (SPARSE_STORAGE[storage], storage),
                          SPARSE)
        if storage != 0:
            raise r.error(at, "storage type 0 (dense)", "%d" % storage)
    dims = _read_shape(r, magic, start)
    if dims is None:
        return np.empty((0,), np.float32)
    r.take(8, "the context (device type and id)")
    flag_at = r.pos
    flag = r.i32("the dtype flag")
    if flag not in DTYPES:
        raise r.error(flag_at, "a dtype flag from 0 to %d" % max(DTYPES), "%d" % flag)
    dtype = DTYPES[flag]
    span = dtype.itemsize
    for dim in dims:
        span *= max(dim, 1)
    if span > np.iinfo(np.intp).max:
        raise r.error(start, "a shape NumPy can hold", "shape %s" % (tuple(dims),))
    size = span if all(dims) else 0
    array = np.frombuffer(r.data, dtype, size // dtype.itemsize,
                          r.take(size, "array data for shape %s" % (tuple(dims),))).reshape(dims)
    if flag == BFLOAT16:
        bits = array.astype("<u4")
        bits <<= 16
        array = bits.view("<f4")
    return array


def _read_shape(r: _Reader, magic: int, start: int) -> Optional[List[int]]:
    """Read a record's dims; None for a "none" array."""
    if magic in (V1_MAGIC, V2_MAGIC, V3_MAGIC):
        at = r.pos
        ndim = r.i32("ndim")
        if ndim == (-1 if magic == V3_MAGIC else 0):
            return None
        if not 0 <= ndim <= MAX_NDIM:
            raise r.error(at, "ndim from 0 to %d" % MAX_NDIM, "%d" % ndim)
        fmt = "q"
    else:
        ndim = magic
        if ndim == 0:
            return None
        if ndim > MAX_NDIM:
            raise r.error(start, "an NDArray record magic (0x%X, 0x%X or 0x%X) or a legacy ndim of at most %d"
                          % (V1_MAGIC, V2_MAGIC, V3_MAGIC, MAX_NDIM), "0x%X" % magic)
        fmt = "I"
    at = r.pos
    dims = list(r.unpack("%d%s" % (ndim, fmt), "the %d-dim shape" % ndim))
    if any(dim < 0 for dim in dims):
        raise r.error(at, "non-negative dims", "shape %s" % (tuple(dims),))
    return dims


def _read_names(r: _Reader, count: int) -> List[str]:
    """Read the name list; an empty list names the arrays "0", "1", ..."""
    at = r.pos
    found = r.u64("the name count")
    if found not in (0, count):
        raise r.error(at, "a name count of 0 or %d (one per array)" % count, "%d" % found)
    if found == 0:
        return [str(i) for i in range(count)]
    names: List[str] = []
    seen: Set[str] = set()
    for _ in range(count):
        at = r.pos
        length = r.u64("a name length")
        raw = r.data[r.take(length, "the name"):r.pos]
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise r.error(at + 8, "a UTF-8 name", "invalid UTF-8 %r" % raw[:40]) from None
        name = name[4:] if name.startswith(NAME_PREFIXES) else name
        if name in seen:
            raise r.error(at, "a unique array name", "%r a second time" % name)
        seen.add(name)
        names.append(name)
    return names
