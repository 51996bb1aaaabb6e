"""TensorRT backend: runs a serialized engine (``.engine``/``.plan``) built by edgepose.

Uses TensorRT's named-tensor API (8.5 and later, the only one left in 10 and 11): one execution
context, one CUDA stream, device buffers and pinned host buffers from :mod:`edgepose.backends.cuda`, which
grow to the largest batch seen and are then reused.

An engine runs only with the TensorRT version and the GPU model that built it. The build writes a
JSON sidecar next to the engine (``pose.engine.json``) recording both, the model's edgepose
metadata and the shapes it was built for; this backend refuses an engine whose sidecar names
another TensorRT or GPU, and says how to rebuild it. Without a sidecar it warns and tries. The sidecar,
the TensorRT versions and the compatibility rule live in :mod:`edgepose.engine_info`.

Nothing here imports ``tensorrt`` at module import time.
"""
import logging
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, Optional, Tuple

import numpy as np

from edgepose.backends.base import Backend, to_shape
from edgepose.engine_info import (
    REBUILD_COMMAND, check_engine_compatible, check_sidecar_describes, import_tensorrt, read_sidecar, rebuild_hint,
    sidecar_path,
)
from edgepose.errors import EdgeposeError, InputError, ModelFileError
from edgepose.fileio import PathLike

log = logging.getLogger(__name__)


class EngineRunError(EdgeposeError, RuntimeError):
    """TensorRT accepted the engine but failed to run it."""


# ---------------------------------------------------------------- the TensorRT logger


_LOGGER: Any = None


def trt_logger(trt: Any, verbose: bool = False) -> Any:
    """The process's one TensorRT logger: forwards to :mod:`logging` and keeps the last errors.

    TensorRT wants a single logger per process; builder and runtime share this one.
    """
    global _LOGGER
    if _LOGGER is None or not isinstance(_LOGGER, trt.ILogger):
        class EdgeposeTrtLogger(trt.ILogger):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.verbose = False
                self.errors: Deque[str] = deque(maxlen=20)

            def log(self, severity: Any, msg: str) -> None:
                level = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
                if level <= 1:
                    self.errors.append(str(msg))
                    log.error("TensorRT: %s", msg)
                elif level == 2:
                    log.warning("TensorRT: %s", msg)
                elif level == 3:
                    log.info("TensorRT: %s", msg)
                elif self.verbose:
                    log.debug("TensorRT: %s", msg)

        _LOGGER = EdgeposeTrtLogger()
    _LOGGER.verbose = bool(verbose)
    return _LOGGER


# ---------------------------------------------------------------- the backend


def _dims(shape: Any) -> Tuple[int, ...]:
    return tuple(int(d) for d in shape)


# TensorRT DataType member -> NumPy dtype, for the I/O types NumPy has. edgepose does not call
# ``trt.nptype``: in TensorRT 8.5.1/8.5.2 (JetPack 5.1) it builds its table with ``np.bool``, which
# NumPy 1.24-1.26 (the NumPy pip installs for Python 3.8) no longer has, so every call raises
# AttributeError; 8.6 switched to ``np.bool_`` (NVIDIA/TensorRT python/packaging/.../__init__.py at tags
# 8.5.2 and v8.6.1). FP8, BF16, INT4, FP4 and E8M0 have no NumPy type.
_NUMPY_TYPES = (("FLOAT", np.float32), ("HALF", np.float16), ("INT8", np.int8), ("INT32", np.int32),
                ("INT64", np.int64), ("BOOL", np.bool_), ("UINT8", np.uint8))


def numpy_dtype(trt: Any, data_type: Any) -> Optional[np.dtype]:
    """The NumPy dtype of TensorRT ``data_type``, ``None`` when NumPy has no such type."""
    for name, np_type in _NUMPY_TYPES:
        member = getattr(trt.DataType, name, None)  # INT64 exists from TensorRT 10
        if member is not None and member == data_type:
            return np.dtype(np_type)
    return None


def _profile_batches(engine: Any, name: str, shape: Tuple[int, ...]) -> Tuple[int, int]:
    """(min, max) batch the engine accepts for input ``name``."""
    if shape[0] >= 0:
        return shape[0], shape[0]
    lo, _, hi = engine.get_tensor_profile_shape(name, 0)
    return int(_dims(lo)[0]), int(_dims(hi)[0])


class TensorRTBackend(Backend):
    """Runs a TensorRT engine with one (N, C, H, W) input; returns one of its outputs.

    ``device`` is the CUDA device index. One instance is not thread-safe (one context, one stream).
    """

    name = "tensorrt"

    def __init__(self, engine_path: PathLike, device: int = 0) -> None:
        super().__init__()
        self._cuda: Any = None
        self._stream = 0
        self._device_buffers: Dict[str, Any] = {}
        self._host_in: Any = None
        self._host_out: Any = None
        self.context: Any = None
        self.engine: Any = None
        self._runtime: Any = None

        trt = import_tensorrt()
        from edgepose.backends.cuda import DeviceBuffer, PinnedBuffer, get_cuda

        self.path = Path(engine_path)
        if not self.path.is_file():
            raise ModelFileError("engine file %s does not exist; build one from the ONNX model with `%s`"
                                 % (self.path, REBUILD_COMMAND))
        data = self.path.read_bytes()
        if not data:
            raise ModelFileError("engine file %s is empty; rebuild it with `%s`" % (self.path, REBUILD_COMMAND))
        self.sidecar = read_sidecar(self.path)
        if self.sidecar is None:
            warnings.warn(
                "engine %s has no sidecar %s, so edgepose cannot check that it was built for this TensorRT "
                "and GPU and has no model metadata (input size, keypoints, decoder) from it; trying anyway. "
                "Build engines with `%s` to get one." % (self.path, sidecar_path(self.path).name, REBUILD_COMMAND),
                RuntimeWarning, stacklevel=2)
        else:
            check_sidecar_describes(self.sidecar, self.path, data)

        self.device = int(device)
        self._cuda = cuda = get_cuda()
        cuda.set_device(self.device)
        gpu = cuda.device_info(self.device)
        self.gpu = gpu
        if self.sidecar is not None:
            check_engine_compatible(self.sidecar, trt.__version__, gpu.name, gpu.compute_capability, self.path)

        try:
            self._load(trt, data)
            self._stream = cuda.stream_create()
            self._host_in = PinnedBuffer(cuda=cuda)
            self._host_out = PinnedBuffer(cuda=cuda)
            for name in [self.input_name] + self.output_names:
                self._device_buffers[name] = DeviceBuffer(cuda=cuda)
        except BaseException:
            self.close()
            raise

    def _load(self, trt: Any, data: bytes) -> None:
        logger = trt_logger(trt)
        logger.errors.clear()
        self._runtime = trt.Runtime(logger)
        dla_core = (self.sidecar or {}).get("dla_core")
        if dla_core is not None:
            self._runtime.DLA_core = int(dla_core)
        try:
            engine = self._runtime.deserialize_cuda_engine(data)
        except Exception as e:  # some releases raise instead of returning None
            engine = None
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        else:
            reason = ""
        if engine is None:
            errors = "; ".join(list(logger.errors)[-3:])
            raise ModelFileError(
                "TensorRT %s cannot load engine %s%s. The file is truncated, not an engine, or was built by "
                "another TensorRT version or for another GPU. %s" % (
                    trt.__version__, self.path, ": " + (reason or errors) if (reason or errors) else "",
                    rebuild_hint(self.sidecar, trt.__version__, self.path)))
        self.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        shapes = {n: _dims(engine.get_tensor_shape(n)) for n in names}
        if len(inputs) != 1 or len(shapes[inputs[0]]) != 4 or not outputs:
            raise ModelFileError(
                "%s is not an image model edgepose can feed: expected one (N, C, H, W) input and an output, "
                "found inputs %s and outputs %s" % (
                    self.path, [(n, shapes[n]) for n in inputs], [(n, shapes[n]) for n in outputs]))
        self.input_name = inputs[0]
        self.outputs = {n: to_shape(shapes[n]) for n in outputs}
        self.output_name = outputs[0]
        self.output_names = outputs  # every output needs an address, even those not returned
        self.dtypes: Dict[str, np.dtype] = {}
        for name in names:
            trt_type = engine.get_tensor_dtype(name)
            dtype = numpy_dtype(trt, trt_type)
            if dtype is None:
                raise ModelFileError("engine %s has I/O tensor %s of TensorRT type %s, which NumPy cannot hold; "
                                     "build the engine from an ONNX with float32 or float16 inputs and outputs"
                                     % (self.path, name, trt_type))
            self.dtypes[name] = dtype
        if self.dtypes[self.input_name] not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ModelFileError("engine %s takes %s input; edgepose feeds float32 or float16"
                                 % (self.path, self.dtypes[self.input_name]))
        in_shape = shapes[self.input_name]
        self.input_shape = to_shape(in_shape)
        self.min_batch, self.max_batch = _profile_batches(engine, self.input_name, in_shape)
        self.metadata = {str(k): str(v) for k, v in ((self.sidecar or {}).get("metadata") or {}).items()}
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineRunError("TensorRT could not create an execution context for %s (out of GPU memory?)"
                                 % self.path)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        cuda, ctx, stream = self._cuda, self.context, self._stream
        cuda.set_device(self.device)
        n = batch.shape[0]
        run_n = max(n, self.min_batch)  # a profile minimum above 1: pad with zeros
        shape = (run_n,) + tuple(batch.shape[1:])
        if not ctx.set_input_shape(self.input_name, shape):
            raise InputError("engine %s does not accept input shape %s (it was built for %s, batch %d to %d)"
                             % (self.path, shape, self.input_shape, self.min_batch, self.max_batch))
        host_in = self._host_in.array(shape, self.dtypes[self.input_name])
        host_in[:n] = batch
        if run_n > n:
            host_in[n:] = 0
        dev_in = self._device_buffers[self.input_name]
        dev_in.copy_from_host(host_in, stream)
        ctx.set_tensor_address(self.input_name, dev_in.ptr)
        out_shape: Tuple[int, ...] = ()
        for name in self.output_names:
            dims = _dims(ctx.get_tensor_shape(name))
            if any(d < 0 for d in dims):
                raise EngineRunError("engine %s left output %s with unknown shape %s" % (self.path, name, dims))
            nbytes = int(np.prod(dims, dtype=np.int64)) * self.dtypes[name].itemsize
            buf = self._device_buffers[name]
            buf.resize(max(nbytes, 1))
            ctx.set_tensor_address(name, buf.ptr)
            if name == self.output_name:
                out_shape = dims
        if not ctx.execute_async_v3(stream):
            raise EngineRunError("TensorRT failed to run engine %s on a batch of %s; see the TensorRT log above"
                                 % (self.path, shape))
        host_out = self._host_out.array(out_shape, self.dtypes[self.output_name])
        self._device_buffers[self.output_name].copy_to_host(host_out, stream)
        cuda.stream_synchronize(stream)
        return np.array(host_out[:n], dtype=np.float32)  # a copy: the pinned buffer is reused

    def _close(self) -> None:
        cuda = self._cuda
        for buf in list(self._device_buffers.values()) + [self._host_in, self._host_out]:
            if buf is not None:
                buf.free()
        self._device_buffers = {}
        self._host_in = self._host_out = None
        # TensorRT objects go before the stream, and the context before its engine.
        self.context = None
        self.engine = None
        self._runtime = None
        stream, self._stream = self._stream, 0
        if stream and cuda is not None:
            cuda.stream_destroy(stream)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown or a dead CUDA context
            pass


__all__ = ["TensorRTBackend", "EngineRunError", "numpy_dtype", "trt_logger"]
