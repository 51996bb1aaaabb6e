"""The ``edgepose`` command line: a thin layer over the library.

Each command lives in ``edgepose/cli/commands/`` and imports what it needs inside its body, so
``edgepose --help`` works with only the runtime installed and a missing optional package is
reported by the command that needs it.
"""
import logging
import os
import sys
from typing import List, Optional

import typer

from edgepose.cli.commands import bench, convert, infer, models, triton, webcam
from edgepose.cli.commands.common import err
from edgepose.errors import EdgeposeError

app = typer.Typer(help="edgepose: GluonCV's pose model zoo on edge runtimes (ONNX Runtime, TensorRT).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command()(convert.zoo)
app.command()(convert.convert)
app.command()(infer.predict)
app.command("eval")(infer.evaluate)
app.command()(bench.bench)
app.command("export-triton")(triton.export_triton)
app.command()(triton.serve)
app.command()(webcam.webcam)
app.command()(models.models)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: edgepose errors become one clear line and exit code 1.

    Usage errors, --help and Ctrl-C are handled by typer/click (standalone mode). OpenCV's own log lines
    ("[ WARN ...] imread_(...)") are silenced: edgepose reports unreadable files itself.
    """
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # read when cv2 is first imported
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        app(args=argv)
    except EdgeposeError as e:
        err.print("error: " + str(e), style="red", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
