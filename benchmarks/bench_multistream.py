"""Many cameras, one batch: one `edgepose webcam` over four sources against four `edgepose webcam` at once.

Four 640x480 sources with three persons each (the panning soccer.png video of bench_webcam.py, one file
read by four independent sources), YOLOX-Nano every 5 frames, the INT8 CPU-form
mobile_pose_mobilenetv3_small (random weights, converted into a temporary cache), headless, JSON lines
written. Per round, interleaved: (a) one process `edgepose webcam -s V -s V -s V -s V` (its defaults:
detect-ahead in the reader threads batched over the sources, the pose batch split over the cores with
`--parallel batch`), (a') the same with `--parallel ops` (ONNX Runtime's spinning thread pool, the
single-source default), (b) four processes `edgepose webcam -s V` started together (the command's
defaults), (c) the same four with `--threads 1` (one ORT thread each, the fairer split of 2 cores among
4 processes). Each process stops
its sources after `--frames` frames. Aggregate frames/s: all frames over the span from the first loop's
start to the last loop's end (each process reports its loop time; model loading is not counted).
Detector calls per frame are counted from the JSON lines.

Random weights make joint scores meaningless, so `--kpt-thresh 0` counts every joint and persons stay
tracked between detections, as with trained weights (with the default 0.2 the detector would run on most
frames: the script reports the calls it made).

`--soak-minutes M` instead runs the library's loop (`LiveSession`, the same one the command runs, with
the command's settings for several sources) over four looping copies of the video for M minutes, samples
the process RSS every 5 s and reports start, end, maximum and the slope (least squares, after the first
minute's warm-up).

    python benchmarks/bench_multistream.py [--frames 300] [--repeats 3]
    python benchmarks/bench_multistream.py --soak-minutes 10
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from bench_webcam import three_person_video  # noqa: E402
from bench_zoo_cpu import CpuMeter, cpu_model  # noqa: E402
from support import DATA  # noqa: E402

MODEL = "mobile_pose_mobilenetv3_small"
YOLOX = DATA / "yolox_nano_coco" / "yolox_nano.onnx"
SOURCES = 4
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def edgepose(*args: str) -> list:
    return [sys.executable, "-m", "edgepose", *args]


def convert_int8(home: Path) -> Path:
    """The INT8 CPU-form model with random weights, converted into ``home``'s cache."""
    subprocess.run(edgepose("convert", MODEL, "--random-weights", "--int8", "--target", "cpu", "--force",
                            "--calib", str(DATA / "coco_kpt_mini" / "test_coco.json")),
                   env=dict(os.environ, EDGEPOSE_HOME=str(home)), check=True, capture_output=True)
    return next((home / "models").glob("*int8-cpu.onnx"))


def webcam_runs(commands: list, home: Path) -> list:
    """Start ``commands`` together; per process (frames, loop seconds, loop end time)."""
    env = dict(os.environ, EDGEPOSE_HOME=str(home))
    procs = [subprocess.Popen(c, env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    ends = [None] * len(procs)
    while None in ends:
        for i, p in enumerate(procs):
            if ends[i] is None and p.poll() is not None:
                ends[i] = time.monotonic()
        time.sleep(0.01)
    runs = []
    for p, end in zip(procs, ends):
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit("edgepose webcam failed (%d):\n%s" % (p.returncode, err))
        first = out.splitlines()[0].split()  # "N frames in S s (F fps), ..."
        runs.append((int(first[0]), float(first[3]), end))
    return runs


def aggregate(runs: list) -> float:
    """All frames over the span from the first loop's start to the last loop's end."""
    span = max(end for _, _, end in runs) - min(end - seconds for _, seconds, end in runs)
    return sum(frames for frames, _, _ in runs) / span


def detector_calls(folder: Path) -> tuple:
    lines = [json.loads(line) for path in folder.glob("*.jsonl") for line in path.read_text().splitlines()]
    return sum(r["detected"] for r in lines), len(lines), sum(len(r["persons"]) for r in lines)


class WithChildren(CpuMeter):
    """CpuMeter counting this process and its finished children as its own (the webcam processes)."""

    def _own(self) -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


def cpu_flags() -> list:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("Flags")), [])
    return [f for f in FLAGS if f in flags]


def benchmark(args: argparse.Namespace, home: Path, model: Path, video: Path) -> None:
    common = ["-m", str(model), "--detector", str(YOLOX), "--headless", "--max-frames", str(args.frames),
              "--kpt-thresh", "0", "--detect-every", "5"]
    configs = {
        "one process, 4 sources": lambda out: [edgepose("webcam", *["-s", str(video)] * SOURCES, *common,
                                                        "--json", str(out) + "/")],
        "one process, 4 sources, --parallel ops": lambda out: [edgepose("webcam", *["-s", str(video)] * SOURCES,
                                                                        *common, "--parallel", "ops",
                                                                        "--json", str(out) + "/")],
        "4 processes (defaults)": lambda out: [edgepose("webcam", "-s", str(video), *common, "--json",
                                                        str(out / ("p%d.jsonl" % i))) for i in range(SOURCES)],
        "4 processes, --threads 1": lambda out: [edgepose("webcam", "-s", str(video), *common, "--threads", "1",
                                                          "--json", str(out / ("p%d.jsonl" % i)))
                                                 for i in range(SOURCES)],
    }
    fps = {name: [] for name in configs}
    calls = {name: [] for name in configs}
    noise = {name: [] for name in configs}
    meter = WithChildren([])
    for r in range(args.repeats):
        for c, (name, make) in enumerate(configs.items()):
            out = home / ("out-%d-%d" % (r, c))
            out.mkdir()
            meter.wait_quiet(args.quiet, args.max_wait)
            meter.start()
            fps[name].append(aggregate(webcam_runs(make(out), home)))
            noise[name].append(meter.stop() or 0.0)
            calls[name].append(detector_calls(out))
            print("round %d, %s: %.1f aggregate fps" % (r + 1, name, fps[name][-1]), file=sys.stderr)

    print("## Many cameras, one batch — `bench_multistream.py`\n")
    print("- machine: %s, %d CPUs, flags %s; %s" % (cpu_model(), len(os.sched_getaffinity(0)), " ".join(cpu_flags()),
                                                    datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")))
    print("- Python %s, onnxruntime %s, OpenCV %s, NumPy %s" % (platform.python_version(), onnxruntime.__version__,
                                                                 cv2.__version__, np.__version__))
    print("- command: `python benchmarks/bench_multistream.py --frames %d --repeats %d`" % (args.frames, args.repeats))
    print("- %d sources x %d frames 640x480, 3 persons each, detector every 5 frames, INT8 cpu-form %s (random "
          "weights, --kpt-thresh 0), headless, JSON lines; rounds interleaved\n" % (SOURCES, args.frames, MODEL))
    print("| configuration | aggregate fps, each round | median | vs 4 processes (defaults) | detector calls "
          "per frame | persons per frame | other load (CPUs) |")
    print("|---|---|---|---|---|---|---|")
    base = statistics.median(fps["4 processes (defaults)"])
    for name in configs:
        detected, frames, persons = calls[name][-1]
        print("| %s | %s | %.1f | %.2fx | %.3f | %.2f | %s |" % (
            name, ", ".join("%.1f" % v for v in fps[name]), statistics.median(fps[name]),
            statistics.median(fps[name]) / base, detected / frames, persons / frames,
            ", ".join("%.2f" % v for v in noise[name])))
    ratios = [a / b for a, b in zip(fps["one process, 4 sources"], fps["4 processes (defaults)"])]
    print("\nRatio one process / 4 processes (defaults) per round: %s (median %.2fx)"
          % (", ".join("%.2f" % v for v in ratios), statistics.median(ratios)))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def soak(minutes: float, model: Path, video: Path, out: Path) -> None:
    """Four looping sources through LiveSession for ``minutes``, stopped like Ctrl-C; RSS every 5 s."""
    from edgepose.detector import YoloxDetector
    from edgepose.live import LivePose, LiveSession
    from edgepose.runtime import Runtime

    live = LivePose(Runtime(str(model), parallel="batch"), YoloxDetector(YOLOX, intra_op_threads=1), detect_every=5,
                    keypoint_thresh=-np.inf)  # random weights: keep persons tracked
    samples = []
    done = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while not done.wait(5.0):
            samples.append(((time.monotonic() - start) / 60.0, rss_mb()))

    def stop_when_done(frame) -> None:
        if samples and samples[-1][0] >= minutes:
            raise KeyboardInterrupt  # ends the run as Ctrl-C does: outputs finalised

    session = LiveSession(live, [str(video)] * SOURCES, source_options=dict(loop=True),
                          json_path=str(out / "soak{source}.jsonl"), on_frame=stop_when_done)
    threading.Thread(target=sample, daemon=True).start()
    summary = session.run()
    done.set()
    t, rss = np.array(samples).T
    warm = t >= 1.0
    slope = np.polyfit(t[warm], rss[warm], 1)[0] if warm.sum() > 2 else float("nan")
    print("## Soak: %d looping sources for %.1f minutes (%s)\n" % (
        SOURCES, minutes, datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")))
    print("- %d frames (%.1f aggregate fps), %.2f persons per frame, stopped: %s" % (
        summary.frames, summary.fps, summary.persons / max(summary.frames, 1), summary.stop_reason))
    print("- RSS MB: first sample (5 s) %.1f, at 1 min %.1f, end %.1f, min %.1f, max %.1f; slope after the first "
          "minute %.3f MB/min (%d samples)" % (rss[0], rss[np.argmax(warm)], rss[-1], rss.min(), rss.max(), slope,
                                              len(rss)))
    minutes_at = [int(np.argmin(np.abs(t - m))) for m in range(int(minutes) + 1)]
    print("- RSS MB each minute: %s" % ", ".join("%.1f" % rss[i] for i in minutes_at))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300, help="frames per source")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--soak-minutes", type=float, default=0.0, help="run the memory soak instead (0: off)")
    ap.add_argument("--quiet", type=float, default=0.3, help="wait until other processes use at most this "
                    "many CPUs before each run")
    ap.add_argument("--max-wait", type=float, default=60.0, help="seconds to wait for that")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        model = convert_int8(home)
        video = three_person_video(home / "three.mp4", max(args.frames, 300))
        if args.soak_minutes:
            soak(args.soak_minutes, model, video, home)
        else:
            benchmark(args, home, model, video)


if __name__ == "__main__":
    main()
