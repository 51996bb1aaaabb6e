"""Architecture builders: a backbone family and a head, named as GluonCV names them."""
from __future__ import annotations

from edgepose.converters.archs.heads import alphapose_head, deconv_head, pixel_shuffle_head
from edgepose.converters.archs.mobilenet import mobilenet_v1, mobilenet_v2, mobilenet_v3
from edgepose.converters.archs.resnet import fast_se_resnet, parse_resnet, resnet_v1
from edgepose.converters.graph import GraphBuilder

#: head name -> (builder, where its model keeps the backbone)
HEADS = {
    "deconv": (deconv_head, "resnet"),          # SimplePoseResNet.resnet
    "pixel_shuffle": (pixel_shuffle_head, "features"),  # MobilePose.features
    "alphapose_duc": (alphapose_head, "preact"),  # FastPose.preact
}
BACKBONES = ("resnet18_v1b", "resnet50_v1b", "resnet50_v1d", "resnet101_v1b", "resnet101_v1d",
             "resnet152_v1b", "resnet152_v1d", "fast_se_resnet101", "mobilenet1.0",
             "mobilenetv2_1.0", "mobilenetv3_large", "mobilenetv3_small")


def build_pose_net(g: GraphBuilder, x: str, backbone: str, head: str, num_joints: int = 17) -> str:
    """Emit backbone + head into ``g``; returns the heatmap tensor name."""
    head_fn, prefix = HEADS[head]
    resnet = parse_resnet(backbone)
    if backbone == "fast_se_resnet101":
        y = fast_se_resnet(g, x, prefix, 101)
    elif resnet is not None:
        y = resnet_v1(g, x, prefix, resnet[0], deep_stem=resnet[1])
    else:
        # Mobile Pose adds the cut MobileNet Sequential as one child: features.0.<k>
        prefix += ".0"
        if backbone == "mobilenet1.0":
            y = mobilenet_v1(g, x, prefix)
        elif backbone == "mobilenetv2_1.0":
            y = mobilenet_v2(g, x, prefix)
        else:
            y = mobilenet_v3(g, x, prefix, backbone[len("mobilenetv3_"):])
    return head_fn(g, y, num_joints)
