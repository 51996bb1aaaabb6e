"""COCO plumbing: GT boxes, results, OKS AP -- checked on synthetic heatmaps with known keypoints."""
import numpy as np
import pytest

pytest.importorskip("pycocotools")

from edgepose.coco import evaluate, gt_person_boxes, load_coco, result_records  # noqa: E402
from edgepose.decode import decode  # noqa: E402
from edgepose.meta import ModelMeta  # noqa: E402
from edgepose.runtime import PoseResult  # noqa: E402
from edgepose.transforms import Crops, boxes_to_center_scale, coco_xywh_to_xyxy  # noqa: E402
from support import DATA  # noqa: E402

ANN = DATA / "coco_kpt_mini" / "test_coco.json"
META = ModelMeta(name="synthetic")


def gaussian_heatmaps(points_hm: np.ndarray, shape=(64, 48), sigma=2.0) -> np.ndarray:
    """(K, 2) heatmap-pixel points -> (K, H, W) Gaussians peaking at 1 on each point."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    d2 = (xs[None] - points_hm[:, 0, None, None]) ** 2 + (ys[None] - points_hm[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * sigma ** 2)).astype(np.float32)


def synthetic_results(offset_px: float = 0.0):
    """Keypoint results made by decoding heatmaps drawn at the GT keypoints (+ an image offset)."""
    coco = load_coco(ANN)
    records = []
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        boxes = gt_person_boxes(coco, image_id)
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=[1], iscrowd=False))
                if a["num_keypoints"] > 0]
        assert len(anns) == len(boxes)
        center, scale = boxes_to_center_scale(boxes[:, :4], 192 / 256)
        hms = []
        for a, c, s in zip(anns, center, scale):
            gt = np.array(a["keypoints"], np.float64).reshape(17, 3)[:, :2] + offset_px
            k = 192 / s[0]  # forward affine of the crop, then the stride-4 heatmap
            pts = np.stack([(k * (gt[:, 0] - c[0]) + 96) / 4, (k * (gt[:, 1] - c[1]) + 128) / 4], 1)
            hms.append(gaussian_heatmaps(pts))
        crops = Crops(np.zeros((len(boxes), 3, 256, 192), np.float32), boxes[:, :4], center, scale)
        kps, scores = decode(np.stack(hms), crops, META)
        result = PoseResult(kps, scores, boxes[:, :4].astype(np.float32), np.ones(len(boxes), np.float32))
        records += result_records(result, image_id)
        assert info["width"] > 0
    return records


@pytest.mark.shared
def test_known_keypoints_score_perfect_ap():
    stats = evaluate(ANN, synthetic_results())
    assert stats["AP"] > 0.99 and stats["AR"] > 0.99


@pytest.mark.shared
def test_keypoints_shifted_far_score_zero_ap():
    stats = evaluate(ANN, synthetic_results(offset_px=60.0))
    assert stats["AP"] < 0.05


@pytest.mark.shared
def test_edgepose_oks_equals_pycocotools():
    """edgepose's OKS (tracking, the INT8 gate) equals COCO's reference implementation, pycocotools, for every
    annotated person of the mini set with its joints moved by random amounts."""
    from pycocotools.cocoeval import COCOeval

    from edgepose.live.track import keypoint_oks

    coco = load_coco(ANN)
    rng = np.random.default_rng(0)
    for ann in [a for a in coco.dataset["annotations"] if a["num_keypoints"] > 0]:
        gt = np.array(ann["keypoints"], np.float64).reshape(17, 3)
        dt_kps = gt.copy()
        dt_kps[:, :2] += rng.normal(0, 6, (17, 2))
        dt_kps[:, 2] = 1
        dt = coco.loadRes([{"image_id": ann["image_id"], "category_id": 1,
                            "keypoints": dt_kps.ravel().tolist(), "score": 1.0}])
        ev = COCOeval(coco, dt, "keypoints")
        ev.params.imgIds = [ann["image_id"]]
        ev.evaluate()
        gt_ids = [a["id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=ann["image_id"], catIds=[1]))]
        theirs = ev.ious[(ann["image_id"], 1)][0, gt_ids.index(ann["id"])]
        ours = keypoint_oks(gt[None, :, :2], gt[None, :, 2] > 0, dt_kps[None, :, :2], np.ones((1, 17), bool),
                            [ann["area"]])[0, 0]
        assert ours == pytest.approx(theirs, rel=1e-9)


@pytest.mark.shared
def test_gt_boxes_follow_gluoncv():
    coco = load_coco(ANN)
    image_id = sorted(coco.getImgIds())[0]
    info = coco.loadImgs(image_id)[0]
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=[1], iscrowd=False))
            if a["num_keypoints"] > 0]
    boxes = gt_person_boxes(coco, image_id)
    np.testing.assert_allclose(boxes[:, :4], coco_xywh_to_xyxy(np.array([a["bbox"] for a in anns]),
                                                               info["width"], info["height"]))
    assert (boxes[:, 4] == 1).all()


@pytest.mark.shared
@pytest.mark.parametrize("thresh,key", [(0.0, "dec_result"), (0.2, "dec_result_thr02")])
def test_results_json_matches_gluoncv_metric(thresh, key):
    """Keypoint triplets and instance scores as GluonCV's COCOKeyPointsMetric writes them."""
    fx = np.load(DATA.parent / "parity" / "fixtures" / "prepost_eval.npz")
    crops = Crops(np.zeros((16, 3, 256, 192), np.float32), np.zeros((16, 4)), fx["dec_center"], fx["dec_scale"])
    kps, scores = decode(fx["dec_heatmaps"], crops, META)
    result = PoseResult(kps, scores, np.zeros((16, 4), np.float32), np.ones(16, np.float32))
    records = result_records(result, image_id=1, keypoint_thresh=thresh)
    np.testing.assert_allclose([r["keypoints"] for r in records], fx[key + "_keypoints"], atol=2e-3)
    np.testing.assert_allclose([r["score"] for r in records], fx[key + "_score"], atol=1e-5)
