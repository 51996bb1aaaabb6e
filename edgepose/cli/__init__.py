"""The roof: the ``edgepose`` command line (typer), apart from the runtime it drives."""
from edgepose.cli.app import app, main

__all__ = ["app", "main"]
