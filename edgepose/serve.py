"""``edgepose serve``: a real Triton Inference Server for one pose model, through PyTriton.

PyTriton (``nvidia-pytriton``) ships the ``tritonserver`` binary with its Python backend.
Each model instance is an ONNX Runtime session of the model behind a batched function;
Triton's dynamic batcher joins the person crops of many clients into batches for it. The
model's Triton configuration (tensor names, dims, data types, max batch, dynamic batching and
the edgepose metadata as ``parameters``) comes from
:func:`edgepose.converters.triton_repo.model_config`, as in ``edgepose export-triton``, so a
client (``Runtime("triton://HOST:PORT/NAME")``) configures itself from the server either way.

The HTTP port is the one clients name; gRPC and metrics take the next two unless given.

Readiness: tritonserver answers ``/v2/health/ready`` with 200 as soon as it runs, before PyTriton
has loaded the model into it. :meth:`PoseServer.start` therefore returns only once the model has
answered one real request, and probes (Kubernetes, scripts) should ask the model's own endpoint,
``GET /v2/models/NAME/ready`` (:attr:`PoseServer.ready_url`), which says 200 only for a loaded model.
"""
import importlib
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from edgepose.backends.onnxruntime import OnnxRuntimeBackend
from edgepose.backends.triton import TritonBackend, TritonServerError
from edgepose.converters.triton_repo import (
    DEFAULT_MAX_BATCH, DEFAULT_QUEUE_DELAY_US, Batching, check_name, model_config, read_onnx, triton_name,
)
from edgepose.engine_info import is_engine
from edgepose.errors import InputError, MissingDependencyError
from edgepose.fileio import PathLike
from edgepose.models import resolve_model
from edgepose.optional import require

ALL_INTERFACES = ("", "0.0.0.0", "::")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds :meth:`PoseServer.start` gives the model, once tritonserver runs, to load and answer.
READY_TIMEOUT_S = 120.0


def _pytriton() -> Any:
    require("pytriton.triton", "serve", "edgepose serve (PyTriton, which ships the Triton server)",
            "PyTriton's Python backend loads the system's libpython, so make the venv from the system Python "
            "(e.g. /usr/bin/python3.11 -m venv), not from pyenv or conda")
    return importlib.import_module("pytriton")


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise an :class:`InputError` when ``port`` on ``host`` cannot be bound (something listens there)."""
    if not 0 < port < 65536:
        raise InputError("%s port %d is not a TCP port (1..65535)" % (what, port))
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", port))
        except OSError as e:
            raise InputError("%s port %d on %s is in use (%s); pick another with --port (gRPC and metrics use "
                             "the next two ports unless --grpc-port/--metrics-port say otherwise), or stop what "
                             "holds it" % (what, port, host or "0.0.0.0", e.strerror or e)) from e


def _infer_function(backend: OnnxRuntimeBackend, input_name: str, output_name: str) -> Callable:
    """One model instance: PyTriton hands it the batch Triton formed, as {input name: array}."""
    from pytriton.decorators import batch

    @batch
    def infer(**inputs: Any) -> Dict[str, Any]:
        return {output_name: backend.run(inputs[input_name])}

    return infer


def _bind_parameters(triton: Any, name: str, parameters: Dict[str, Dict[str, str]]) -> None:
    """Add ``parameters`` to the served model configuration.

    PyTriton has no public way to set model-config parameters; each bound model keeps its
    TritonModelConfig, whose ``backend_parameters`` become the configuration's parameters.
    """
    import pytriton

    try:
        model = next(m for m in triton._model_manager.models if m.model_name == name)
        model._get_triton_model_config().backend_parameters.update(
            {key: value["string_value"] for key, value in parameters.items()})
    except (AttributeError, StopIteration) as e:
        raise MissingDependencyError(
            "PyTriton %s does not keep model configurations where edgepose puts its metadata (%s); install "
            "the version edgepose is tested with: pip install 'nvidia-pytriton>=0.7,<0.8'"
            % (getattr(pytriton, "__version__", "?"), e)) from e


class PoseServer:
    """A Triton server for one ONNX model; ``start``/``stop``, or ``serve_forever``.

    ``model``: an ``.onnx`` file or a converted zoo name (a pose model, or any other ONNX with one
    (N, C, H, W) input, such as the YOLOX detector, served with its fixed batch); ``name``: the model's name on the
    server (default: the file stem); ``instances``: ONNX Runtime sessions serving in parallel
    (``threads`` each; default: the CPU cores shared among them); ``log_file``: where
    tritonserver writes its log (default: this process's stdout).
    """

    def __init__(self, model: PathLike, *, name: Optional[str] = None, host: str = "127.0.0.1",
                 port: int = 8000, grpc_port: Optional[int] = None, metrics_port: Optional[int] = None,
                 max_batch: int = DEFAULT_MAX_BATCH, max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                 preferred: Sequence[int] = (), instances: int = 1, threads: Optional[int] = None,
                 log_file: Optional[PathLike] = None) -> None:
        _pytriton()
        path = resolve_model(model)
        if is_engine(path) or "://" in path:
            raise InputError("edgepose serve runs ONNX models with ONNX Runtime; %s is not one. For a TensorRT "
                             "engine, write a repository with `edgepose export-triton` and run Triton's container "
                             "on it" % path)
        info = read_onnx(path)
        self.name = check_name(name or triton_name(info))
        self.config = model_config(info, self.name, Batching(max_batch, tuple(preferred), max_queue_delay_us,
                                                             instances, "cpu"))
        self.host = host
        self.ports = {"http": int(port), "grpc": int(grpc_port or port + 1), "metrics": int(metrics_port or port + 2)}
        if len(set(self.ports.values())) != 3:
            raise InputError("the HTTP, gRPC and metrics ports must differ, got %s" % self.ports)
        self.log_file = Path(log_file) if log_file is not None else None
        if threads is None and instances > 1:
            threads = max(1, (os.cpu_count() or 1) // instances)
        self.backends: List[OnnxRuntimeBackend] = []
        try:
            for _ in range(instances):
                self.backends.append(OnnxRuntimeBackend(path, threads=threads))
        except Exception:
            self._close_backends()
            raise
        self.model_path = path
        self._triton: Any = None
        self._stopped = False

    @property
    def url(self) -> str:
        """What a client passes to ``edgepose.Runtime``."""
        host = socket.gethostname() if self.host in ALL_INTERFACES else self.host
        return "triton://%s:%d/%s" % (host, self.ports["http"], self.name)

    @property
    def ready_url(self) -> str:
        """Triton's model-ready endpoint: 200 once the model is loaded (a readiness probe's target)."""
        host = socket.gethostname() if self.host in ALL_INTERFACES else self.host
        return "http://%s:%d/v2/models/%s/ready" % (host, self.ports["http"], self.name)

    @property
    def alive(self) -> bool:
        return self._triton is not None and self._triton.is_alive()

    def _local_address(self) -> str:
        """HOST:PORT of the HTTP endpoint as this process reaches it."""
        return "%s:%d" % ("127.0.0.1" if self.host in ALL_INTERFACES else self.host, self.ports["http"])

    def _check_answers(self) -> None:
        """Wait (up to :data:`READY_TIMEOUT_S`) until the model is ready and answers one real request:
        a batch of one blank crop, whose heatmaps must come back."""
        client = TritonBackend("triton://%s/%s" % (self._local_address(), self.name), wait=READY_TIMEOUT_S)
        try:
            crop = np.zeros((1,) + tuple(int(d) for d in client.input_shape[1:]), np.float32)
            heatmaps = client.run(crop)
        finally:
            client.close()
        if heatmaps.shape[0] != 1:
            raise TritonServerError("model %s answered a request for one crop with heatmaps of shape %s"
                                    % (self.name, heatmaps.shape))

    def start(self) -> "PoseServer":
        """Start tritonserver and load the model; returns once the model has answered a request
        (errors: ports in use, PyTriton missing, a server or model that does not come up)."""
        if self._triton is not None or self._stopped:
            raise InputError("this server is running or was stopped; create a new PoseServer to serve again")
        pytriton = _pytriton()
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from tritonclient.utils import triton_to_np_dtype

        for what, port in self.ports.items():
            check_port_free(self.host, port, what)
        config = self.config
        options: Dict[str, Any] = {
            "http_address": self.host, "http_port": self.ports["http"], "grpc_address": self.host,
            "grpc_port": self.ports["grpc"], "metrics_address": self.host, "metrics_port": self.ports["metrics"],
            "exit_timeout_secs": 5, "log_verbose": 0}
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            options["log_file"] = self.log_file
        triton = self._triton = pytriton.triton.Triton(config=pytriton.triton.TritonConfig(**options))

        def tensors(specs: List[Dict[str, Any]]) -> List[Any]:
            return [Tensor(name=s["name"], dtype=triton_to_np_dtype(s["data_type"].replace("TYPE_", "", 1)),
                           shape=tuple(s["dims"])) for s in specs]

        batching = config.get("dynamic_batching", {})
        input_name, output_name = config["input"][0]["name"], self.backends[0].output_name
        try:
            triton.bind(
                model_name=self.name,
                infer_func=[_infer_function(b, input_name, output_name) for b in self.backends],
                inputs=tensors(config["input"]),
                outputs=tensors([o for o in config["output"] if o["name"] == output_name]),
                config=ModelConfig(
                    batching=config["max_batch_size"] > 0, max_batch_size=max(1, config["max_batch_size"]),
                    batcher=DynamicBatcher(
                        max_queue_delay_microseconds=batching.get("max_queue_delay_microseconds", 0),
                        preferred_batch_size=batching.get("preferred_batch_size"))),
                strict=True)
            _bind_parameters(triton, self.name, config.get("parameters", {}))
            triton.run()
        except MissingDependencyError:
            self.stop()
            raise
        except Exception as e:
            self.stop()
            raise TritonServerError("the Triton server for %s did not come up: %s%s" % (
                self.model_path, e, "; see its log %s" % self.log_file if self.log_file else "")) from e
        if not self.alive:
            self.stop()
            raise TritonServerError("the Triton server for %s exited while starting%s" % (
                self.model_path, "; see its log %s" % self.log_file if self.log_file else ""))
        try:
            self._check_answers()
        except Exception as e:
            self.stop()
            raise TritonServerError("the Triton server for %s runs, but model %s did not answer: %s%s" % (
                self.model_path, self.name, e, "; see its log %s" % self.log_file if self.log_file else "")) from e
        return self

    def statistics(self) -> Dict[str, Any]:
        """What dynamic batching did so far: ``requests`` answered, ``inferences`` (crops), model
        ``executions`` and ``batch_sizes`` {size: executions} (Triton's statistics endpoint, which
        PyTriton guards with a token this process holds)."""
        if self._triton is None:
            raise InputError("the server is not running")
        from pytriton.client.auth import create_auth_headers
        from tritonclient.http import InferenceServerClient

        client = InferenceServerClient(self._local_address())
        try:
            stats = client.get_inference_statistics(
                self.name, headers=create_auth_headers(self._triton.get_access_token(), "http"))["model_stats"][0]
        finally:
            client.close()
        return {"requests": int(stats["inference_stats"]["success"]["count"]),
                "inferences": int(stats["inference_count"]), "executions": int(stats["execution_count"]),
                "batch_sizes": {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}}

    def stop(self) -> None:
        """Stop tritonserver (in-flight requests get 5 s) and release the sessions; idempotent."""
        triton, self._triton, self._stopped = self._triton, None, True
        if triton is not None:
            triton.stop()
        self._close_backends()

    def _close_backends(self) -> None:
        for backend in self.backends:
            backend.close()

    def serve_forever(self, on_ready: Optional[Callable[["PoseServer"], None]] = None) -> None:
        """Start, call ``on_ready``, and serve until SIGINT (Ctrl-C) or SIGTERM; then stop cleanly.
        Must run in the main thread (signal handlers)."""
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
        try:
            self.start()
            if on_ready is not None:
                on_ready(self)
            while not stop.wait(0.5):
                if not self.alive:
                    raise TritonServerError("the Triton server stopped unexpectedly%s" % (
                        "; see its log %s" % self.log_file if self.log_file else ""))
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> "PoseServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
