"""Optional dependencies: import one where a feature needs it, or say how to install it."""
import importlib
from types import ModuleType
from typing import Tuple, Type

from edgepose.errors import MissingDependencyError


def require(module: str, extra: str, feature: str = "", advice: str = "",
            errors: Tuple[Type[BaseException], ...] = (ImportError,)) -> ModuleType:
    """``import module``; else a :class:`MissingDependencyError` naming ``feature`` (default: this command),
    the package, why it failed and the pip command that installs it (edgepose's ``extra``; the package
    itself when ``extra`` is empty), then ``advice`` as a sentence of its own.

    ``errors``: what counts as "not installed" (add OSError for packages that wrap native libraries).
    """
    try:
        return importlib.import_module(module)
    except errors as e:
        package = module.split(".")[0]
        pip = "pip install 'edgepose[%s]'" % extra if extra else "pip install " + package
        more = ". " + advice[:1].upper() + advice[1:] if advice else ""
        raise MissingDependencyError("%s needs the Python package %r (%s); install it with `%s`%s" % (
            feature or "this command", package, e, pip, more)) from e
