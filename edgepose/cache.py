"""Where edgepose keeps the files it downloads or builds (weights, engines, ...).

Root: ``$EDGEPOSE_HOME`` if set, else ``$XDG_CACHE_HOME/edgepose`` (absolute paths only, as
the XDG spec asks), else ``~/.cache/edgepose``. Each kind of file gets its own sub-folder.
"""
import os
from pathlib import Path

from edgepose.errors import InputError


def cache_root() -> Path:
    """The edgepose cache root (not created)."""
    home = os.environ.get("EDGEPOSE_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "edgepose"
    return Path.home() / ".cache" / "edgepose"


def cache_dir(kind: str, create: bool = True) -> Path:
    """The folder for one kind of cached file (e.g. ``"weights"``), created unless ``create`` is false
    (lookups must not leave empty folders behind)."""
    if not kind or kind in (".", "..") or "/" in kind or "\\" in kind:
        raise InputError(f"cache kind must be a plain folder name, got {kind!r}")
    path = cache_root() / kind
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
