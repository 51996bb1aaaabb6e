"""What every edgepose command shares: consoles, optional imports, tables."""
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from edgepose.optional import require

__all__ = ["err", "out", "precision_option", "print_table", "require", "target_option", "use_model",
           "warn_random_weights"]
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def print_table(table: Table) -> None:
    """Print a table without squeezing it into 80 columns when stdout is not a terminal."""
    Console(width=max(out.width, 160)).print(table)


PRECISION_HELP = ("Which conversion of a model name: fp32, fp16 or int8 (default: real weights first, then "
                  "fp32, fp16, int8, ONNX before engines, newest first; `edgepose models` lists them).")
TARGET_HELP = "Which INT8 form of a model name: tensorrt or cpu (implies --precision int8)."


def precision_option() -> Any:
    return typer.Option(None, "--precision", help=PRECISION_HELP, show_default=False)


def target_option() -> Any:
    return typer.Option(None, "--target", help=TARGET_HELP, show_default=False)


def use_model(spec: str, precision: Optional[str] = None, target: Optional[str] = None) -> str:
    """The file (or triton:// URL) a model argument means, announced on stderr as
    ``Using FILE (precision, target, real/random weights)``, with a loud warning for random weights."""
    from edgepose.models import find_model, resolve_model

    if "://" in spec:
        url = resolve_model(spec, precision, target)
        err.print("Using %s" % url, highlight=False, markup=False)
        return url
    conversion = find_model(spec, precision, target)
    err.print("Using %s (%s)" % (conversion.path, conversion.describe()), highlight=False, markup=False)
    if conversion.random_weights:
        warn_random_weights(str(conversion.path))
    return str(conversion.path)


def warn_random_weights(model: str) -> None:
    """The loud line every command prints for a random-weight model (predict and eval repeat it in their summary)."""
    from edgepose.models import random_weights_message

    err.print("WARNING: " + random_weights_message(model), style="bold red", highlight=False, markup=False)
