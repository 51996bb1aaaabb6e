"""The GluonCV pose model zoo: one declarative table of its 16 entries.

Names follow GluonCV; the two hashtag variants get their own names
(``simple_pose_resnet18_v1b_128x96``, ``simple_pose_resnet152_v1d_384x288``) and are also
reachable as ``NAME:HASHTAG``. Figures: COCO val2017 OKS AP with ground-truth boxes
(GluonCV's CSV tables) and V100 batch-64 throughput of the original MXNet models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from edgepose.errors import InputError, did_you_mean
from edgepose.meta import IMAGENET_MEAN, IMAGENET_STD

ALPHAPOSE_MEAN = (0.406, 0.457, 0.480)  # subtracted from R, G, B; AlphaPose divides by nothing


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo and everything known about it."""

    name: str                     # edgepose name (unique)
    gluoncv_name: str             # GluonCV model name, the prefix of its weights file
    hashtag: str                  # first 8 hex digits of the weights file's SHA-1
    sha1: Optional[str]           # full SHA-1 where GluonCV's model store has it
    backbone: str
    head: str                     # deconv | pixel_shuffle | alphapose_duc
    input_size: Tuple[int, int]   # (H, W)
    ap: Tuple[float, float, float]       # AP, AP50, AP75 without flip test
    ap_flip: Tuple[float, float, float]  # the same with flip test
    v100_fps: Optional[float]     # original MXNet model, V100, batch 64, samples/s
    params: int                   # trainable parameters (as GluonCV counts them)
    gflops: float                 # 2 x multiply-accumulates per person, from the ONNX graph

    @property
    def decoder(self) -> str:
        return "alphapose" if self.head == "alphapose_duc" else "simple"

    @property
    def mean(self) -> Tuple[float, float, float]:
        return ALPHAPOSE_MEAN if self.decoder == "alphapose" else IMAGENET_MEAN

    @property
    def std(self) -> Tuple[float, float, float]:
        return (1.0, 1.0, 1.0) if self.decoder == "alphapose" else IMAGENET_STD

    @property
    def weights_filename(self) -> str:
        return "%s-%s.params" % (self.gluoncv_name, self.hashtag)

    def as_dict(self) -> Dict[str, object]:
        """The JSON form printed by ``edgepose zoo --json``."""
        return {
            "name": self.name, "gluoncv_name": self.gluoncv_name, "hashtag": self.hashtag,
            "sha1": self.sha1, "backbone": self.backbone, "head": self.head,
            "input_size": list(self.input_size), "ap": self.ap[0], "ap_flip": self.ap_flip[0],
            "ap50": self.ap[1], "ap75": self.ap[2], "ap50_flip": self.ap_flip[1],
            "ap75_flip": self.ap_flip[2], "v100_fps": self.v100_fps, "params": self.params,
            "gflops": self.gflops, "weights_file": self.weights_filename,
        }


S, M = "deconv", "pixel_shuffle"
_ENTRIES = [
    ZooEntry("simple_pose_resnet18_v1b", "simple_pose_resnet18_v1b", "f63d42ac",
             "f63d42ac8f83b239d4e08b636b888b8e50cd066d", "resnet18_v1b", S, (256, 192),
             (66.3, 89.2, 73.4), (68.4, 90.3, 75.7), 1887.8, 15376721, 5.7944),
    ZooEntry("simple_pose_resnet18_v1b_128x96", "simple_pose_resnet18_v1b", "ccd24037", None,
             "resnet18_v1b", S, (128, 96), (52.8, 83.6, 57.9), (54.5, 84.8, 60.3), None, 15376721, 1.4486),
    ZooEntry("simple_pose_resnet50_v1b", "simple_pose_resnet50_v1b", "e2c7b1ad",
             "e2c7b1adea31264bc9220511308b4efa89c6fc50", "resnet50_v1b", S, (256, 192),
             (71.0, 91.2, 78.6), (72.2, 92.2, 79.9), 791.7, 33999697, 10.8528),
    ZooEntry("simple_pose_resnet50_v1d", "simple_pose_resnet50_v1d", "ba2675b6",
             "ba2675b6a43fc31601f0e99311b0bb115369bc82", "resnet50_v1d", S, (256, 192),
             (71.6, 91.3, 78.7), (73.3, 92.4, 80.8), 752.1, 34018929, 11.3223),
    ZooEntry("simple_pose_resnet101_v1b", "simple_pose_resnet101_v1b", "b7ec0de1",
             "b7ec0de1a34eb718efd4a84339cc1547ead88cbe", "resnet101_v1b", S, (256, 192),
             (72.4, 92.2, 79.8), (73.7, 92.3, 81.1), 538.8, 52991825, 18.1257),
    ZooEntry("simple_pose_resnet101_v1d", "simple_pose_resnet101_v1d", "1f8f48fd",
             "1f8f48fd49a23bcc73c1cd736bdc639cd1434489", "resnet101_v1d", S, (256, 192),
             (73.0, 92.2, 80.8), (74.2, 92.4, 82.0), 521.1, 53011057, 18.5952),
    ZooEntry("simple_pose_resnet152_v1b", "simple_pose_resnet152_v1b", "ef4e0336",
             "ef4e033612a5fca6fc69e54c87da3ba3866d533e", "resnet152_v1b", S, (256, 192),
             (72.4, 92.1, 79.6), (74.2, 92.3, 82.1), 401.9, 68635473, 25.3986),
    ZooEntry("simple_pose_resnet152_v1d", "simple_pose_resnet152_v1d", "3ca502ea",
             "3ca502ea8eaaa15f4f972d5cf139167d15ffa798", "resnet152_v1d", S, (256, 192),
             (73.4, 92.3, 80.7), (74.6, 93.4, 82.1), 391.4, 68654705, 25.8681),
    ZooEntry("simple_pose_resnet152_v1d_384x288", "simple_pose_resnet152_v1d", "2f544338", None,
             "resnet152_v1d", S, (384, 288), (74.8, 92.3, 82.0), (76.1, 92.4, 83.2), None, 68654705, 58.2032),
    ZooEntry("mobile_pose_resnet18_v1b", "mobile_pose_resnet18_v1b", "dd6644eb",
             "dd6644ebca0d320eb460342d1ed6e1f0793e3946", "resnet18_v1b", M, (256, 192),
             (66.2, 89.2, 74.3), (67.9, 90.3, 75.7), 3849.5, 12858208, 3.9088),
    ZooEntry("mobile_pose_resnet50_v1b", "mobile_pose_resnet50_v1b", "ec8809df",
             "ec8809df9adbeefc022e5977fda60c4e4a58c3ac", "resnet50_v1b", M, (256, 192),
             (71.1, 91.3, 78.7), (72.4, 92.3, 79.8), 1172.3, 25582944, 8.4009),
    ZooEntry("mobile_pose_mobilenet1.0", "mobile_pose_mobilenet1.0", "b399bac7",
             "b399bac75ebbd1b9d04a16906bddc64f1e33496b", "mobilenet1.0", M, (256, 192),
             (64.1, 88.1, 71.2), (65.7, 89.2, 73.4), 3592.4, 5019744, 1.4805),
    ZooEntry("mobile_pose_mobilenetv2_1.0", "mobile_pose_mobilenetv2_1.0", "4acdc130",
             "4acdc130ebee695b1181fb7e4eee8f2c4d91a614", "mobilenetv2_1.0", M, (256, 192),
             (63.7, 88.1, 71.0), (65.0, 89.2, 72.3), 3240.3, 4102176, 0.9613),
    ZooEntry("mobile_pose_mobilenetv3_large", "mobile_pose_mobilenetv3_large", "1ca004dc",
             "1ca004dc5ab2bd0e10d782734d3efbefff23180c", "mobilenetv3_large", M, (256, 192),
             (63.7, 88.9, 70.8), (64.5, 89.0, 72.0), 3274.8, 4768336, 0.7862),
    # GluonCV's CSV still shows b1b148a9, the file before the NaN/Inf purge; the store has c2a11fae.
    ZooEntry("mobile_pose_mobilenetv3_small", "mobile_pose_mobilenetv3_small", "c2a11fae",
             "c2a11fae8970c2c2e79e2b77a4c4d62e3d3e054f", "mobilenetv3_small", M, (256, 192),
             (54.3, 83.7, 59.4), (55.6, 84.7, 61.7), 6866.4, 2625088, 0.4648),
    ZooEntry("alpha_pose_resnet101_v1b_coco", "alpha_pose_resnet101_v1b_coco", "de56b871",
             "de56b871543847d586deeca488b5bfe1b77bb5c5", "fast_se_resnet101", "alphapose_duc", (320, 256),
             (74.2, 91.6, 80.7), (76.7, 92.6, 82.9), 407.4, 59569873, 31.7299),
]
ZOO: Dict[str, ZooEntry] = {}
for _e in _ENTRIES:
    if _e.name in ZOO:
        raise RuntimeError("duplicate zoo entry %s" % _e.name)
    ZOO[_e.name] = _e


def list_models() -> List[ZooEntry]:
    """Every zoo entry, in table order."""
    return list(ZOO.values())


def get_entry(name: str) -> ZooEntry:
    """Look up ``NAME`` or ``NAME:HASHTAG``, NAME being the edgepose or the GluonCV name
    (``simple_pose_resnet18_v1b:ccd24037`` and ``simple_pose_resnet18_v1b_128x96:ccd24037`` alike)."""
    base, _, tag = name.partition(":")
    if tag:
        named = [e for e in ZOO.values() if base in (e.name, e.gluoncv_name)]
        for entry in named:
            if entry.hashtag == tag.lower():
                return entry
        if not named:
            raise InputError("unknown zoo model %r in %r%s; `edgepose zoo` lists all %d"
                             % (base, name, did_you_mean(base, list(ZOO)), len(ZOO)))
        known = ["%s:%s" % (base, e.hashtag) for e in named]
        raise InputError("no zoo weights %r; known for %s: %s" % (name, base, ", ".join(known)))
    if name in ZOO:
        return ZOO[name]
    raise InputError("unknown zoo model %r%s; `edgepose zoo` lists all %d" % (name, did_you_mean(name, list(ZOO)),
                                                                            len(ZOO)))
