"""The exceptions edgepose raises. Every message says what failed and what to do."""
import difflib
from typing import Iterable


class EdgeposeError(Exception):
    """Base class of every error edgepose raises on purpose."""


class InputError(EdgeposeError, ValueError):
    """An argument (image, boxes, option) has the wrong value."""


class InputTypeError(EdgeposeError, TypeError):
    """An argument has the wrong type or dtype."""


class ModelFileError(EdgeposeError, ValueError):
    """A model, engine or weights file is missing, truncated or corrupt."""


class WeightsMismatchError(EdgeposeError, ValueError):
    """A weights file does not fit the architecture it is loaded into."""


class DownloadError(EdgeposeError, OSError):
    """A download failed, or its checksum did not match."""


class MissingDependencyError(EdgeposeError, ImportError):
    """An optional package needed for this feature is not installed."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean A or B?)`` for the names in ``candidates`` close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(dict.fromkeys(candidates)), n=3)
    return " (did you mean %s?)" % " or ".join(close) if close else ""
