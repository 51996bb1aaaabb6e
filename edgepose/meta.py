"""Model metadata: what a pose model says about itself.

The exporter writes these fields into ONNX ``metadata_props`` (and engine sidecars); the
runtime reads them back to configure pre- and post-processing. One module does both, so
the two sides cannot drift apart. Every value is stored JSON-encoded under ``edgepose.<field>``.
"""
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Dict, List, Mapping, Tuple

from edgepose.errors import ModelFileError
from edgepose.keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINTS

PREFIX = "edgepose."
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The two crop/decode conventions of the zoo (reference §4.2/§5.3a and §4.4/§5.3c).
DECODERS = ("simple", "alphapose")


@dataclass
class ModelMeta:
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
    weights_sha1: str = "unknown"
    precision: str = "fp32"
    source: str = "unknown"
    edgepose_version: str = ""

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

    @property
    def random_weights(self) -> bool:
        return self.weights_sha1 == "random"

    def to_props(self) -> Dict[str, str]:
        """Encode as ONNX ``metadata_props`` key/value strings."""
        return {PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], **overrides: object) -> "ModelMeta":
        """Decode ``metadata_props``; fields absent from the model keep their defaults.

        ``overrides`` (values that are not None) win over the stored ones, which is how a
        model from elsewhere gets its input size or normalisation from the caller.
        """
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
        return cls(**values)  # type: ignore[arg-type]

    @staticmethod
    def has_edgepose_props(props: Mapping[str, str]) -> bool:
        return any(k.startswith(PREFIX) for k in props)


