"""Triton backend: the model runs on a Triton Inference Server; pre/post-processing stay here.

``Runtime("triton://HOST:PORT/NAME")`` sends batches of normalised crops to model NAME on the
server at HOST (PORT: its HTTP port) and gets heatmaps back, over HTTP or gRPC through
``tritonclient``; ``YoloxDetector("triton://HOST:PORT/NAME")`` sends letterboxed images and gets
YOLOX rows back (a fixed-batch model, ``max_batch_size: 0``, takes its full shape as configured).
The backend configures itself from the server: batch limit, tensor names
and dims from the model configuration, and the model's edgepose metadata from the
configuration's ``edgepose.*`` parameters (written by ``edgepose export-triton`` and
``edgepose serve``).

tritonclient's HTTP client works only in the thread that made it, so each thread using the
backend gets its own client; one Runtime can be shared by threads.
"""
import logging
import threading
import time
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import numpy as np

from edgepose.backends.base import Backend, to_shape
from edgepose.errors import EdgeposeError, InputError, ModelFileError
from edgepose.meta import edgepose_props
from edgepose.optional import require

log = logging.getLogger(__name__)
PROTOCOLS = ("http", "grpc")
#: Triton data types the backend accepts for the input and output.
FLOAT_TYPES = {"FP32": np.float32, "FP16": np.float16}
#: Seconds between two looks at a server or model that is not ready yet (``wait``).
POLL_S = 0.5


class TritonServerError(EdgeposeError, ConnectionError):
    """The Triton server cannot be reached, or it failed a request."""


def parse_url(url: str) -> Tuple[str, int, str]:
    """``triton://HOST:PORT/NAME`` -> (host, port, name)."""
    parts = urlsplit(url)
    name = parts.path.strip("/")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "triton" or not parts.hostname or port is None or not name or "/" in name:
        raise InputError("%r is not a Triton model URL; expected triton://HOST:PORT/NAME with PORT the "
                         "server's HTTP port, e.g. triton://127.0.0.1:8000/simple_pose_resnet18_v1b" % url)
    return parts.hostname, port, name


def _client_module(protocol: str) -> ModuleType:
    protocol = "grpc" if protocol == "grpc" else "http"
    return require("tritonclient." + protocol, "triton", "the triton backend (%s)" % protocol,
                   "Or `pip install 'tritonclient[%s]'`" % protocol)


class TritonBackend(Backend):
    """A model served by Triton; ``protocol`` is ``http`` or ``grpc`` (the gRPC port is
    ``grpc_port``, by default PORT + 1 as ``edgepose serve`` and Triton's defaults have it);
    ``timeout`` bounds connecting and each request, in seconds; ``wait``: how many seconds to keep
    asking a server that is starting or a model that is still loading before giving up (0: fail at
    once)."""

    name = "triton"

    def __init__(self, url: str, protocol: str = "http", timeout: float = 60.0,
                 grpc_port: Optional[int] = None, wait: float = 0.0) -> None:
        super().__init__()
        if protocol not in PROTOCOLS:
            raise InputError("protocol must be 'http' or 'grpc', got %r" % protocol)
        if not wait >= 0:
            raise InputError("wait must be a number of seconds >= 0, got %r" % (wait,))
        host, port, self.model_name = parse_url(url)
        self.url, self.protocol, self.timeout = url, protocol, float(timeout)
        self.address = "%s:%d" % (host, (grpc_port or port + 1) if protocol == "grpc" else port)
        self._module = _client_module(protocol)
        self._local = threading.local()
        self._clients: List[Any] = []
        self._lock = threading.Lock()
        try:
            self._configure(self._wait_for_model(float(wait)))
        except Exception:
            self._close()
            raise

    # ------------------------------------------------------------ server access

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._module.InferenceServerClient(self.address)
            else:
                client = self._module.InferenceServerClient(
                    self.address, connection_timeout=self.timeout, network_timeout=self.timeout)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _where(self) -> str:
        return "Triton server %s://%s" % (self.protocol, self.address)

    def _wait_for_model(self, wait: float) -> Dict[str, Any]:
        """The model's configuration once it is ready, asking again every :data:`POLL_S` seconds for
        up to ``wait`` seconds while the server cannot be reached or does not have the model ready (a
        model that is still loading is unknown to Triton until it is loaded, like a wrong NAME)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._read_config()
            except (TritonServerError, ModelFileError) as e:
                left = deadline - time.monotonic()
                if left <= 0:
                    if wait > 0:
                        raise type(e)("%s; still so after waiting %g s" % (e, wait)) from e
                    raise
                log.debug("waiting for model %r on the %s: %s", self.model_name, self._where(), e)
            time.sleep(min(POLL_S, max(left, 0.0)))

    def _read_config(self) -> Dict[str, Any]:
        client = self._client()
        exception = self._module.InferenceServerException
        extra = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        try:
            live = client.is_server_live(**extra)
        except Exception as e:  # connection refused, DNS, timeouts: each library raises its own
            raise TritonServerError(
                "cannot reach the %s (%s). Check that it runs and that HOST:PORT in %s is its %s port "
                "(start one with `edgepose serve MODEL --port PORT`)"
                % (self._where(), str(e).strip() or type(e).__name__, self.url, self.protocol.upper())) from e
        if not live:
            raise TritonServerError("the %s answers but is not live; see its log" % self._where())
        as_json = {"as_json": True} if self.protocol == "grpc" else {}
        try:
            ready = client.is_model_ready(self.model_name, **extra)
            raw = client.get_model_config(self.model_name, **as_json, **extra)
        except exception as e:
            if "unknown model" in str(e).lower() or "not found" in str(e).lower():
                raise ModelFileError("the %s has no model %r (%s); check NAME in %s, or pass wait=SECONDS if "
                                     "the server is still loading it"
                                     % (self._where(), self.model_name, e.message(), self.url)) from e
            raise TritonServerError("the %s failed to describe model %r: %s"
                                    % (self._where(), self.model_name, e.message())) from e
        if not ready:
            raise TritonServerError("model %r on the %s is not ready (still loading: pass wait=SECONDS to wait "
                                    "for it; or it failed to load: see the server log)"
                                    % (self.model_name, self._where()))
        return raw.get("config", raw) if self.protocol == "grpc" else raw

    def _configure(self, config: Dict[str, Any]) -> None:
        max_batch = int(config.get("max_batch_size") or 0)
        batch_dims = 1 if max_batch > 0 else 0  # with max_batch_size > 0, dims leave out the batch
        inputs, outputs = config.get("input") or [], config.get("output") or []
        if len(inputs) != 1 or len(inputs[0].get("dims") or ()) + batch_dims != 4 or not outputs:
            raise ModelFileError(
                "model %r on the %s is not an image model edgepose can feed: expected one (N, C, H, W) input and "
                "an output, its configuration has inputs %s and outputs %s" % (
                    self.model_name, self._where(), [(i.get("name"), i.get("dims")) for i in inputs],
                    [(o.get("name"), o.get("dims")) for o in outputs]))
        batch = (-1,) if batch_dims else ()
        self.input_name = str(inputs[0]["name"])
        self.outputs = {str(o["name"]): to_shape(batch + tuple(int(d) for d in o.get("dims") or ())) for o in outputs}
        self.output_name = next(iter(self.outputs))
        self.datatype = str(inputs[0].get("data_type", "TYPE_FP32")).replace("TYPE_", "", 1)
        if self.datatype not in FLOAT_TYPES:
            raise ModelFileError("model %r takes %s input; edgepose sends FP32 or FP16"
                                 % (self.model_name, self.datatype))
        self.input_shape = to_shape(batch + tuple(int(d) for d in inputs[0]["dims"]))
        self.max_batch = max_batch if max_batch > 0 else self.input_shape[0]
        self.metadata = edgepose_props({str(k): str((v or {}).get("string_value", "")) for k, v in
                                        (config.get("parameters") or {}).items()})

    # ------------------------------------------------------------ the contract

    def _run(self, batch: np.ndarray) -> np.ndarray:
        module = self._module
        data = batch.astype(FLOAT_TYPES[self.datatype], copy=False)
        tensor = module.InferInput(self.input_name, list(data.shape), self.datatype)
        if self.protocol == "grpc":
            tensor.set_data_from_numpy(data)
            wanted = module.InferRequestedOutput(self.output_name)
            extra: Dict[str, Any] = {"client_timeout": self.timeout}
        else:
            tensor.set_data_from_numpy(data, binary_data=True)
            wanted = module.InferRequestedOutput(self.output_name, binary_data=True)
            extra = {}
        try:
            result = self._client().infer(self.model_name, [tensor], outputs=[wanted], **extra)
        except module.InferenceServerException as e:
            raise TritonServerError("the %s failed a request to model %r: %s"
                                    % (self._where(), self.model_name, e.message())) from e
        except Exception as e:  # the connection broke
            raise TritonServerError("lost the %s during a request to model %r: %s"
                                    % (self._where(), self.model_name, str(e) or type(e).__name__)) from e
        return np.asarray(result.as_numpy(self.output_name), dtype=np.float32)

    def _close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception as e:  # an HTTP client closed from another thread than its own may complain
                log.debug("closing a Triton client of %s: %s", self.url, e)
