#!/usr/bin/env python
"""Persons per second through a real Triton server (``edgepose serve``) against the same model run
locally, with 1, 4 and 16 concurrent clients, in one run: what dynamic batching buys.

Run in the serving venv (Debian's Python 3.11 + ``edgepose[serve]``, see .ci/run):

    python benchmarks/bench_triton.py [--model simple_pose_resnet18_v1b] [--seconds 5] [--rounds 3]
                                      [--clients 1 4 16] [--persons 1] [--work estimate|infer]

Every client is its own process (as devices would be) sending frames of ``--persons`` persons
(boxes on ``shared/data/demo_media/soccer.png``) through ``Runtime.estimate`` for ``--seconds``
after a warm-up (``--work infer``: only their ready, normalised crops through ``Runtime.infer``,
so the clients hardly load the CPU and the server side shows alone); persons/s sums over
clients. The modes take turns, ``--rounds`` times per client count, and each point is the
median (the machine may be busy with other work). Modes:

* ``local``: each client runs the model itself (ONNX Runtime, the cores shared: cores // C threads);
* ``triton, no batching``: ``edgepose serve --max-batch 1``: one model execution per request;
* ``triton, dynamic batching``: ``edgepose serve`` defaults (max batch 32, preferred 8 and 32,
  1 ms queue delay): Triton joins the crops of concurrent clients into batches.

Server and clients share this machine's cores, and with ``estimate`` the clients do their own
pre/post-processing, so the server's share shrinks as clients grow; on a real deployment the
server has its own GPU. The last lines give the model alone at batch 1, 8 and 32 (the most that
batching can buy on this hardware) and how many requests Triton joined per execution.
A zoo name without a file is exported with random weights (speed does not depend on them).
"""
import argparse
import datetime
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import DATA, free_ports  # noqa: E402

IMAGE = DATA / "demo_media" / "soccer.png"
BOXES = [[180, 420, 560, 920], [480, 40, 710, 440], [590, 70, 930, 470], [100, 100, 300, 500],
         [600, 300, 800, 900]]


def model_file(spec: str) -> str:
    """``spec`` if it is a file, else that zoo model exported once with random weights."""
    if Path(spec).is_file():
        return spec
    from edgepose.converters.export import export_zoo_model
    from edgepose.converters.zoo import get_entry

    path = Path(tempfile.gettempdir()) / "edgepose-bench-models" / ("%s-random.onnx" % spec)
    if not path.exists():
        export_zoo_model(get_entry(spec), path, random=True)
    return str(path)


def client(model: str, threads: Optional[int], persons: int, seconds: float, work: str, barrier, results) -> None:
    import cv2

    from edgepose.runtime import Runtime
    from edgepose.transforms import preprocess

    image = cv2.imread(str(IMAGE))
    boxes = np.array([BOXES[i % len(BOXES)] for i in range(persons)], np.float32)
    with Runtime(model, **({"threads": threads} if threads else {})) as rt:
        crops = preprocess(image, boxes, rt.meta, image_is_rgb=False).batch

        def step() -> None:
            if work == "estimate":
                rt.estimate(image, boxes)
            else:
                rt.infer(crops)

        for _ in range(2):
            step()
        barrier.wait()
        start = time.perf_counter()
        done = 0
        while time.perf_counter() - start < seconds:
            step()
            done += persons
        results.put((done, time.perf_counter() - start))


def server(model: str, port: int, max_batch: int, log: str, ready, stop, stats) -> None:
    from edgepose.serve import PoseServer

    srv = PoseServer(model, host="127.0.0.1", port=port, max_batch=max_batch, log_file=log)
    try:
        srv.start()
        ready.set()
        stop.wait(1800)
        stats.put(srv.statistics())
    finally:
        srv.stop()


def run_clients(ctx, model: str, clients: int, threads: Optional[int], args: argparse.Namespace) -> float:
    barrier, results = ctx.Barrier(clients), ctx.Queue()
    procs = [ctx.Process(target=client, args=(model, threads, args.persons, args.seconds, args.work, barrier, results))
             for _ in range(clients)]
    for p in procs:
        p.start()
    rates = [done / elapsed for done, elapsed in (results.get(timeout=300) for _ in procs)]
    for p in procs:
        p.join(60)
    return float(sum(rates))


def model_alone(model: str, batches: Tuple[int, ...] = (1, 8, 32), seconds: float = 2.0) -> Dict[int, float]:
    """Crops/s of the model itself (ONNX Runtime, all cores) at each batch size: the most batching can buy."""
    from edgepose.runtime import Runtime

    rates = {}
    with Runtime(model) as rt:
        h, w = rt.meta.input_size
        for b in batches:
            crops = np.random.default_rng(0).random((b, 3, h, w), dtype=np.float32)
            rt.infer(crops)
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                rt.infer(crops)
                done += b
            rates[b] = done / (time.perf_counter() - start)
    return rates


def start_server(ctx, model: str, max_batch: int, log: str) -> Tuple[str, object, object, object]:
    """A server process; returns (url, process, stop event, statistics queue)."""
    port = free_ports(3)  # HTTP, gRPC, metrics
    ready, stop, stats = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=server, args=(model, port, max_batch, log, ready, stop, stats))
    proc.start()
    if not ready.wait(180):
        proc.terminate()
        raise RuntimeError("the server did not start; see %s" % log)
    return "triton://127.0.0.1:%d/%s" % (port, Path(model).stem), proc, stop, stats


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="simple_pose_resnet18_v1b", help="ONNX file or zoo name")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per point, modes interleaved; median")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--persons", type=int, default=1, help="persons per request (frame)")
    parser.add_argument("--work", choices=("estimate", "infer"), default="estimate",
                        help="estimate: whole frames (pre/post in the client); infer: ready crops only")
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    model = model_file(args.model)
    load_before = os.getloadavg()
    cores = os.cpu_count() or 1
    log_dir = Path(tempfile.mkdtemp(prefix="edgepose-bench-triton-"))
    servers = {"triton, no batching": start_server(ctx, model, 1, str(log_dir / "nobatch.log")),
               "triton, dynamic batching": start_server(ctx, model, 32, str(log_dir / "batch.log"))}
    try:
        targets = {"local": (model, None), **{mode: (s[0], None) for mode, s in servers.items()}}
        samples: Dict[str, Dict[int, List[float]]] = {mode: {c: [] for c in args.clients} for mode in targets}
        for c in args.clients:
            for _ in range(args.rounds):
                for mode, (target, _) in targets.items():
                    threads = max(1, cores // c) if mode == "local" else None
                    samples[mode][c].append(run_clients(ctx, target, c, threads, args))
        stats = {}
        for mode, (_, _, stop, queue) in servers.items():
            stop.set()
            stats[mode] = queue.get(timeout=60)
    finally:
        for _, proc, stop, _ in servers.values():
            stop.set()
            proc.join(60)
            if proc.is_alive():
                proc.terminate()
    rows = {mode: {c: float(np.median(v)) for c, v in per.items()} for mode, per in samples.items()}
    alone = model_alone(model)

    import onnxruntime
    import pytriton

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print("%s, %d cores; %s; Python %s, onnxruntime %s, PyTriton %s; load average %.1f before, %.1f after"
          % (cpu, cores, datetime.date.today(), platform.python_version(), onnxruntime.__version__,
             getattr(pytriton, "__version__", "?"), load_before[0], os.getloadavg()[0]))
    print("model %s, clients run Runtime.%s on %d person(s) per request, median of %d x %.0f s per point, "
          "modes interleaved\n" % (Path(model).name, args.work, args.persons, args.rounds, args.seconds))
    print("| persons/s | " + " | ".join("%d client%s" % (c, "" if c == 1 else "s") for c in args.clients) + " |")
    print("|---|" + "---:|" * len(args.clients))
    for mode, rates in rows.items():
        print("| %s | " % mode + " | ".join("%.1f" % rates[c] for c in args.clients) + " |")
    for mode in servers:
        print("| %s / local | " % mode + " | ".join("%.2fx" % (rows[mode][c] / rows["local"][c])
                                                   for c in args.clients) + " |")
    print("| dynamic / no batching | " + " | ".join(
        "%.2fx" % (rows["triton, dynamic batching"][c] / rows["triton, no batching"][c]) for c in args.clients) + " |")
    print("\nthe model alone (ONNX Runtime, %d threads), crops/s: %s" % (
        cores, ", ".join("batch %d: %.1f" % (b, r) for b, r in alone.items())))
    for mode, st in stats.items():
        print("\n%s: %d requests, %d crops in %d executions (mean batch %.1f); executions per batch size %s"
              % (mode, st["requests"], st["inferences"], st["executions"], st["inferences"] / max(1, st["executions"]),
                 dict(sorted(st["batch_sizes"].items()))))


if __name__ == "__main__":
    main()
