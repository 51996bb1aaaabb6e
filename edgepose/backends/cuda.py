"""A tiny CUDA runtime layer for the TensorRT backend: device memory, pinned host memory, one stream.

TensorRT's Python API takes device pointers and a stream handle as plain integers; something
else has to allocate and copy. This module does only that, over ``ctypes`` on the CUDA runtime
library (``libcudart``), which every CUDA toolkit and JetPack ships: no pycuda, no cuda-python,
no compiler. :class:`Cuda` is the small interface the backend uses; :class:`CtypesCuda` is the one
implementation. Another (for example over cuda-python) can be installed with :func:`set_cuda`.

Importing this module needs nothing: the library is looked up and loaded on first use, and a
missing library is a :class:`~edgepose.errors.MissingDependencyError` that says what to install.
Every CUDA call's status is checked; a failure is a :class:`CudaError` naming the call and CUDA's
own description of the error. Set ``EDGEPOSE_CUDART`` to a library path to choose one; otherwise a
CUDA runtime already loaded into the process (by TensorRT, ONNX Runtime or a pip wheel's
``nvidia-cuda-runtime``) is used before any found by name, so that one process never holds two.
"""
import ctypes
import ctypes.util
import glob
import os
import re
import sys
import threading
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from edgepose.errors import EdgeposeError, MissingDependencyError

#: Environment variable naming the CUDA runtime library to load (a path or a file name).
ENV_LIBRARY = "EDGEPOSE_CUDART"

# cudaMemcpyKind and cudaDeviceAttr values used here (stable across CUDA 10 to 13).
MEMCPY_HOST_TO_DEVICE = 1
MEMCPY_DEVICE_TO_HOST = 2
ATTR_COMPUTE_CAPABILITY_MAJOR = 75
ATTR_COMPUTE_CAPABILITY_MINOR = 76
# cudaDeviceProp starts with ``char name[256]`` in every CUDA version; the struct itself has
# grown (about 1 KiB in CUDA 12/13), so it is read into a generous buffer.
_DEVICE_PROP_BYTES = 16384

#: Advice added to the message of frequent CUDA errors (cudaError_t value -> text).
_ERROR_HINTS = {
    2: "the GPU is out of memory: close other GPU programs or build the engine with a smaller max batch",
    35: "the NVIDIA driver is missing or older than this CUDA runtime: install or update the driver "
        "(on Jetson, use the CUDA of your JetPack)",
    100: "no CUDA GPU is visible: check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES",
    101: "that GPU index does not exist: check CUDA_VISIBLE_DEVICES and the device argument",
}


class CudaError(EdgeposeError, RuntimeError):
    """A CUDA runtime call failed; the message names the call and CUDA's description."""

    def __init__(self, message: str, call: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.call = call
        self.status = status


class DeviceInfo(NamedTuple):
    """The facts about a GPU that decide whether a TensorRT engine runs on it."""

    index: int
    name: str
    compute_capability: str  # "8.7"


class Cuda:
    """The CUDA runtime operations edgepose uses. Pointers and stream handles are ``int``.

    An implementation raises :class:`CudaError` for a failed call and
    :class:`~edgepose.errors.MissingDependencyError` when its library is not installed.
    """

    name = "abstract"

    def malloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def free(self, ptr: int) -> None:
        raise NotImplementedError

    def malloc_host(self, nbytes: int) -> int:
        """Page-locked (pinned) host memory, which asynchronous copies need."""
        raise NotImplementedError

    def free_host(self, ptr: int) -> None:
        raise NotImplementedError

    def memcpy_htod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        raise NotImplementedError

    def memcpy_dtoh_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        raise NotImplementedError

    def stream_create(self) -> int:
        raise NotImplementedError

    def stream_synchronize(self, stream: int) -> None:
        raise NotImplementedError

    def stream_destroy(self, stream: int) -> None:
        raise NotImplementedError

    def set_device(self, device: int) -> None:
        raise NotImplementedError

    def device_count(self) -> int:
        raise NotImplementedError

    def device_name(self, device: int) -> str:
        raise NotImplementedError

    def compute_capability(self, device: int) -> Tuple[int, int]:
        raise NotImplementedError

    def runtime_version(self) -> Tuple[int, int]:
        """(major, minor) of the CUDA runtime, e.g. (12, 2)."""
        raise NotImplementedError

    def device_info(self, device: int = 0) -> DeviceInfo:
        major, minor = self.compute_capability(device)
        return DeviceInfo(int(device), self.device_name(device), "%d.%d" % (major, minor))


#: File names of the CUDA runtime on Linux: libcudart.so, libcudart.so.12, libcudart.so.11.0, ...
_CUDART_FILE = re.compile(r"libcudart\.so(\.[0-9.]+)?$")


def mapped_cudart(maps: str = "/proc/self/maps") -> List[str]:
    """Paths of CUDA runtime libraries already mapped into this process (Linux; elsewhere none).

    A second libcudart beside the one TensorRT was loaded with (pip's TensorRT wheels bring their own)
    would hold its own CUDA state: device memory and streams from one are not the other's.
    """
    try:
        with open(maps, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found: List[str] = []
    for line in lines:
        fields = line.split(None, 5)  # address perms offset dev inode path
        path = fields[5].strip() if len(fields) == 6 else ""
        if _CUDART_FILE.match(os.path.basename(path)) and path not in found and os.path.isfile(path):
            found.append(path)
    return found


def _library_candidates() -> List[str]:
    """File names and paths to try for the CUDA runtime: the override, those already loaded, then by name."""
    found: List[str] = []
    override = os.environ.get(ENV_LIBRARY)
    if override:
        found.append(override)
    found += mapped_cudart()
    if sys.platform == "win32":
        names = ["cudart64_13.dll", "cudart64_12.dll", "cudart64_110.dll", "cudart64_102.dll",
                 "cudart64_101.dll", "cudart64_100.dll"]
        dirs = [os.path.join(os.environ[v], "bin") for v in ("CUDA_PATH",) if os.environ.get(v)]
    else:
        # Sonames: CUDA 11.x uses libcudart.so.11.0, CUDA 12/13 libcudart.so.12/.13, JetPack 4 .10.2
        names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0",
                 "libcudart.so.10.2", "libcudart.so.10.1", "libcudart.so.10.0"]
        dirs = [os.path.join(os.environ[v], sub) for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)
                for sub in ("lib64", "lib")]
        dirs += ["/usr/local/cuda/lib64", "/usr/local/cuda/lib"]
        dirs += sorted(glob.glob("/usr/local/cuda/targets/*/lib"))
        # pip wheels (nvidia-cuda-runtime-cu11/cu12) put the library under site-packages/nvidia/.
        for entry in sys.path:
            dirs += sorted(glob.glob(os.path.join(entry, "nvidia", "cuda_runtime", "lib")))
    found += names
    found += [os.path.join(d, n) for d in dirs for n in names]
    system = ctypes.util.find_library("cudart")
    if system:
        found.append(system)
    seen = set()
    return [c for c in found if not (c in seen or seen.add(c))]


def load_cudart(candidates: Optional[Sequence[str]] = None) -> ctypes.CDLL:
    """Load the first CUDA runtime library that opens, or explain how to install one."""
    tried = list(candidates) if candidates is not None else _library_candidates()
    loader = ctypes.WinDLL if sys.platform == "win32" else ctypes.CDLL  # type: ignore[attr-defined]
    for name in tried:
        try:
            return loader(name)
        except OSError:
            continue
    raise MissingDependencyError(
        "the TensorRT backend needs the CUDA runtime library (libcudart) and none could be loaded "
        "(tried %s). On Jetson it comes with JetPack (check /usr/local/cuda/lib64); on a PC install "
        "the NVIDIA driver and the CUDA toolkit, or `pip install nvidia-cuda-runtime-cu12`; or set "
        "%s to the library's path. Without CUDA, use the onnxruntime backend."
        % (", ".join(tried[:6]) + (", ..." if len(tried) > 6 else ""), ENV_LIBRARY))


_VOIDP = ctypes.c_void_p
_SIGNATURES = {
    "cudaMalloc": (ctypes.POINTER(_VOIDP), ctypes.c_size_t),
    "cudaFree": (_VOIDP,),
    "cudaMallocHost": (ctypes.POINTER(_VOIDP), ctypes.c_size_t),
    "cudaFreeHost": (_VOIDP,),
    "cudaMemcpyAsync": (_VOIDP, _VOIDP, ctypes.c_size_t, ctypes.c_int, _VOIDP),
    "cudaStreamCreate": (ctypes.POINTER(_VOIDP),),
    "cudaStreamSynchronize": (_VOIDP,),
    "cudaStreamDestroy": (_VOIDP,),
    "cudaSetDevice": (ctypes.c_int,),
    "cudaGetDeviceCount": (ctypes.POINTER(ctypes.c_int),),
    "cudaDeviceGetAttribute": (ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int),
    "cudaRuntimeGetVersion": (ctypes.POINTER(ctypes.c_int),),
    "cudaGetDeviceProperties": (ctypes.c_void_p, ctypes.c_int),
}


class CtypesCuda(Cuda):
    """:class:`Cuda` over ``ctypes`` on libcudart; the library loads on the first call."""

    name = "ctypes"

    def __init__(self, library: Optional[str] = None, candidates: Optional[Sequence[str]] = None) -> None:
        self._candidates = [library] if library else (list(candidates) if candidates is not None else None)
        self._lib: Optional[ctypes.CDLL] = None
        self._lock = threading.Lock()

    @property
    def lib(self) -> ctypes.CDLL:
        if self._lib is None:
            with self._lock:
                if self._lib is None:
                    self._lib = self._bind(load_cudart(self._candidates))
        return self._lib

    @staticmethod
    def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
        for fname, argtypes in _SIGNATURES.items():
            try:
                fn = getattr(lib, fname)
            except AttributeError as e:
                raise MissingDependencyError(
                    "%s is not a usable CUDA runtime library (it has no %s)" % (lib._name, fname)) from e
            fn.argtypes = list(argtypes)
            fn.restype = ctypes.c_int
        for fname in ("cudaGetErrorString", "cudaGetErrorName"):  # the second is optional
            fn = getattr(lib, fname, None)
            if fn is None and fname == "cudaGetErrorString":
                raise MissingDependencyError("%s is not a usable CUDA runtime library (it has no %s)"
                                             % (lib._name, fname))
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn.restype = ctypes.c_char_p
        # CUDA 12 exports the current struct layout as cudaGetDeviceProperties_v2 (the plain name
        # keeps the 11.x layout); CUDA 13 has only the plain name. ``name`` comes first in all.
        props = getattr(lib, "cudaGetDeviceProperties_v2", None) or lib.cudaGetDeviceProperties
        props.argtypes = [ctypes.c_void_p, ctypes.c_int]
        props.restype = ctypes.c_int
        lib._edgepose_props = props  # type: ignore[attr-defined]
        return lib

    def error_string(self, status: int) -> str:
        lib = self.lib
        text = lib.cudaGetErrorString(int(status))
        name = lib.cudaGetErrorName(int(status)) if hasattr(lib, "cudaGetErrorName") else None
        text_s = text.decode(errors="replace") if text else "unknown error"
        return "%s (%s)" % (text_s, name.decode(errors="replace")) if name else text_s

    def _check(self, call: str, status: int) -> None:
        if status != 0:
            hint = _ERROR_HINTS.get(int(status))
            raise CudaError("CUDA call %s failed with error %d: %s%s" % (
                call, status, self.error_string(status), ("; " + hint) if hint else ""), call, int(status))

    def malloc(self, nbytes: int) -> int:
        ptr = _VOIDP()
        self._check("cudaMalloc(%d bytes)" % nbytes, self.lib.cudaMalloc(ctypes.byref(ptr), int(nbytes)))
        return int(ptr.value or 0)

    def free(self, ptr: int) -> None:
        if ptr:
            self._check("cudaFree", self.lib.cudaFree(_VOIDP(ptr)))

    def malloc_host(self, nbytes: int) -> int:
        ptr = _VOIDP()
        self._check("cudaMallocHost(%d bytes)" % nbytes, self.lib.cudaMallocHost(ctypes.byref(ptr), int(nbytes)))
        return int(ptr.value or 0)

    def free_host(self, ptr: int) -> None:
        if ptr:
            self._check("cudaFreeHost", self.lib.cudaFreeHost(_VOIDP(ptr)))

    def _memcpy(self, what: str, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        status = self.lib.cudaMemcpyAsync(_VOIDP(dst), _VOIDP(src), int(nbytes), kind, _VOIDP(stream or None))
        self._check("cudaMemcpyAsync(%s, %d bytes)" % (what, nbytes), status)

    def memcpy_htod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._memcpy("host to device", dst, src, nbytes, MEMCPY_HOST_TO_DEVICE, stream)

    def memcpy_dtoh_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._memcpy("device to host", dst, src, nbytes, MEMCPY_DEVICE_TO_HOST, stream)

    def stream_create(self) -> int:
        handle = _VOIDP()
        self._check("cudaStreamCreate", self.lib.cudaStreamCreate(ctypes.byref(handle)))
        return int(handle.value or 0)

    def stream_synchronize(self, stream: int) -> None:
        self._check("cudaStreamSynchronize", self.lib.cudaStreamSynchronize(_VOIDP(stream or None)))

    def stream_destroy(self, stream: int) -> None:
        if stream:
            self._check("cudaStreamDestroy", self.lib.cudaStreamDestroy(_VOIDP(stream)))

    def set_device(self, device: int) -> None:
        self._check("cudaSetDevice(%d)" % device, self.lib.cudaSetDevice(int(device)))

    def device_count(self) -> int:
        count = ctypes.c_int(0)
        self._check("cudaGetDeviceCount", self.lib.cudaGetDeviceCount(ctypes.byref(count)))
        return int(count.value)

    def device_name(self, device: int) -> str:
        buf = ctypes.create_string_buffer(_DEVICE_PROP_BYTES)
        self._check("cudaGetDeviceProperties(%d)" % device, self.lib._edgepose_props(buf, int(device)))
        return buf.raw[:256].split(b"\0", 1)[0].decode(errors="replace").strip()

    def compute_capability(self, device: int) -> Tuple[int, int]:
        values = []
        for attr, label in ((ATTR_COMPUTE_CAPABILITY_MAJOR, "major"), (ATTR_COMPUTE_CAPABILITY_MINOR, "minor")):
            value = ctypes.c_int(0)
            self._check("cudaDeviceGetAttribute(compute capability %s, device %d)" % (label, device),
                        self.lib.cudaDeviceGetAttribute(ctypes.byref(value), attr, int(device)))
            values.append(int(value.value))
        return values[0], values[1]

    def runtime_version(self) -> Tuple[int, int]:
        version = ctypes.c_int(0)
        self._check("cudaRuntimeGetVersion", self.lib.cudaRuntimeGetVersion(ctypes.byref(version)))
        return version.value // 1000, (version.value % 1000) // 10


_default: Optional[Cuda] = None
_default_lock = threading.Lock()


def get_cuda() -> Cuda:
    """The process-wide :class:`Cuda` (a :class:`CtypesCuda` unless :func:`set_cuda` chose one).

    Creating it loads nothing; the library loads on the first CUDA call.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = CtypesCuda()
        return _default


def set_cuda(impl: Optional[Cuda]) -> None:
    """Install another :class:`Cuda` implementation (``None`` restores the ctypes default)."""
    global _default
    with _default_lock:
        _default = impl


class Stream:
    """One CUDA stream; :meth:`close` (or ``with``) destroys it."""

    def __init__(self, cuda: Optional[Cuda] = None) -> None:
        self.cuda = cuda or get_cuda()
        self.handle = self.cuda.stream_create()

    def synchronize(self) -> None:
        self.cuda.stream_synchronize(self.handle)

    def close(self) -> None:
        handle, self.handle = self.handle, 0
        if handle:
            self.cuda.stream_destroy(handle)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown or a dead context: nothing left to free
            pass


class _Buffer:
    """An allocation that grows on demand and is reused while big enough."""

    kind = "buffer"

    def __init__(self, nbytes: int = 0, cuda: Optional[Cuda] = None) -> None:
        self.cuda = cuda or get_cuda()
        self.ptr = 0
        self.capacity = 0
        if nbytes:
            self.resize(nbytes)

    def _alloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def _release(self, ptr: int) -> None:
        raise NotImplementedError

    def resize(self, nbytes: int) -> int:
        """Make room for ``nbytes``; reallocates (dropping the contents) only when it must grow."""
        nbytes = int(nbytes)
        if nbytes < 0:
            raise ValueError("a %s size cannot be negative" % self.kind)
        if nbytes > self.capacity:
            self.free()
            self.ptr = self._alloc(nbytes)
            self.capacity = nbytes
        return self.ptr

    def free(self) -> None:
        ptr, self.ptr, self.capacity = self.ptr, 0, 0
        if ptr:
            self._release(ptr)

    close = free

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # interpreter shutdown or a dead context: nothing left to free
            pass


class DeviceBuffer(_Buffer):
    """GPU memory (``cudaMalloc``) that is reused while big enough."""

    kind = "device buffer"

    def _alloc(self, nbytes: int) -> int:
        return self.cuda.malloc(nbytes)

    def _release(self, ptr: int) -> None:
        self.cuda.free(ptr)

    def copy_from_host(self, array: np.ndarray, stream: int) -> None:
        """Queue a copy of a C-contiguous host array into this buffer (grown if needed)."""
        if not array.flags.c_contiguous:
            raise ValueError("copy_from_host needs a C-contiguous array")
        self.resize(array.nbytes)
        self.cuda.memcpy_htod_async(self.ptr, array.ctypes.data, array.nbytes, stream)

    def copy_to_host(self, array: np.ndarray, stream: int) -> None:
        """Queue a copy of the first ``array.nbytes`` of this buffer into a C-contiguous array."""
        if not array.flags.c_contiguous or not array.flags.writeable:
            raise ValueError("copy_to_host needs a writable C-contiguous array")
        if array.nbytes > self.capacity:
            raise ValueError("copy_to_host of %d bytes from a %d-byte device buffer" % (array.nbytes, self.capacity))
        self.cuda.memcpy_dtoh_async(array.ctypes.data, self.ptr, array.nbytes, stream)


class PinnedBuffer(_Buffer):
    """Page-locked host memory (``cudaMallocHost``) seen as NumPy arrays.

    Arrays from :meth:`array` are views: they are valid until the next :meth:`resize` that grows
    the buffer, or :meth:`free`.
    """

    kind = "pinned buffer"

    def _alloc(self, nbytes: int) -> int:
        return self.cuda.malloc_host(nbytes)

    def _release(self, ptr: int) -> None:
        self.cuda.free_host(ptr)

    def array(self, shape: Sequence[int], dtype: Any = np.float32) -> np.ndarray:
        """A writable array of ``shape``/``dtype`` over the start of the buffer (grown if needed)."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        nbytes = count * dtype.itemsize
        self.resize(nbytes)
        if nbytes == 0:
            return np.empty(tuple(shape), dtype)
        raw = (ctypes.c_ubyte * nbytes).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(tuple(shape))


__all__ = ["Cuda", "CtypesCuda", "CudaError", "DeviceBuffer", "DeviceInfo", "PinnedBuffer", "Stream",
           "get_cuda", "load_cudart", "mapped_cudart", "set_cuda"]
