"""Small file helpers: the files a user gives (checked, with errors naming them), atomic writes, file hashes.

Which file a model name means lives in :mod:`edgepose.models`."""
import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator, List, Type, Union

from edgepose.errors import EdgeposeError, InputError

#: A file or folder path: ``str`` or ``pathlib.Path`` (any ``os.PathLike``). Every module takes it from here.
PathLike = Union[str, "os.PathLike[str]"]
#: Suffixes of the images edgepose looks for in a folder (compared in lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@contextlib.contextmanager
def atomic_output(path: PathLike, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temporary file in the same folder (``.NAME.*SUFFIX``),
    renamed to ``path`` with the usual permissions when the block ends normally and removed when it
    raises, so a reader never sees a half-written file and a failure leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=suffix, dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_output`), after checking that a file can be
    written there (:func:`writable_file`)."""
    path = writable_file(path)
    with atomic_output(path) as f:
        f.write(data)
    return path


def file_hash(path: PathLike, algo: str = "sha1") -> str:
    """Hex digest of a file (``algo``: a :mod:`hashlib` name), read in chunks."""
    digest = hashlib.new(algo)
    with open(str(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def existing_file(path: PathLike, what: str, advice: str = "", error: Type[EdgeposeError] = InputError) -> Path:
    """``path`` when it is a file; else ``error``: "WHAT PATH is a folder, not a file" or "... does not exist",
    followed by ``advice`` (what to pass instead)."""
    path = Path(path)
    if path.is_file():
        return path
    problem = "is a folder, not a file" if path.is_dir() else "does not exist"
    raise error("%s %s %s%s" % (what, path, problem, "; " + advice if advice else ""))


def writable_file(path: PathLike, what: str = "output file") -> Path:
    """``path`` when a file can be written there: it is no folder and no file stands where a folder must be.

    Commands call it before any work, so a bad output path fails fast and leaves nothing behind.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError("%s %s is a folder; give a file name" % (what, path))
    _no_file_in_the_way(path.parent, what, path)
    return path


def writable_folder(path: PathLike, what: str = "output folder") -> Path:
    """``path`` when it is a folder or can be made one (no file stands in the way of it or of a parent)."""
    path = Path(path)
    _no_file_in_the_way(path, what, path)
    return path


def _no_file_in_the_way(folder: Path, what: str, path: Path) -> None:
    existing = next((p for p in (folder,) + tuple(folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError("cannot write %s %s: %s is a file, not a folder; choose another path" % (what, path, existing))


def read_json(path: PathLike, what: str, expected: str) -> Any:
    """The content of a JSON file the user gave; InputError naming the file (``what`` PATH) when it is
    missing, a folder, unreadable, empty or not JSON. ``expected`` describes the content it should hold."""
    path = existing_file(path, what, "pass " + expected)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise InputError("cannot read %s %s (%s)" % (what, path, e.strerror or e)) from e
    except UnicodeDecodeError as e:
        raise InputError("%s %s is not a text file (not UTF-8 JSON); it should hold %s" % (what, path, expected)) from e
    if not text.strip():
        raise InputError("%s %s is empty; it should hold %s" % (what, path, expected))
    try:
        return json.loads(text)
    except ValueError as e:
        raise InputError("%s %s is not valid JSON (%s); it should hold %s" % (what, path, e, expected)) from e


def images_in(folder: PathLike) -> List[Path]:
    """The image files (:data:`IMAGE_SUFFIXES`) directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image(path: PathLike, advice: str = "") -> Any:
    """A BGR uint8 image (H, W, 3) from a file; InputError naming the file when it is missing, a folder, empty
    or not decodable (then ``advice`` says what to do). OpenCV's own warnings stay silent."""
    import cv2
    import numpy as np

    tail = "; " + advice if advice else ""
    path = existing_file(path, "image", advice)
    try:
        data = np.fromfile(str(path), np.uint8)  # imdecode: no OpenCV warning, and non-ASCII paths on Windows
    except OSError as e:
        raise InputError("cannot read image %s (%s)%s" % (path, e.strerror or e, tail)) from e
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        problem = "is empty (0 bytes)" if not data.size else "cannot be decoded (truncated, corrupt or not an image)"
        raise InputError("image %s %s%s" % (path, problem, tail))
    return image

