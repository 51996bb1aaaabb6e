"""End-to-end speed of the live loop (`edgepose webcam`), headless with JSON-lines output.

A 640x480 video of three persons (soccer.png, panning) is generated; YOLOX-Nano finds the persons
and mobile_pose_mobilenetv3_small (FP32, random weights: the same work as trained ones) estimates
them. Everything a run does is counted: decoding, detection, pose, tracking, smoothing, writing.
Each configuration runs ``--repeats`` times, alternating, each run after waiting for other processes
to go quiet; the median run's frames per second is reported with its mean milliseconds per frame of
each stage and the CPU time other processes took meanwhile. The batched pose call alone (crops,
model, decoding for the three persons of one frame) is timed too: no loop that runs it on every
frame can be faster than it.

Random weights make joint scores meaningless, so the joint threshold is disabled here (every joint
counts) to keep all three persons tracked between detections, as trained weights do.

    python benchmarks/bench_webcam.py [--frames 600] [--repeats 3] [--threads 2]
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_zoo_cpu import CpuMeter, cpu_model  # noqa: E402
from support import DATA, random_model  # noqa: E402

from edgepose.detector import YoloxDetector  # noqa: E402
from edgepose.live import STAGES, LivePose, LiveSession  # noqa: E402
from edgepose.runtime import Runtime  # noqa: E402
from edgepose.live.video import VideoSource  # noqa: E402


def three_person_video(path: Path, frames: int, fps: float = 30.0) -> Path:
    """soccer.png (three players) scaled to 700 px wide, a 640x480 window panning across it."""
    image = cv2.imread(str(DATA / "demo_media" / "soccer.png"))
    big = cv2.resize(image, (700, round(image.shape[0] * 700 / image.shape[1])), interpolation=cv2.INTER_AREA)
    span_x, span_y = big.shape[1] - 640, big.shape[0] - 480
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for i in range(frames):
        phase = abs((i / 90.0) % 2 - 1)
        x, y = int(span_x * phase), int(span_y * phase)
        writer.write(np.ascontiguousarray(big[y:y + 480, x:x + 640]))
    writer.release()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="ORT threads of the pose model (default: ORT's)")
    ap.add_argument("--quiet", type=float, default=0.2, help="wait until other processes use at most this "
                    "many CPUs before each run")
    ap.add_argument("--max-wait", type=float, default=120.0, help="seconds to wait for that")
    args = ap.parse_args()

    runtime = Runtime(str(random_model("mobile_pose_mobilenetv3_small")), threads=args.threads)
    yolox = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
    one_thread = YoloxDetector(yolox, intra_op_threads=1)  # the webcam command's default
    all_threads = YoloxDetector(yolox)
    configs = [("detect every 5 frames", dict(detector=one_thread, detect_every=5), {}),
               ("detect every 5, no overlap", dict(detector=one_thread, detect_every=5), dict(overlap=False)),
               ("detect every 5, detector on all threads", dict(detector=all_threads, detect_every=5), {}),
               ("detect every frame", dict(detector=one_thread, detect_every=1), {})]
    runs = {name: [] for name, _, _ in configs}
    noise = {name: [] for name, _, _ in configs}
    meter = CpuMeter([os.getpid()])
    pose_alone = []
    with tempfile.TemporaryDirectory() as tmp:
        video = three_person_video(Path(tmp) / "three.mp4", args.frames)
        with VideoSource(str(video)) as source:
            frame = source.read().image
        boxes = one_thread.detect(frame)
        for _ in range(args.repeats):
            meter.wait_quiet(args.quiet, args.max_wait)
            pose_alone.append(pose_call_ms(runtime, frame, boxes))
            for name, live_opts, session_opts in configs:
                live = LivePose(runtime, keypoint_thresh=-np.inf, **live_opts)
                session = LiveSession(live, str(video), json_path=str(Path(tmp) / "out.jsonl"), **session_opts)
                meter.wait_quiet(args.quiet, args.max_wait)
                meter.start()
                runs[name].append(session.run())
                noise[name].append(meter.stop() or 0.0)

    print("## Webcam\n")
    print("- machine: %s, %d CPUs; %s" % (cpu_model(), len(os.sched_getaffinity(0)),
                                         datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")))
    print("- Python %s, onnxruntime %s, OpenCV %s, NumPy %s; ORT threads of the pose model: %s, of the "
          "detector: 1 unless said" % (platform.python_version(), onnxruntime.__version__, cv2.__version__,
                                       np.__version__, args.threads or "ORT's default (one per core)"))
    print("- command: `python benchmarks/bench_webcam.py --frames %d --repeats %d%s`"
          % (args.frames, args.repeats, " --threads %d" % args.threads if args.threads else ""))
    print("- %d frames 640x480, headless, JSON lines written; median fps of %d runs; stage ms are means per "
          "frame (detect: in its own thread when overlapped)\n" % (args.frames, args.repeats))
    print("| configuration | fps | vs first | persons/frame | %s | other load (CPUs) |"
          % " | ".join("%s ms" % s for s in STAGES))
    print("|---|---|---|---|%s---|" % ("---|" * len(STAGES)))
    base = None
    for name, _, _ in configs:
        order = sorted(range(len(runs[name])), key=lambda i: runs[name][i].fps)
        mid = order[len(order) // 2]  # the median run
        run = runs[name][mid]
        base = base or run.fps
        print("| %s | %.1f | %.2fx | %.2f | %s | %.2f |" % (
            name, run.fps, run.fps / base, run.persons / run.frames,
            " | ".join("%.2f" % run.timings[s] for s in STAGES), noise[name][mid]))
    ms = statistics.median(pose_alone)
    print("\nThe batched pose call alone on the first frame (%d persons: crops, model, decoding; median of 100 "
          "calls, median of %d repeats): %.2f ms, a ceiling of %.1f fps for anything that runs it on every frame."
          % (len(boxes), args.repeats, ms, 1000.0 / ms))


def pose_call_ms(runtime: Runtime, frame: np.ndarray, boxes: np.ndarray, calls: int = 100) -> float:
    """Median milliseconds of one ``runtime.estimate`` on ``frame`` with ``boxes``."""
    runtime.estimate(frame, boxes)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        runtime.estimate(frame, boxes)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


if __name__ == "__main__":
    main()
