"""ONNX Runtime backend: the embedded default (CPU; CUDA/TensorRT providers when available)."""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from edgepose.backends.base import Backend, Item, Result, to_shape
from edgepose.errors import InputError, ModelFileError
from edgepose.fileio import existing_file
from edgepose.optional import require

#: Preferred order when the installed onnxruntime offers them.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _ort():
    return require("onnxruntime", "", "the onnxruntime backend", "on NVIDIA devices, onnxruntime-gpu instead")


def _ort_errors(ort) -> Tuple[type, ...]:
    """The exception classes ONNX Runtime raises (they share no base class but Exception)."""
    state = ort.capi.onnxruntime_pybind11_state
    return tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))


def default_providers() -> List[str]:
    """The best execution providers this onnxruntime build offers, best first."""
    available = set(_ort().get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in available]


#: How a session uses several CPU threads (:class:`OnnxRuntimeBackend`'s ``parallel``).
PARALLEL_MODES = ("ops", "batch")


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX model with one 4-D (N, C, H, W) input; returns one of its outputs.

    ``threads``: CPU threads (default: ONNX Runtime's, one per core). ``parallel``: how they share the work.
    ``ops``: ONNX Runtime's thread pool splits each operator; its threads spin between operators, the
    fastest way to run one small batch. ``batch`` (the CPU provider only): a batch runs as up to
    ``threads`` parts at once, each on one thread; as fast for batches of several persons (several
    cameras), and nothing spins between calls, so the cores stay free for reading video and detecting.
    """

    name = "onnxruntime"

    def __init__(self, model_path: str, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None, parallel: str = "ops") -> None:
        super().__init__()
        if parallel not in PARALLEL_MODES:
            raise InputError("parallel must be one of %s; got %r" % (", ".join(PARALLEL_MODES), parallel))
        ort = _ort()
        existing_file(model_path, "model file", "convert one with `edgepose convert NAME`", ModelFileError)
        providers = list(providers or default_providers())
        self.workers = 1
        if parallel == "batch" and providers[0] == "CPUExecutionProvider":
            self.workers = int(threads or len(os.sched_getaffinity(0)))
        options = ort.SessionOptions()
        if self.workers > 1:
            options.intra_op_num_threads = 1
        elif threads:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model_path, options, providers=providers)
        except Exception as e:  # ORT raises its own exception types for every load failure
            raise ModelFileError(
                "ONNX Runtime cannot load %s: %s. The file is not a valid ONNX model or is truncated: "
                "convert or download it again." % (model_path, str(e).strip().splitlines()[0])) from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape or ()) != 4 or not outputs:
            raise ModelFileError(
                "%s is not an image model edgepose can feed: expected one (N, C, H, W) input and an output, found "
                "inputs %s and outputs %s" % (model_path, [(i.name, i.shape) for i in inputs],
                                              [(o.name, o.shape) for o in outputs]))
        self.input_name = inputs[0].name
        self.input_shape = to_shape(inputs[0].shape)
        self.outputs = {o.name: to_shape(o.shape or ()) for o in outputs}
        self.output_name = next(iter(self.outputs))
        self.max_batch = self.input_shape[0]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.providers = self.session.get_providers()
        self.model_path = model_path
        self._version = ort.__version__
        self._errors = _ort_errors(ort)
        self._pool = ThreadPoolExecutor(self.workers - 1, "edgepose-ort") if self.workers > 1 else None

    def map(self, fn: Callable[[Item], Result], items: Sequence[Item]) -> List[Result]:
        """In batch mode: ``items`` cut into :attr:`workers` runs of neighbours, one per thread (this one
        and the pool's), results in order."""
        items = list(items)
        parts = min(self.workers, len(items))
        if parts < 2:
            return [fn(item) for item in items]
        bounds = np.linspace(0, len(items), parts + 1).astype(int)
        runs = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        others = [self._pool.submit(lambda run: [fn(item) for item in run], run) for run in runs[1:]]
        results = [fn(item) for item in runs[0]]
        for future in others:
            results.extend(future.result())
        return results

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.workers < 2 or len(batch) < 2:
            return self._run_part(batch)
        return np.concatenate(self.map(self._run_part, np.array_split(batch, min(self.workers, len(batch)))))

    def _run_part(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        except self._errors as e:  # the batch was checked by run(): the model holds what this ORT cannot run
            path = self.model_path
            fixed = os.path.splitext(path)[0] + "-edgepose.onnx"
            raise ModelFileError(
                "ONNX Runtime %s cannot run %s: %s. The model uses a form this ONNX Runtime does not execute "
                "(e.g. BatchNormalization with spatial=0 from MXNet's ONNX exporter). Bring it to edgepose's "
                "form where the onnx package is installed (pip install 'edgepose[convert]'): "
                "`edgepose convert %s -o %s`, then load %s."
                % (self._version, path, str(e).strip().splitlines()[0], path, fixed, fixed)) from e

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        del self.session
