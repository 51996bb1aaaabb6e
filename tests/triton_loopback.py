"""A scripted Triton Inference Server on the loopback HTTP server (tests/loopback.py): one ONNX model run
by ONNX Runtime behind the KServe v2 endpoints ``tritonclient.http`` calls (server live, model ready,
model config, infer with binary tensors), for tests that cannot start a real Triton (PyTriton runs only
in the serving venv). Like Triton, it refuses a request whose input shape does not fit the configured
dims (with ``max_batch_size: 0`` the dims are the full shape, batch included).
"""
import json
from typing import Any, Dict

import numpy as np

NUMPY_TYPES = {"FP32": np.float32, "FP16": np.float16}


def reply(handler: Any, status: int, body: Dict[str, Any], binary: bytes = b"") -> None:
    """A JSON answer; with ``binary``, Triton's binary-tensor form (JSON header, then the raw tensors)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/octet-stream" if binary else "application/json")
    if binary:
        handler.send_header("Inference-Header-Content-Length", str(len(data)))
    handler.send_header("Content-Length", str(len(data) + len(binary)))
    handler.end_headers()
    handler.wfile.write(data + binary)


def serve_onnx(server: Any, name: str, config: Dict[str, Any], onnx_path: Any) -> str:
    """Script ``server`` as a live Triton whose model ``name`` (configuration ``config``, as Triton's
    ``/v2/models/NAME/config`` gives it) runs ``onnx_path``. Returns the model's ``triton://`` URL."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    base = "/v2/models/%s" % name
    server.scripts["/v2/health/live"] = lambda h: reply(h, 200, {})
    server.scripts[base + "/ready"] = lambda h: reply(h, 200, {})
    server.scripts[base + "/config"] = lambda h: reply(h, 200, config)
    server.scripts[base + "/infer"] = lambda h: _infer(h, name, session, config)
    return "triton://%s/%s" % (server.url.split("//", 1)[1].rstrip("/"), name)


def _infer(handler: Any, name: str, session: Any, config: Dict[str, Any]) -> None:
    body = handler.rfile.read(int(handler.headers["Content-Length"]))
    size = int(handler.headers.get("Inference-Header-Content-Length") or len(body))
    request, data = json.loads(body[:size]), body[size:]
    feeds = {}
    for tensor in request["inputs"]:
        spec = next(i for i in config["input"] if i["name"] == tensor["name"])
        dims = ([-1] if config.get("max_batch_size") else []) + list(spec["dims"])
        shape = list(tensor["shape"])
        if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape)):
            reply(handler, 400, {"error": "[request id: <id_unknown>] unexpected shape for input '%s' for model "
                                          "'%s'. Expected %s, got %s" % (tensor["name"], name, dims, shape)})
            return
        nbytes = int(tensor["parameters"]["binary_data_size"])
        feeds[tensor["name"]] = np.frombuffer(data[:nbytes], NUMPY_TYPES[tensor["datatype"]]).reshape(shape)
        data = data[nbytes:]
    names = [o["name"] for o in request.get("outputs") or config["output"]]
    outputs, binary = [], b""
    for out_name, value in zip(names, session.run(names, feeds)):
        raw = np.ascontiguousarray(value, np.float32).tobytes()
        outputs.append({"name": out_name, "datatype": "FP32", "shape": list(value.shape),
                        "parameters": {"binary_data_size": len(raw)}})
        binary += raw
    reply(handler, 200, {"model_name": name, "model_version": "1", "outputs": outputs}, binary)
