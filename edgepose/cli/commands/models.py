"""edgepose models: the conversions in the model cache, which one a name means, and removing them."""
import json
import sys
import time
from typing import TYPE_CHECKING, List, Optional

import typer
from rich import box
from rich.table import Table

from edgepose.cli.commands.common import out, print_table

if TYPE_CHECKING:
    from edgepose.models import Conversion


def models(
    name: Optional[str] = typer.Argument(None, help="Only this model name (zoo NAME or NAME:HASHTAG) or file name."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Only this precision: fp32, fp16 or int8."),
    target: Optional[str] = typer.Option(None, "--target", help="Only INT8 conversions of this form: tensorrt or cpu."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    remove: bool = typer.Option(False, "--remove", help="Delete the conversions listed (asks first unless --yes)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Remove without asking."),
) -> None:
    """List the converted models in the edgepose cache, or --remove them.

    Shows precision, INT8 target, real or random weights, size and date, and marks the conversion a model name means when no --precision/--target is given (real weights first, then FP32, FP16, INT8, ONNX before engines, newest first).
    """
    from edgepose.cache import cache_dir
    from edgepose.errors import InputError, did_you_mean
    from edgepose.models import list_conversions, preference, select, zoo_name

    from edgepose.detector import cached_detector

    folder = cache_dir("models", create=False)
    every = list_conversions()
    poses = [c for c in every if c.kind == "pose"]
    defaults = {min((c for c in poses if c.name == n), key=preference).path for n in {c.name for c in poses}}
    detector = cached_detector() if cache_dir("detectors", create=False).is_dir() else None
    defaults |= {detector} if detector is not None else set()
    chosen = every
    if name is not None:
        chosen = [c for c in every if c.path.name == name] or [c for c in every if c.name == (zoo_name(name) or name)]
        if not chosen:
            raise InputError("no conversion of %r in %s%s; `edgepose models` lists them all" % (
                name, folder, did_you_mean(name, sorted({c.name for c in every} | {c.path.name for c in every}))))
    chosen = sorted(select(chosen, precision, target), key=lambda c: (c.name,) + preference(c))
    if remove:
        _remove(chosen, yes)
        return
    if as_json:
        typer.echo(json.dumps([dict(c.as_dict(), default=c.path in defaults) for c in chosen], indent=2))
        return
    if not every:
        out.print("No conversions in %s yet; make one with `edgepose convert NAME` (`edgepose zoo` lists the names)."
                  % folder, highlight=False, markup=False)
        return
    table = Table(title="Conversions in %s and %s" % (folder, cache_dir("detectors", create=False)),
                  box=box.SIMPLE_HEAD)
    for col in ("model", "kind", "file", "precision", "target", "weights", "MB", "modified", "default"):
        table.add_column(col, justify="right" if col == "MB" else "left", no_wrap=True)
    for c in chosen:
        table.add_row(c.name, c.kind, c.path.name, c.precision, c.target or "-", c.weights.upper() if c.random_weights
                      else c.weights, "%.1f" % (c.size / 1e6), time.strftime("%Y-%m-%d %H:%M", time.localtime(c.mtime)),
                      "yes" if c.path in defaults else "")
    print_table(table)
    out.print("`default`: the file a model name means without --precision/--target; for detectors, the one used "
              "when a command is given none.", highlight=False, markup=False)


def _remove(chosen: "List[Conversion]", yes: bool) -> None:
    from edgepose.errors import InputError
    from edgepose.models import remove

    if not chosen:
        out.print("Nothing to remove.")
        return
    for c in chosen:
        out.print("  %s (%s)" % (c.path, c.describe()), highlight=False, markup=False)
    if not yes:
        if not sys.stdin.isatty():
            raise InputError("--remove asks before deleting %d file%s; pass --yes to remove without asking"
                             % (len(chosen), "" if len(chosen) == 1 else "s"))
        typer.confirm("Remove %s?" % ("this conversion" if len(chosen) == 1 else "these %d conversions"
                                      % len(chosen)), abort=True)
    for c in chosen:
        for path in remove(c):
            out.print("Removed %s" % path, highlight=False, markup=False)
