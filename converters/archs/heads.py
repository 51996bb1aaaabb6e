"""The three heatmap heads of the zoo; each upsamples x8 (heatmap = input / 4)."""
from __future__ import annotations

from edgepose.converters.graph import GraphBuilder


def deconv_head(g: GraphBuilder, x: str, num_joints: int) -> str:
    """Simple Pose: 3 x (ConvTranspose 4x4/2, 256, no bias -> BN -> ReLU) -> 1x1 conv with bias."""
    for i in range(3):
        x = g.deconv(x, "deconv_layers.%d" % (3 * i), 256, bn="deconv_layers.%d" % (3 * i + 1), act="relu")
    return g.conv(x, "final_layer", num_joints, 1, bias=True)


def pixel_shuffle_head(g: GraphBuilder, x: str, num_joints: int) -> str:
    """Mobile Pose: 1x1 conv 256 -> 3 x DUC (3x3 conv -> BN -> ReLU -> PixelShuffle x2) -> 1x1 conv."""
    x = g.conv(x, "upsampling.0", 256, 1)
    for i, width in enumerate((512, 256, 128), start=1):
        x = g.conv(x, "upsampling.%d.conv" % i, width, 3, bn="upsampling.%d.bn" % i, act="relu")
        x = g.pixel_shuffle(x)
    return g.conv(x, "upsampling.4", num_joints, 1)


def alphapose_head(g: GraphBuilder, x: str, num_joints: int) -> str:
    """AlphaPose: PixelShuffle x2 -> DUC(1024) -> DUC(512) -> 3x3 conv with bias."""
    x = g.pixel_shuffle(x)
    for name, width in (("duc1", 1024), ("duc2", 512)):
        x = g.conv(x, name + ".conv", width, 3, bn=name + ".bn", act="relu")
        x = g.pixel_shuffle(x)
    return g.conv(x, "conv_out", num_joints, 3, bias=True)
