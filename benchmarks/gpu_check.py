#!/usr/bin/env python
"""GPU check: the zoo's FP32, FP16 and INT8 (Q/DQ) models on a CUDA machine, against CPU FP32.

One command, no network, under 8 minutes:

    python benchmarks/gpu_check.py --json gpu_check.json

Per model (default: all 16 zoo entries, cheapest first; no model starts with less than 30 s of
``--budget``, 400 s, left, and no TensorRT build with less than 90 s; what did not fit is listed at
the end, to run with ``--models``):

1. export the FP32 ONNX with random weights (seed 0), its FP16 variant, and the INT8 Q/DQ model
   (``--target tensorrt``, ``force``: random weights cannot pass the accuracy gate), calibrated on
   ``<shared>/data/coco_kpt_mini/test_coco.json`` (``--shared``, ``$EDGEPOSE_SHARED`` or ``../shared``);
2. run the 14 COCO persons of that file through ``edgepose.Runtime`` on ONNX Runtime's CPU provider
   (FP32: the reference), then each variant on ONNX Runtime's CUDA provider and, when TensorRT is
   importable, the FP16 and INT8 engines built by ``build_engine`` (TensorRT backend); each row gives
   the heatmaps' largest difference relative to the reference's peak, the mean OKS agreement of the
   keypoints (COCO sigmas, box area) and the largest keypoint difference in image pixels. Random
   weights make near-flat heatmaps, so keypoint agreement is a lower bound of what trained weights give;
3. time the backend alone on random input at ``--batches`` (median of ``--repeats`` runs after warm-up)
   and print persons/s beside the original MXNet model's V100 figure (batch 64, GluonCV's table).

Without ONNX Runtime's CUDA provider it prints ``no CUDA provider: skipping GPU rows`` and exits 0.
``--provider CPUExecutionProvider`` runs every step on the CPU instead (a quick check of the script).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = Path(os.environ.get("EDGEPOSE_SHARED") or HERE.parents[1] / "shared")
COCO_FILE = Path("data") / "coco_kpt_mini" / "test_coco.json"
SKIP_MESSAGE = "no CUDA provider: skipping GPU rows"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="", help="comma-separated zoo names (default: all, cheapest first)")
    p.add_argument("--batches", default="1,8,64", help="batch sizes to time (default 1,8,64)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per batch (default 20)")
    p.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared data folder (../shared)")
    p.add_argument("--provider", default="CUDAExecutionProvider", help="ONNX Runtime provider under test")
    p.add_argument("--no-tensorrt", action="store_true", help="skip the TensorRT engines")
    p.add_argument("--budget", type=float, default=400.0, help="time budget in seconds (400)")
    p.add_argument("--workdir", type=Path, help="keep the models here (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the rows and the machine as JSON")
    return p.parse_args(argv)


def load_persons(coco_file: Path) -> List[tuple]:
    """(image, boxes x1 y1 x2 y2, box areas) per image of a COCO keypoints file."""
    import cv2

    data = json.loads(coco_file.read_text())
    persons = []
    for image in data["images"]:
        boxes = [a["bbox"] for a in data["annotations"]
                 if a["image_id"] == image["id"] and a.get("category_id", 1) == 1 and not a.get("iscrowd")]
        if not boxes:
            continue
        pixels = cv2.imread(str(coco_file.parent / image["file_name"]))
        if pixels is None:
            raise SystemExit("cannot read %s" % (coco_file.parent / image["file_name"]))
        xywh = np.array(boxes, np.float32)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        persons.append((pixels, xyxy, xywh[:, 2] * xywh[:, 3]))
    return persons


def outputs(runtime, persons: List[tuple]) -> tuple:
    """Heatmaps and keypoints (image pixels) of every person, through ``runtime``'s backend."""
    from edgepose.decode import decode
    from edgepose.transforms import preprocess

    heatmaps, keypoints = [], []
    for image, boxes, _ in persons:
        crops = preprocess(image, boxes, runtime.meta, image_is_rgb=False)
        hm = runtime.infer(crops.batch)
        heatmaps.append(hm.astype(np.float32))
        keypoints.append(decode(hm, crops, runtime.meta)[0])
    return np.concatenate(heatmaps), np.concatenate(keypoints)


def agreement(reference: tuple, other: tuple, areas: np.ndarray) -> Dict[str, float]:
    """Heatmap difference relative to the reference peak, mean OKS agreement and largest pixel error."""
    from edgepose.keypoints import COCO_OKS_SIGMAS

    ref_hm, ref_kp = reference
    hm, kp = other
    rel = float(np.abs(hm - ref_hm).max() / max(float(np.abs(ref_hm).max()), 1e-12))
    dist = np.linalg.norm(kp.astype(np.float64) - ref_kp, axis=2)
    sigmas = 2 * np.asarray(COCO_OKS_SIGMAS)
    oks = np.exp(-dist ** 2 / (2 * areas[:, None] * sigmas ** 2)).mean(axis=1)
    return {"heatmap_rel_err": rel, "mean_oks": float(oks.mean()), "max_px": float(dist.max())}


def throughput(runtime, batches: List[int], repeats: int) -> Dict[int, float]:
    """Persons/s of the backend alone on random input, per batch size (median of ``repeats`` runs)."""
    h, w = runtime.meta.input_size
    rng = np.random.default_rng(0)
    result = {}
    for batch in batches:
        x = rng.standard_normal((batch, 3, h, w)).astype(np.float32)
        for _ in range(3):
            runtime.infer(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            runtime.infer(x)
            times.append(time.perf_counter() - t0)
        result[batch] = batch / statistics.median(times)
    return result


class Budget:
    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def check_model(entry, persons: List[tuple], workdir: Path, args: argparse.Namespace, batches: List[int],
                budget: Budget, use_trt: bool, say) -> List[dict]:
    import onnx

    from edgepose import Runtime
    from edgepose.converters.export import export_zoo_model
    from edgepose.converters.onnx_io import save_onnx
    from edgepose.converters.fp16 import to_fp16
    from edgepose.converters.precision import make_int8

    areas = np.concatenate([p[2] for p in persons]).astype(np.float64)
    paths = {"fp32": workdir / (entry.name + ".onnx"), "fp16": workdir / (entry.name + "-fp16.onnx"),
             "int8": workdir / (entry.name + "-int8.onnx")}
    export_zoo_model(entry, paths["fp32"], random=True, seed=0)
    save_onnx(to_fp16(onnx.load(str(paths["fp32"]))), paths["fp16"])
    report = make_int8(paths["fp32"], paths["int8"], calib_source=args.shared / COCO_FILE, target="tensorrt",
                       force=True, progress=False)
    if report.precision != "int8":
        raise RuntimeError("%s: no INT8 model written (%s)" % (entry.name, report.reason))
    with Runtime(str(paths["fp32"]), backend="onnxruntime", providers=["CPUExecutionProvider"]) as cpu:
        reference = outputs(cpu, persons)

    cases = [("onnxruntime " + args.provider.replace("ExecutionProvider", ""), precision, paths[precision],
              {"backend": "onnxruntime", "providers": [args.provider]}) for precision in ("fp32", "fp16", "int8")]
    if use_trt:
        from edgepose.converters.tensorrt_build import build_engine

        for precision in ("fp16", "int8"):
            if budget.left() < 90:  # a TensorRT build of a large model takes a minute or more
                say("  %s %s engine: not built, time budget spent" % (entry.name, precision))
                continue
            t0 = time.perf_counter()
            engine = build_engine(paths[precision], paths[precision].with_suffix(".engine"), max_batch=max(batches),
                                  opt_batch=max(batches), timing_cache=workdir / "timing.cache")
            say("  built the %s engine in %.0f s" % (precision, time.perf_counter() - t0))
            cases.append(("tensorrt", precision, engine, {"backend": "tensorrt"}))

    rows = []
    for engine_name, precision, path, options in cases:
        with Runtime(str(path), **options) as rt:
            used = getattr(rt.backend, "providers", [args.provider])[0]
            if used != args.provider:
                raise RuntimeError("ONNX Runtime fell back to %s for %s (is the CUDA runtime and cuDNN of this "
                                   "onnxruntime-gpu installed?)" % (used, path.name))
            row = {"model": entry.name, "engine": engine_name, "precision": precision, "v100_fps": entry.v100_fps}
            row.update(agreement(reference, outputs(rt, persons), areas))
            row["persons_per_s"] = throughput(rt, batches, args.repeats)
        say("  %-28s %-5s heatmaps %.1e  OKS %.3f  max %.1f px  %s" % (
            engine_name, precision, row["heatmap_rel_err"], row["mean_oks"], row["max_px"],
            "  ".join("b%d %.0f/s" % kv for kv in row["persons_per_s"].items())))
        rows.append(row)
    return rows


def markdown(rows: List[dict], batches: List[int]) -> str:
    head = ("| model | engine | precision | heatmap diff / peak | mean OKS vs CPU FP32 | max px | "
            + " | ".join("b%d persons/s" % b for b in batches) + " | V100 MXNet b64 |")
    lines = [head, "|" + "---|" * (6 + len(batches) + 1)]
    for r in rows:
        v100 = "%.0f" % r["v100_fps"] if r["v100_fps"] else "-"
        lines.append("| %s | %s | %s | %.1e | %.4f | %.2f | %s | %s |" % (
            r["model"], r["engine"], r["precision"], r["heatmap_rel_err"], r["mean_oks"], r["max_px"],
            " | ".join("%.0f" % r["persons_per_s"][b] for b in batches), v100))
    return "\n".join(lines)


def machine(provider: str, use_trt: bool) -> Dict[str, str]:
    import onnxruntime as ort

    import edgepose

    info = {"python": platform.python_version(), "onnxruntime": ort.__version__, "edgepose": edgepose.__version__,
            "provider": provider, "platform": platform.platform()}
    if use_trt:
        from edgepose.engine_info import import_tensorrt
        from edgepose.backends.cuda import get_cuda

        cuda = get_cuda()
        info.update(tensorrt=import_tensorrt().__version__, gpu=cuda.device_info(0).name,
                    compute_capability=cuda.device_info(0).compute_capability,
                    cuda_runtime="%d.%d" % cuda.runtime_version())
    return info


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort

    available = ort.get_available_providers()
    if args.provider not in available:
        print("%s (onnxruntime %s offers %s; a CUDA machine needs onnxruntime-gpu)"
              % (SKIP_MESSAGE, ort.__version__, ", ".join(available)))
        return 0
    from edgepose.engine_info import tensorrt_available
    from edgepose.converters.zoo import get_entry, list_models

    coco_file = args.shared / COCO_FILE
    if not coco_file.is_file():
        raise SystemExit("%s not found: pass --shared or set EDGEPOSE_SHARED to the shared data folder" % coco_file)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    entries = ([get_entry(n.strip()) for n in args.models.split(",") if n.strip()] if args.models
               else sorted(list_models(), key=lambda e: e.gflops))
    use_trt = not args.no_tensorrt and args.provider != "CPUExecutionProvider" and tensorrt_available()
    info = machine(args.provider, use_trt)
    print("machine: " + ", ".join("%s %s" % kv for kv in info.items()))
    if not use_trt:
        print("TensorRT rows: skipped (%s)" % ("--no-tensorrt" if args.no_tensorrt else "TensorRT not importable"
                                              if args.provider != "CPUExecutionProvider" else "CPU provider"))
    persons = load_persons(coco_file)
    budget = Budget(args.budget)
    rows: List[dict] = []
    skipped: List[str] = []
    failed: Dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgepose-gpu-check-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            if budget.left() < 30:
                skipped.append(entry.name)
                continue
            print("%s (%.1f GFLOPs/person) ..." % (entry.name, entry.gflops), flush=True)
            try:
                rows += check_model(entry, persons, workdir, args, batches, budget, use_trt,
                                    lambda line: print(line, flush=True))
            except Exception as e:  # report it and go on with the other models
                failed[entry.name] = "%s: %s" % (type(e).__name__, e)
                print("  FAILED: " + failed[entry.name], flush=True)
    print()
    print(markdown(rows, batches))
    if skipped:
        print("\nnot run (time budget %.0f s): %s" % (args.budget, ", ".join(skipped)))
    for name, error in failed.items():
        print("\nFAILED %s: %s" % (name, error))
    print("\n%d persons from %s; total %.0f s" % (sum(len(p[1]) for p in persons), coco_file,
                                                 args.budget - budget.left()))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "batches": batches, "rows": rows, "skipped": skipped,
                                         "failed": failed}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
