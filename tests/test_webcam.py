"""Live pose: One Euro smoothing, tracking, video sources and sinks, the per-frame loop, and the
`edgepose webcam` command on generated videos, demo.mp4 and a real RTSP server on 127.0.0.1."""
import importlib.util
import json
import os
import select
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepose.detector import YoloxDetector
from edgepose.errors import InputError
from edgepose.keypoints import COCO_OKS_SIGMAS
from edgepose.live import STAGES, DetectionSchedule, LivePose, LiveSession
from edgepose.runtime import PoseResult, Runtime
from edgepose.live.smooth import KeypointSmoother, OneEuroFilter
from edgepose.live.track import PoseTracker, box_iou, boxes_from_keypoints, keypoint_oks
from edgepose.live.video import (
    JsonlSink, VideoFileSink, VideoSource, VideoSourceError, has_gstreamer, per_source_paths, source_kind,
)
from support import DATA, random_model, require_shared, run_edgepose, start_edgepose

HERE = Path(__file__).resolve().parent
DEMO = DATA / "demo_media" / "demo.mp4"
PERSON = DATA / "demo_media" / "person.jpg"
YOLOX = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
MODEL = "mobile_pose_mobilenetv3_small"
SYSTEM_PYTHON = "/usr/bin/python3"


def _rtsp_server_available() -> bool:
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer")
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_cli = pytest.mark.skipif(importlib.util.find_spec("typer") is None,
                               reason="the edgepose command needs typer (not in the runtime-only venv)")
needs_rtsp = pytest.mark.skipif(not _rtsp_server_available(), reason=(
    "needs %s with python3-gi, gir1.2-gst-rtsp-server-1.0 and the GStreamer good/ugly plugins "
    "(apt; .ci/run installs them)" % SYSTEM_PYTHON))


# ---------------------------------------------------------------- helpers


def make_video(path: Path, frames: int, size=(320, 240), fps: float = 25.0, photo: Path = PERSON,
               blank: int = 0) -> Path:
    """A video of ``photo`` panning slowly (a real person moving across the frame), after ``blank`` grey frames."""
    require_shared()
    w, h = size
    image = cv2.imread(str(photo))
    scale = 1.3 * max(w / image.shape[1], h / image.shape[0])
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    span_x, span_y = big.shape[1] - w, big.shape[0] - h
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        phase = abs((i / 150.0) % 2 - 1)  # triangle wave: a full sweep every 300 frames
        x, y = int(span_x * phase), int(span_y * phase / 2)
        writer.write(np.full((h, w, 3), 128, np.uint8) if i < blank else np.ascontiguousarray(big[y:y + h, x:x + w]))
    writer.release()
    return path


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def start_webcam(*args, home: Path) -> subprocess.Popen:
    return start_edgepose("webcam", *args, home=home, cwd=home)


def run_webcam(*args, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_edgepose("webcam", *args, home=home, cwd=home, check=False, timeout=timeout)


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError("webcam exited early (%s):\n%s" % (proc.returncode, proc.communicate()[1]))
        time.sleep(0.05)
    raise AssertionError("no %d JSON lines in %s after %g s" % (count, path, timeout))


@contextmanager
def rtsp_server(frames: int = -1, fps: int = 25):
    """A GStreamer RTSP server (system python3) streaming person.jpg; yields (process, url)."""
    proc = subprocess.Popen([SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), "--image", str(PERSON),
                             "--frames", str(frames), "--fps", str(fps)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("READY"), "RTSP server did not start: %r %s" % (
            line, proc.stderr.read() if proc.poll() is not None else "")
        yield proc, "rtsp://127.0.0.1:%d/test" % int(line.split()[1])
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGKILL's cleanup
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def pose_model() -> Path:
    return random_model(MODEL)


@pytest.fixture(scope="module")
def models(pose_model):
    require_shared()
    runtime = Runtime(str(pose_model))
    yield runtime, YoloxDetector(YOLOX)
    runtime.close()


@pytest.fixture(scope="module")
def panning_video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "pan.mp4", 20)


# ---------------------------------------------------------------- One Euro


def test_one_euro_removes_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    still = rng.uniform(50, 400, (3, 17, 2))
    smoother = KeypointSmoother()
    out = np.stack([smoother([1, 2, 3], still + rng.normal(0, 3, still.shape), f / 30) for f in range(120)])
    assert out[30:].std(axis=0).mean() < 0.5 * 3  # jitter of a still person at least halved

    def lag(beta):  # joints moving at 600 px/s: distance behind the true position once settled
        s = KeypointSmoother(OneEuroFilter(min_cutoff=1.0, beta=beta))
        for f in range(60):
            y = s([7], still[:1] + 20.0 * f, f / 30)
        return float(np.abs(y - (still[:1] + 20.0 * 59)).mean())

    assert lag(0.05) < 0.3 * lag(0.0)  # beta lets fast joints through
    assert lag(0.05) < 10


def test_smoother_state_follows_ids_and_restarts():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 300, (2, 1, 17, 2))
    together, alone_a, alone_b = KeypointSmoother(), KeypointSmoother(), KeypointSmoother()
    for f in range(5):
        na, nb = a + rng.normal(0, 2, a.shape), b + rng.normal(0, 2, b.shape)
        order = [5, 9] if f % 2 else [9, 5]  # rows swap, ids do not
        got = together(order, np.concatenate([na, nb] if order == [5, 9] else [nb, na]), f / 30)
        want_a, want_b = alone_a([5], na, f / 30), alone_b([9], nb, f / 30)
        np.testing.assert_allclose(got[order.index(5)], want_a[0], atol=1e-4)
        np.testing.assert_allclose(got[order.index(9)], want_b[0], atol=1e-4)
    # an invalid joint and a new id come out raw; ids left out are forgotten
    jump = a + 100.0
    valid = np.ones((1, 17), bool)
    valid[0, 3] = False
    out = together([5], jump, 1.0, valid)
    assert np.allclose(out[0, 3], jump[0, 3]) and not np.allclose(out[0, 0], jump[0, 0])
    assert np.allclose(together([11], jump, 1.1), jump)
    assert len(together._state) == 1
    with pytest.raises(InputError):
        OneEuroFilter(min_cutoff=0)


# ---------------------------------------------------------------- tracking


def person(x: float, y: float, h: float = 200.0) -> np.ndarray:
    """A stick figure (17, 2): COCO joints of an upright person with its head top at (x, y)."""
    rel = np.array([[0, .08], [-.02, .06], [.02, .06], [-.05, .07], [.05, .07], [-.12, .2], [.12, .2],
                    [-.15, .35], [.15, .35], [-.16, .48], [.16, .48], [-.08, .52], [.08, .52],
                    [-.08, .75], [.08, .75], [-.08, .97], [.08, .97]])
    return np.array([x, y]) + rel * h


def poses(*people: np.ndarray, scores=None) -> PoseResult:
    kpts = np.stack(people).astype(np.float32)
    boxes = np.concatenate([kpts.min(axis=1) - 10, kpts.max(axis=1) + 10], axis=1)
    s = np.full(kpts.shape[:2], 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    return PoseResult(kpts, s, boxes.astype(np.float32), np.full(len(kpts), 0.8, np.float32))


def test_iou_oks_and_boxes_from_keypoints():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(boxes, boxes)[0], [1, 1 / 3, 0])
    p = person(100, 50)[None]
    ok = np.ones((1, 17), bool)
    assert keypoint_oks(p, ok, p, ok, [200 * 60])[0, 0] == pytest.approx(1)
    assert 0 < keypoint_oks(p, ok, p + 5, ok, [200 * 60])[0, 0] < 1
    assert keypoint_oks(p, ok, p, ~ok, [200 * 60])[0, 0] == 0
    shift = 5.0  # COCO's formula: mean over joints of exp(-d^2 / (2 area (2 sigma)^2))
    want = np.exp(-2 * shift ** 2 / (2 * 200 * 60 * (2 * np.asarray(COCO_OKS_SIGMAS)) ** 2)).mean()
    assert keypoint_oks(p, ok, p + shift, ok, [200 * 60])[0, 0] == pytest.approx(want, rel=1e-6)
    box = boxes_from_keypoints(p, ok, (640, 480))[0]
    lo, hi = p[0].min(axis=0), p[0].max(axis=0)
    assert (box[:2] < lo).all() and (box[2:] > hi).all()  # the joints' extent, grown
    np.testing.assert_allclose((box[2:] - box[:2]) / (hi - lo), 1.25)
    assert (boxes_from_keypoints(p + 600, ok, (640, 480))[0] <= [639, 479, 639, 479]).all()  # clipped


def test_tracker_keeps_ids_through_motion_and_reordering():
    tracker = PoseTracker(max_missed=3)
    first = tracker.update(poses(person(100, 50), person(300, 60), person(500, 40)))
    assert first.tolist() == [1, 2, 3]
    for step in range(1, 4):  # everyone walks right; rows come in another order each time
        moved = [person(100 + 8 * step, 50), person(300 + 8 * step, 60), person(500 - 8 * step, 40)]
        order = np.roll(np.arange(3), step)
        ids = tracker.update(poses(*[moved[i] for i in order]))
        assert ids.tolist() == [first[i] for i in order]
    newcomer = tracker.update(poses(person(130, 50), person(330, 60), person(470, 40), person(620, 200)))
    assert newcomer.tolist() == [1, 2, 3, 4]
    for _ in range(5):  # only person 1 stays; the others are forgotten after max_missed frames
        assert tracker.update(poses(person(130, 50))).tolist() == [1]
    assert sorted(tracker.tracks) == [1]


def test_tracker_propagates_boxes_and_drops_lost_and_duplicate_tracks():
    tracker = PoseTracker(min_keypoints=4)
    tracker.update(poses(person(100, 50), person(300, 60), person(500, 40)))
    boxes, ids = tracker.propagate((640, 480))
    assert ids.tolist() == [1, 2, 3] and boxes.shape == (3, 5)
    assert np.allclose(boxes[:, 4], 0.8)  # the detector score travels with the track
    scores = np.full((3, 17), 0.9)
    scores[1, 3:] = 0.05  # person 2 fades: 3 joints left
    same = [person(100, 50), person(300, 60), person(101, 51)]  # propagated box 3 drifted onto person 1
    kept = tracker.update(poses(*same, scores=scores), ids)
    assert kept.tolist() == [1, -1, -1]
    assert tracker.tracks[2].missed == 1 and tracker.tracks[3].missed == 1
    assert tracker.propagate((640, 480))[1].tolist() == [1]


# ---------------------------------------------------------------- sources and sinks


def test_source_kinds():
    assert [source_kind(s) for s in (0, "1", "/dev/video2", "rtsp://cam/x", "http://h/v.mjpg",
                                     "v4l2src ! videoconvert ! appsink", "clip.mp4")] == [
        "camera", "camera", "camera", "url", "url", "gstreamer", "file"]


def test_file_source_reads_every_frame_then_reports_the_end(panning_video):
    with VideoSource(str(panning_video), width=160) as source:
        frames = list(source)
        assert source.stop_reason == "end of file after 20 frames" and not source.failed
    assert [f.index for f in frames] == list(range(20))
    assert frames[0].image.shape == (120, 160, 3)  # resized, aspect kept
    np.testing.assert_allclose([f.time for f in frames], np.arange(20) / 25.0, atol=1e-3)
    assert source.fps == pytest.approx(25.0)


def test_looping_file_starts_again_with_growing_times(panning_video):
    with VideoSource(str(panning_video), loop=True) as source:
        frames = [source.read() for _ in range(45)]
    assert [f.index for f in frames] == list(range(45))
    np.testing.assert_allclose([f.time for f in frames], np.arange(45) / 25.0, atol=1e-3)
    np.testing.assert_array_equal(frames[20].image, frames[0].image)


def test_sources_that_cannot_open_are_named(tmp_path):
    with pytest.raises(InputError, match="missing.mp4"):
        VideoSource(str(tmp_path / "missing.mp4"))
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    with pytest.raises(VideoSourceError, match="notes.mp4"):
        VideoSource(str(not_video))
    start = time.monotonic()
    with pytest.raises(VideoSourceError, match="rtsp://127.0.0.1:9/none"):
        VideoSource("rtsp://127.0.0.1:9/none", read_timeout=5)
    assert time.monotonic() - start < 7
    with pytest.raises(VideoSourceError, match="camera '7'"):
        VideoSource("7", read_timeout=5)
    if not has_gstreamer():
        with pytest.raises(VideoSourceError, match="without GStreamer.*JetPack"):
            VideoSource("nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! appsink")


def test_sinks_finalise_and_flush(tmp_path):
    path = tmp_path / "out" / "poses.jsonl"
    with JsonlSink(path) as sink:
        sink.write({"frame": 0, "persons": []})
        assert read_jsonl(path) == [{"frame": 0, "persons": []}]  # flushed before close
    video = tmp_path / "out" / "clip.mp4"
    with VideoFileSink(video, 25) as sink:
        for i in range(7):
            sink.write(np.full((48, 64, 3), 30 * i, np.uint8))
        assert not video.exists()  # only complete files appear under the final name
    assert count_frames(video) == 7
    assert sorted(p.name for p in video.parent.iterdir()) == ["clip.mp4", "poses.jsonl"]
    with pytest.raises(InputError, match=r"\.gif"):
        VideoFileSink(tmp_path / "x.gif", 25)


# ---------------------------------------------------------------- per-frame loop


def test_live_pose_on_demo_video_detects_every_n_frames(models):
    runtime, detector = models
    # Random weights give meaningless joint scores: count every joint so boxes can be propagated.
    live = LivePose(runtime, detector, detect_every=2, keypoint_thresh=-np.inf)
    with VideoSource(str(DEMO)) as source:
        frames = [live(f.image, f.time, f.index) for f in source]
    assert [f.detected for f in frames] == [True, False, True, False, True]
    assert all(len(f.ids) >= 3 for f in frames[::2])  # a street of walking people
    for before, after in zip(frames[::2], frames[1::2]):  # in between, tracked persons go on
        assert 0 < len(after.ids) and set(after.ids.tolist()) <= set(before.ids.tolist())
    for f in frames:
        assert (f.timings["detect"] > 0) == f.detected and f.timings["pose"] > 0
        record = json.loads(json.dumps(f.record()))
        assert set(record) == {"source", "frame", "timestamp", "detected", "timings_ms", "persons"}
        assert record["source"] == 0
        assert set(record["timings_ms"]) == set(STAGES)
        p = record["persons"][0]
        assert set(p) == {"id", "box", "score", "keypoints", "keypoint_scores"}
        assert len(p["box"]) == 4 and len(p["keypoints"]) == 17 and len(p["keypoints"][0]) == 2
    assert [r["frame"] for r in (f.record() for f in frames)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("detect_every", [1, 4])
def test_ids_persist_across_frames(models, panning_video, detect_every):
    runtime, detector = models
    # Random weights give meaningless joint scores: count every joint so boxes can be propagated.
    live = LivePose(runtime, detector, detect_every=detect_every, keypoint_thresh=-np.inf)
    with VideoSource(str(panning_video)) as source:
        ids = [set(live(f.image, f.time, f.index).ids.tolist()) for f in source]
    assert ids[0] and all(i == ids[0] for i in ids)


def test_session_writes_outputs_and_stops_at_max_frames(models, panning_video, tmp_path):
    runtime, detector = models
    seen = []
    summary = LiveSession(LivePose(runtime, detector), str(panning_video), output=str(tmp_path / "a.mp4"),
                          json_path=str(tmp_path / "a.jsonl"), max_frames=12, on_frame=seen.append).run()
    assert summary.frames == 12 and "max_frames" in summary.stop_reason and not summary.failed
    assert [f.index for f in seen] == list(range(12))
    assert count_frames(tmp_path / "a.mp4") == 12 and len(read_jsonl(tmp_path / "a.jsonl")) == 12
    assert summary.fps > 0 and summary.timings["pose"] > 0


def test_detection_schedule():
    schedule = DetectionSchedule(3)
    assert [schedule.scheduled(i) for i in range(7)] == [True, False, False, True, False, False, True]
    assert [schedule.due(i, tracked=2) for i in range(7)] == [True, False, False, True, False, False, True]
    assert all(schedule.due(i, tracked=0) for i in range(7))  # nobody tracked: look for persons now
    assert all(DetectionSchedule(1).due(i, tracked=4) for i in range(3))
    for every in (0, -1):
        with pytest.raises(InputError, match="detect_every must be >= 1"):
            DetectionSchedule(every)
    with pytest.raises(InputError, match="detect_every must be >= 1"):
        LivePose(None, None, detect_every=0)


def test_detects_on_schedule_and_whenever_nobody_is_tracked(models, tmp_path):
    """A clip that starts empty: the detector runs on frame 0 and on every frame until someone is found, then
    on the schedule's frames (3, 6, 9: counted from frame 0), with and without detecting ahead in a thread,
    which gives the same poses."""
    runtime, detector = models
    video = make_video(tmp_path / "v.mp4", 12, photo=DATA / "demo_media" / "soccer.png", blank=2)
    results = {}
    for overlap in (True, False):
        frames = []
        live = LivePose(runtime, detector, detect_every=3, keypoint_thresh=-np.inf)  # random weights: keep tracks
        LiveSession(live, str(video), overlap=overlap, on_frame=frames.append).run()
        assert [f.detected for f in frames] == [True, True, True, True, False, False, True, False, False, True,
                                                False, False]
        assert [len(f.ids) > 0 for f in frames] == [False, False] + [True] * 10
        assert [f.timings["detect"] > 0 for f in frames] == [f.detected for f in frames]
        results[overlap] = [dict(f.record(), timings_ms=None) for f in frames]
    assert results[True] == results[False]


# ---------------------------------------------------------------- the command


@pytest.mark.shared
@needs_cli
def test_cli_on_demo_video_writes_video_and_json_lines(pose_model, tmp_path):
    # the default model and detector: the newest conversion and YOLOX-Nano in the edgepose cache
    for folder, name, target in (("models", MODEL + "-random.onnx", pose_model),
                                 ("detectors", "yolox_nano.onnx", YOLOX)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).symlink_to(target)
    proc = run_webcam("--source", DEMO, "--output", "out.mp4", "--json", "out.jsonl", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "running headless" in proc.stderr and "end of file after 5 frames" in proc.stdout
    assert str(tmp_path / "models" / (MODEL + "-random.onnx")) in proc.stderr
    assert count_frames(tmp_path / "out.mp4") == 5
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert [r["frame"] for r in lines] == list(range(5))
    np.testing.assert_allclose([r["timestamp"] for r in lines], np.arange(5) / 5.0)  # demo.mp4 is 5 fps
    assert len(lines[0]["persons"]) >= 3  # (random pose weights: later frames may lose them)
    # --detect-every 5: frame 0, then again on any frame nobody was tracked into (after a frame without persons)
    due = [r["frame"] % 5 == 0 or not before["persons"] for before, r in zip([{"persons": []}] + lines, lines)]
    assert [r["detected"] for r in lines] == due and due[1] is False


@pytest.mark.shared
@pytest.mark.converter  # the Triton configuration is read with onnx
@needs_cli
def test_cli_with_a_detector_on_triton(pose_model, tmp_path, server):
    """--detector triton://HOST:PORT/NAME (a scripted Triton on loopback HTTP, configured as export-triton
    --detector configures it) gives the JSON lines of the same YOLOX ONNX as a file."""
    pytest.importorskip("tritonclient.http")
    pytest.importorskip("onnx")
    from edgepose.converters.triton_repo import model_config, read_onnx
    from triton_loopback import serve_onnx

    url = serve_onnx(server, "yolox_nano", model_config(read_onnx(YOLOX), "yolox_nano"), YOLOX)
    lines = {}
    for name, detector in (("file", YOLOX), ("triton", url)):
        proc = run_webcam("--source", DEMO, "--model", pose_model, "--detector", detector, "--headless",
                          "--detect-every", "2", "--json", name + ".jsonl", home=tmp_path)
        assert proc.returncode == 0, proc.stderr
        lines[name] = [dict(r, timings_ms=None) for r in read_jsonl(tmp_path / (name + ".jsonl"))]
    assert url in proc.stderr  # the detector it used
    assert len(lines["triton"]) == 5 and lines["triton"] == lines["file"]
    assert server.hits.count("/v2/models/yolox_nano/infer") == 1 + sum(r["detected"] for r in lines["triton"])


@needs_cli
def test_cli_without_a_model_says_how_to_make_one(tmp_path):
    proc = run_webcam("--headless", home=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert "edgepose convert mobile_pose_mobilenetv3_small" in proc.stderr and "--model" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.shared
@needs_cli
def test_cli_names_a_source_it_cannot_open(pose_model, tmp_path):
    proc = run_webcam("--source", "nowhere.mp4", "--model", pose_model, "--detector", YOLOX, "--headless",
                      "--json", "x.jsonl", home=tmp_path, timeout=60)
    assert proc.returncode == 1 and "nowhere.mp4" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.jsonl").exists()


@needs_cli
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_finalise_the_outputs(pose_model, tmp_path, sig):
    video = make_video(tmp_path / "long.mp4", 1500)
    proc = start_webcam("--source", video, "--model", pose_model, "--detector", YOLOX, "--headless",
                        "--output", "out.mp4", "--json", "out.jsonl", home=tmp_path)
    try:
        wait_for_lines(tmp_path / "out.jsonl", 10, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in out
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert 10 <= len(lines) < 1500
    assert count_frames(tmp_path / "out.mp4") == len(lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "out.jsonl", "out.mp4"]


# ---------------------------------------------------------------- RTSP streams


@needs_cli
@needs_rtsp
def test_rtsp_stream_end_is_reported_and_outputs_finalised(pose_model, tmp_path):
    with rtsp_server(frames=40) as (_, url):
        proc = run_webcam("--source", url, "--model", pose_model, "--detector", YOLOX, "--headless",
                          "--output", "out.mp4", "--json", "out.jsonl", "--read-timeout", "5", home=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "ended or dropped" in proc.stderr
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert 10 <= len(lines) <= 40  # a live source drops frames when the loop is slower than it
    assert all(len(r["persons"]) == 1 for r in lines if r["detected"])
    assert count_frames(tmp_path / "out.mp4") == len(lines)


@needs_cli
@needs_rtsp
def test_rtsp_server_killed_mid_stream(pose_model, tmp_path):
    with rtsp_server() as (server, url):
        proc = start_webcam("--source", url, "--model", pose_model, "--detector", YOLOX, "--headless",
                            "--json", "out.jsonl", "--read-timeout", "5", "--reconnect", "1", home=tmp_path)
        try:
            wait_for_lines(tmp_path / "out.jsonl", 5, proc)
            server.kill()
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 1 and "ended or dropped" in err, err
    assert "attempt 1 of 1" in err and "reconnecting failed: cannot open video source url 'rtsp://" in err
    assert len(read_jsonl(tmp_path / "out.jsonl")) >= 5


@needs_cli
@needs_rtsp
def test_rtsp_frozen_server_is_detected_within_the_read_timeout(pose_model, tmp_path):
    with rtsp_server() as (server, url):
        proc = start_webcam("--source", url, "--model", pose_model, "--detector", YOLOX, "--headless",
                            "--output", "out.mp4", "--json", "out.jsonl", "--read-timeout", "2", home=tmp_path)
        try:
            wait_for_lines(tmp_path / "out.jsonl", 5, proc)
            os.kill(server.pid, signal.SIGSTOP)
            frozen = time.monotonic()
            out, err = proc.communicate(timeout=30)
            took = time.monotonic() - frozen
        finally:
            proc.kill()
    assert proc.returncode == 1 and "no frame for 2 s" in err and "stalled" in err, err
    assert took < 2 + 4  # the timeout plus draining the frames already queued and closing
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert count_frames(tmp_path / "out.mp4") == len(lines) >= 5


@needs_cli
@needs_rtsp
def test_rtsp_reconnects_after_the_stream_ends(pose_model, tmp_path):
    # Each connection streams 50 frames (2 s); a live source drops the frames the loop cannot keep up
    # with (FFmpeg delivers the first second in a burst), so 40 frames take more than one connection.
    with rtsp_server(frames=50) as (_, url):
        proc = run_webcam("--source", url, "--model", pose_model, "--detector", YOLOX, "--headless",
                          "--json", "out.jsonl", "--reconnect", "1", "--max-frames", "40", "--read-timeout", "5",
                          home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "reconnecting to url 'rtsp://127.0.0.1" in proc.stderr and " reconnect" in proc.stdout
    assert "stopped after 40 frames" in proc.stdout
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert [r["frame"] for r in lines] == list(range(40))


# ---------------------------------------------------------------- several sources


class CountingRuntime:
    """The real Runtime, counting its batched pose calls (persons per image of each call)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.calls = []

    def estimate_many(self, images, boxes, **options):
        self.calls.append([len(b) for b in boxes])
        return self.runtime.estimate_many(images, boxes, **options)

    def __getattr__(self, name):
        return getattr(self.runtime, name)


class CountingDetector:
    """The real detector, counting its batched calls (images per call)."""

    def __init__(self, detector: YoloxDetector) -> None:
        self.detector = detector
        self.calls = []

    def detect_batch(self, images, image_is_rgb=False):
        self.calls.append(len(images))
        return self.detector.detect_batch(images, image_is_rgb)

    def __getattr__(self, name):
        return getattr(self.detector, name)


class Recorder:
    """A LiveObserver that records what it is told: ("frame", source, stats, record, image shape) and
    ("ended", source, reason)."""

    def __init__(self) -> None:
        self.events = []

    def publish(self, source, image, stats, record):
        self.events.append(("frame", source, stats, record, image.shape))

    def source_ended(self, source, reason):
        self.events.append(("ended", source, reason))


def test_per_source_paths(tmp_path):
    assert per_source_paths(None, 2, ".mp4") == [None, None]
    assert per_source_paths("o/cam{source}.mp4", 3, ".mp4") == ["o/cam0.mp4", "o/cam1.mp4", "o/cam2.mp4"]
    assert per_source_paths("out/", 2, ".jsonl") == [os.path.join("out/", "source%d.jsonl" % i) for i in range(2)]
    assert per_source_paths(tmp_path, 1, ".mp4") == [str(tmp_path / "source0.mp4")]  # an existing folder
    assert per_source_paths("one.mp4", 1, ".mp4") == ["one.mp4"]
    with pytest.raises(InputError, match=r"--json poses.jsonl is one file for 2 sources.*poses\{source\}.jsonl"):
        per_source_paths("poses.jsonl", 2, ".jsonl", "--json")


def test_session_over_several_files_batches_them_and_goes_on_when_one_ends(models, tmp_path):
    """Three files (6, 15 and 15 frames): each gets its own outputs, frame numbers, tracks and summary; the
    short one ends and the others go on; every tick is one pose call over the persons of all its sources,
    and each source's poses are those of a run over it alone."""
    runtime, detector = models
    lengths = (6, 15, 15)
    videos = [make_video(tmp_path / ("v%d.mp4" % i), n, photo=photo)
              for i, (n, photo) in enumerate(zip(lengths, (PERSON, DATA / "demo_media" / "soccer.png", PERSON)))]
    counting, recorder, seen = CountingRuntime(runtime), Recorder(), []
    live = LivePose(counting, detector, detect_every=4, keypoint_thresh=-np.inf)  # random weights: keep tracks
    # Without detect-ahead the sources deliver at once, so every tick has a frame of each source still going.
    session = LiveSession(live, [str(v) for v in videos], json_path=str(tmp_path / "poses{source}.jsonl"),
                          output=str(tmp_path / "videos") + "/", observers=[recorder], on_frame=seen.append,
                          overlap=False)
    summary = session.run()
    assert [s.frames for s in summary.sources] == list(lengths) and summary.frames == sum(lengths)
    assert [s.stop_reason for s in summary.sources] == ["end of file after %d frames" % n for n in lengths]
    assert summary.stop_reason == "all 3 sources stopped" and not summary.failed and not summary.interrupted
    for i, n in enumerate(lengths):
        lines = read_jsonl(tmp_path / ("poses%d.jsonl" % i))
        assert [(r["source"], r["frame"]) for r in lines] == [(i, f) for f in range(n)]
        assert count_frames(tmp_path / "videos" / ("source%d.mp4" % i)) == n
        assert [f.index for f in seen if f.source == i] == list(range(n))
    # One pose call per tick, over every frame of that tick; each frame in exactly one call.
    assert len(counting.calls) < sum(lengths) and max(len(c) for c in counting.calls) == 3
    assert sum(len(c) for c in counting.calls) == sum(lengths)
    assert sum(map(sum, counting.calls)) >= summary.persons > 0
    # The observers saw every frame, annotated, then each end once.
    frames = [e for e in recorder.events if e[0] == "frame"]
    assert [sum(e[1] == i for e in frames) for i in range(3)] == list(lengths)
    assert all(e[2]["state"] == "running" and e[3]["source"] == e[1] and e[4] == (240, 320, 3) for e in frames)
    assert set(frames[-1][2]) == {"fps", "persons", "timings_ms", "frames", "state"}
    ended = [e for e in recorder.events if e[0] == "ended"]
    assert sorted(e[1] for e in ended) == [0, 1, 2] and ended[0][1] == 0
    assert recorder.events.index(ended[0]) < len(recorder.events) - 3  # the others went on after source 0
    # Batched with the others, source 1 has the poses of a run over it alone (same ids, same keypoints).
    alone = LivePose(runtime, detector, detect_every=4, keypoint_thresh=-np.inf)
    LiveSession(alone, str(videos[1]), json_path=str(tmp_path / "alone.jsonl")).run()
    for got, want in zip(read_jsonl(tmp_path / "poses1.jsonl"), read_jsonl(tmp_path / "alone.jsonl")):
        assert got["detected"] == want["detected"]
        assert [p["id"] for p in got["persons"]] == [p["id"] for p in want["persons"]]
        np.testing.assert_allclose([p["keypoints"] for p in got["persons"]],
                                   [p["keypoints"] for p in want["persons"]], atol=0.05)


def test_several_sources_detect_ahead_in_batches_with_the_results_of_detecting_in_the_loop(models, tmp_path):
    """With detect-ahead (the default), the scheduled frames of the sources' reader threads go to the detector
    together (calls of several images), and every source gets the records of a run detecting in the loop."""
    runtime, detector = models
    videos = [make_video(tmp_path / ("v%d.mp4" % i), 13, photo=photo)
              for i, photo in enumerate((PERSON, DATA / "demo_media" / "soccer.png", PERSON))]
    records = {}
    for overlap in (False, True):
        counting = CountingDetector(detector)
        live = LivePose(runtime, counting, detect_every=4, keypoint_thresh=-np.inf)  # random weights: keep tracks
        out = tmp_path / ("overlap%d" % overlap)
        LiveSession(live, [str(v) for v in videos], json_path=str(out) + "/", overlap=overlap).run()
        records[overlap] = [[dict(r, timings_ms=None) for r in read_jsonl(out / ("source%d.jsonl" % i))]
                            for i in range(3)]
        assert sum(counting.calls) == 3 * 4  # frames 0, 4, 8, 12 of each source
        if overlap:
            assert max(counting.calls) > 1 and len(counting.calls) < 12
    assert records[True] == records[False]
    assert [[r["detected"] for r in lines] for lines in records[True]] == [[f % 4 == 0 for f in range(13)]] * 3


def test_several_sources_need_a_placeholder_or_a_folder(models, panning_video):
    with pytest.raises(InputError, match=r"\{source\}"):
        LiveSession(LivePose(*models), [str(panning_video)] * 2, output="out.mp4")


@needs_rtsp
def test_a_stalled_source_is_reported_while_the_others_go_on(models, tmp_path):
    """An RTSP stream frozen mid-way beside a file: the stream is reported stalled within its read timeout,
    a reconnect is tried and fails, the observers hear of it, and the file is processed to its end."""
    runtime, detector = models
    video = make_video(tmp_path / "long.mp4", 1000)  # outlasts the stall and the failed reconnect (~4 s)
    recorder, logs = Recorder(), []
    with rtsp_server() as (server, url):
        def freeze(frame):
            if frame.source == 0 and frame.index == 5:
                os.kill(server.pid, signal.SIGSTOP)

        live = LivePose(runtime, detector, keypoint_thresh=-np.inf)
        session = LiveSession(live, [url, str(video)], source_options=dict(read_timeout=1, open_timeout=10),
                              reconnect=1, reconnect_delay=0.1, json_path=str(tmp_path / "{source}.jsonl"),
                              observers=[recorder], on_frame=freeze, log=logs.append)
        summary = session.run()
    stream, file = summary.sources
    assert stream.failed and "reconnecting failed" in stream.stop_reason and summary.failed
    assert file.frames == 1000 and file.stop_reason == "end of file after 1000 frames" and not file.failed
    assert any(line.startswith("source 0: ") and "no frame for 1 s" in line and "stalled" in line for line in logs)
    assert any("source 0: reconnecting to url 'rtsp://127.0.0.1" in line for line in logs)
    states = [(e[1], e[2]["state"]) for e in recorder.events if e[0] == "frame"]
    stalled = states.index((0, "stalled"))
    assert (1, "running") in states[stalled:]  # the file went on while the stream was stalled
    ended = [e for e in recorder.events if e[0] == "ended"]
    assert [e[1] for e in ended] == [0, 1] and "reconnecting failed" in ended[0][2]
    assert len(read_jsonl(tmp_path / "0.jsonl")) == stream.frames >= 6
    assert len(read_jsonl(tmp_path / "1.jsonl")) == 1000


@pytest.mark.shared
@needs_cli
def test_cli_with_two_sources(pose_model, tmp_path):
    short, long = make_video(tmp_path / "short.mp4", 4), make_video(tmp_path / "long.mp4", 9)
    proc = run_webcam("-s", short, "-s", long, "--model", pose_model, "--detector", YOLOX, "--headless",
                      "--json", "out/", "--output", "out{source}.avi", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "13 frames in" in proc.stdout and "stopped: all 2 sources stopped" in proc.stdout
    assert "source 0 (%s): 4 frames in" % short in proc.stdout and "end of file after 9 frames" in proc.stdout
    assert [len(read_jsonl(tmp_path / "out" / ("source%d.jsonl" % i))) for i in (0, 1)] == [4, 9]
    assert [count_frames(tmp_path / ("out%d.avi" % i)) for i in (0, 1)] == [4, 9]
    proc = run_webcam("-s", short, "-s", long, "--model", pose_model, "--detector", YOLOX, "--headless",
                      "--json", "poses.jsonl", home=tmp_path, timeout=60)
    assert proc.returncode == 1 and "--json poses.jsonl is one file for 2 sources" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "poses.jsonl").exists()


@needs_cli
def test_ctrl_c_finalises_the_outputs_of_every_source(pose_model, tmp_path):
    videos = [make_video(tmp_path / ("long%d.mp4" % i), 1500) for i in range(2)]
    proc = start_webcam("-s", videos[0], "-s", videos[1], "--model", pose_model, "--detector", YOLOX,
                        "--headless", "--output", "out{source}.mp4", "--json", "out{source}.jsonl", home=tmp_path)
    try:
        for i in range(2):  # the sources need not keep in step (each detects ahead in its own reader)
            wait_for_lines(tmp_path / ("out%d.jsonl" % i), 10, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in out
    for i in range(2):
        lines = read_jsonl(tmp_path / ("out%d.jsonl" % i))
        assert 10 <= len(lines) < 1500 and {r["source"] for r in lines} == {i}
        assert count_frames(tmp_path / ("out%d.mp4" % i)) == len(lines)
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name]


# ---------------------------------------------------------------- long runs


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.slow
def test_memory_stays_flat_over_thousands_of_frames(models, tmp_path):
    runtime, detector = models
    video = make_video(tmp_path / "soak.mp4", 3000)
    rss = {}

    def sample(frame):
        if frame.index in (500, 2999):
            rss[frame.index] = rss_mb()

    live = LivePose(runtime, detector, keypoint_thresh=-np.inf)  # random weights: keep persons tracked
    summary = LiveSession(live, str(video), output=str(tmp_path / "soak_out.mp4"),
                          json_path=str(tmp_path / "soak.jsonl"), on_frame=sample).run()
    assert summary.frames == 3000 and summary.persons >= 3000
    assert rss[2999] - rss[500] < 30, rss
