"""Runtime overhead: Runtime.estimate vs the bare ONNX Runtime call on the same batch.

16 persons on a 1080p frame; the same session does both (interleaved), median of repeats.
Target (issue 3): estimate <= 1.15x the bare call, <= 2.3x with the flip test.

    python benchmarks/bench_runtime.py [--models a,b] [--persons 16] [--repeats 15] [--threads 2]
"""
import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import random_model  # noqa: E402

from edgepose.bench import synthetic_frame  # noqa: E402
from edgepose.runtime import Runtime  # noqa: E402
from edgepose.transforms import preprocess  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="simple_pose_resnet18_v1b,mobile_pose_mobilenetv3_small")
    ap.add_argument("--persons", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    frame, boxes = synthetic_frame(args.persons)
    print("machine: %s, %s; persons %d on 1920x1080; ORT threads %d; median of %d"
          % (platform.processor() or platform.machine(), platform.python_version(), args.persons,
             args.threads, args.repeats))
    print("| model | bare ORT ms | estimate ms | ratio | bare ORT x2 (flip) ms | estimate flip ms | flip ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        with Runtime(str(random_model(name)), threads=args.threads) as rt:
            batch = preprocess(frame, boxes, rt.meta, image_is_rgb=False).batch
            both = np.concatenate([batch, batch[..., ::-1]])
            run = rt.backend.session.run
            feed, feed2 = {rt.backend.input_name: batch}, {rt.backend.input_name: both}
            for _ in range(2):  # warm-up
                run(None, feed2)
                rt.estimate(frame, boxes, flip=True)
            bare, est, bare2, est2 = [], [], [], []
            for _ in range(args.repeats):  # interleave so machine noise hits all alike
                bare.append(median_ms(lambda: run(None, feed), 1))
                est.append(median_ms(lambda: rt.estimate(frame, boxes), 1))
                bare2.append(median_ms(lambda: run(None, feed2), 1))
                est2.append(median_ms(lambda: rt.estimate(frame, boxes, flip=True), 1))
            b, e, b2, e2 = (statistics.median(v) for v in (bare, est, bare2, est2))
            print("| %s | %.1f | %.1f | %.3f | %.1f | %.1f | %.3f |" % (name, b, e, e / b, b2, e2, e2 / b))


if __name__ == "__main__":
    main()
