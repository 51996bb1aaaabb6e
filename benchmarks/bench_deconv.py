#!/usr/bin/env python
"""What the exact deconvolution rewrite costs and buys on CPU (ONNX Runtime).

Run from the project venv (pip install -e .[convert]):

    python benchmarks/bench_deconv.py [--model simple_pose_resnet18_v1b] [--batch 8] [--threads 2]
                                      [--rounds 10] [--markdown OUT.md]

Six variants of one Simple Pose model (random weights: they do not change the work done):
FP32 as exported (three ConvTranspose 4x4/2), FP32 rewritten (``deconv_to_conv_depth_to_space``:
3x3 Conv to 4*C + DepthToSpace), FP32 trimmed (``trim=True``: 2x2 Conv + DepthToSpace + Slice), and
the same three as INT8 Q/DQ (CPU form: uint8 activations, per-channel int8 weights), quantised here
with ``onnxruntime.quantization.quantize_static`` on random inputs and the heatmap conv left FP32:
good for timing, not for accuracy. Per variant: GFLOPs (2 x MACs per person of the FP32 graph), the
median latency of ``--rounds`` runs with the variants interleaved run by run (so machine noise hits
all alike), the ratio to the FP32 export, and, from ONNX Runtime's profiler (run after the timing),
the share of node time spent in the head's upsampling: the ConvTranspose nodes, or what replaced
them (Conv, its ReLU, DepthToSpace, Slice, and in INT8 the DequantizeLinear of the Conv's output).
``other load`` is the CPU time other processes took during the timed rounds, in CPUs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
import onnxruntime as ort

from bench_zoo_cpu import CpuMeter, cpu_flags, cpu_model, make_session
from edgepose.converters.export import build_onnx, count_gflops
from edgepose.converters.onnx_io import save_onnx
from edgepose.converters.graph import RandomWeights
from edgepose.converters.rewrite import deconv_to_conv_depth_to_space
from edgepose.converters.zoo import get_entry


def variants(name: str) -> Dict[str, onnx.ModelProto]:
    fp32 = build_onnx(get_entry(name), RandomWeights(0), "random")
    return {"ConvTranspose": fp32, "rewrite (3x3 Conv + D2S)": deconv_to_conv_depth_to_space(fp32),
            "trim (2x2 Conv + D2S + Slice)": deconv_to_conv_depth_to_space(fp32, trim=True)}


def quantize_int8(model: onnx.ModelProto, hw: Tuple[int, int], folder: Path, tag: str) -> bytes:
    """Q/DQ INT8 (uint8 activations, per-channel int8 weights), heatmap conv excluded; timing only."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class RandomBatches(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((2, 3, *hw)).astype(np.float32)} for _ in range(2)])

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            return next(self.batches, None)

    src, dst = folder / (tag + ".onnx"), folder / (tag + "-int8.onnx")
    save_onnx(model, src)
    quantize_static(str(src), str(dst), RandomBatches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=[model.graph.node[-1].name])
    return dst.read_bytes()


def head_share(model_bytes: bytes, x: np.ndarray, threads: int, heads: List[str], runs: int,
               folder: Path, tag: str) -> float:
    """The share of node time spent in nodes whose name starts with one of ``heads``."""
    sess = make_session(model_bytes, threads, "all", str(folder / tag))
    feed = {"input": x}
    for _ in range(runs + 1):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = [e for e in json.load(f) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(events) // (runs + 1)
    events = events[per_run:]  # drop the warm-up run
    head = sum(e["dur"] for e in events if e["name"].startswith(tuple(heads)))
    return head / (sum(e["dur"] for e in events) or 1)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="simple_pose_resnet18_v1b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="timed runs per variant")
    parser.add_argument("--profile-runs", type=int, default=3)
    parser.add_argument("--wait-quiet", type=float, default=120.0,
                        help="seconds to wait at most for other processes to use < 0.3 CPUs before timing")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)

    entry = get_entry(args.model)
    fp32 = variants(args.model)
    heads = [n.name for n in fp32["ConvTranspose"].graph.node if n.op_type == "ConvTranspose"]
    x = np.random.default_rng(1).standard_normal((args.batch, 3, *entry.input_size)).astype(np.float32)
    rows: List[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        blobs: Dict[str, bytes] = {}
        for tag, model in fp32.items():
            rows.append({"precision": "FP32", "form": tag, "gflops": count_gflops(model)})
            blobs["FP32 " + tag] = model.SerializeToString()
        for i, (tag, model) in enumerate(fp32.items()):
            rows.append({"precision": "INT8", "form": tag, "gflops": rows[i]["gflops"]})
            blobs["INT8 " + tag] = quantize_int8(model, entry.input_size, folder, "v%d" % i)
        sessions = [make_session(blob, args.threads, "all") for blob in blobs.values()]
        for sess in sessions:  # warm-up
            sess.run(None, {"input": x})
        meter = CpuMeter([os.getpid()])
        meter.wait_quiet(0.3, args.wait_quiet)
        meter.start()
        times: List[List[float]] = [[] for _ in sessions]
        for _ in range(args.rounds):
            for sess, ts in zip(sessions, times):
                start = time.perf_counter()
                sess.run(None, {"input": x})
                ts.append(time.perf_counter() - start)
        load = meter.stop()
        for i, (row, blob) in enumerate(zip(rows, blobs.values())):
            row["head_share"] = head_share(blob, x, args.threads, heads, args.profile_runs, folder, "p%d" % i)
    base = statistics.median(times[0])
    for row, ts in zip(rows, times):
        row["ms"] = 1000 * statistics.median(ts)
        row["ratio"] = base / statistics.median(ts)

    lines = [
        "- Date: %s; machine: %s (%s), %d threads, batch %d, %d interleaved rounds, other load %s CPUs"
        % (datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), cpu_model(), cpu_flags(),
           args.threads, args.batch, args.rounds, "%.2f" % load if load is not None else "?"),
        "- ONNX Runtime %s (CPUExecutionProvider, ORT_ENABLE_ALL), onnx %s, NumPy %s, Python %s"
        % (ort.__version__, onnx.__version__, np.__version__, platform.python_version()),
        "- Command: `python benchmarks/bench_deconv.py %s`" % " ".join(argv if argv is not None else sys.argv[1:]),
        "",
        "%s, input %dx%d, batch %d:" % (args.model, *entry.input_size, args.batch),
        "",
        "| precision | upsampling | GFLOPs/person | ms/batch (median) | speed-up vs FP32 export | "
        "upsampling ms (share x median) | upsampling share of node time |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append("| %s | %s | %.2f | %.0f | %.2fx | %.0f | %.0f%% |" % (
            r["precision"], r["form"], r["gflops"], r["ms"], r["ratio"], r["ms"] * r["head_share"],
            100 * r["head_share"]))
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
