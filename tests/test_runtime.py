"""edgepose.Runtime end to end on real exported models and real photos."""
import threading

import numpy as np
import onnxruntime as ort
import pytest

from edgepose.decode import decode, merge_flip
from edgepose.errors import InputError, ModelFileError
from edgepose.runtime import Runtime
from edgepose.transforms import flip_batch, preprocess
from support import TEST_MODELS

NAME = "mobile_pose_mobilenetv3_small"
SOCCER_BOXES = np.array([[180, 420, 560, 920, 0.9], [480, 40, 710, 440, 0.8], [590, 70, 930, 470, 0.7]],
                        np.float32)


def manual(model_path, image, boxes, meta, flip=False):
    """The same pipeline by hand: preprocess -> ONNX Runtime session -> decode."""
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    crops = preprocess(image, boxes, meta, image_is_rgb=False)
    hm = sess.run(None, {"input": crops.batch})[0]
    if flip:
        hm = merge_flip(hm, sess.run(None, {"input": flip_batch(crops.batch)})[0], meta.flip_pairs)
    return decode(hm, crops, meta)


@pytest.mark.parametrize("flip", [False, True])
def test_estimate_equals_the_pipeline_by_hand(model_path, image, flip):
    with Runtime(model_path) as rt:
        assert rt.meta.name == NAME and rt.meta.input_size == (256, 192) and rt.meta.random_weights
        result = rt.estimate(image, SOCCER_BOXES, flip=flip)
        kps, scores = manual(model_path, image, SOCCER_BOXES, rt.meta, flip)
    assert result.keypoints.shape == (3, 17, 2) and result.keypoints.dtype == np.float32
    np.testing.assert_allclose(result.keypoints, kps, atol=1e-4)
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)
    np.testing.assert_array_equal(result.box_scores, SOCCER_BOXES[:, 4])


def test_rgb_input_gives_the_same_result(model_path, image):
    with Runtime(model_path) as rt:
        bgr = rt.estimate(image, SOCCER_BOXES)
        rgb = rt.estimate(np.ascontiguousarray(image[..., ::-1]), SOCCER_BOXES, rgb=True)
    np.testing.assert_array_equal(bgr.keypoints, rgb.keypoints)


def test_no_persons_gives_empty_arrays(model_path, image):
    with Runtime(model_path) as rt:
        result = rt.estimate(image, np.zeros((0, 4)))
    assert result.keypoints.shape == (0, 17, 2) and result.scores.shape == (0, 17) and len(result) == 0


@pytest.mark.parametrize("decoder", ["simple", "alphapose"])
def test_estimate_many_equals_one_call_per_image(model_path, image, decoder):
    """Persons of several images in one batch: each image's result is what estimate gives for it alone,
    in order, with an image without persons in the middle; the backend runs once."""
    small = np.ascontiguousarray(image[::2, ::2])
    images = [image, small, image[:, ::-1].copy()]
    boxes = [SOCCER_BOXES, np.zeros((0, 5), np.float32), SOCCER_BOXES[1:, :4]]
    with Runtime(model_path, decoder=decoder) as rt:
        alone = [rt.estimate(im, b) for im, b in zip(images, boxes)]
        runs = []
        infer = rt.backend.run_chunked
        rt.backend.run_chunked = lambda batch: runs.append(len(batch)) or infer(batch)
        together = rt.estimate_many(images, boxes)
        with pytest.raises(InputError, match="one box array per image"):
            rt.estimate_many(images, boxes[:2])
    assert runs == [5]
    assert [len(r) for r in together] == [3, 0, 2]
    for got, want in zip(together, alone):
        np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.box_scores, want.box_scores)


def test_keypoints_stay_near_their_box(model_path, image):
    with Runtime(model_path) as rt:
        result = rt.estimate(image, SOCCER_BOXES)
    for box, kps in zip(SOCCER_BOXES, result.keypoints):
        w, h = box[2] - box[0], box[3] - box[1]
        margin = 0.5 * max(w, h)  # the x1.25 crop with the aspect fix reaches this far at most
        assert (kps[:, 0] >= box[0] - margin).all() and (kps[:, 0] <= box[2] + margin).all()
        assert (kps[:, 1] >= box[1] - margin).all() and (kps[:, 1] <= box[3] + margin).all()


@pytest.fixture(scope="module")
def foreign_model(model_path):
    """The same network as a model 'from elsewhere': batch fixed to 1, other tensor names, no metadata."""
    path = TEST_MODELS / "foreign_batch1.onnx"
    if not path.exists():
        onnx = pytest.importorskip("onnx")
        m = onnx.load(model_path)
        del m.metadata_props[:]
        for vi in (m.graph.input[0], m.graph.output[0]):
            vi.type.tensor_type.shape.dim[0].dim_value = 1
        for node in m.graph.node:
            node.input[:] = ["data" if i == "input" else i for i in node.input]
            node.output[:] = ["hm" if o == "heatmaps" else o for o in node.output]
        m.graph.input[0].name, m.graph.output[0].name = "data", "hm"
        onnx.save(m, str(path))
    return str(path)


@pytest.mark.converter
def test_foreign_fixed_batch_model_is_chunked(model_path, foreign_model, image):
    with Runtime(foreign_model) as rt, Runtime(model_path) as ref:
        assert rt.max_batch == 1 and rt.meta.input_size == (256, 192) and rt.meta.name == "custom"
        assert rt.meta.mean == (0.485, 0.456, 0.406) and rt.meta.color_order == "RGB"
        got = rt.estimate(image, SOCCER_BOXES, flip=True)
        want = ref.estimate(image, SOCCER_BOXES, flip=True)
    np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3)


def test_alphapose_decoder_runs_end_to_end(model_path, image):
    with Runtime(model_path, decoder="alphapose", mean=(0.406, 0.457, 0.480), std=(1, 1, 1)) as rt:
        result = rt.estimate(image, SOCCER_BOXES)
    assert result.keypoints.shape == (3, 17, 2) and np.isfinite(result.keypoints).all()


def test_model_metadata_disagreeing_with_input_is_refused(model_path):
    with pytest.raises(ModelFileError, match="takes"):
        Runtime(model_path, input_size=(128, 96))


def test_missing_and_corrupt_model_files(tmp_path, model_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        Runtime(str(tmp_path / "nope.onnx"))
    broken = tmp_path / "truncated.onnx"
    broken.write_bytes(open(model_path, "rb").read()[:5000])
    with pytest.raises(ModelFileError, match="truncated.onnx"):
        Runtime(str(broken))


def test_bad_boxes_are_reported(model_path, image):
    with Runtime(model_path) as rt:
        with pytest.raises(InputError, match="NaN"):
            rt.estimate(image, [[0, 0, np.nan, 10]])
        with pytest.raises(InputError, match="shape"):
            rt.estimate(image, [1, 2, 3])


def test_batch_parallel_mode_splits_a_batch_over_threads_with_the_same_heatmaps(model_path, image):
    """parallel="batch": a batch runs as parts on one thread each (threads=3: five crops as 2 + 2 + 1, and
    two crops as 1 + 1); the heatmaps are those of the default mode, and one crop runs whole."""
    with Runtime(model_path) as ops, Runtime(model_path, threads=3, parallel="batch") as split:
        assert split.backend.workers == 3 and ops.backend.workers == 1
        batch = preprocess(image, np.concatenate([SOCCER_BOXES, SOCCER_BOXES[:2]]), ops.meta, False).batch
        for n in (5, 2, 1):
            np.testing.assert_allclose(split.infer(batch[:n]), ops.infer(batch[:n]), rtol=0, atol=1e-5)
        assert split.backend.session.get_session_options().intra_op_num_threads == 1
        # map() keeps the order and uses the pool's threads beside the caller's
        done = split.backend.map(lambda i: (i, threading.current_thread().name), range(7))
        assert [i for i, _ in done] == list(range(7))
        assert {name.startswith("edgepose-ort") for _, name in done} == {True, False}
        # estimate_many crops the images on those threads too: the same poses as the default mode
        images, boxes = [image, image[:, ::-1].copy(), image], [SOCCER_BOXES, SOCCER_BOXES[:2], SOCCER_BOXES[1:]]
        for got, want in zip(split.estimate_many(images, boxes), ops.estimate_many(images, boxes)):
            np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3)
            np.testing.assert_array_equal(got.boxes, want.boxes)
    with pytest.raises(InputError, match="parallel must be one of ops, batch; got 'spin'"):
        Runtime(model_path, parallel="spin")
