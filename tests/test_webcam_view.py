"""`edgepose webcam --view` as a person runs it: two sources, a token, the page in headless Chromium."""
from __future__ import annotations

import queue
import re
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from support import DATA, chromium_driver, random_model, run_edgepose, start_edgepose

YOLOX = DATA / "yolox_nano_coco" / "yolox_nano.onnx"


def walking_video(path: Path, frames: int) -> Path:
    """``frames`` frames of the shared street photo panning slowly, 480x360 at 25 fps."""
    photo = cv2.imread(str(DATA / "demo_media" / "street_small.jpg"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (480, 360))
    for i in range(frames):
        writer.write(np.roll(cv2.resize(photo, (480, 360)), i, axis=1))
    writer.release()
    return path


def stderr_lines(proc) -> queue.Queue:
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    return lines


@pytest.mark.shared
def test_webcam_view_in_the_browser(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver(1000, 700)
    long_video, short_video = walking_video(tmp_path / "long.mp4", 3000), walking_video(tmp_path / "short.mp4", 10)
    proc = start_edgepose("webcam", "-s", long_video, "-s", short_video, "-m",
                          random_model("mobile_pose_mobilenetv3_small"), "--detector", YOLOX, "--headless",
                          "--view", "0", "--view-token", "s3cret", home=tmp_path)
    try:
        lines, url = stderr_lines(proc), None
        while url is None:
            line = lines.get(timeout=120)
            found = re.search(r"(http://127\.0\.0\.1:\d+/\S*)", line)
            url = found.group(1) if found else None
        assert "s3cret" not in line and "?token=" in line  # the token is never printed, its place is said
        with pytest.raises(urllib.error.HTTPError) as refused:  # no token, no page
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 403

        driver.get(url + "?token=s3cret")
        wait = WebDriverWait(driver, 120, poll_frequency=0.2)
        # YOLOX finds the pedestrians (random pose weights may lose them between detections: wait for a frame)
        wait.until(lambda d: re.search(r"[1-9]\d* persons? \u00b7 frame \d+",
                                       d.find_element(By.CSS_SELECTOR, "#source-0 .stats").text))
        img = driver.find_element(By.CSS_SELECTOR, "#source-0 img")
        wait.until(lambda d: img.get_property("naturalWidth") == 480)
        first = img.screenshot_as_png
        wait.until(lambda d: img.screenshot_as_png != first)  # the video moves
        badge = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#source-1.ended .badge"))
        assert badge.text.startswith("ended")  # the short source ended, the long one goes on
        assert driver.find_element(By.CSS_SELECTOR, "#source-0 .badge").text == "running"
        assert driver.save_screenshot(str(tmp_path / "webcam_view.png"))
    finally:
        driver.quit()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130


def test_webcam_view_beyond_loopback_needs_a_token(tmp_path):
    proc = run_edgepose("webcam", "-s", "nothing.mp4", "--view", "0.0.0.0:0", "--headless", home=tmp_path,
                        check=False, timeout=60)
    assert proc.returncode == 1 and "--view-token" in proc.stderr and "Traceback" not in proc.stderr
