"""edgepose zoo / edgepose convert: the model zoo and its conversion to ONNX."""
import json
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from edgepose.cli.commands.common import err, out, print_table, require


def zoo(as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table.")) -> None:
    """List the 16 models of the GluonCV pose zoo with their published accuracy and cost."""
    from edgepose.converters.zoo import list_models

    entries = list_models()
    if as_json:
        typer.echo(json.dumps([e.as_dict() for e in entries], indent=2))
        return
    table = Table(title="GluonCV pose zoo (COCO val2017 OKS AP, ground-truth boxes)", box=box.SIMPLE_HEAD)
    for col, justify in (("name", "left"), ("input", "right"), ("hashtag", "left"), ("AP", "right"),
                         ("AP flip", "right"), ("params M", "right"), ("GFLOPs", "right"),
                         ("V100/s", "right")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for e in entries:
        table.add_row(e.name, "%dx%d" % e.input_size, e.hashtag, "%.1f" % e.ap[0], "%.1f" % e.ap_flip[0],
                      "%.1f" % (e.params / 1e6), "%.2f" % e.gflops,
                      "%.0f" % e.v100_fps if e.v100_fps else "-")
    print_table(table)
    out.print("GFLOPs = 2 x multiply-accumulates per person. Convert one with "
              "`edgepose convert NAME` (add --random-weights offline).")


def convert(
    source: str = typer.Argument(..., help="Zoo name (see `edgepose zoo`; also NAME:HASHTAG), a top-down heatmap .onnx, or a YOLOX person detector .onnx (recognised by its input and output; its conversions go to the cache's detectors/ folder)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="GluonCV .params file to convert."),
    random_weights: bool = typer.Option(False, "--random-weights",
                                        help="Random weights, for speed trials and offline tests only."),
    seed: int = typer.Option(0, "--seed", help="Seed of --random-weights."),
    fp16: bool = typer.Option(False, "--fp16", help="Write an FP16 model (FP32 inputs and outputs)."),
    int8: bool = typer.Option(False, "--int8", help="Calibrate and write a Q/DQ INT8 model, checked by the accuracy gate."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="INT8 calibration persons (a detector: whole images): image "
                                         "folder, COCO keypoints .json (images beside it), video, or calibration .npz (default: public set)."),
    target: str = typer.Option("tensorrt", "--target", help="INT8 form: tensorrt (symmetric, TensorRT) or cpu "
                               "(unsigned activations, fastest in ONNX Runtime on CPUs)."),
    method: Optional[str] = typer.Option(None, "--method", help="INT8 calibration: minmax, entropy or percentile."),
    force: bool = typer.Option(False, "--force", help="Keep INT8 even when it fails the accuracy gate."),
    fallback: bool = typer.Option(True, "--fallback/--no-fallback", help="When INT8 fails the accuracy gate, deliver "
                                  "FP16 (at -o FILE if given; said in the output and the metadata) or fail."),
    detector: Optional[Path] = typer.Option(None, "--detector", help="YOLOX ONNX used to find persons in --calib images/video."),
    engine: bool = typer.Option(False, "--engine", help="Also build a TensorRT engine (or print how to, without TensorRT)."),
    max_batch: int = typer.Option(32, "--max-batch", help="Largest person batch of the engine's profile."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Final file (.onnx, or .engine with --engine); default: the edgepose model cache."),
    no_download: bool = typer.Option(False, "--no-download", help="Never download weights."),
) -> None:
    """Convert a zoo model, a heatmap ONNX or a YOLOX detector ONNX: FP32 (default), --fp16 or --int8, and optionally a TensorRT engine."""
    require("onnx", "convert")
    from edgepose.converters.convert import convert_model

    if weights is not None and random_weights:
        raise typer.BadParameter("--weights and --random-weights exclude each other")
    if fp16 and int8:
        raise typer.BadParameter("choose one of --fp16 and --int8")
    if not int8 and (calib is not None or force or method is not None or target != "tensorrt" or not fallback):
        raise typer.BadParameter("--calib, --target, --method, --force and --no-fallback belong to --int8")
    with err.status("converting %s ..." % source) as status:
        result = convert_model(source, output=output, precision="int8" if int8 else "fp16" if fp16 else "fp32",
                               weights=weights, random=random_weights, seed=seed, download=not no_download,
                               calib=calib, target=target, method=method, force=force, fp16_fallback=fallback, detector=detector,
                               engine=engine, max_batch=max_batch, say=lambda line: status.update(line))
    for path in result.files:
        kind = ", " + result.precision.upper() if path == result.final and path.suffix == ".onnx" else ""
        out.print("Wrote [bold]%s[/] (%.1f MB%s)" % (path, path.stat().st_size / 1e6, kind))
    for line in result.notes:
        out.print(line, highlight=False, markup=False)
    for command in result.engine_commands:
        out.print("  " + command, highlight=False, markup=False)
    if engine and result.engine_commands:
        err.print("error: no TensorRT engine was built (TensorRT is not installed here); the ONNX above is ready: "
                  "run one of the commands above on the device", style="red", highlight=False)
        raise typer.Exit(1)
    if result.precision != ("int8" if int8 else "fp16" if fp16 else "fp32"):
        out.print("Delivered %s, not the %s asked for: %s" % (result.precision.upper(), "INT8" if int8 else "FP16",
                                                              result.final), highlight=False)
