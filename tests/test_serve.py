"""A real Triton server (edgepose serve, through PyTriton) on 127.0.0.1, and Runtime("triton://...").

Runs where PyTriton works: a venv made from the system Python (see .ci/run); skipped elsewhere.
Every server is stopped in a fixture or finally block, and each test checks that no server
process is left behind. Traffic stays on loopback; every wait is bounded.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from support import DATA, free_ports, start_edgepose

pytest.importorskip("pytriton.triton", reason="PyTriton (edgepose[serve]) is not importable here; the serving "
                                              "tests run in the system-Python venv that .ci/run makes")
psutil = pytest.importorskip("psutil")
tritonhttp = pytest.importorskip("tritonclient.http")
tritongrpc = pytest.importorskip("tritonclient.grpc")

from edgepose.backends.triton import TritonServerError  # noqa: E402
from edgepose.detector import YoloxDetector  # noqa: E402
from edgepose.errors import InputError, ModelFileError  # noqa: E402
from edgepose.meta import ModelMeta  # noqa: E402
from edgepose.runtime import Runtime  # noqa: E402
from edgepose.serve import PoseServer  # noqa: E402

HOST = "127.0.0.1"
BOXES = np.array([[180, 420, 560, 920, 0.9], [480, 40, 710, 440, 0.8], [590, 70, 930, 470, 0.7],
                  [100, 100, 300, 500, 0.6], [600, 300, 800, 900, 0.5]], np.float32)


def server_processes(pid: int):
    return [p for p in psutil.Process(pid).children(recursive=True)
            if "triton" in " ".join(p.cmdline()) or "python_backend_stub" in p.name()]


def assert_all_gone(procs, timeout=20.0):
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], "left behind: %s" % alive


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    """One PoseServer for the module (it overrides conftest's loopback HTTP ``server`` here)."""
    srv = PoseServer(model_path, host=HOST, port=free_ports(3), max_batch=8, preferred=(4, 8),
                     max_queue_delay_us=2000, instances=2, threads=1,
                     log_file=tmp_path_factory.mktemp("triton") / "server.log")
    srv.start()
    procs = server_processes(os.getpid())
    assert any("tritonserver" in p.name() for p in procs)
    try:
        yield srv
    finally:
        srv.stop()
        assert not srv.alive
        assert_all_gone(procs)


@pytest.fixture(scope="module")
def local(model_path, image):
    """Local results per request: the reference every served answer must equal."""
    with Runtime(model_path) as rt:
        yield {(n, flip): rt.estimate(image, BOXES[:n], flip=flip) for n in range(1, 6) for flip in (False, True)}


def assert_same(result, expected):
    np.testing.assert_allclose(result.keypoints, expected.keypoints, atol=1e-3)
    np.testing.assert_allclose(result.scores, expected.scores, atol=1e-5)
    np.testing.assert_array_equal(result.boxes, expected.boxes)


def test_served_config_carries_the_model(server, model_path):
    client = tritonhttp.InferenceServerClient("%s:%d" % (HOST, server.ports["http"]))
    try:
        config = client.get_model_config(server.name)
    finally:
        client.close()
    assert config["max_batch_size"] == 8
    assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 2000
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("input", "TYPE_FP32", [3, 256, 192])]
    assert [(o["name"], o["dims"]) for o in config["output"]] == [("heatmaps", [17, 64, 48])]
    assert sum(g["count"] for g in config["instance_group"]) == 2
    params = {k: v["string_value"] for k, v in config["parameters"].items() if k.startswith("edgepose.")}
    with Runtime(model_path) as rt:
        assert ModelMeta.from_props(params) == rt.meta


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_runtime_over_triton_equals_local(server, model_path, image, local, protocol):
    options = {"grpc_port": server.ports["grpc"]} if protocol == "grpc" else {}
    with Runtime(server.url, protocol=protocol, **options) as remote:
        assert remote.backend.name == "triton" and remote.max_batch == 8
        with Runtime(model_path) as rt:
            assert remote.meta == rt.meta
            crops = np.random.default_rng(0).random((19, 3, 256, 192), dtype=np.float32)  # 3 chunks of <= 8
            np.testing.assert_allclose(remote.infer(crops), rt.infer(crops), rtol=1e-5, atol=1e-5)
        for flip in (False, True):
            assert_same(remote.estimate(image, BOXES, flip=flip), local[(5, flip)])


def test_concurrent_threads_are_all_answered(server, image, local):
    """16 threads, 6 requests each of 1-5 persons; half share one Runtime, half have their own."""
    shared = Runtime(server.url)

    def client(i):
        own = Runtime(server.url) if i % 2 else None
        rt = own or shared
        try:
            out = []
            for j in range(6):
                n, flip = 1 + (i + j) % 5, bool(j % 2)
                out.append(((n, flip), rt.estimate(image, BOXES[:n], flip=flip)))
            return out
        finally:
            if own:
                own.close()

    before = server.statistics()
    try:
        with ThreadPoolExecutor(16) as pool:
            answers = [a for result in pool.map(client, range(16), timeout=120) for a in result]
    finally:
        shared.close()
    assert len(answers) == 96
    for key, result in answers:
        assert_same(result, local[key])
    after = server.statistics()
    requests = after["requests"] - before["requests"]
    executions = after["executions"] - before["executions"]
    crops = sum(n * (2 if flip else 1) for (n, flip), _ in answers)
    assert requests == sum(-(-n * (2 if flip else 1) // 8) for (n, flip), _ in answers)  # chunks of <= 8
    assert after["inferences"] - before["inferences"] == crops
    assert executions < requests  # the dynamic batcher joined requests of different clients
    assert max(after["batch_sizes"]) <= 8


CLIENT = """
import json, sys
import cv2, numpy as np
from edgepose.runtime import Runtime
url, image, boxes, protocol, grpc_port = sys.argv[1:6]
options = {"grpc_port": int(grpc_port)} if protocol == "grpc" else {}
with Runtime(url, protocol=protocol, **options) as rt:
    results = [rt.estimate(cv2.imread(image), np.array(json.loads(boxes), np.float32)) for _ in range(5)]
json.dump([r.keypoints.tolist() for r in results], sys.stdout)
"""


def test_concurrent_processes_are_all_answered(server, local):
    image = str(DATA / "demo_media" / "soccer.png")
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, server.url, image, json.dumps(BOXES[:n].tolist()),
                               "grpc" if n % 2 else "http", str(server.ports["grpc"])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(1, 6)]
    for n, proc in enumerate(procs, start=1):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        for keypoints in json.loads(out):
            np.testing.assert_allclose(np.array(keypoints, np.float32), local[(n, False)].keypoints, atol=1e-3)


def test_malformed_requests_get_errors_and_serving_goes_on(server, model_path):
    http = tritonhttp.InferenceServerClient("%s:%d" % (HOST, server.ports["http"]))
    grpc = tritongrpc.InferenceServerClient("%s:%d" % (HOST, server.ports["grpc"]))

    def request(module, client, name="input", shape=(2, 3, 256, 192), dtype=np.float32, model=server.name):
        data = np.zeros(shape, dtype)
        tensor = module.InferInput(name, list(shape), {np.float32: "FP32", np.float64: "FP64"}[dtype])
        tensor.set_data_from_numpy(data)
        return client.infer(model, [tensor]).as_numpy("heatmaps")

    try:
        for module, client in ((tritonhttp, http), (tritongrpc, grpc)):
            for bad, message in (({"shape": (2, 3, 128, 96)}, "unexpected shape"),
                                 ({"dtype": np.float64}, "FP64"),
                                 ({"name": "image"}, "image"),
                                 ({"shape": (9, 3, 256, 192)}, "batch"),
                                 ({"model": "no_such_model"}, "no_such_model")):
                with pytest.raises(Exception, match=message):
                    request(module, client, **bad)
            assert request(module, client).shape == (2, 17, 64, 48)  # still serving
    finally:
        http.close()
        grpc.close()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.shared
def test_detector_served_by_triton_equals_local(image, tmp_path):
    """PoseServer serves any ONNX model: the YOLOX detector with its fixed batch (max_batch_size 0, as export-triton
    --detector configures it), and YoloxDetector("triton://...") gives the boxes of the local ONNX."""
    yolox = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
    srv = PoseServer(yolox, name="yolox_nano", host=HOST, port=free_ports(3), log_file=tmp_path / "server.log")
    assert srv.config["max_batch_size"] == 0 and "dynamic_batching" not in srv.config
    others = server_processes(os.getpid())  # the module's pose server, when it runs
    srv.start()
    procs = [p for p in server_processes(os.getpid()) if p not in others]
    assert any("tritonserver" in p.name() for p in procs)
    try:
        with YoloxDetector(srv.url) as remote, YoloxDetector(yolox) as local:
            assert remote.backend.name == "triton" and remote.backend.max_batch == 1
            for photo in (image, cv2.imread(str(DATA / "demo_media" / "biking.jpg"))):
                boxes = remote.detect(photo)
                assert len(boxes) >= 3
                np.testing.assert_allclose(boxes, local.detect(photo), rtol=1e-5, atol=1e-3)
    finally:
        srv.stop()
        assert_all_gone(procs)


def test_model_ready_endpoint_is_the_probe(server):
    """start() returned, so the model answers: its ready endpoint (the documented probe) says 200."""
    assert server.ready_url == "http://%s:%d/v2/models/%s/ready" % (HOST, server.ports["http"], server.name)
    assert http_status(server.ready_url) == 200
    assert http_status("http://%s:%d/v2/models/nope/ready" % (HOST, server.ports["http"])) == 400
    assert server.statistics()["requests"] >= 1  # start() sent one real request before returning


def test_runtime_waits_for_a_server_that_is_starting(model_path, image, local, tmp_path):
    """A client started together with the server: Runtime(..., wait=) rides out the start and the
    model load (tritonserver says /v2/health/ready before PyTriton has loaded the model)."""
    srv = PoseServer(model_path, name="late", host=HOST, port=free_ports(3), max_batch=4,
                     log_file=tmp_path / "late.log")
    failure = []

    def start():
        try:
            srv.start()
        except Exception as e:  # reported below, in the test's thread
            failure.append(e)

    starter = threading.Thread(target=start)
    starter.start()
    try:
        with Runtime(srv.url, wait=120) as remote:
            assert http_status(srv.ready_url) == 200
            assert_same(remote.estimate(image, BOXES[:3]), local[(3, False)])
        starter.join(120)
        assert not failure and not starter.is_alive()
    finally:
        starter.join(120)
        srv.stop()


def test_backend_errors_are_clear(server, closed_port):
    with pytest.raises(ModelFileError, match="no model 'nope'"):
        Runtime("triton://%s:%d/nope" % (HOST, server.ports["http"]))
    started = time.monotonic()
    with pytest.raises(TritonServerError, match="cannot reach"):
        Runtime("triton://%s:%d/%s" % (HOST, closed_port, server.name), timeout=5)
    assert time.monotonic() - started < 10
    with pytest.raises(TritonServerError, match="cannot reach"):
        Runtime("triton://%s:%d/%s" % (HOST, closed_port, server.name), protocol="grpc", timeout=5)
    for url in ("triton://%s/x" % HOST, "triton://%s:%d" % (HOST, closed_port), "http://%s:%d/x" % (HOST, closed_port)):
        with pytest.raises(InputError):
            Runtime(url, backend="triton")
    with pytest.raises(InputError, match="protocol"):
        Runtime(server.url, protocol="udp")
    with Runtime(server.url) as rt, pytest.raises(InputError, match="does not fit"):
        rt.infer(np.zeros((1, 3, 128, 96), np.float32))


def test_server_argument_errors(model_path, tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        PoseServer(tmp_path / "missing.onnx")
    engine = tmp_path / "pose.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(InputError, match="runs ONNX models"):
        PoseServer(engine)
    with pytest.raises(InputError, match="not usable"):
        PoseServer(model_path, name="bad name")
    with pytest.raises(InputError, match="must differ"):
        PoseServer(model_path, port=9000, grpc_port=9000)
    port = free_ports(3)
    with socket.socket() as busy:
        busy.bind((HOST, port + 1))
        busy.listen()
        srv = PoseServer(model_path, host=HOST, port=port)
        with pytest.raises(InputError, match="grpc port %d on 127.0.0.1 is in use" % (port + 1)):
            srv.start()
        srv.stop()


def read_until(stream, text, timeout):
    """Lines of ``stream`` up to the first holding ``text`` (a reader thread bounds the wait)."""
    lines, found = [], threading.Event()

    def reader():
        for line in stream:
            lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    found.wait(timeout)
    return found.is_set(), "".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_command_prints_endpoint_and_stops_cleanly(model_path, image, local, tmp_path, stop_signal):
    port = free_ports(3)
    proc = start_edgepose("serve", model_path, "--name", "pose", "--host", HOST, "--port", port, "--max-batch", "4",
                          "--log-file", tmp_path / "triton.log", home=tmp_path)
    try:
        ready, text = read_until(proc.stdout, "Serving", timeout=90)
        assert ready, "no endpoint printed:\n%s\n%s" % (text, proc.stderr.read() if proc.poll() is not None else "")
        url = "triton://%s:%d/pose" % (HOST, port)
        assert url in text and "gRPC %d" % (port + 1) in text and "metrics %d" % (port + 2) in text
        probe = "http://%s:%d/v2/models/pose/ready" % (HOST, port)
        assert "readiness probe GET %s" % probe in text and http_status(probe) == 200  # ready when it says so
        children = server_processes(proc.pid)
        assert children
        with Runtime(url) as remote:
            assert remote.max_batch == 4
            assert_same(remote.estimate(image, BOXES[:3]), local[(3, False)])
        with Runtime(url, protocol="grpc") as remote:  # the gRPC port follows the HTTP one
            assert_same(remote.estimate(image, BOXES[:3]), local[(3, False)])
        proc.send_signal(stop_signal)
        rest, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Stopped." in rest
        assert_all_gone(children)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_serve_command_errors(model_path, tmp_path):
    port = free_ports(3)
    with socket.socket() as busy:
        busy.bind((HOST, port))
        busy.listen()
        proc = start_edgepose("serve", model_path, "--host", HOST, "--port", port, home=tmp_path)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "in use" in err and "--port" in err and "Traceback" not in err
    proc = start_edgepose("serve", tmp_path / "missing.onnx", home=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "does not exist" in err and "Traceback" not in err
