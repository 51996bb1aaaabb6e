"""edgepose bench: latency split into pre / infer / post, and throughput."""
import json
from pathlib import Path
from typing import List, Optional

import typer
from rich import box
from rich.table import Table

from edgepose.cli.commands.common import err, out, precision_option, print_table, target_option, use_model


def bench(
    models: List[str] = typer.Argument(..., help="Model files (e.g. the FP32, FP16 and INT8 variants) or converted zoo names."),
    precision: Optional[str] = precision_option(),
    target: Optional[str] = target_option(),
    backend: str = typer.Option("auto", "--backend", help="auto, onnxruntime, tensorrt or triton."),
    batch: str = typer.Option("1,8,32", "--batch", help="Comma-separated person counts per call."),
    repeats: int = typer.Option(20, "--repeats", help="Timed calls per batch size (the median is reported)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed calls first."),
    threads: Optional[int] = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads."),
    flip: bool = typer.Option(False, "--flip", help="Time the flip-test ensemble."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON."),
) -> None:
    """Time Runtime.estimate on a 1080p frame: pre-processing, inference, post-processing."""
    from edgepose.bench import measure
    from edgepose.errors import InputError
    from edgepose.fileio import atomic_write_bytes, writable_file
    from edgepose.runtime import Runtime

    try:
        sizes = [int(b) for b in batch.split(",") if b.strip()]
    except ValueError as e:
        raise InputError("--batch takes comma-separated integers, e.g. 1,8,32; got %r" % batch) from e
    if not sizes or min(sizes) < 1 or repeats < 1:
        raise InputError("--batch needs positive sizes and --repeats at least 1")
    if json_path is not None:
        writable_file(json_path, "--json file")
    options = {"threads": threads} if threads and backend in ("auto", "onnxruntime") else {}
    table = Table(title="edgepose bench (median of %d, 1080p frame%s)" % (repeats, ", flip" if flip else ""),
                  box=box.SIMPLE_HEAD)
    for col in ("model", "precision", "backend", "batch", "pre ms", "infer ms", "post ms", "total ms", "persons/s"):
        table.add_column(col, justify="left" if col in ("model", "precision", "backend") else "right", no_wrap=True)
    rows = []
    for spec in models:
        path = use_model(spec, precision, target)
        with Runtime(path, backend, **options) as rt:
            for size in sizes:
                with err.status("%s batch %d ..." % (Path(path).name, size)):
                    t = measure(rt, size, repeats=repeats, warmup=warmup, flip=flip)
                rows.append({"model": path, "precision": rt.meta.precision, "backend": rt.backend.name,
                             "batch": size, "pre_ms": t.pre_ms, "infer_ms": t.infer_ms, "post_ms": t.post_ms,
                             "total_ms": t.total_ms, "persons_per_s": t.persons_per_s})
                table.add_row(Path(path).name, rt.meta.precision, rt.backend.name, str(size),
                              "%.2f" % t.pre_ms, "%.2f" % t.infer_ms, "%.2f" % t.post_ms,
                              "%.2f" % t.total_ms, "%.1f" % t.persons_per_s)
    print_table(table)
    if json_path is not None:
        atomic_write_bytes(json_path, json.dumps(rows, indent=1).encode())
        out.print("Wrote %s" % json_path)
