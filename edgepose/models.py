"""Model lookup: which file a model name means, and what each conversion in the cache is.

``edgepose convert`` writes into the model cache (``$EDGEPOSE_HOME/models``) files named
``NAME[-random].onnx`` (FP32), ``...-fp16.onnx``, ``...-int8.onnx`` (TensorRT form),
``...-int8-cpu.onnx`` (CPU form), and TensorRT engines (``.engine``/``.plan``/``.trt`` with a
``.json`` sidecar). A :class:`Conversion` is one such file, described by what it says about itself
(ONNX ``metadata_props``, read here without the onnx package; an engine's sidecar) and, where it
says nothing, by its name.

Converted YOLOX person detectors live in ``$EDGEPOSE_HOME/detectors`` (the default detector lookup
searches there); :func:`list_conversions` lists them too, with ``kind`` "detector" (their metadata's
``edgepose.kind``; every file in that folder is a detector), and a pose model name never means one.

A name (a zoo name, ``NAME:HASHTAG``, or the name of a converted foreign model) can have several
conversions. Unless ``precision``/``target`` narrow them, the one used is the first in this order:

1. real weights before random weights (a random-weight model only when nothing else is there);
2. FP32, then FP16, then INT8: the exact model, whose accuracy the zoo publishes, unless a
   reduced precision is asked for;
3. ONNX before a TensorRT engine of the same precision (an engine runs only with the GPU and
   TensorRT release that built it; give its file name to use it);
4. the newest file.
"""
import datetime
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from edgepose.cache import cache_dir
from edgepose.engine_info import ENGINE_SUFFIXES, is_engine, read_sidecar, sidecar_path
from edgepose.errors import InputError, ModelFileError, did_you_mean
from edgepose.fileio import PathLike
from edgepose.meta import PRECISIONS, TARGETS, encode_prop, model_kind, onnx_metadata_props, prop_value

MODEL_SUFFIXES = (".onnx",) + ENGINE_SUFFIXES
#: name tags convert writes (converters/convert.py variant_name), longest first
_PRECISION_TAGS = (("-int8-cpu", "int8", "cpu"), ("-int8", "int8", "tensorrt"), ("-fp16", "fp16", None))


@dataclass(frozen=True)
class Conversion:
    """One model file: its name, precision, INT8 target (None unless INT8), weights (their SHA-1,
    ``random``, or ``unknown`` for a file without edgepose metadata), form, size, date and kind
    (``pose`` or ``detector``)."""

    path: Path
    name: str
    precision: str
    target: Optional[str]
    weights_sha1: str
    engine: bool
    size: int
    mtime: float
    kind: str = "pose"

    @classmethod
    def from_file(cls, path: PathLike, kind: Optional[str] = None) -> "Conversion":
        """Describe ``path`` from its metadata, falling back on its name where the file says nothing
        (and on ``kind`` for a file whose metadata does not name one)."""
        path = Path(path)
        name, precision, target, random_weights = parse_file_name(path.name)
        props = _file_props(path)
        precision = str(prop_value(props, "precision", precision))
        target = str(prop_value(props, "int8_target", target)) if precision == "int8" else None
        weights_sha1 = str(prop_value(props, "weights_sha1", "random" if random_weights else "unknown"))
        stat = path.stat()
        found = model_kind(props) if "edgepose.kind" in props else (kind or "pose")
        return cls(path, name, precision, target, weights_sha1, is_engine(path), stat.st_size, stat.st_mtime, found)

    @property
    def random_weights(self) -> bool:
        return self.weights_sha1 == "random"

    @property
    def weights(self) -> str:
        """``random``, ``real`` (a weights file's SHA-1 is recorded) or ``unknown`` (no edgepose metadata)."""
        return self.weights_sha1 if self.weights_sha1 in ("random", "unknown") else "real"

    def describe(self) -> str:
        """e.g. ``int8, cpu target, real weights`` or ``detector, fp16, TensorRT engine, unknown weights``."""
        parts = (["detector"] if self.kind == "detector" else []) + [self.precision]
        parts += ["%s target" % self.target] if self.target else []
        return ", ".join(parts + (["TensorRT engine"] if self.engine else []) + ["%s weights" % self.weights])

    def as_dict(self) -> Dict[str, object]:
        """The JSON form printed by ``edgepose models --json``."""
        modified = datetime.datetime.fromtimestamp(self.mtime, datetime.timezone.utc).isoformat(timespec="seconds")
        return {"file": self.path.name, "path": str(self.path), "name": self.name, "precision": self.precision,
                "target": self.target, "weights": self.weights, "weights_sha1": self.weights_sha1,
                "format": "engine" if self.engine else "onnx", "size": self.size, "mtime": self.mtime,
                "modified": modified, "kind": self.kind}


def parse_file_name(file_name: str) -> Tuple[str, str, Optional[str], bool]:
    """``NAME[-random][-fp16|-int8|-int8-cpu].onnx`` (or an engine suffix) -> (NAME, precision, target, random).

    The ``-edgepose`` tag of a normalised foreign model is dropped too, so its conversions share a name.
    """
    stem = file_name
    for suffix in MODEL_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    precision, target = "fp32", None
    for tag, tag_precision, tag_target in _PRECISION_TAGS:
        if stem.endswith(tag):
            stem, precision, target = stem[:-len(tag)], tag_precision, tag_target
            break
    random_weights = stem.endswith("-random")
    stem = stem[:-len("-random")] if random_weights else stem
    stem = stem[:-len("-edgepose")] if stem.endswith("-edgepose") else stem
    return stem, precision, target, random_weights


def preference(conversion: Conversion) -> tuple:
    """Sort key of the default order (module docstring): the first one sorted is used."""
    rank = PRECISIONS.index(conversion.precision) if conversion.precision in PRECISIONS else len(PRECISIONS)
    return conversion.random_weights, rank, conversion.engine, -conversion.mtime


def list_conversions(folder: Optional[PathLike] = None) -> List[Conversion]:
    """Every model file in ``folder``, by name, then in the default order; default: the model cache and
    the detectors folder (whose files are detectors)."""
    if folder is None:
        folders = [(cache_dir("models", create=False), None), (cache_dir("detectors", create=False), "detector")]
    else:
        folders = [(Path(folder), None)]
    found = [Conversion.from_file(p, kind) for f, kind in folders if f.is_dir() for p in f.iterdir()
             if not p.name.startswith(".") and p.name.lower().endswith(MODEL_SUFFIXES) and p.is_file()]
    return sorted(found, key=lambda c: (c.kind, c.name) + preference(c))


def check_choice(precision: Optional[str], target: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """Validate a precision/target request; a target alone means INT8."""
    if precision is not None and precision.lower() not in PRECISIONS:
        raise InputError("precision must be one of %s, got %r" % (", ".join(PRECISIONS), precision))
    if target is not None and target.lower() not in TARGETS:
        raise InputError("INT8 target must be one of %s, got %r" % (", ".join(TARGETS), target))
    precision = precision.lower() if precision else None
    if target is not None and precision not in (None, "int8"):
        raise InputError("a target (%s) chooses among INT8 conversions; it does not go with precision %s"
                         % (target, precision))
    return ("int8" if target else precision), (target.lower() if target else None)


def select(conversions: Iterable[Conversion], precision: Optional[str] = None,
           target: Optional[str] = None) -> List[Conversion]:
    """The conversions of the requested precision/target, in the default order."""
    precision, target = check_choice(precision, target)
    return sorted((c for c in conversions if precision in (None, c.precision) and target in (None, c.target)),
                  key=preference)


def zoo_name(text: str) -> Optional[str]:
    """The zoo entry ``text`` names (``NAME`` or ``NAME:HASHTAG``; a bad hashtag is an error), else None."""
    from edgepose.converters.zoo import ZOO, get_entry  # the table is plain data: no onnx

    if ":" in text:
        return get_entry(text).name
    return text if text in ZOO else None


def find_model(spec: PathLike, precision: Optional[str] = None, target: Optional[str] = None) -> Conversion:
    """The model file ``spec`` means: an existing file, a file name in the model cache, or the
    conversion of a model name chosen by ``precision``/``target`` and the default order."""
    precision, target = check_choice(precision, target)
    text = str(spec)
    if "://" in text:
        raise InputError("%s is a URL; only files and model names have conversions to choose from" % text)
    folder = cache_dir("models", create=False)
    path = _model_file(text, folder)
    if path is not None:
        return _matching(Conversion.from_file(path), precision, target)
    name = zoo_name(text) or text
    found = [c for c in list_conversions(folder) if c.name == name and c.kind == "pose"]
    if not found:
        raise _not_converted(text, name, folder)
    chosen = select(found, precision, target)
    if not chosen:
        wanted = " ".join(filter(None, [precision, target and "%s target" % target]))
        option = {"fp16": " --fp16", "int8": " --int8" + (" --target %s" % target if target else "")}
        raise ModelFileError("%s has no %s conversion in %s (there: %s); make one with `edgepose convert %s%s`" % (
            name, wanted, folder, "; ".join("%s (%s)" % (c.path.name, c.describe()) for c in select(found)),
            text, option.get(precision or "", "")))
    return chosen[0]


def _model_file(text: str, folder: Path) -> Optional[Path]:
    """The file ``text`` names (a path, or a bare file name in the model cache); None for a model name."""
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.name == text and (folder / text).is_file():
        return folder / text  # a file name as `edgepose models` lists it
    if "/" in text or os.sep in text or text.lower().endswith(MODEL_SUFFIXES):
        if path.is_dir():
            raise ModelFileError("%s is a folder; give a model file (%s) or a model name"
                                 % (text, ", ".join(MODEL_SUFFIXES)))
        near = [str(p) for p in path.parent.glob("*" + path.suffix)] if path.parent.is_dir() else []
        raise ModelFileError("model file %s does not exist%s" % (text, did_you_mean(
            text, near + [c.path.name for c in list_conversions(folder)])))
    return None


def _not_converted(text: str, name: str, folder: Path) -> Exception:
    """The error for a name without conversions: convert a zoo model, or a close name for a typo."""
    from edgepose.converters.zoo import ZOO

    if name in ZOO:
        return ModelFileError("no conversion of %s in %s yet; make one with `edgepose convert %s` (add "
                              "--random-weights to try it offline)" % (name, folder, text))
    cached = list_conversions(folder)
    return InputError("unknown model %r: not a %s, a zoo name (`edgepose zoo`) or a conversion in %s%s" % (
        text, "file (it is a folder)" if Path(text).is_dir() else "file", folder,
        did_you_mean(text, list(ZOO) + [c.name for c in cached] + [c.path.name for c in cached])))


def resolve_model(spec: PathLike, precision: Optional[str] = None, target: Optional[str] = None) -> str:
    """A ``triton://`` URL as it is, else the path of :func:`find_model`."""
    text = str(spec)
    if "://" in text:
        if precision or target:
            raise InputError("precision and target choose among conversions in the cache; %s names one served "
                             "model" % text)
        return text
    return str(find_model(text, precision, target).path)


def warn_if_random(conversion: Conversion) -> None:
    """A Python warning (library use) when a name resolved to random weights."""
    if conversion.random_weights:
        warnings.warn(random_weights_message(str(conversion.path)), stacklevel=3)


def random_weights_message(model: str) -> str:
    """What is said wherever a random-weight model is used."""
    return ("%s has RANDOM weights: its keypoints are noise, good for plumbing and speed trials only; convert "
            "the model with real weights (`edgepose convert NAME` without --random-weights)" % model)


def remove(conversion: Conversion) -> List[Path]:
    """Delete a conversion (and an engine's sidecar); returns the files removed."""
    removed = []
    for path in [conversion.path] + ([sidecar_path(conversion.path)] if conversion.engine else []):
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def _matching(conversion: Conversion, precision: Optional[str], target: Optional[str]) -> Conversion:
    if not select([conversion], precision, target):
        raise InputError("%s is %s, not the %s asked for; name the file of that conversion (`edgepose models` "
                         "lists them) or drop the precision/target choice"
                         % (conversion.path, conversion.describe(), " ".join(filter(None, [precision, target]))))
    return conversion


def _file_props(path: Path) -> Dict[str, str]:
    """The ``edgepose.*`` metadata of a model file; empty where it has none or cannot be read."""
    try:
        if is_engine(path):
            side = read_sidecar(path) or {}
            props = dict(side.get("metadata") or {})
            if side.get("precision"):
                props.update(encode_prop("precision", side["precision"]))
            return props
        return onnx_metadata_props(path)
    except (OSError, ValueError, AttributeError, TypeError):  # a broken file: its name is all we have
        return {}


__all__ = ["Conversion", "MODEL_SUFFIXES", "PRECISIONS", "TARGETS", "check_choice", "find_model",
           "list_conversions", "parse_file_name", "preference", "random_weights_message",
           "remove", "resolve_model", "select", "warn_if_random", "zoo_name"]
