#!/usr/bin/env python
"""MXNet/GluonCV side of ``bench_zoo_cpu.py``: times GluonCV pose models on the CPU.

Runs under the oracle venv (mxnet 1.9.1, gluoncv 0.10.5, numpy < 1.24), NOT the project
venv; it imports only mxnet, gluoncv and numpy. ``bench_zoo_cpu.py`` starts it once with
OMP_NUM_THREADS (and MKL_NUM_THREADS) set to the benchmark's thread count and talks to it
in JSON lines:

    stdin : {"cmd": "info"}
            {"cmd": "prepare", "gluoncv_name": ..., "input_size": [H, W], "batch": B,
             "warmup": W, "seed": 0, "backend": null}   build, hybridize, W untimed runs
            {"cmd": "run", "repeats": R}                 R timed runs of the prepared case
            {"cmd": "bench", ...prepare's keys..., "repeats": R}   both at once
            {"cmd": "quit"}
    stdout: one JSON object per request ({"ok": true, ...} or {"ok": false, "error": ...}).

Everything else MXNet or GluonCV prints goes to stderr (sys.stdout is redirected there, and
the protocol uses a private duplicate of the original stdout).

A timed call is ``y = net(x); y.asnumpy()``: forward of the hybridized network
(``hybridize(static_alloc=True, static_shape=True)``, as GluonCV's own inference scripts do)
plus the copy of the heatmaps into NumPy, which also waits for MXNet's asynchronous engine.
That is what ``InferenceSession.run`` does on the ONNX Runtime side (input in memory already,
output returned as a NumPy array).

Weights are random (pretrained=False), but NOT GluonCV's default initialisation: its
Normal(0.001) heads and default BN statistics make activations collapse towards zero through
the deep nets, and subnormal floats would slow MXNet down for a reason that has nothing to
do with it. Every parameter is redrawn like edgepose's ``RandomWeights`` (weights
N(0, 1/fan_in), BN gamma U(0.5, 1), running_var U(0.5, 1.5), the rest N(0, 0.1)), so both
engines see O(1) activations; the reply reports output statistics to show it.
"""
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")

_PROTO = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
sys.stdout = sys.stderr  # anything else printed must not corrupt the protocol

import numpy as np  # noqa: E402
import mxnet as mx  # noqa: E402
from gluoncv import model_zoo  # noqa: E402

_CACHE = {}  # (gluoncv_name, seed) -> net; at most one model is kept


def info():
    import gluoncv
    try:
        from mxnet.runtime import Features
        feats = Features()
        enabled = sorted(k for k in feats.keys() if feats.is_enabled(k))
    except Exception:  # pragma: no cover - old mxnet
        enabled = []
    return {
        "python": sys.version.split()[0],
        "mxnet": mx.__version__,
        "gluoncv": gluoncv.__version__,
        "numpy": np.__version__,
        "features": enabled,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                "MXNET_CPU_WORKER_NTHREADS", "MXNET_ENGINE_TYPE",
                                                "MXNET_SUBGRAPH_BACKEND")},
    }


def randomize(net, seed):
    rs = np.random.RandomState(seed)
    params = net._collect_params_with_prefix()
    for name in params:
        p = params[name]
        shape = p.shape
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight":
            fan_in = int(np.prod(shape[1:])) or 1
            v = rs.normal(0.0, np.sqrt(1.0 / fan_in), size=shape)
        elif leaf == "gamma":
            v = rs.uniform(0.5, 1.0, size=shape)
        elif leaf == "running_var":
            v = rs.uniform(0.5, 1.5, size=shape)
        else:  # bias, beta, running_mean
            v = rs.normal(0.0, 0.1, size=shape)
        p.set_data(mx.nd.array(v.astype(np.float32)))


def get_net(name, hw, seed):
    key = (name, seed)
    if key not in _CACHE:
        _CACHE.clear()
        with mx.name.NameManager():
            net = model_zoo.get_model(name, pretrained=False, pretrained_base=False)
        net.initialize()
        net(mx.nd.zeros((1, 3) + tuple(hw)))  # resolve deferred shapes
        randomize(net, seed)
        _CACHE[key] = net
    return _CACHE[key]


_STATE = {}  # the prepared case: net, input


def prepare(req):
    """Build (or reuse) the net, hybridize it for this input shape, run the warm-up."""
    name = req["gluoncv_name"]
    hw = tuple(int(v) for v in req["input_size"])
    batch = int(req["batch"])
    t0 = time.perf_counter()
    net = get_net(name, hw, int(req.get("seed", 0)))
    kwargs = {"static_alloc": True, "static_shape": True}
    if req.get("backend"):
        kwargs["backend"] = req["backend"]
    net.hybridize(**kwargs)  # clear=True: a fresh CachedOp for this input shape
    rs = np.random.RandomState(1234 + batch)
    x = mx.nd.array(rs.standard_normal((batch, 3) + hw).astype(np.float32))
    out = net(x).asnumpy()
    for _ in range(int(req.get("warmup", 2)) - 1):
        out = net(x).asnumpy()
    _STATE.update(net=net, x=x)
    tiny = float(np.mean((out != 0) & (np.abs(out) < np.finfo(np.float32).tiny)))
    return {
        "build_s": time.perf_counter() - t0,
        "output_shape": list(out.shape),
        "output_mean_abs": float(np.abs(out).mean()),
        "output_std": float(out.std()),
        "output_subnormal_fraction": tiny,
        "finite": bool(np.isfinite(out).all()),
    }


def run(req):
    """Time ``repeats`` calls of the prepared case: ``net(x).asnumpy()`` each."""
    net, x = _STATE["net"], _STATE["x"]
    times = []
    for _ in range(int(req.get("repeats", 1))):
        t = time.perf_counter()
        net(x).asnumpy()
        times.append(time.perf_counter() - t)
    return {"times_s": times}


def bench(req):
    """prepare + run in one request."""
    reply = prepare(req)
    reply.update(run(req))
    return reply


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "quit":
                _PROTO.write(json.dumps({"ok": True}) + "\n")
                break
            if cmd == "info":
                reply = info()
            elif cmd == "prepare":
                reply = prepare(req)
            elif cmd == "run":
                reply = run(req)
            elif cmd == "bench":
                reply = bench(req)
            else:
                raise ValueError("unknown command %r" % cmd)
            reply["ok"] = True
        except Exception as exc:  # report, keep serving
            reply = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
        _PROTO.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
