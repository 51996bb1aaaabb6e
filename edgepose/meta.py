"""Model metadata: what a pose model or a person detector says about itself, the one schema of the
``edgepose.*`` keys.

The exporter writes these fields into ONNX ``metadata_props`` (and engine sidecars); the
runtime reads them back to configure pre- and post-processing. One module does both, so
the two sides cannot drift apart. Every value is stored JSON-encoded under ``edgepose.<field>``:
the fields of :class:`ModelMeta` (pose models), or of :class:`DetectorMeta` (YOLOX person detectors,
which carry ``edgepose.kind`` = ``"detector"``; a model without that key is a pose model), and the INT8
keys ``KEY_INT8_*`` written beside them.

:func:`read_onnx_props`, :func:`write_onnx_props` and :func:`update_onnx_props` work on an onnx
``ModelProto`` without importing onnx; :func:`onnx_metadata_props` reads the props of an ONNX file
without the onnx package at all.
"""
import io
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, BinaryIO, Dict, Iterable, List, Mapping, Optional, Tuple

from edgepose.errors import ModelFileError
from edgepose.fileio import PathLike
from edgepose.keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINTS

PREFIX = "edgepose."
#: Values of ``edgepose.precision``.
PRECISIONS = ("fp32", "fp16", "int8")
#: Values of ``edgepose.int8_target``: Q/DQ INT8 for TensorRT, or ONNX Runtime's fastest CPU form.
TARGETS = ("tensorrt", "cpu")
#: Keys written beside ModelMeta's fields (``ModelMeta.from_props`` ignores them).
KEY_INT8_TARGET = PREFIX + "int8_target"  # one of TARGETS
KEY_INT8_CALIBRATION = PREFIX + "int8_calibration"  # {"method", "crops", provenance ...}
KEY_INT8_AGREEMENT = PREFIX + "int8_agreement"  # the accuracy gate's figures
_ONNX_METADATA_FIELD = 14  # ModelProto.metadata_props
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The two crop/decode conventions of the zoo (reference §4.2/§5.3a and §4.4/§5.3c).
DECODERS = ("simple", "alphapose")
#: Values of ``edgepose.kind``; a model without the key is a pose model.
KINDS = ("pose", "detector")
KEY_KIND = PREFIX + "kind"


def model_kind(props: Mapping[str, str]) -> str:
    """``"detector"`` for a model whose metadata says so, else ``"pose"``."""
    return "detector" if prop_value(props, "kind") == "detector" else "pose"


def _decode_fields(cls: Any, props: Mapping[str, str], overrides: Mapping[str, object]) -> Dict[str, object]:
    """The ``edgepose.<field>`` values of dataclass ``cls`` in ``props`` (JSON-decoded), then ``overrides``
    that are not None; other keys are ignored."""
    known = {f.name for f in fields(cls)}
    values: Dict[str, object] = {}
    for key, raw in props.items():
        if not key.startswith(PREFIX) or key[len(PREFIX):] not in known:
            continue
        try:
            values[key[len(PREFIX):]] = json.loads(raw)
        except ValueError as err:
            raise ModelFileError(
                "model metadata %r is not valid JSON (%s); re-export the model with "
                "`edgepose convert`" % (key, err)) from err
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - known
    if unknown:
        raise TypeError("unknown metadata fields: %s" % ", ".join(sorted(unknown)))
    return values


@dataclass
class _Provenance:
    """What every model edgepose writes records about itself, pose model or detector: the SHA-1 of its
    weights (``random`` for random weights), its precision, where it came from and the edgepose that wrote
    it; and how all of it is encoded as ONNX ``metadata_props``."""

    weights_sha1: str = "unknown"
    precision: str = "fp32"
    source: str = "unknown"
    edgepose_version: str = ""

    @property
    def random_weights(self) -> bool:
        return self.weights_sha1 == "random"

    def to_props(self) -> Dict[str, str]:
        """Encode as ONNX ``metadata_props`` key/value strings."""
        return {PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}


@dataclass
class ModelMeta(_Provenance):
    """How to feed a top-down heatmap model and read its output.

    ``mean``/``std`` apply to pixel values scaled to [0, 1], per channel in ``color_order``.
    """

    name: str = "custom"
    input_size: Tuple[int, int] = (256, 192)  # (H, W)
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    color_order: str = "RGB"
    keypoints: List[str] = field(default_factory=lambda: list(COCO_KEYPOINTS))
    flip_pairs: List[Tuple[int, int]] = field(default_factory=lambda: list(COCO_FLIP_PAIRS))
    heatmap_stride: int = 4
    decoder: str = "simple"

    def __post_init__(self) -> None:
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        self.flip_pairs = [(int(a), int(b)) for a, b in self.flip_pairs]
        if self.decoder not in DECODERS:
            raise ModelFileError(
                "model metadata names decoder %r; edgepose knows %s" % (self.decoder, ", ".join(DECODERS)))
        if self.color_order not in ("RGB", "BGR"):
            raise ModelFileError("model metadata names colour order %r; expected RGB or BGR" % self.color_order)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @classmethod
    def from_props(cls, props: Mapping[str, str], **overrides: object) -> "ModelMeta":
        """Decode ``metadata_props``; fields absent from the model keep their defaults.

        ``overrides`` (values that are not None) win over the stored ones, which is how a
        model from elsewhere gets its input size or normalisation from the caller.
        """
        if model_kind(props) == "detector":
            raise ModelFileError("this model is a person detector (edgepose.kind \"detector\"), not a pose model; "
                                 "use it as the detector (--detector FILE, edgepose.YoloxDetector)")
        values = _decode_fields(cls, props, overrides)
        return cls(**values)  # type: ignore[arg-type]

    @staticmethod
    def has_edgepose_props(props: Mapping[str, str]) -> bool:
        return any(k.startswith(PREFIX) for k in props)


@dataclass
class DetectorMeta(_Provenance):
    """What a converted YOLOX person detector says about itself (``edgepose.kind`` = ``"detector"``).

    Input: (N, 3, H, W) float32 BGR pixels 0..255, letterboxed top-left with grey 114. Output:
    (N, A, 5 + ``num_classes``) rows over the ``strides`` grids, A = sum((H // s) * (W // s)): box,
    objectness, class probabilities; the box is raw grid offsets, or image-input pixels (cx, cy, w, h)
    when ``decode_in_graph``. ``person_class``: the class id of persons.
    """

    kind: str = "detector"
    name: str = "yolox"
    input_size: Tuple[int, int] = (416, 416)  # (H, W)
    strides: Tuple[int, ...] = (8, 16, 32)
    decode_in_graph: bool = False
    num_classes: int = 80
    person_class: int = 0
    color_order: str = "BGR"

    def __post_init__(self) -> None:
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.strides = tuple(int(s) for s in self.strides)
        if self.kind != "detector":
            raise ModelFileError("detector metadata names kind %r; expected \"detector\"" % self.kind)

    @classmethod
    def from_props(cls, props: Mapping[str, str], **overrides: object) -> "DetectorMeta":
        """Decode ``metadata_props`` of a detector (``overrides`` that are not None win)."""
        return cls(**_decode_fields(cls, props, overrides))  # type: ignore[arg-type]



def edgepose_props(props: Mapping[str, str]) -> Dict[str, str]:
    """The ``edgepose.*`` entries of ``props``."""
    return {k: v for k, v in props.items() if str(k).startswith(PREFIX)}


def encode_prop(name: str, value: Any) -> Dict[str, str]:
    """``{"edgepose.<name>": JSON of value}``, one entry of the props."""
    return {PREFIX + name: json.dumps(value)}


def prop_value(props: Mapping[str, str], name: str, default: Any = None) -> Any:
    """The JSON value of ``edgepose.<name>`` in ``props``; ``default`` when it is absent or not JSON."""
    try:
        return json.loads(props[PREFIX + name])
    except (KeyError, ValueError):
        return default


def read_onnx_props(model: Any) -> Dict[str, str]:
    """The ``metadata_props`` of an onnx ``ModelProto`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def write_onnx_props(model: Any, props: Mapping[str, str]) -> None:
    """Replace the ``metadata_props`` of an onnx ``ModelProto`` with ``props``."""
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def update_onnx_props(model: Any, props: Mapping[str, str]) -> None:
    """Add or replace ``props`` in the ``metadata_props`` of an onnx ``ModelProto``, keeping the others."""
    merged = read_onnx_props(model)
    merged.update(props)
    write_onnx_props(model, merged)


def onnx_metadata_props(path: PathLike) -> Dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read without the onnx package.

    Only the top-level protobuf fields of the ModelProto are walked and the graph is skipped by
    its length, so this reads a few hundred bytes of a model of any size. A file that is not a
    protobuf raises ValueError.
    """
    props: Dict[str, str] = {}
    with open(str(path), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for _, value in _fields(f, size, keep=(_ONNX_METADATA_FIELD,)):
            entry = dict(_fields(io.BytesIO(value), len(value), keep=(1, 2)))
            props[entry.get(1, b"").decode("utf-8")] = entry.get(2, b"").decode("utf-8")
    return props


def _varint(f: BinaryIO) -> Optional[int]:
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            if shift:
                raise ValueError("truncated protobuf varint")
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("protobuf varint too long")


def _fields(f: BinaryIO, size: int, keep: Tuple[int, ...]) -> Iterable[Tuple[int, bytes]]:
    """(field number, bytes) of the length-delimited fields in ``keep``; everything else is skipped."""
    while True:
        key = _varint(f)
        if key is None:
            return
        number, wire = key >> 3, key & 7
        if wire == 0:
            _varint(f)
            continue
        length = {1: 8, 5: 4}.get(wire)
        if wire == 2:
            length = _varint(f)
        if length is None or f.tell() + length > size:
            raise ValueError("not a protobuf message (wire type %d at byte %d)" % (wire, f.tell()))
        if wire == 2 and number in keep:
            yield number, f.read(length)
        else:
            f.seek(length, 1)
