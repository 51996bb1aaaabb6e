"""Runtime("triton://...", wait=SECONDS) against a scripted Triton HTTP endpoint on 127.0.0.1: a model
that is still loading (Triton answers its ready endpoint with 400 and does not know it yet) is waited
for, and a model that never comes gives a clear error once the wait is over."""
import json
import time

import pytest

try:
    import tritonclient.http  # noqa: F401 (raises RuntimeError when installed without its http extra)
except (ImportError, RuntimeError) as e:
    pytest.skip("the triton backend needs tritonclient[http] (edgepose[triton]): %s" % e, allow_module_level=True)

from edgepose.backends.triton import TritonServerError  # noqa: E402
from edgepose.errors import InputError, ModelFileError  # noqa: E402
from edgepose.runtime import Runtime  # noqa: E402

NAME = "pose"
CONFIG = {  # what Triton's /v2/models/NAME/config gives for a 256x192 COCO heatmap model
    "name": NAME, "max_batch_size": 8,
    "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 256, 192]}],
    "output": [{"name": "heatmaps", "data_type": "TYPE_FP32", "dims": [17, 64, 48]}],
}


def reply(handler, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def loading_model(server, ready_after: float) -> None:
    """Script ``server`` as a live Triton whose model NAME is loaded ``ready_after`` seconds from now."""
    loaded_at = time.monotonic() + ready_after
    unknown = {"error": "Request for unknown model: '%s' is not found" % NAME}
    server.scripts["/v2/health/live"] = lambda h: reply(h, 200, {})
    server.scripts["/v2/models/%s/ready" % NAME] = lambda h: reply(
        h, *((200, {}) if time.monotonic() >= loaded_at else (400, unknown)))
    server.scripts["/v2/models/%s/config" % NAME] = lambda h: reply(
        h, *((200, CONFIG) if time.monotonic() >= loaded_at else (400, unknown)))


def url(server) -> str:
    return "triton://%s/%s" % (server.url.split("//", 1)[1].rstrip("/"), NAME)


def test_wait_rides_out_a_model_that_is_loading(server):
    loading_model(server, ready_after=1.2)
    start = time.monotonic()
    with Runtime(url(server), wait=20) as rt:
        assert rt.max_batch == 8 and rt.meta.input_size == (256, 192)
    assert 1.2 <= time.monotonic() - start < 10
    assert server.hits.count("/v2/models/%s/ready" % NAME) >= 3  # asked again while it was loading


def test_without_wait_a_loading_model_fails_at_once(server):
    loading_model(server, ready_after=60)
    start = time.monotonic()
    with pytest.raises(ModelFileError, match="has no model 'pose'.*wait=SECONDS"):
        Runtime(url(server))
    assert time.monotonic() - start < 5


def test_a_model_that_never_loads_fails_when_the_wait_is_over(server):
    loading_model(server, ready_after=600)
    start = time.monotonic()
    with pytest.raises(ModelFileError, match="still so after waiting 1.5 s"):
        Runtime(url(server), wait=1.5)
    assert 1.5 <= time.monotonic() - start < 6


def test_wait_covers_a_server_that_is_not_up_yet(closed_port):
    start = time.monotonic()
    with pytest.raises(TritonServerError, match="cannot reach.*still so after waiting 1 s"):
        Runtime("triton://127.0.0.1:%d/%s" % (closed_port, NAME), wait=1)
    assert 1 <= time.monotonic() - start < 6


@pytest.mark.parametrize("wait", [-1, float("nan")])
def test_bad_wait(server, wait):
    with pytest.raises(InputError, match="wait must be"):
        Runtime(url(server), wait=wait)
