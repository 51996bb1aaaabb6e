"""edgepose export-triton / edgepose serve: Triton Inference Server repositories and a real server."""
from pathlib import Path
from typing import List, Optional

import typer
from rich import box
from rich.table import Table

from edgepose.cli.commands.common import out, precision_option, print_table, require, target_option, use_model

MAX_BATCH_HELP = "Largest batch Triton forms (default: an engine's limit, else 32)."
PREFERRED_HELP = "Preferred batch size of the dynamic batcher; repeat for several (default: 8 or the engine's optimum, and the max batch)."
DELAY_HELP = "How long a request may wait in the queue for others to batch with, in microseconds."


def export_triton(
    models: List[str] = typer.Argument(..., help="Models: .onnx files, engines (.engine/.plan with their .json sidecar), or converted zoo names."),
    output: Path = typer.Option(..., "-o", "--output", help="The Triton model repository folder (created if needed)."),
    precision: Optional[str] = precision_option(),
    target: Optional[str] = target_option(),
    detector: bool = typer.Option(False, "--detector", help="Add the person detector: $EDGEPOSE_DETECTOR, else a YOLOX .onnx in the cache's detectors/ folder, else YOLOX-Nano (downloaded once)."),
    detector_file: Optional[Path] = typer.Option(None, "--detector-file", help="Add this YOLOX .onnx as the person detector (implies --detector)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help=MAX_BATCH_HELP),
    preferred: Optional[List[int]] = typer.Option(None, "--preferred-batch", help=PREFERRED_HELP),
    max_queue_delay_us: int = typer.Option(1000, "--max-queue-delay-us", help=DELAY_HELP),
    instances: int = typer.Option(1, "--instances", help="Model instances Triton runs in parallel."),
    instance_kind: str = typer.Option("auto", "--instance-kind", help="Where instances run: gpu, cpu, or auto (cpu for a CPU-form INT8 model, else gpu; engines: gpu only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace models of the same name already in the repository."),
) -> None:
    """Write a Triton model repository: NAME/config.pbtxt and NAME/1/model.onnx (or NAME-trt/1/model.plan)."""
    require("onnx", "convert")
    from edgepose.converters.triton_repo import Batching, plan_repository, write_repository

    paths = [use_model(m, precision, target) for m in models]
    if detector or detector_file is not None:
        from edgepose.detector import YoloxDetector, default_detector_path

        det_path = detector_file if detector_file is not None else default_detector_path(option="--detector-file FILE")
        paths.append(str(YoloxDetector(det_path).model_path))  # refuses a file that is not a YOLOX detector
    entries = plan_repository(paths, Batching(max_batch, tuple(preferred or ()), max_queue_delay_us, instances,
                                              instance_kind.lower()))
    write_repository(entries, output, overwrite=overwrite)
    table = Table(title="Triton model repository %s" % output, box=box.SIMPLE_HEAD)
    for col in ("model", "platform", "max batch", "input", "output", "from"):
        table.add_column(col, no_wrap=col == "model")
    for e in entries:
        cfg = e.config
        batch = str(cfg["max_batch_size"]) if cfg["max_batch_size"] else "0 (fixed batch)"
        table.add_row(e.name, e.info.platform, batch,
                      ", ".join("%s %s" % (t["name"], t["dims"]) for t in cfg["input"]),
                      ", ".join("%s %s" % (t["name"], t["dims"]) for t in cfg["output"]), e.info.path.name)
    print_table(table)
    out.print("Serve it with Triton's container: docker run --gpus all -p 8000:8000 -p 8001:8001 -v %s:/models "
              "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models; clients use "
              "triton://HOST:8000/NAME" % Path(output).resolve(), highlight=False)


def serve(
    model: str = typer.Argument(..., help="ONNX pose model file or converted zoo name."),
    precision: Optional[str] = precision_option(),
    target: Optional[str] = target_option(),
    name: Optional[str] = typer.Option(None, "--name", help="Model name on the server (default: the file stem)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 for every interface."),
    port: int = typer.Option(8000, "--port", help="HTTP port (the one clients name in triton://HOST:PORT/NAME)."),
    grpc_port: Optional[int] = typer.Option(None, "--grpc-port", help="gRPC port (default: PORT + 1)."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Prometheus metrics port (default: PORT + 2)."),
    max_batch: int = typer.Option(32, "--max-batch", help="Largest batch of person crops Triton forms."),
    preferred: Optional[List[int]] = typer.Option(None, "--preferred-batch", help=PREFERRED_HELP),
    max_queue_delay_us: int = typer.Option(1000, "--max-queue-delay-us", help=DELAY_HELP),
    instances: int = typer.Option(1, "--instances", help="ONNX Runtime sessions serving in parallel."),
    threads: Optional[int] = typer.Option(None, "--threads", help="ONNX Runtime threads per instance (default: the cores shared among instances)."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="tritonserver's log (default: the edgepose cache, logs/triton-NAME.log)."),
) -> None:
    """Serve a pose model with a real Triton Inference Server (PyTriton) and dynamic batching; Ctrl-C stops it."""
    from edgepose.cache import cache_dir
    from edgepose.serve import PoseServer

    server = PoseServer(use_model(model, precision, target), name=name, host=host, port=port, grpc_port=grpc_port,
                        metrics_port=metrics_port, max_batch=max_batch, preferred=preferred or (),
                        max_queue_delay_us=max_queue_delay_us, instances=instances, threads=threads, log_file=log_file)
    if log_file is None:
        server.log_file = cache_dir("logs") / ("triton-%s.log" % server.name)

    def ready(s: PoseServer) -> None:
        batching = s.config.get("dynamic_batching", {})
        out.print("Serving %s at %s (HTTP %d, gRPC %d, metrics %d); max batch %d, preferred %s, queue delay %d us, "
                  "%d instance%s; log %s; readiness probe GET %s. Ctrl-C or SIGTERM stops it."
                  % (s.model_path, s.url, s.ports["http"], s.ports["grpc"], s.ports["metrics"],
                     s.config["max_batch_size"], batching.get("preferred_batch_size"),
                     batching.get("max_queue_delay_microseconds", 0), instances, "" if instances == 1 else "s",
                     s.log_file, s.ready_url), highlight=False)

    server.serve_forever(on_ready=ready)
    out.print("Stopped.")
