#!/usr/bin/env python
"""CPU latency of the zoo's FP32 ONNX exports in ONNX Runtime, against GluonCV/MXNet.

Run from the project venv (see benchmarks/README.md):

    python benchmarks/bench_zoo_cpu.py --mxnet-python /path/to/oracle/venv/bin/python \\
        --markdown bench.md --json bench.json

For every model and batch size the ONNX Runtime measurement (in this process) and the
MXNet measurement (in a worker process, ``mxnet_worker.py``, under the oracle venv's
Python) run back to back, alternating run by run (``--block``), so machine noise hits both
alike; ``other load`` is the CPU time other processes took meanwhile, in CPUs (from /proc),
to flag cases measured on a busy machine. Both use random weights
(the weights do not change the work done), the same thread count and a random-normal
float32 input; each reports the median wall time over ``--repeats`` timed runs after
``--warmup`` untimed ones. ``GFLOP/s`` is the zoo's ``gflops`` (2 x MACs per person) times
the batch, over the median time. ``speed-up`` is MXNet ms / ORT ms: above 1, ONNX Runtime
is faster.

Without an MXNet Python (``--mxnet-python`` or ``$EDGEPOSE_MXNET_PYTHON``) the baseline is
skipped and only ONNX Runtime is timed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import onnxruntime as ort

from edgepose.converters.export import build_onnx
from edgepose.converters.graph import RandomWeights
from edgepose.converters.zoo import ZooEntry, get_entry, list_models

HERE = Path(__file__).resolve().parent
WORKER = HERE / "mxnet_worker.py"


# --------------------------------------------------------------------------- helpers
def int_list(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def repeats_for(batch: int, args: argparse.Namespace) -> int:
    if args.repeats is not None:
        return args.repeats
    return 10 if batch == 1 else 5


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return " ".join(fl for fl in ("avx", "avx2", "fma", "avx512f", "avx512_vnni",
                                                  "avx_vnni", "amx_tile") if fl in flags)
    except OSError:
        pass
    return "?"


def mem_total_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine_info(threads: int, mx_info: Optional[dict]) -> Dict[str, object]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    mem = mem_total_gib()
    info: Dict[str, object] = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": round(mem, 1) if mem else None,
        "os": "%s %s" % (platform.system(), platform.release()),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "threads": threads,
    }
    if mx_info:
        info["mxnet"] = mx_info.get("mxnet")
        info["gluoncv"] = mx_info.get("gluoncv")
        info["mxnet_python"] = mx_info.get("python")
        info["mxnet_features"] = ",".join(f for f in mx_info.get("features", [])
                                          if f in ("MKLDNN", "OPENMP", "BLAS_OPEN", "BLAS_MKL"))
    return info


# --------------------------------------------------------------------------- ONNX Runtime
def make_session(model_bytes: bytes, threads: int, opt_level: str,
                 profile_prefix: Optional[str] = None, spin: bool = True,
                 config: Optional[List[str]] = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for item in config or []:
        key, _, value = item.partition("=")
        so.add_session_config_entry(key.strip(), value.strip())
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def make_input(entry: ZooEntry, batch: int) -> np.ndarray:
    h, w = entry.input_size
    return np.random.default_rng(1234 + batch).standard_normal((batch, 3, h, w)).astype(np.float32)


def output_stats(out: np.ndarray) -> dict:
    return {"output_shape": list(out.shape), "output_mean_abs": float(np.abs(out).mean()),
            "output_std": float(out.std()), "finite": bool(np.isfinite(out).all())}


class CpuMeter:
    """CPU time that OTHER processes used (from /proc) while a case ran: a noise indicator."""

    def __init__(self, pids: List[int]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _busy(self) -> Optional[float]:
        try:
            with open("/proc/stat") as f:
                v = [int(t) for t in f.readline().split()[1:]]
            return (sum(v[:8]) - v[3] - v[4]) / self.tick  # all but idle and iowait
        except (OSError, ValueError, IndexError):
            return None

    def _own(self) -> Optional[float]:
        total = 0.0
        for pid in self.pids:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime
            except (OSError, ValueError, IndexError):
                return None
        return total

    def start(self) -> None:
        self.t0, self.b0, self.o0 = time.perf_counter(), self._busy(), self._own()

    def wait_quiet(self, threshold: float, max_wait_s: float, window_s: float = 1.0) -> float:
        """Wait (at most ``max_wait_s``) until other processes use <= ``threshold`` CPUs over a
        ``window_s`` window; return the seconds waited."""
        t0 = time.perf_counter()
        while True:
            self.start()
            time.sleep(window_s)
            load = self.stop()
            waited = time.perf_counter() - t0
            if load is None or load <= threshold or waited >= max_wait_s:
                return waited

    def stop(self) -> Optional[float]:
        """Other processes' CPU use during the case, in CPUs (0 = quiet machine)."""
        b1, o1, wall = self._busy(), self._own(), time.perf_counter() - self.t0
        if None in (self.b0, self.o0, b1, o1) or wall <= 0:
            return None
        return max(0.0, ((b1 - self.b0) - (o1 - self.o0)) / wall)


def ort_profile(model_bytes: bytes, x: np.ndarray, threads: int, opt_level: str, runs: int,
                out_dir: Path, tag: str, **session_kwargs) -> List[tuple]:
    """Profile ``runs`` runs; return [(op_type, ms per run, share)] sorted by time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sess = make_session(model_bytes, threads, opt_level, str(out_dir / tag), **session_kwargs)
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)  # warm-up, dropped below
    for _ in range(runs):
        sess.run(None, feed)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    per_run: Dict[int, Dict[str, float]] = {}
    run_idx = -1
    for ev in events:
        if ev.get("cat") == "Session" and ev.get("name") == "model_run":
            run_idx += 1
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        op = ev.get("args", {}).get("op_name", "?")
        per_run.setdefault(run_idx, {}).setdefault(op, 0.0)
        per_run[run_idx][op] += ev["dur"] / 1000.0
    # node events precede their run's model_run event: index r covers run r; drop the warm-up
    kept = [per_run[k] for k in sorted(per_run)][1:] or list(per_run.values())
    totals: Dict[str, float] = {}
    for d in kept:
        for op, ms in d.items():
            totals[op] = totals.get(op, 0.0) + ms / len(kept)
    whole = sum(totals.values()) or 1.0
    return sorted(((op, ms, ms / whole) for op, ms in totals.items()), key=lambda t: -t[1])


# --------------------------------------------------------------------------- MXNet worker
class MxnetWorker:
    """The oracle venv's Python running ``mxnet_worker.py``; JSON lines over pipes."""

    def __init__(self, python: str, threads: int, log_path: Path) -> None:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
        env["MXNET_CPU_WORKER_NTHREADS"] = "1"  # one engine worker running 'threads' OMP threads
        env.pop("PYTHONPATH", None)  # keep the project venv's packages out of the oracle's path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([python, "-W", "ignore", str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
                                     env=env)

    def request(self, req: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("MXNet worker died (exit %s); see %s" % (self.proc.poll(), self.log.name))
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError("MXNet worker: %s" % reply.get("error"))
        return reply

    def close(self) -> None:
        """Stop the worker; its stderr log is kept only if something went wrong."""
        clean = False
        try:
            if self.proc.poll() is None:
                self.request({"cmd": "quit"})
                clean = self.proc.wait(timeout=30) == 0
        except Exception:
            self.proc.kill()
        self.log.close()
        if clean:
            os.unlink(self.log.name)


# --------------------------------------------------------------------------- one case
def measure_case(entry: ZooEntry, batch: int, reps: int, x: np.ndarray, sess: ort.InferenceSession,
                 worker: Optional[MxnetWorker], meter: CpuMeter, args: argparse.Namespace) -> dict:
    """Warm both engines up, then alternate them (--block runs each) until each has ``reps``."""
    feed = {sess.get_inputs()[0].name: x}
    meter.start()
    for _ in range(max(1, args.warmup)):
        out = sess.run(None, feed)[0]
    o = output_stats(out)
    m = None
    if worker is not None:
        m = worker.request({"cmd": "prepare", "gluoncv_name": entry.gluoncv_name,
                            "input_size": list(entry.input_size), "batch": batch,
                            "warmup": args.warmup, "seed": 0, "backend": args.mxnet_backend})
        m["times_s"] = []
    o["times_s"] = []
    while len(o["times_s"]) < reps:
        n = min(args.block, reps - len(o["times_s"]))
        for _ in range(n):
            t = time.perf_counter()
            sess.run(None, feed)
            o["times_s"].append(time.perf_counter() - t)
        if m is not None:
            m["times_s"] += worker.request({"cmd": "run", "repeats": n})["times_s"]
    background = meter.stop()
    ort_ms = statistics.median(o["times_s"]) * 1e3
    mx_ms = statistics.median(m["times_s"]) * 1e3 if m else None
    return {
        "model": entry.name, "gluoncv_name": entry.gluoncv_name,
        "input_size": list(entry.input_size), "batch": batch, "repeats": reps,
        "gflops_per_person": entry.gflops,
        "ort_ms": ort_ms, "ort_gflops": entry.gflops * batch / (ort_ms / 1e3),
        "mx_ms": mx_ms, "mx_gflops": entry.gflops * batch / (mx_ms / 1e3) if mx_ms else None,
        "speedup": mx_ms / ort_ms if mx_ms else None,
        "background_cpus": background,
        "ort": o, "mxnet": m,
    }


# --------------------------------------------------------------------------- output
def fmt(v: Optional[float], digits: int = 1) -> str:
    return "—" if v is None else "%.*f" % (digits, v)


def markdown_table(rows: List[dict]) -> str:
    lines = [
        "| model | batch | ORT ms | ORT ms/person | MXNet ms | MXNet ms/person | ORT/MXNet speed-up "
        "| ORT GFLOP/s | MXNet GFLOP/s | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speed = r["speedup"]
        mark = "" if speed is None or speed >= 1.0 else " ⚠"
        lines.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["model"], r["batch"], fmt(r["ort_ms"]), fmt(r["ort_ms"] / r["batch"]),
            fmt(r["mx_ms"]), fmt(None if r["mx_ms"] is None else r["mx_ms"] / r["batch"]),
            ("%.2fx" % speed + mark) if speed is not None else "—",
            fmt(r["ort_gflops"]), fmt(r["mx_gflops"]), fmt(r["background_cpus"], 2)))
    return "\n".join(lines)


def machine_lines(info: Dict[str, object]) -> str:
    mx = ("MXNet %s + GluonCV %s (Python %s, %s)" % (info.get("mxnet"), info.get("gluoncv"),
                                                    info.get("mxnet_python"), info.get("mxnet_features"))
          if info.get("mxnet") else "MXNet baseline skipped (no MXNet Python given)")
    return "\n".join([
        "- Date: %s" % info["date"],
        "- CPU: %s (%s), %s logical CPUs (%s usable), %s GiB RAM, %s" % (
            info["cpu"], info["cpu_flags"], info["logical_cpus"], info["usable_cpus"],
            info["memory_gib"], info["os"]),
        "- ONNX Runtime %s (CPUExecutionProvider), NumPy %s, Python %s" % (
            info["onnxruntime"], info["numpy"], info["python"]),
        "- %s" % mx,
        "- Threads: %s per engine (ORT intra_op_num_threads; MXNet OMP_NUM_THREADS)" % info["threads"],
    ])


def conclusion(rows: List[dict]) -> str:
    compared = [r for r in rows if r["speedup"] is not None]
    if not compared:
        return "No MXNet baseline was measured."
    slower = [r for r in compared if r["speedup"] < 1.0]
    lo = min(compared, key=lambda r: r["speedup"])
    hi = max(compared, key=lambda r: r["speedup"])
    if not slower:
        return ("ONNX Runtime is at least as fast as MXNet on all %d model/batch cases "
                "(speed-up %.2fx for %s b%d to %.2fx for %s b%d)."
                % (len(compared), lo["speedup"], lo["model"], lo["batch"], hi["speedup"],
                   hi["model"], hi["batch"]))
    return ("ONNX Runtime is SLOWER than MXNet on %d of %d cases: %s."
            % (len(slower), len(compared),
               ", ".join("%s b%d (%.2fx)" % (r["model"], r["batch"], r["speedup"]) for r in slower)))


# --------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="all",
                    help="comma-separated zoo names (default: all %d)" % len(list_models()))
    ap.add_argument("--batches", type=int_list, default=[1, 8], help="comma list (default 1,8)")
    ap.add_argument("--threads", type=int, default=2, help="threads per engine (default 2)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed runs per case (default 10 at batch 1, 5 otherwise)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    ap.add_argument("--block", type=int, default=1,
                    help="timed runs per engine turn: ORT BLOCK runs, MXNet BLOCK runs, ORT ... "
                         "(default 1: the engines alternate run by run)")
    ap.add_argument("--noise-threshold", type=float, default=0.15,
                    help="other processes' CPU use (in CPUs) above which a case counts as noisy "
                         "(default 0.15)")
    ap.add_argument("--retry-noisy", type=int, default=2,
                    help="measure a noisy case again up to this many times and keep the attempt "
                         "with the least other load (default 2; 0 = never)")
    ap.add_argument("--wait-quiet", type=float, default=60.0, metavar="SECONDS",
                    help="before each case, wait up to this long for other processes' CPU use to "
                         "drop to --noise-threshold (default 60; 0 = don't wait)")
    ap.add_argument("--opt-level", choices=["disable", "basic", "extended", "all"], default="all",
                    help="ONNX Runtime graph optimisation level (default all)")
    ap.add_argument("--ort-no-spin", action="store_true",
                    help="session.intra_op.allow_spinning=0: ORT's idle threads block instead of "
                         "spinning (can help on a machine shared with other busy processes)")
    ap.add_argument("--ort-config", action="append", metavar="KEY=VALUE", default=[],
                    help="extra ONNX Runtime session config entry, e.g. session.dynamic_block_base=4 "
                         "(repeatable)")
    ap.add_argument("--mxnet-python", default=os.environ.get("EDGEPOSE_MXNET_PYTHON"),
                    help="Python of a venv with mxnet 1.9 + gluoncv (default $EDGEPOSE_MXNET_PYTHON); "
                         "without it the MXNet baseline is skipped")
    ap.add_argument("--mxnet-backend", default=None,
                    help="hybridize(backend=...) for MXNet, e.g. MKLDNN (default: none, plain "
                         "hybridize(static_alloc, static_shape) as GluonCV's scripts do)")
    ap.add_argument("--profile", metavar="DIR", default=None,
                    help="also profile ONNX Runtime per model/batch and print time per op type")
    ap.add_argument("--merge", metavar="PREV.json", default=None,
                    help="start from the rows of an earlier --json run: cases measured now replace "
                         "theirs, the rest are kept (their 'other load' and the JSON tell them apart)")
    ap.add_argument("--redo-noisy", action="store_true",
                    help="with --merge: measure only the cases of PREV.json whose other load was "
                         "above --noise-threshold")
    ap.add_argument("--markdown", metavar="OUT.md", default=None, help="write machine info + table")
    ap.add_argument("--json", metavar="OUT.json", default=None, help="write everything, raw times too")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if ONNX Runtime is slower than MXNet on any case")
    args = ap.parse_args(argv)

    entries = list_models() if args.models == "all" else [get_entry(n.strip())
                                                          for n in args.models.split(",") if n.strip()]

    prev_rows: List[dict] = []
    if args.merge:
        prev_rows = json.loads(Path(args.merge).read_text())["rows"]
    todo = None  # (model, batch) pairs to measure; None: all of entries x batches
    if args.redo_noisy:
        if not args.merge:
            ap.error("--redo-noisy needs --merge PREV.json")
        todo = {(r["model"], r["batch"]) for r in prev_rows
                if r.get("background_cpus") is None or r["background_cpus"] > args.noise_threshold}
        names = {m for m, _ in todo}
        entries = [e for e in entries if e.name in names]
        print("re-measuring %d noisy cases: %s" % (len(todo), ", ".join(
            "%s b%d" % c for c in sorted(todo))), flush=True)

    worker: Optional[MxnetWorker] = None
    mx_info = None
    note = None
    if args.mxnet_python:
        if not Path(args.mxnet_python).exists():
            note = "MXNet Python %s not found: baseline skipped" % args.mxnet_python
        else:
            log_path = Path(tempfile.gettempdir()) / ("edgepose_mxnet_worker.%d.log" % os.getpid())
            worker = MxnetWorker(args.mxnet_python, args.threads, log_path)
            try:
                mx_info = worker.request({"cmd": "info"})
            except RuntimeError as exc:
                note = "MXNet worker failed to start (%s): baseline skipped" % exc
                worker.close()
                worker = None
    else:
        note = ("no MXNet Python (--mxnet-python or $EDGEPOSE_MXNET_PYTHON): MXNet baseline skipped; "
                "create one with shared/parity/tools/setup_oracle_venv.sh VENV_DIR")
    if note:
        print("NOTE: " + note, file=sys.stderr)

    info = machine_info(args.threads, mx_info)
    print(machine_lines(info), flush=True)
    print(flush=True)

    rows: List[dict] = []
    meter = CpuMeter([os.getpid()] + ([worker.proc.pid] if worker is not None else []))
    t_start = time.time()
    try:
        for entry in entries:
            t0 = time.perf_counter()
            model_bytes = build_onnx(entry, RandomWeights(0), "random").SerializeToString()
            sess = make_session(model_bytes, args.threads, args.opt_level, spin=not args.ort_no_spin,
                                config=args.ort_config)
            build_s = time.perf_counter() - t0
            for batch in args.batches:
                if todo is not None and (entry.name, batch) not in todo:
                    continue
                reps = repeats_for(batch, args)
                x = make_input(entry, batch)
                attempts: List[dict] = []
                for _ in range(1 + max(0, args.retry_noisy)):
                    if args.wait_quiet > 0:
                        waited = meter.wait_quiet(args.noise_threshold, args.wait_quiet)
                        if waited > 5:
                            print("    (waited %.0f s for a quiet machine)" % waited, flush=True)
                    r = measure_case(entry, batch, reps, x, sess, worker, meter, args)
                    attempts.append(r)
                    if r["background_cpus"] is None or r["background_cpus"] <= args.noise_threshold:
                        break
                    print("    (noisy: other processes took %.2f CPUs; ORT %.1f ms, MXNet %s ms; "
                          "measuring again)" % (r["background_cpus"], r["ort_ms"], fmt(r["mx_ms"])),
                          flush=True)
                # the quietest attempt; the others stay in the JSON
                row = min(attempts, key=lambda a: a["background_cpus"] or 0.0)
                row["other_attempts"] = [{k: a[k] for k in ("ort_ms", "mx_ms", "background_cpus")}
                                         for a in attempts if a is not row]
                row["ort_build_s"] = build_s
                o, m, ort_ms, mx_ms, background = (row["ort"], row["mxnet"], row["ort_ms"], row["mx_ms"],
                                                   row["background_cpus"])
                rows.append(row)
                print("%-36s b%-2d ORT %9.1f ms (%6.1f GFLOP/s)  MXNet %s ms  speed-up %s  "
                      "[other procs %s CPUs; out |y| ORT %.3f / MX %s]" % (
                          entry.name, batch, ort_ms, row["ort_gflops"], fmt(mx_ms),
                          "%.2fx" % row["speedup"] if mx_ms else "—", fmt(background, 2),
                          o["output_mean_abs"], "%.3f" % m["output_mean_abs"] if m else "—"), flush=True)
                if args.profile:
                    prof = ort_profile(model_bytes, x, args.threads, args.opt_level,
                                       max(1, min(reps, 3)), Path(args.profile),
                                       "%s_b%d" % (entry.name, batch), spin=not args.ort_no_spin,
                                       config=args.ort_config)
                    row["ort_profile"] = prof
                    print("    ORT profile: " + ", ".join("%s %.1f ms (%.0f%%)" % (op, ms, 100 * sh)
                                                         for op, ms, sh in prof[:6]), flush=True)
            del sess, model_bytes
    finally:
        if worker is not None:
            worker.close()

    elapsed = time.time() - t_start
    if prev_rows:
        done = {(r["model"], r["batch"]) for r in rows}
        order = {e.name: i for i, e in enumerate(list_models())}
        rows = sorted([r for r in prev_rows if (r["model"], r["batch"]) not in done] + rows,
                      key=lambda r: (order.get(r["model"], 999), r["batch"]))
    table = markdown_table(rows)
    concl = conclusion(rows)
    print()
    print(table)
    print()
    print(concl)
    print("(%.0f s in all)" % elapsed)

    command = "python benchmarks/bench_zoo_cpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.markdown:
        Path(args.markdown).write_text(
            "%s\n- Settings: %s\n- Command: `%s`\n\n%s\n\n%s\n" % (
                machine_lines(info),
                "ORT graph optimisation %s%s%s, warm-up %d, repeats %s, engines alternating every %d run(s); "
                "MXNet hybridize(static_alloc, static_shape%s); median ms; GFLOP/s = zoo gflops x batch / "
                "median s; speed-up = MXNet ms / ORT ms; other load = other processes' CPU use during the "
                "case, in CPUs" % (args.opt_level, ", spinning off" if args.ort_no_spin else "",
                            "".join(", " + c for c in args.ort_config),
                            args.warmup,
                            args.repeats if args.repeats is not None else "10 (b1) / 5 (b>1)",
                            args.block, ", backend=%s" % args.mxnet_backend if args.mxnet_backend else ""),
                command, table, concl))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "command": command,
                                               "elapsed_s": elapsed, "note": note,
                                               "merged_from": args.merge, "rows": rows},
                                              indent=1))
    if args.check and any(r["speedup"] is not None and r["speedup"] < 1.0 for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
