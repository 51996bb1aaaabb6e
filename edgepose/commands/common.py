"""What every edgepose command shares: consoles, optional imports, tables."""
import importlib
from types import ModuleType

from rich.console import Console
from rich.table import Table

from edgepose.errors import MissingDependencyError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or explain which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            "this command needs the Python package %r (%s); install it with "
            "`pip install 'edgepose[%s]'`" % (module, e, extra)) from e


def print_table(table: Table) -> None:
    """Print a table without squeezing it into 80 columns when stdout is not a terminal."""
    Console(width=max(out.width, 160)).print(table)
