"""Small file helpers: atomic writes and model lookup in the edgepose cache."""
import os
import tempfile
from pathlib import Path
from typing import Union

from edgepose.cache import cache_dir
from edgepose.errors import ModelFileError

PathLike = Union[str, Path]


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename,
    so a reader never sees a half-written file and a failure leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def resolve_model(spec: PathLike) -> str:
    """A model file path, a ``triton://`` URL, or the newest conversion of a zoo name in the cache.

    For a name, files ``<name>*.onnx|engine|plan`` in the model cache are considered; an INT8
    conversion wins over FP16 over FP32, then the newest file.
    """
    text = str(spec)
    if "://" in text or Path(text).is_file():
        return text
    if os.sep in text or text.endswith((".onnx", ".engine", ".plan")):
        raise ModelFileError("model file %s does not exist" % text)
    folder = cache_dir("models")
    found = [p for p in folder.glob(text + "*") if p.suffix in (".onnx", ".engine", ".plan")
             and (p.stem == text or p.stem[len(text)] in "-.")]
    if not found:
        raise ModelFileError("no model file %r and no conversion of that name in %s; make one with "
                             "`edgepose convert %s` (add --random-weights to try it offline)" % (text, folder, text))

    def rank(p: Path):
        return ("int8" in p.name, "fp16" in p.name, p.stat().st_mtime)

    return str(max(found, key=rank))
