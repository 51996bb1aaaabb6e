"""The live view in the browser (edgepose.live.view): addresses and bindings, tokens, slow and stalled viewers,
closing, and the page in a real headless Chromium fed by the live pipeline on the shared demo video."""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edgepose.errors import InputError
from edgepose.live.view import LiveView, check_view_binding, parse_view_address
from support import DATA, LOOPBACK, chromium_driver, random_model, require_shared

DEMO = DATA / "demo_media" / "demo.mp4"
YOLOX = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
MODEL = "mobile_pose_mobilenetv3_small"
STATS = {"fps": 12.5, "persons": 2, "timings_ms": {"pre": 1.0, "detect": 0.0, "pose": 9.5, "post": 0.4},
         "frames": 1, "state": "running"}


def get(url: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    """(status, Content-Type, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def noise(seed: int, size=(1080, 1920)) -> np.ndarray:
    """An image JPEG cannot shrink much (about 1.5 MB at quality 80): a few fill a socket's buffers."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def view_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("edgepose-view") and t.is_alive()]


class MjpegReader:
    """The JPEGs of a multipart/x-mixed-replace response, one by one (parts end at the next boundary)."""

    DELIMITER = b"\r\n--edgepose-frame\r\n"

    def __init__(self, response) -> None:
        self.response, self.buffer = response, b"\r\n"
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=edgepose-frame"

    def next(self) -> bytes:
        while self.DELIMITER not in self.buffer[1:]:
            chunk = self.response.read1(65536)
            assert chunk, "the stream ended before a frame"
            self.buffer += chunk
        start = self.buffer.index(self.DELIMITER)
        end = self.buffer.index(self.DELIMITER, start + 1)
        headers, _, image = self.buffer[start + len(self.DELIMITER):end].partition(b"\r\n\r\n")
        assert headers == b"Content-Type: image/jpeg"
        self.buffer = self.buffer[end:]
        return image


# ---------------------------------------------------------------- addresses and bindings


@pytest.mark.parametrize("text, expected", [("8080", ("127.0.0.1", 8080)), ("0.0.0.0:9000", ("0.0.0.0", 9000)),
                                            ("localhost:0", ("localhost", 0)), ("[::1]:8080", ("::1", 8080)),
                                            (" 192.168.1.5:80 ", ("192.168.1.5", 80))])
def test_parse_view_address(text, expected):
    assert parse_view_address(text) == expected


@pytest.mark.parametrize("text", ["", "web", ":8080", "host:", "70000", "::1:8080", "host:-1", "host:80x", "80\u00b2"])
def test_parse_view_address_refuses_bad_text(text):
    with pytest.raises(InputError, match=r"\[HOST:\]PORT"):
        parse_view_address(text)


def test_check_view_binding():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert check_view_binding(host, None) is None
        assert check_view_binding(host, "secret") is None
    for host in ("0.0.0.0", "192.168.1.5", "::", "camera-box.lan"):
        with pytest.raises(InputError, match="--view-token TOKEN is required"):
            check_view_binding(host, None)
        warning = check_view_binding(host, "secret")
        assert "reachable from the network at %s" % host in warning and "secret" not in warning
    with pytest.raises(InputError, match="--view-token is empty"):
        check_view_binding("0.0.0.0", "")
    with pytest.raises(InputError, match="--view-token TOKEN is required"):
        LiveView(["cam"], host="0.0.0.0")
    with pytest.raises(InputError, match="port 0..65535"):
        LiveView(["cam"], port=70000)


def test_port_in_use_is_named():
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match="port %d is in use" % port):
            LiveView(["cam"], port=port).start()
    assert view_threads() == []


# ---------------------------------------------------------------- the server


def test_token_is_required_on_every_request():
    token = "s3cret/+ token"
    lines = []
    with LiveView(["cam"], port=0, token=token, log=lines.append) as view:
        view.publish(0, noise(0, (48, 64)), STATS, {"frame": 0, "persons": []})
        base = "http://%s:%d/" % (LOOPBACK, view.port)
        assert view.url == base + "?token=s3cret%2F%2B%20token"
        for path in ("", "stats", "stream/0", "frame/0"):
            for query in ("", "?token=wrong", "?token=s3cret"):
                status, kind, body = get(base + path + query)
                assert status == 403 and kind.startswith("text/plain") and b"needs its token" in body
        status, kind, body = get(view.url)
        assert status == 200 and kind == "text/html; charset=utf-8" and b"edgepose live view" in body
        status, kind, body = get(base + "stats" + view.url[len(base):])
        assert status == 200 and kind == "application/json"
        (entry,) = json.loads(body)["sources"]
        assert entry["name"] == "cam" and entry["state"] == "running" and entry["stats"]["persons"] == 2
        status, kind, body = get(base + "frame/0" + view.url[len(base):])
        assert status == 200 and kind == "image/jpeg" and cv2.imdecode(np.frombuffer(body, np.uint8), 1).shape == (
            48, 64, 3)
        assert get(base + "nothing" + view.url[len(base):])[0] == 404
    assert not any(token in line or "s3cret" in line for line in lines)


def test_without_token_only_loopback_host_names_are_answered():
    with LiveView(["cam"], port=0) as view:
        assert view.url == "http://127.0.0.1:%d/" % view.port
        assert get(view.url)[0] == 200
        assert get("http://localhost:%d/stats" % view.port)[0] == 200
        status, _, body = get(view.url, headers={"Host": "attacker.example:%d" % view.port})
        assert status == 403 and b"attacker.example" in body


def test_publish_never_waits_for_a_stalled_viewer_and_close_drops_it():
    with LiveView(["cam", "other"], port=0) as view:
        view.publish(0, noise(0), STATS, {"frame": 0})
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((LOOPBACK, view.port))
        stalled.sendall(b"GET /stream/0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never reads
        response = urllib.request.urlopen(view.url + "stream/0", timeout=10)
        assert response.headers["Cache-Control"] == "no-store"
        reader = MjpegReader(response)
        reader.next()
        slowest = 0.0
        for i in range(1, 30):  # ~40 MB of JPEG: far more than the stalled socket's buffers hold
            image = noise(i)
            start = time.perf_counter()
            view.publish(0, image, dict(STATS, frames=i + 1), {"frame": i})
            slowest = max(slowest, time.perf_counter() - start)
            time.sleep(0.02)
        # A blocking publish would wait for the stalled socket (WRITE_TIMEOUT, 10 s): this bounds a hang.
        assert slowest < 0.5
        # The reading viewer skipped what it had no time for and gets the newest frame.
        newest = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, view.jpeg_quality])[1].tobytes()
        deadline = time.monotonic() + 20
        while reader.next() != newest:
            assert time.monotonic() < deadline, "the reading viewer never got the newest frame"
        start = time.monotonic()
        view.close()
        assert time.monotonic() - start < 3.0  # the stalled viewer's blocked write ends at once
        assert view_threads() == []
        response.close()
        stalled.close()


def test_images_are_wanted_only_while_someone_watches():
    with LiveView(["streamed", "snapshots"], port=0, max_fps=20) as view:
        assert not view.wants_image(0) and not view.wants_image(1)  # nobody watches: nothing to draw
        view.publish(0, None, STATS, {"frame": 0})  # stats and record without an image
        (entry, _) = view.stats()["sources"]
        assert (entry["state"], entry["seq"], entry["stats"]["persons"]) == ("running", -1, 2)
        with urllib.request.urlopen(view.url + "stream/0", timeout=10) as response:
            stream = MjpegReader(response)
            deadline = time.monotonic() + 10
            while not view.wants_image(0):
                assert time.monotonic() < deadline, "an open stream did not ask for images"
                time.sleep(0.01)
            view.publish(0, noise(0, (24, 32)), STATS, {"frame": 1})
            assert not view.wants_image(0)  # at most max_fps images per second
            stream.next()
            time.sleep(0.06)
            assert view.wants_image(0) and not view.wants_image(1)
        assert get(view.url + "frame/1")[0] == 404  # no image yet, but now someone watches
        assert view.wants_image(1)
        view.publish(1, noise(1, (24, 32)), STATS, {"frame": 0})
        assert get(view.url + "frame/1")[1] == "image/jpeg"


def test_ended_and_stalled_sources(monkeypatch):
    import edgepose.live.view as view_module

    with LiveView(["a", "b", "c"], port=0) as view:
        assert [s["state"] for s in view.stats()["sources"]] == ["waiting"] * 3
        view.publish(0, noise(0, (32, 32)), STATS, {"frame": 0})
        view.publish(1, noise(1, (32, 32)), dict(STATS, state="stalled"), {"frame": 0})
        view.publish(2, noise(2, (32, 32)), STATS, {"frame": 0})
        stream = urllib.request.urlopen(view.url + "stream/2", timeout=10)
        MjpegReader(stream).next()
        view.source_ended(2, "end of file")
        assert stream.read() == b""  # the stream of an ended source ends after its last image
        monkeypatch.setattr(view_module, "STALL_AFTER", 0.05)
        time.sleep(0.1)
        a, b, c = view.stats()["sources"]
        assert (a["state"], b["state"], c["state"], c["reason"]) == ("stalled", "stalled", "ended", "end of file")
        assert a["reason"].startswith("no frame for")
        with pytest.raises(InputError, match="not one of the view's 3 sources"):
            view.publish(3, noise(0, (8, 8)), STATS, {})


# ---------------------------------------------------------------- a real browser on the live pipeline


class Pipeline(threading.Thread):
    """The live loop on the shared demo video (its 5 frames, looped), publishing to ``view``: source 0 until
    stopped, source 1 (the same video, frames in reverse) ends after ``short`` frames."""

    def __init__(self, view: LiveView, short: int = 8, fps: float = 8.0) -> None:
        super().__init__(name="test-pipeline", daemon=True)
        self.view, self.short, self.period = view, short, 1.0 / fps
        self.stop = threading.Event()
        self.persons: set[int] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def _run(self) -> None:
        from edgepose.detector import YoloxDetector
        from edgepose.live import LivePose, draw_overlay
        from edgepose.live.video import VideoSource
        from edgepose.runtime import Runtime

        with VideoSource(str(DEMO)) as source:
            frames = [f.image for f in iter(source.read, None)]
        runtime = Runtime(str(random_model(MODEL)))
        detector = YoloxDetector(YOLOX, intra_op_threads=1)
        # Random weights give meaningless joint scores: every joint counts, so the persons stay tracked.
        lives = [LivePose(runtime, detector, keypoint_thresh=-np.inf) for _ in range(2)]
        count = [0, 0]
        while not self.stop.is_set():
            start = time.perf_counter()
            for s, live in enumerate(lives):
                if s == 1 and count[1] == self.short:
                    continue
                i = count[s] % len(frames)
                if i == 0:
                    live.reset()  # the video starts over
                image = frames[i if s == 0 else -1 - i]
                result = live(image, count[s] / 5.0, count[s])
                count[s] += 1
                canvas = (draw_overlay(image, result, 1.0 / self.period, live.keypoint_thresh)
                          if self.view.wants_image(s) else None)
                stats = {"fps": 1.0 / self.period, "persons": len(result.ids), "timings_ms": result.timings,
                         "frames": count[s], "state": "running"}
                self.view.publish(s, canvas, stats, result.record())
                self.persons.add(len(result.ids))
                if s == 1 and count[1] == self.short:
                    self.view.source_ended(1, "end of the video after %d frames" % self.short)
            self.stop.wait(max(0.0, self.period - (time.perf_counter() - start)))


@pytest.mark.shared
def test_browser_shows_live_sources(tmp_path):
    require_shared()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver(1000, 700)
    view = LiveView(["demo.mp4", "demo.mp4 (reversed, stops)"], port=0, token="view-test-token").start()
    pipeline = Pipeline(view)
    try:
        # Without the token the browser gets a refusal, not the page.
        driver.get("http://%s:%d/" % (LOOPBACK, view.port))
        assert "forbidden" in driver.find_element(By.TAG_NAME, "body").text

        driver.get(view.url)
        assert driver.title == "edgepose live view"
        wait = WebDriverWait(driver, 120, poll_frequency=0.2)
        wait.until(lambda d: view.wants_image(0) and view.wants_image(1))  # the page opened both streams
        pipeline.start()
        # YOLOX finds the pedestrians of the street video (random pose weights may lose them between detections)
        stats = wait.until(lambda d: re.search(r"([1-9]\d*) persons? \u00b7 frame (\d+)",
                                               d.find_element(By.CSS_SELECTOR, "#source-0 .stats").text))
        assert pipeline.error is None
        persons, first_frame = int(stats.group(1)), int(stats.group(2))
        assert persons in pipeline.persons
        img = driver.find_element(By.CSS_SELECTOR, "#source-0 img")
        wait.until(lambda d: img.get_property("naturalWidth") == 960)
        shots = [img.screenshot_as_png]
        wait.until(lambda d: img.screenshot_as_png != shots[0])  # the video shows changing frames
        wait.until(lambda d: int(re.search(r"frame (\d+)", d.find_element(By.CSS_SELECTOR, "#source-0 .stats").text)
                                 .group(1)) > first_frame)  # and its frame counter goes on
        assert "pose" in driver.find_element(By.CSS_SELECTOR, "#source-0 .stages").text
        assert '"persons"' in driver.find_element(By.CSS_SELECTOR, "#source-0 pre").text

        badge = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#source-1.ended .badge"))
        assert badge.text == "ended: end of the video after 8 frames"
        assert driver.find_element(By.CSS_SELECTOR, "#source-0 .badge").text == "running"

        shot = tmp_path / "browser_view.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0
        target = os.environ.get("EDGEPOSE_VIEW_SCREENSHOT")
        if target:  # the README's picture: `EDGEPOSE_VIEW_SCREENSHOT=docs/browser_view.png pytest ...`
            # 32 levels per channel keep the PNG of two video frames under 300 KB.
            assert cv2.imwrite(target, (cv2.imread(str(shot)) & 0xF8) | 0x04, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    finally:
        pipeline.stop.set()
        if pipeline.is_alive():
            pipeline.join(30)
        driver.quit()
        view.close()
    assert pipeline.error is None
    assert view_threads() == []


@pytest.mark.shared
def test_browser_shows_sources_past_five_as_snapshots():
    """A browser holds at most 6 connections per server: sources 0-4 stream, the others refresh JPEGs."""
    require_shared()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from edgepose.live.video import VideoSource

    with VideoSource(str(DEMO)) as source:
        frames = [f.image for f in iter(source.read, None)]
    driver = chromium_driver(1000, 700)
    try:
        with LiveView(["camera %d" % i for i in range(7)], port=0) as view:
            for i in range(7):
                view.publish(i, frames[i % len(frames)], STATS, {"frame": 0})
            driver.get(view.url)
            wait = WebDriverWait(driver, 60, poll_frequency=0.2)
            images = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grid img")[6:] and
                                d.find_elements(By.CSS_SELECTOR, "#grid img"))
            wait.until(lambda d: all(img.get_property("naturalWidth") == 960 for img in images))
            assert [img.get_attribute("src").split("?")[0].rsplit("/", 2)[-2] for img in images] == \
                ["stream"] * 5 + ["frame"] * 2
            before = images[6].screenshot_as_png
            view.publish(6, frames[(6 + 1) % len(frames)], dict(STATS, frames=2), {"frame": 1})
            wait.until(lambda d: "seq=1" in images[6].get_attribute("src"))
            wait.until(lambda d: images[6].screenshot_as_png != before)
    finally:
        driver.quit()
    assert view_threads() == []
