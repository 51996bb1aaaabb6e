"""Find or fetch GluonCV's pretrained ``.params`` files (reference §1.3).

Order: an explicit path; GluonCV's own cache (``$MXNET_HOME/models`` or ``~/.mxnet/models``,
read-only to us); edgepose's cache; a download from the GluonCV model store into edgepose's
cache. Cached files are trusted only if their SHA-1 matches (full SHA-1, else the hashtag).
"""
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import List, Optional, Union

from edgepose.cache import cache_dir
from edgepose.download import download as fetch
from edgepose.download import extract_zip_member, hash_matches
from edgepose.fileio import file_hash
from edgepose.errors import DownloadError, InputError, ModelFileError

__all__ = ["gluoncv_cache_dirs", "gluoncv_store_url", "params_file_name", "resolve_weights"]

log = logging.getLogger(__name__)

DEFAULT_GLUON_REPO = "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/"
_HASHTAG = re.compile(r"[0-9a-f]{8}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


def params_file_name(model: str, hashtag: str) -> str:
    """GluonCV's file name for a zoo weight file: ``<model>-<hashtag>.params``."""
    return f"{model}-{hashtag}.params"


def gluoncv_store_url(model: str, hashtag: str) -> str:
    """The model-store zip URL; ``$MXNET_GLUON_REPO`` overrides the default mirror."""
    repo = os.environ.get("MXNET_GLUON_REPO") or DEFAULT_GLUON_REPO
    if not repo.endswith("/"):
        repo += "/"
    return f"{repo}gluon/models/{model}-{hashtag}.zip"


def gluoncv_cache_dirs() -> List[Path]:
    """Where GluonCV keeps downloaded weights: ``$MXNET_HOME/models`` or ``~/.mxnet/models``."""
    home = os.environ.get("MXNET_HOME")
    root = Path(home).expanduser() if home else Path.home() / ".mxnet"
    return [root / "models"]


def resolve_weights(
    model: str,
    hashtag: str,
    sha1: Optional[str],
    weights: Union[str, os.PathLike, None] = None,
    *,
    download: bool = True,
    progress: bool = True,
    timeout: float = 15.0,
) -> Path:
    """Return the path of the GluonCV weight file for ``model``/``hashtag``.

    ``weights`` (an explicit file) wins and is used as given, unchecked. Otherwise the caches are
    searched and, if ``download`` is true, the file is fetched. ``sha1`` is the full SHA-1 when
    known; without it only the hashtag prefix is checked.
    """
    _check_ids(model, hashtag, sha1)
    if weights is not None:
        return _explicit(Path(weights))
    name = params_file_name(model, hashtag)
    expected = sha1 or hashtag
    for folder in gluoncv_cache_dirs():
        candidate = folder / name
        if candidate.is_file():
            if _verified(candidate, expected):
                return candidate
            log.warning("ignoring %s: its SHA-1 does not start with %s (left in place, it "
                        "belongs to GluonCV)", candidate, expected)
    own = cache_dir("weights") / name
    if own.is_file():
        if _verified(own, expected):
            return own
        log.warning("%s has the wrong SHA-1 (expected %s); fetching it again", own, expected)
    if not download:
        raise ModelFileError(f"weights {name} are not in {_places()} and downloading is "
                             f"disabled. {_offline_hint(name)}")
    return _download(model, hashtag, expected, own, progress, timeout)


def _check_ids(model: str, hashtag: str, sha1: Optional[str]) -> None:
    if not model or "/" in model or "\\" in model:
        raise InputError(f"not a GluonCV model name: {model!r}")
    if not _HASHTAG.fullmatch(hashtag):
        raise InputError(f"hashtag must be 8 lowercase hex digits, got {hashtag!r}")
    if sha1 is not None and not (_SHA1.fullmatch(sha1) and sha1.startswith(hashtag)):
        raise InputError(f"sha1 must be 40 lowercase hex digits starting with the hashtag "
                         f"{hashtag}, got {sha1!r}")


def _explicit(path: Path) -> Path:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ModelFileError(f"weights file {path} {what}; pass the path of a GluonCV "
                             "'.params' file")
    return path


def _verified(path: Path, expected: str) -> bool:
    return hash_matches(file_hash(path, "sha1"), expected)


def _download(
    model: str, hashtag: str, expected: str, dest: Path, progress: bool, timeout: float
) -> Path:
    """Fetch the store zip next to ``dest``, extract the checked ``.params``, drop the zip."""
    url = gluoncv_store_url(model, hashtag)
    fd, zip_name = tempfile.mkstemp(dir=str(dest.parent), prefix=f".{dest.stem}.", suffix=".zip")
    os.close(fd)
    zip_path = Path(zip_name)
    try:
        fetch(url, zip_path, progress=progress, timeout=timeout,
              hint=_offline_hint(dest.name))
        try:
            return extract_zip_member(zip_path, dest.name, dest, sha1=expected)
        except DownloadError as exc:
            raise DownloadError(f"{exc} (archive downloaded from {url})") from exc
    finally:
        zip_path.unlink(missing_ok=True)


def _offline_hint(name: str) -> str:
    return (f"To work offline, pass --weights FILE with the GluonCV file {name}, or put it in "
            f"{gluoncv_cache_dirs()[0]}, or use --random-weights for offline trials.")


def _places() -> str:
    folders = gluoncv_cache_dirs() + [cache_dir("weights")]
    return " or ".join(str(folder) for folder in folders)
