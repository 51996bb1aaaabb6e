"""What the browser view (``edgepose webcam --view``, :class:`edgepose.live.LiveView`) costs the live loop.

One loop, four ways, on a 640x480 video of three persons (soccer.png panning, as in bench_webcam.py):
the source is decoded, YOLOX-Nano finds the persons every 5 frames, mobile_pose_mobilenetv3_small (FP32,
random weights: the same work as trained ones) estimates them, and each frame's JSON record is built.

- ``headless``: nothing else (``edgepose webcam --headless`` without ``--view``);
- ``overlay``: the overlay drawn on every frame as well (what ``--output`` needs), nothing served;
- ``view, nobody watching``: each frame's stats and record published to a LiveView that nobody watches (so
  nothing is drawn or encoded: :meth:`LiveView.wants_image` says no);
- ``view, HTTP reader``: the same while another process reads the MJPEG stream as fast as it comes and polls
  ``/stats`` twice a second, as the page does (a browser on another machine): the overlay is drawn, published
  and encoded for the images the view wants (``max_fps``, default 15 per second);
- ``view, Chromium``: the same while Debian's headless Chromium shows the page on this same machine (its
  decoding and painting take CPU from the loop as well).

Configurations alternate run by run; each is repeated ``--repeats`` times. A run's figure is its wall time per
frame, wall time and CPU time of this process (all its threads, the view's included: on a busy shared machine the
CPU time shows the work the view adds more steadily than the wall time). The overhead of a configuration is the
median of its ratios to ``headless`` paired within each round, with their range; other processes' CPU use during the
runs is reported.

    python benchmarks/bench_view.py [--frames 300] [--repeats 7] [--no-browser]
"""
import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_webcam import three_person_video  # noqa: E402
from bench_zoo_cpu import CpuMeter, cpu_flags, cpu_model  # noqa: E402
from support import DATA, chromium_driver, random_model  # noqa: E402

from edgepose.detector import YoloxDetector  # noqa: E402
from edgepose.live import LivePose, LiveView, draw_overlay  # noqa: E402
from edgepose.live.video import VideoSource  # noqa: E402
from edgepose.runtime import Runtime  # noqa: E402

#: The viewer of the ``view, HTTP reader`` runs: reads frames of /stream/0 as fast as they come, polls /stats.
READER = r"""
import sys, threading, time, urllib.request
base = sys.argv[1]
def poll():
    while True:
        urllib.request.urlopen(base + "stats", timeout=10).read()
        time.sleep(0.5)
threading.Thread(target=poll, daemon=True).start()
stream = urllib.request.urlopen(base + "stream/0", timeout=10)
while stream.read(65536):
    pass
"""


def run_loop(video: Path, live: LivePose, draw: bool, view: Optional[LiveView]) -> Tuple[float, ...]:
    """Milliseconds per frame of the loop over ``video``: wall time, CPU time (all threads of this process, the
    view's included), the loop thread's CPU time in the view's part (asking, drawing, publishing) and the CPU
    time of the view's threads; ``draw``: the overlay; ``view``: publish to it."""
    live.reset()
    frames, fps, in_view = 0, 0.0, 0.0
    with VideoSource(str(video)) as source:
        start, cpu = time.perf_counter(), time.process_time()
        for frame in iter(source.read, None):
            result = live(frame.image, frame.time, frames)
            record = result.record()
            frames += 1
            if view is not None:  # as edgepose webcam --view does: draw only what a viewer wants
                begin = time.thread_time()
                canvas = draw_overlay(frame.image, result, fps, live.keypoint_thresh) if view.wants_image(0) else None
                stats = {"fps": fps, "persons": len(result.ids), "timings_ms": result.timings,
                         "frames": frames, "state": "running"}
                view.publish(0, canvas, stats, record)
                in_view += time.thread_time() - begin
            elif draw:
                draw_overlay(frame.image, result, fps, live.keypoint_thresh)
            fps = frames / (time.perf_counter() - start)
        wall, used = time.perf_counter() - start, time.process_time() - cpu
        return tuple(1000.0 * t / frames for t in (wall, used, in_view, view_threads_cpu()))


def view_threads_cpu() -> float:
    """CPU seconds the view's threads still alive have used (the stream threads live through a run)."""
    return sum(time.clock_gettime(time.pthread_getcpuclockid(t.ident)) for t in threading.enumerate()
               if t.name.startswith("edgepose-view") and t.ident is not None)


Run = Callable[[LiveView], Tuple[float, ...]]


def with_view(run: Run) -> Tuple[float, ...]:
    with LiveView(["three persons"], port=0) as view:
        return run(view)


def with_reader(run: Run) -> Tuple[float, ...]:
    with LiveView(["three persons"], port=0) as view:
        reader = subprocess.Popen([sys.executable, "-c", READER, view.url])
        try:
            time.sleep(0.5)  # connected before the first frame
            return run(view)
        finally:
            reader.terminate()
            reader.wait(10)


def with_browser(driver) -> Callable[[Run], Tuple[float, ...]]:
    def attach(run: Run) -> Tuple[float, ...]:
        with LiveView(["three persons"], port=0) as view:
            driver.get(view.url)
            try:
                return run(view)
            finally:
                driver.get("about:blank")
    return attach


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-browser", action="store_true", help="leave out the Chromium configuration")
    ap.add_argument("--quiet", type=float, default=0.3, help="wait until other processes use at most this many "
                    "CPUs before each round")
    ap.add_argument("--max-wait", type=float, default=30.0, help="seconds to wait for that")
    args = ap.parse_args()

    runtime = Runtime(str(random_model("mobile_pose_mobilenetv3_small")))
    detector = YoloxDetector(DATA / "yolox_nano_coco" / "yolox_nano.onnx", intra_op_threads=1)
    # Random weights give meaningless joint scores: every joint counts, so the three persons stay tracked.
    live = LivePose(runtime, detector, detect_every=5, keypoint_thresh=-np.inf)
    driver = None if args.no_browser else chromium_driver(1280, 800)
    configs: Dict[str, Callable[[Path], Tuple[float, ...]]] = {
        "headless": lambda v: run_loop(v, live, False, None),
        "overlay": lambda v: run_loop(v, live, True, None),
        "view, nobody watching": lambda v: with_view(lambda view: run_loop(v, live, False, view)),
        "view, HTTP reader": lambda v: with_reader(lambda view: run_loop(v, live, False, view)),
    }
    if driver is not None:
        configs["view, Chromium"] = lambda v: with_browser(driver)(lambda view: run_loop(v, live, False, view))
    ms: Dict[str, List[float]] = {name: [] for name in configs}
    cpu: Dict[str, List[float]] = {name: [] for name in configs}
    parts: Dict[str, List[Tuple[float, float]]] = {name: [] for name in configs}
    load: List[float] = []
    meter = CpuMeter([os.getpid()])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            video = three_person_video(Path(tmp) / "three.mp4", args.frames)
            run_loop(video, live, True, None)  # warm-up
            for _ in range(args.repeats):
                meter.wait_quiet(args.quiet, args.max_wait)
                for name, run in configs.items():
                    meter.start()
                    wall, used, in_loop, in_threads = run(video)
                    ms[name].append(wall)
                    cpu[name].append(used)
                    parts[name].append((in_loop, in_threads))
                    load.append(meter.stop() or 0.0)
    finally:
        if driver is not None:
            driver.quit()

    print("## Browser view: cost on the live loop (issue 13) — `bench_view.py`\n")
    print("- machine: %s, %d CPUs (%s); %s" % (cpu_model(), len(os.sched_getaffinity(0)), cpu_flags(),
                                              datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")))
    print("- Python %s, onnxruntime %s, OpenCV %s, NumPy %s" % (platform.python_version(), onnxruntime.__version__,
                                                              cv2.__version__, np.__version__))
    print("- command: `python benchmarks/bench_view.py --frames %d --repeats %d%s`; other processes' CPU use "
          "during the runs: median %.2f, max %.2f CPUs\n" % (args.frames, args.repeats,
                                                             " --no-browser" if args.no_browser else "",
                                                             statistics.median(load), max(load)))
    print("| configuration | wall ms/frame: median (min-max) | fps | wall vs headless: median of paired ratios "
          "(min .. max) | CPU ms/frame: median (min-max) | CPU vs headless: median (min .. max) |")
    print("|---|---|---|---|---|---|")
    for name in configs:
        print("| %s | %s | %.1f | %s | %s | %s |" % (name, spread(ms[name]), 1000.0 / statistics.median(ms[name]),
                                                  overhead(ms[name], ms["headless"]), spread(cpu[name]),
                                                  overhead(cpu[name], cpu["headless"])))

    print("\nThe view's own work, measured inside the same runs as CPU time (robust to other processes' load): the "
          "loop thread's in asking, drawing and publishing, plus the view's threads' (JPEG encoding, sending), per "
          "frame. Their sum bounds what the view adds to the loop time (the loop thread's share adds to it in full, "
          "the threads' share at most in full); against the median headless loop (%.2f ms/frame):\n"
          % statistics.median(ms["headless"]))
    print("| configuration | loop thread CPU ms/frame | view threads CPU ms/frame | sum, % of headless loop time |")
    print("|---|---|---|---|")
    for name in configs:
        if "view" in name:
            loop_ms = statistics.median(p[0] for p in parts[name])
            thread_ms = statistics.median(p[1] for p in parts[name])
            print("| %s | %.3f | %.3f | %.1f %% |" % (name, loop_ms, thread_ms,
                                                     100 * (loop_ms + thread_ms) / statistics.median(ms["headless"])))


def spread(values: List[float]) -> str:
    return "%.2f (%.2f-%.2f)" % (statistics.median(values), min(values), max(values))


def overhead(values: List[float], base: List[float]) -> str:
    """Median and range of ``values`` over ``base``, paired run by run, as a percentage change."""
    ratios = [100.0 * (v / b - 1) for v, b in zip(values, base)]
    return "%+.1f %% (%+.1f .. %+.1f)" % (statistics.median(ratios), min(ratios), max(ratios))

if __name__ == "__main__":
    main()
