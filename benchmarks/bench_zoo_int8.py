#!/usr/bin/env python
"""The pose zoo on this CPU: FP32 vs INT8 (cpu form) speed and agreement, and a throughput-vs-AP plot.

Run from the project venv:

    python benchmarks/bench_zoo_int8.py --models simple_pose_resnet18_v1b,mobile_pose_mobilenetv3_small \
        --markdown zoo_int8.md --json zoo_int8.json --plot benchmarks/zoo_throughput_ap.png

Per model (default: all 16 of ``edgepose.converters.zoo.list_models()``):

1. export the FP32 ONNX with random weights (seed 0), as ``edgepose export --random`` does;
2. make the INT8 cpu form with ``make_int8(..., target="cpu", force=True)``, calibrated on
   ``<shared>/data/coco_kpt_mini/test_coco.json`` (shared: ``$EDGEPOSE_SHARED`` or ``../shared``);
   its report gives the FP32-vs-INT8 agreement (mean OKS, largest keypoint error in crop pixels) on
   the held-out crops. Random weights: these agreement figures are indicative only;
3. time both in ONNX Runtime (CPUExecutionProvider, ``--threads`` intra-op threads, one batch of
   ``--batch`` random inputs); rounds alternate FP32 and INT8 so machine noise hits both alike; the
   medians over rounds are reported as persons/s and the speed-up is their ratio (the JSON also
   has the median of the per-round ratios and the raw times).

Prints a markdown table and draws a throughput (log x) vs published COCO AP (no flip, GluonCV's zoo
table) figure with OpenCV only.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("EDGEPOSE_SHARED") or HERE.parents[1] / "shared")
CALIB = SHARED / "data" / "coco_kpt_mini" / "test_coco.json"


def short_name(name: str) -> str:
    s = name.replace("simple_pose_", "SP ").replace("mobile_pose_", "MP ").replace("alpha_pose_", "AP ")
    return s.replace("_v1b", "-v1b").replace("_v1d", "-v1d").replace("_coco", "").replace("resnet", "R")


def make_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_once(sess, name: str, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    sess.run(None, {name: x})
    return time.perf_counter() - t0


def bench_model(name: str, workdir: Path, args: argparse.Namespace) -> Dict[str, object]:
    from edgepose.converters.export import export_zoo_model
    from edgepose.converters.precision import make_int8
    from edgepose.converters.zoo import get_entry

    entry = get_entry(name)
    t_start = time.time()
    fp32 = workdir / ("%s.onnx" % name)
    int8 = workdir / ("%s.int8.onnx" % name)
    export_zoo_model(entry, fp32, random=True, seed=args.seed)
    rep = make_int8(fp32, int8, calib_source=args.calib, target="cpu", force=True, progress=False)
    if rep.precision != "int8":
        raise RuntimeError("%s: no INT8 model written (%s)" % (name, rep.reason))
    t_prep = time.time() - t_start

    h, w = entry.input_size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, h, w)).astype(np.float32)
    sessions = {"fp32": make_session(fp32, args.threads), "int8": make_session(Path(rep.path), args.threads)}
    inputs = {k: s.get_inputs()[0].name for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(args.warmup):
            run_once(s, inputs[k], x)
    times: Dict[str, List[float]] = {"fp32": [], "int8": []}
    for r in range(args.rounds):
        order = ("fp32", "int8") if r % 2 == 0 else ("int8", "fp32")
        for k in order:
            times[k].append(run_once(sessions[k], inputs[k], x))
    ratios = [a / b for a, b in zip(times["fp32"], times["int8"])]
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "model": name, "input": "%dx%d" % (h, w), "ap": entry.ap[0], "gflops": entry.gflops,
        "fp32_ms": med["fp32"] * 1e3, "int8_ms": med["int8"] * 1e3,
        "fp32_pps": args.batch / med["fp32"], "int8_pps": args.batch / med["int8"],
        "speedup": med["fp32"] / med["int8"], "speedup_median_of_ratios": statistics.median(ratios),
        "mean_oks": float(rep.agreement.mean_oks), "max_px_error": float(rep.agreement.max_px_error),
        "passed_gate": bool(rep.passed), "held_out_persons": int(rep.agreement.persons),
        "raw_s": times, "prep_s": t_prep, "loadavg_1min": os.getloadavg()[0],
    }
    del sessions
    if not args.keep:
        for p in (fp32, int8, Path(rep.path)):
            if p.exists():
                p.unlink()
    return row


def markdown_table(rows: List[dict], batch: int) -> str:
    head = ("| model | input | published AP | FP32 persons/s | INT8 persons/s | speed-up | "
            "mean OKS agreement | max px error |\n|---|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append("| %s | %s | %.1f | %.1f | %.1f | %.2fx | %.3f | %.1f |" % (
            r["model"], r["input"], r["ap"], r["fp32_pps"], r["int8_pps"], r["speedup"],
            r["mean_oks"], r["max_px_error"]))
    return "\n".join(lines)


# ---------------------------------------------------------------- plot (OpenCV only)

def draw_plot(rows: List[dict], out: Path, subtitle: str, size=(1100, 760)) -> None:
    import cv2

    W, H = size
    img = np.full((H, W, 3), 255, np.uint8)
    left, right, top, bottom = 90, 40, 70, 80
    pw, ph = W - left - right, H - top - bottom
    xs = [r["fp32_pps"] for r in rows] + [r["int8_pps"] for r in rows]
    ys = [r["ap"] for r in rows]
    lx0 = math.log10(min(xs) / 1.4)
    lx1 = math.log10(max(xs) * 1.4)
    y0 = math.floor((min(ys) - 2) / 2) * 2
    y1 = math.ceil((max(ys) + 4) / 2) * 2

    def px(v: float) -> int:
        return int(round(left + (math.log10(v) - lx0) / (lx1 - lx0) * pw))

    def py(v: float) -> int:
        return int(round(top + (y1 - v) / (y1 - y0) * ph))

    font = cv2.FONT_HERSHEY_SIMPLEX
    black, grid = (0, 0, 0), (225, 225, 225)
    # grid and ticks: x decades with 2 and 5 subticks
    for dec in range(int(math.floor(lx0)), int(math.ceil(lx1)) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** dec
            if not (lx0 <= math.log10(v) <= lx1 + 1e-9):
                continue
            x = px(v)
            cv2.line(img, (x, top), (x, top + ph), grid, 1)
            cv2.line(img, (x, top + ph), (x, top + ph + 6), black, 1)
            label = ("%g" % v)
            (tw, _), _ = cv2.getTextSize(label, font, 0.5, 1)
            cv2.putText(img, label, (x - tw // 2, top + ph + 24), font, 0.5, black, 1, cv2.LINE_AA)
    step = 2 if (y1 - y0) <= 24 else 5
    yv = y0
    while yv <= y1 + 1e-9:
        y = py(yv)
        cv2.line(img, (left, y), (left + pw, y), grid, 1)
        cv2.line(img, (left - 6, y), (left, y), black, 1)
        label = "%g" % yv
        (tw, th), _ = cv2.getTextSize(label, font, 0.5, 1)
        cv2.putText(img, label, (left - 10 - tw, y + th // 2), font, 0.5, black, 1, cv2.LINE_AA)
        yv += step
    cv2.rectangle(img, (left, top), (left + pw, top + ph), black, 1)
    # titles
    title = "GluonCV pose zoo: throughput on this CPU vs published COCO AP"
    (tw, _), _ = cv2.getTextSize(title, font, 0.7, 2)
    cv2.putText(img, title, ((W - tw) // 2, 30), font, 0.7, black, 2, cv2.LINE_AA)
    (tw, _), _ = cv2.getTextSize(subtitle, font, 0.45, 1)
    cv2.putText(img, subtitle, ((W - tw) // 2, 52), font, 0.45, (80, 80, 80), 1, cv2.LINE_AA)
    xl = "persons/s on this CPU (log scale)"
    (tw, _), _ = cv2.getTextSize(xl, font, 0.6, 1)
    cv2.putText(img, xl, (left + (pw - tw) // 2, H - 25), font, 0.6, black, 1, cv2.LINE_AA)
    yl = "COCO val2017 AP (no flip, published)"
    (tw, th), _ = cv2.getTextSize(yl, font, 0.6, 1)
    tmp = np.full((th + 10, tw + 4, 3), 255, np.uint8)
    cv2.putText(tmp, yl, (2, th + 2), font, 0.6, black, 1, cv2.LINE_AA)
    tmp = cv2.rotate(tmp, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y_off = top + (ph - tmp.shape[0]) // 2
    img[y_off:y_off + tmp.shape[0], 12:12 + tmp.shape[1]] = tmp
    # data
    c_fp32, c_int8 = (200, 90, 30), (40, 40, 220)  # BGR: blue, red
    placed: List[tuple] = []
    marks = [(px(r[k]) - 8, py(r["ap"]) - 8, px(r[k]) + 8, py(r["ap"]) + 8)
             for r in rows for k in ("fp32_pps", "int8_pps")]
    for r in sorted(rows, key=lambda r: r["ap"]):
        a, b = (px(r["fp32_pps"]), py(r["ap"])), (px(r["int8_pps"]), py(r["ap"]))
        cv2.arrowedLine(img, a, b, (150, 150, 150), 1, cv2.LINE_AA, tipLength=min(0.3, 12.0 / max(1, abs(b[0] - a[0]))))
        cv2.circle(img, a, 6, c_fp32, -1, cv2.LINE_AA)
        cv2.drawMarker(img, b, c_int8, cv2.MARKER_TRIANGLE_UP, 13, 2, cv2.LINE_AA)
        label = "%s (%.2fx)" % (short_name(r["model"]), r["speedup"])
        (tw, th), _ = cv2.getTextSize(label, font, 0.42, 1)
        lx = min(max((a[0] + b[0]) // 2 - tw // 2, left + 4), left + pw - 4 - tw)
        ly = b[1] - 10
        # avoid overlapping earlier labels and markers by nudging up/down
        cands = [(dx, dy) for dy in (0, 24, -14, 38, -28, 52, -42, 66, -56, 80, -70, 94, -84, 108, -98)
                 for dx in (0, -tw // 2 - 10, tw // 2 + 10)]
        for dx, dy in cands:
            box = (lx + dx, ly + dy - th, lx + dx + tw, ly + dy + 2)
            if box[0] < left + 2 or box[2] > left + pw - 2 or box[1] < top + 2 or box[3] > top + ph - 2:
                continue
            if not any(box[0] < q[2] and q[0] < box[2] and box[1] < q[3] and q[1] < box[3]
                       for q in placed + marks):
                lx += dx
                ly += dy
                # a leader line (dot at the end) ties the label to its arrow's midpoint
                mid = ((a[0] + b[0]) // 2, b[1])
                end = (lx + tw // 2, ly + 3 if ly < mid[1] else ly - th - 3)
                cv2.line(img, end, mid, (120, 180, 120), 1, cv2.LINE_AA)
                cv2.circle(img, mid, 2, (120, 180, 120), -1, cv2.LINE_AA)
                break
        placed.append((lx, ly - th, lx + tw, ly + 2))
        cv2.putText(img, label, (lx, ly), font, 0.42, (30, 30, 30), 1, cv2.LINE_AA)
    # legend: the plot corner with fewest markers and labels
    lw, lh = 190, 58
    corners = [(left + pw - lw - 10, top + 10), (left + 10, top + ph - lh - 10),
               (left + pw - lw - 10, top + ph - lh - 10), (left + 10, top + 10)]

    def clash(c):
        return sum(c[0] - 5 < q[2] and q[0] < c[0] + lw + 5 and c[1] - 5 < q[3] and q[1] < c[1] + lh + 5
                   for q in placed + marks)
    x0, y0l = min(corners, key=clash)
    cv2.rectangle(img, (x0, y0l), (x0 + lw, y0l + lh), (255, 255, 255), -1)
    cv2.rectangle(img, (x0, y0l), (x0 + lw, y0l + lh), (160, 160, 160), 1)
    cv2.circle(img, (x0 + 18, y0l + 18), 6, c_fp32, -1, cv2.LINE_AA)
    cv2.putText(img, "FP32", (x0 + 34, y0l + 23), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.drawMarker(img, (x0 + 18, y0l + 41), c_int8, cv2.MARKER_TRIANGLE_UP, 13, 2, cv2.LINE_AA)
    cv2.putText(img, "INT8 (cpu form)", (x0 + 34, y0l + 46), font, 0.5, black, 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), img):
        raise RuntimeError("could not write %s" % out)


def main(argv: Optional[List[str]] = None) -> int:
    from edgepose.converters.zoo import list_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(e.name for e in list_models()),
                    help="comma-separated zoo names (default: all 16)")
    ap.add_argument("--calib", type=Path, default=CALIB, help="calibration source (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5, help="alternating FP32/INT8 timing rounds")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="random-weight seed")
    ap.add_argument("--workdir", type=Path, default=None, help="where the ONNX files go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the ONNX files")
    ap.add_argument("--plot", type=Path, default=HERE / "zoo_throughput_ap.png")
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--replot", type=Path, nargs="+", default=None,
                    help="only redraw the plot and print the table from --json files (later files win)")
    args = ap.parse_args(argv)

    if args.replot:
        datas = [json.loads(p.read_text()) for p in args.replot]
        order = {e.name: i for i, e in enumerate(list_models())}
        rows = {r["model"]: r for d in datas for r in d["rows"]}  # a later file's row replaces an earlier one
        rows = sorted(rows.values(), key=lambda r: order.get(r["model"], len(order)))
        for r in rows:  # speed-up as the ratio of the medians shown (older JSON had the median of ratios)
            r["speedup"] = r["fp32_ms"] / r["int8_ms"]
        print(markdown_table(rows, args.batch))
        draw_plot(rows, args.plot, datas[0]["subtitle"])
        print("plot: %s" % args.plot)
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    tmpdir = None
    if args.workdir is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="zoo_int8_")
        workdir = Path(tmpdir.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    subtitle = "ONNX Runtime CPU, %d threads, batch %d; random weights (seed %d); %s" % (
        args.threads, args.batch, args.seed, datetime.date.today().isoformat())
    rows = []
    for name in names:
        t0 = time.time()
        row = bench_model(name, workdir, args)
        rows.append(row)
        print("%-34s FP32 %7.1f ms  INT8 %7.1f ms  %.2fx  OKS %.3f  max %.1f px  (%.0f s)" % (
            name, row["fp32_ms"], row["int8_ms"], row["speedup"], row["mean_oks"], row["max_px_error"],
            time.time() - t0), file=sys.stderr, flush=True)
        if args.json:  # written after every model, so a cut-short run keeps what it measured
            args.json.write_text(json.dumps({"subtitle": subtitle, "rows": rows}, indent=1))
    table = markdown_table(rows, args.batch)
    print(table)
    if args.plot:
        draw_plot(rows, args.plot, subtitle)
        print("plot: %s" % args.plot, file=sys.stderr)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps({"subtitle": subtitle, "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=1))
    if tmpdir is not None:
        tmpdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
