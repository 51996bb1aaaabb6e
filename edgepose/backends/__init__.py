"""Inference backends behind one contract (:class:`edgepose.backends.base.Backend`).

Backends are looked up by name and imported only when chosen, so a device needs only the
packages of the backend it uses.
"""
import importlib
from typing import Any

from edgepose.backends.base import Backend
from edgepose.engine_info import is_engine
from edgepose.errors import InputError

#: backend name -> "module:class"
BACKENDS = {
    "onnxruntime": "edgepose.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "edgepose.backends.tensorrt:TensorRTBackend",
    "triton": "edgepose.backends.triton:TritonBackend",
}


def backend_for(model: str) -> str:
    """The backend ``backend="auto"`` picks for a model path or URL."""
    if "://" in model:
        return model.split("://", 1)[0]
    if is_engine(model):
        return "tensorrt"
    return "onnxruntime"


def open_backend(model: str, backend: str = "auto", **options: Any) -> Backend:
    """Load ``model`` with the named backend (``auto``: chosen from the path)."""
    name = backend_for(model) if backend == "auto" else backend
    if name not in BACKENDS:
        raise InputError("unknown backend %r for %s; available: %s" % (name, model, ", ".join(sorted(BACKENDS))))
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(model, **options)


__all__ = ["Backend", "BACKENDS", "backend_for", "open_backend"]
