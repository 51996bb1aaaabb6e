"""edgepose zoo / edgepose convert: the model zoo and its conversion to ONNX."""
import json
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from edgepose.commands.common import err, out, print_table, require


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
    source: str = typer.Argument(..., help="Zoo name (see `edgepose zoo`), also NAME:HASHTAG."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="GluonCV .params file to convert."),
    random_weights: bool = typer.Option(False, "--random-weights",
                                        help="Random weights, for speed trials and offline tests only."),
    seed: int = typer.Option(0, "--seed", help="Seed of --random-weights."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Output .onnx (default: the edgepose model cache)."),
    no_download: bool = typer.Option(False, "--no-download", help="Never download weights."),
) -> None:
    """Convert a zoo model to ONNX (FP32, dynamic batch, BatchNorm folded, metadata inside)."""
    require("onnx", "convert")
    from edgepose.cache import cache_dir
    from edgepose.converters.export import export_zoo_model
    from edgepose.converters.zoo import get_entry

    if weights is not None and random_weights:
        raise typer.BadParameter("--weights and --random-weights exclude each other")
    entry = get_entry(source)
    if output is None:
        output = cache_dir("models") / ("%s%s.onnx" % (entry.name, "-random" if random_weights else ""))
    with err.status("Building %s ..." % entry.name):
        result = export_zoo_model(entry, output, weights=weights, random=random_weights, seed=seed,
                                  download=not no_download)
    size_mb = result.path.stat().st_size / 1e6
    out.print("Wrote [bold]%s[/] (%.1f MB): %s FP32 ONNX, input Nx3x%dx%d (dynamic batch), weights %s"
              % (result.path, size_mb, entry.name, entry.input_size[0], entry.input_size[1], result.weights))
