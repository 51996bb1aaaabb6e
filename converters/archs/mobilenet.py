"""MobileNet v1, v2 and v3 (GluonCV ``mobilenet.py``/``mobilenetv3.py``), cut where Mobile Pose cuts them.

``prefix`` is the Sequential holding the cut ``features`` (children numbered from 0).
"""
from __future__ import annotations

import math

from edgepose.converters.archs.resnet import squeeze_excite
from edgepose.converters.graph import GraphBuilder

# MobileNet v1 depthwise-separable units: (out channels, stride)
V1_UNITS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
            (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

# MobileNet v2 linear bottlenecks: (out, expansion t, stride)
V2_BLOCKS = ((16, 1, 1), (24, 6, 2), (24, 6, 1), (32, 6, 2), (32, 6, 1), (32, 6, 1),
             (64, 6, 2), (64, 6, 1), (64, 6, 1), (64, 6, 1), (96, 6, 1), (96, 6, 1), (96, 6, 1),
             (160, 6, 2), (160, 6, 1), (160, 6, 1), (320, 6, 1))

# MobileNet v3 residual units: (kernel, expansion, out, SE, activation, stride)
RE, HS = "relu", "hard_swish"
V3_LARGE = ((3, 16, 16, False, RE, 1), (3, 64, 24, False, RE, 2), (3, 72, 24, False, RE, 1),
            (5, 72, 40, True, RE, 2), (5, 120, 40, True, RE, 1), (5, 120, 40, True, RE, 1),
            (3, 240, 80, False, HS, 2), (3, 200, 80, False, HS, 1), (3, 184, 80, False, HS, 1),
            (3, 184, 80, False, HS, 1), (3, 480, 112, True, HS, 1), (3, 672, 112, True, HS, 1),
            (5, 672, 160, True, HS, 2), (5, 960, 160, True, HS, 1), (5, 960, 160, True, HS, 1))
V3_SMALL = ((3, 16, 16, True, RE, 2), (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1),
            (5, 96, 40, True, HS, 2), (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1),
            (5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1), (5, 288, 96, True, HS, 2),
            (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1))
V3_CONFIGS = {"large": (V3_LARGE, 960), "small": (V3_SMALL, 576)}


def mobilenet_v1(g: GraphBuilder, x: str, prefix: str) -> str:
    """``mobilenet1.0`` features[:-2]: ends with the last pointwise conv + BN + ReLU."""
    x = g.conv(x, prefix + ".0", 32, 3, 2, bn=prefix + ".1", act="relu")
    for i, (out, stride) in enumerate(V1_UNITS):
        j = 3 + 6 * i  # dw conv, BN, ReLU, pw conv, BN, ReLU
        c = g.channels[x]
        x = g.conv(x, "%s.%d" % (prefix, j), c, 3, stride, groups=c, bn="%s.%d" % (prefix, j + 1), act="relu")
        x = g.conv(x, "%s.%d" % (prefix, j + 3), out, 1, bn="%s.%d" % (prefix, j + 4), act="relu")
    return x


def mobilenet_v2(g: GraphBuilder, x: str, prefix: str) -> str:
    """``mobilenetv2_1.0`` features[:-1]: keeps the final 1x1 conv 320->1280 + BN + ReLU6."""
    x = g.conv(x, prefix + ".0", 32, 3, 2, bn=prefix + ".1", act="relu6")
    for i, (out, t, stride) in enumerate(V2_BLOCKS):
        p = "%s.%d.out" % (prefix, 3 + i)
        cin = g.channels[x]
        y, m = x, 0
        if t != 1:
            y = g.conv(y, "%s.0" % p, cin * t, 1, bn="%s.1" % p, act="relu6")
            m = 3
        c = g.channels[y]
        y = g.conv(y, "%s.%d" % (p, m), c, 3, stride, groups=c, bn="%s.%d" % (p, m + 1), act="relu6")
        y = g.conv(y, "%s.%d" % (p, m + 3), out, 1, bn="%s.%d" % (p, m + 4))
        x = g.add(y, x) if stride == 1 and cin == out else y
    j = 3 + len(V2_BLOCKS)
    return g.conv(x, "%s.%d" % (prefix, j), 1280, 1, bn="%s.%d" % (prefix, j + 1), act="relu6")


def make_divisible(value: float, divisor: int = 8) -> int:
    """GluonCV's plain round-up to a multiple of ``divisor``."""
    return int(math.ceil(value / divisor) * divisor)


def mobilenet_v3(g: GraphBuilder, x: str, prefix: str, size: str) -> str:
    """``mobilenetv3_<size>`` features[:-4]: ends with the last 1x1 conv + BN + HardSwish."""
    units, last = V3_CONFIGS[size]
    x = g.conv(x, prefix + ".0", 16, 3, 2, bn=prefix + ".1", act=HS)
    for i, (k, exp, out, se, act, stride) in enumerate(units):
        p = "%s.%d" % (prefix, 3 + i)
        cin = g.channels[x]
        y = x
        if exp != out:  # GluonCV compares the expansion with the OUTPUT width
            y = g.conv(y, p + ".expand.conv", exp, 1, bn=p + ".expand.bn", act=act)
        y = g.conv(y, p + ".conv1.conv", exp, k, stride, groups=exp, bn=p + ".conv1.bn", act=act)
        if se:
            y = squeeze_excite(g, y, p + ".se.conv1", p + ".se.conv2", make_divisible(exp // 4),
                               "hard_sigmoid", dense=False)
        y = g.conv(y, p + ".conv2.conv", out, 1, bn=p + ".conv2.bn")
        x = g.add(y, x) if stride == 1 and cin == out else y
    j = 3 + len(units)
    return g.conv(x, "%s.%d" % (prefix, j), last, 1, bn="%s.%d" % (prefix, j + 1), act=HS)
