"""Every zoo entry builds into a checked, TensorRT-parsable graph whose figures match the zoo table."""
import numpy as np
import pytest

from edgepose.converters.archs import build_pose_net
from edgepose.converters.export import count_gflops, entry_meta
from edgepose.converters.graph import ALLOWED_OPS, OPSET, GraphBuilder, RandomWeights
from edgepose.converters.zoo import get_entry, list_models
from edgepose.errors import InputError
from edgepose.meta import ModelMeta


@pytest.mark.parametrize("entry", list_models(), ids=lambda e: e.name)
def test_graph_is_checked_allow_listed_and_matches_the_table(entry):
    g = GraphBuilder(RandomWeights(0))
    h, w = entry.input_size
    model = g.to_model(build_pose_net(g, g.input(), entry.backbone, entry.head), (h, w), (h // 4, w // 4),
                       entry_meta(entry, "random").to_props(), entry.name)  # to_model runs the full checker
    assert {n.op_type for n in model.graph.node} <= ALLOWED_OPS
    assert model.opset_import[0].version == OPSET
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, h, w]
    out = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim[1:]]
    assert out == [17, h // 4, w // 4]
    assert g.num_params == entry.params
    assert count_gflops(model) == pytest.approx(entry.gflops, abs=5e-5)
    meta = ModelMeta.from_props({p.key: p.value for p in model.metadata_props})
    assert meta.name == entry.name and meta.input_size == entry.input_size and meta.weights_sha1 == "random"
    assert meta.decoder == ("alphapose" if entry.name.startswith("alpha") else "simple")


def test_hashtag_variants_and_names():
    assert get_entry("simple_pose_resnet18_v1b:ccd24037").input_size == (128, 96)
    assert get_entry("simple_pose_resnet152_v1d:2f544338").name == "simple_pose_resnet152_v1d_384x288"
    assert get_entry("simple_pose_resnet18_v1b:f63d42ac").name == "simple_pose_resnet18_v1b"
    with pytest.raises(InputError, match="ccd24037"):
        get_entry("simple_pose_resnet18_v1b:deadbeef")
    names = [e.name for e in list_models()]
    assert len(names) == 16 == len(set(names))
    for e in list_models():
        assert len(e.hashtag) == 8 and (e.sha1 is None or e.sha1.startswith(e.hashtag))


def test_random_weights_are_seeded_and_finite():
    a, b = RandomWeights(1), RandomWeights(1)
    x, y = a.get("resnet.0.weight", (64, 3, 7, 7)), b.get("resnet.0.weight", (64, 3, 7, 7))
    np.testing.assert_array_equal(x, y)
    assert np.isfinite(x).all() and 0.0 < x.std() < 1.0
