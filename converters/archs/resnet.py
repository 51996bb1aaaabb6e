"""ResNet v1b / v1d (GluonCV ``resnetv1b.py``) and AlphaPose's FastSE-ResNet, from one block builder."""
from __future__ import annotations

from typing import Callable, Optional

from edgepose.converters.graph import GraphBuilder

#: depth -> (bottleneck?, blocks per stage)
DEPTHS = {
    18: (False, (2, 2, 2, 2)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}


def squeeze_excite(g: GraphBuilder, x: str, fc1: str, fc2: str, mid: int, gate: str, dense: bool) -> str:
    """Global average pool -> fc (bias) -> ReLU -> fc (bias) -> gate -> channel-wise multiply."""
    s = g.global_avg_pool(x)
    s = g.conv(s, fc1, mid, 1, bias=True, act="relu", dense=dense)
    s = g.conv(s, fc2, g.channels[x], 1, bias=True, act=gate, dense=dense)
    return g.mul(x, s)


def block(g: GraphBuilder, x: str, p: str, planes: int, stride: int, bottleneck: bool,
          avg_down: bool = False, se: bool = False) -> str:
    """BasicBlockV1b / BottleneckV1b (stride on the 3x3), with the v1b or v1d shortcut."""
    out_ch = planes * 4 if bottleneck else planes
    shortcut = x
    if stride != 1 or g.channels[x] != out_ch:
        if avg_down:  # v1d: AvgPool(k = s = stride, ceil, no pad) -> 1x1 conv stride 1 -> BN
            pooled = g.avg_pool_ceil(x, stride) if stride > 1 else x  # a 1x1/1 pool is the identity
            shortcut = g.conv(pooled, p + ".downsample.1", out_ch, 1, bn=p + ".downsample.2")
        else:
            shortcut = g.conv(x, p + ".downsample.0", out_ch, 1, stride, bn=p + ".downsample.1")
    if bottleneck:
        y = g.conv(x, p + ".conv1", planes, 1, bn=p + ".bn1", act="relu")
        y = g.conv(y, p + ".conv2", planes, 3, stride, bn=p + ".bn2", act="relu")
        y = g.conv(y, p + ".conv3", out_ch, 1, bn=p + ".bn3")
    else:
        y = g.conv(x, p + ".conv1", planes, 3, stride, bn=p + ".bn1", act="relu")
        y = g.conv(y, p + ".conv2", planes, 3, bn=p + ".bn2")
    if se:  # AlphaPose: SE (reduction 1, Dense layers) on the residual branch, before the add
        y = squeeze_excite(g, y, p + ".se.fc.0", p + ".se.fc.2", out_ch, "sigmoid", dense=True)
    return g.add(y, shortcut, act="relu")


def stages(g: GraphBuilder, x: str, depth: int, stage_prefix: Callable[[int], str],
           avg_down: bool = False, se_first: bool = False) -> str:
    """The four stages (planes 64/128/256/512, strides 1/2/2/2); output stride 32 overall."""
    bottleneck, counts = DEPTHS[depth]
    for i, count in enumerate(counts):
        for b in range(count):
            x = block(g, x, "%s.%d" % (stage_prefix(i), b), 64 << i, 2 if (i and not b) else 1,
                      bottleneck, avg_down, se=se_first and b == 0)
    return x


def resnet_v1(g: GraphBuilder, x: str, prefix: str, depth: int, deep_stem: bool = False) -> str:
    """GluonCV ``resnet<depth>_v1b`` (or ``_v1d`` with ``deep_stem``) cut before the pooling.

    Children of the cut Sequential: 0 stem conv (or deep-stem Sequential), 1 BN, 2 ReLU,
    3 MaxPool, 4-7 layer1-4.
    """
    if deep_stem:  # 3x3/2 (32) -> 3x3 (32) -> 3x3 (64), the last BN is the model's bn1
        x = g.conv(x, prefix + ".0.0", 32, 3, 2, bn=prefix + ".0.1", act="relu")
        x = g.conv(x, prefix + ".0.3", 32, 3, bn=prefix + ".0.4", act="relu")
        x = g.conv(x, prefix + ".0.6", 64, 3, bn=prefix + ".1", act="relu")
    else:
        x = g.conv(x, prefix + ".0", 64, 7, 2, pad=3, bn=prefix + ".1", act="relu")
    x = g.max_pool(x)
    return stages(g, x, depth, lambda i: "%s.%d" % (prefix, 4 + i), avg_down=deep_stem)


def fast_se_resnet(g: GraphBuilder, x: str, prefix: str, depth: int = 101) -> str:
    """AlphaPose's FastSE-ResNet: plain ResNet with SE in the first block of every stage."""
    x = g.conv(x, prefix + ".conv1", 64, 7, 2, pad=3, bn=prefix + ".bn1", act="relu")
    x = g.max_pool(x)
    return stages(g, x, depth, lambda i: "%s.layer%d" % (prefix, i + 1), se_first=True)


def parse_resnet(backbone: str) -> Optional[tuple]:
    """``"resnet50_v1d"`` -> (50, True); None when it is not a ResNet name."""
    if not backbone.startswith("resnet"):
        return None
    depth, version = backbone[len("resnet"):].split("_")
    return int(depth), version == "v1d"
