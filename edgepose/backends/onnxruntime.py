"""ONNX Runtime backend: the embedded default (CPU; CUDA/TensorRT providers when available)."""
from typing import List, Optional, Sequence

import numpy as np

from edgepose.backends.base import Backend
from edgepose.errors import MissingDependencyError, ModelFileError
from edgepose.fileio import existing_file

#: Preferred order when the installed onnxruntime offers them.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError(
            "the onnxruntime backend needs the package onnxruntime (or onnxruntime-gpu on NVIDIA "
            "devices): pip install onnxruntime") from e
    return onnxruntime


def default_providers() -> List[str]:
    """The best execution providers this onnxruntime build offers, best first."""
    available = set(_ort().get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in available]


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX heatmap model with one 4-D input and a 4-D heatmap output."""

    name = "onnxruntime"

    def __init__(self, model_path: str, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None) -> None:
        super().__init__()
        ort = _ort()
        existing_file(model_path, "model file", "convert one with `edgepose convert NAME`", ModelFileError)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model_path, options,
                                                providers=list(providers or default_providers()))
        except Exception as e:  # ORT raises its own exception types for every load failure
            raise ModelFileError(
                "ONNX Runtime cannot load %s: %s. The file is not a valid ONNX model or is truncated: "
                "convert or download it again." % (model_path, str(e).strip().splitlines()[0])) from e
        inputs = self.session.get_inputs()
        outputs = [o for o in self.session.get_outputs() if len(o.shape or ()) == 4]
        if len(inputs) != 1 or len(inputs[0].shape or ()) != 4 or not outputs:
            raise ModelFileError(
                "%s is not a top-down heatmap model: expected one (N, 3, H, W) input and a "
                "(N, K, h, w) output, found inputs %s and outputs %s" % (
                    model_path, [(i.name, i.shape) for i in inputs],
                    [(o.name, o.shape) for o in self.session.get_outputs()]))
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape)
        self.max_batch = self.input_shape[0]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.providers = self.session.get_providers()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def _close(self) -> None:
        del self.session
