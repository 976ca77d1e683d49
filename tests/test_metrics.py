"""Tests of wsolkit.metrics on tiny maps whose answers are derived by hand in the comments.

Protocol reminders used below (wsolkit.boxes): ``u8 = int(255 * map)``, foreground where
``u8 > int(t * max u8)``; a component covering columns a..b gives ``x1 = a, x2 = b + 1``; IoU
counts inclusive pixels, so the predicted box is one pixel larger right and bottom.
"""

import warnings

import numpy as np
import pytest
import torch

from wsolkit.metrics import (
    LocalizationEvaluator,
    MetricInputError,
    MetricWarning,
    coco_detection_eval,
    detections_to_coco,
    precision_at_recall,
    precision_recall_curve,
    resize_masks,
)

THRESHOLDS = np.arange(0, 1, 0.01)


def ring_map(ring_value):
    """10x10: a 6x6 square (rows/cols 2..7) at ``ring_value`` with a 2x2 core (4..5) at 1."""
    m = np.zeros((10, 10))
    m[2:8, 2:8] = ring_value
    m[4:6, 4:6] = 1.0
    return m


def two_blobs():
    """A 4x4 blob (rows/cols 1..4, contour area 9) and a 2x2 blob (rows/cols 7..8, area 1)."""
    m = np.zeros((10, 10))
    m[1:5, 1:5] = 1.0
    m[7:9, 7:9] = 1.0
    return m


# Boxes: ring(0.5) gives [2, 2, 8, 8] (49 inclusive px) for t <= 0.49 (127 > int(255 t)) and the
# core [4, 4, 6, 6] (9 px) for t >= 0.50; ring(0.8) switches at t = 0.80 (204 > int(255 t)).
MAPS = np.stack([ring_map(0.5), ring_map(0.8), two_blobs(), np.zeros((10, 10)), ring_map(0.5)])
GT = [
    np.array([[2, 2, 6, 6]]),  # 25 px: IoU 25/49 = 0.51 (t <= .49), 9/25 = 0.36 (t >= .5)
    np.array([[4, 4, 6, 6]]),  # IoU 9/49 = 0.18 (t <= .79), 1 (t >= .8)
    np.array([[7, 7, 9, 9]]),  # largest blob: IoU 0; all components: the small blob, IoU 1
    np.array([[5, 5, 8, 8]]),  # all-zero map -> box [0, 0, 0, 0]: IoU 0
    np.array([[4, 4, 6, 6], [2, 2, 7, 7]]),  # best of two: 36/49 = 0.73 (t <= .49), 1 (t >= .5)
]
# Six classes; the label's rank per image: 1, 1, 1, 6, 3.
LABELS = np.array([0, 1, 2, 3, 4])
LOGITS = np.array([
    [9.0, 1, 1, 1, 1, 1],
    [1, 9.0, 1, 1, 1, 2],
    [1, 1, 9.0, 1, 1, 1],
    [5, 6, 7, 0.0, 8, 9],
    [1, 2, 3, 4, 5.0, 6],
])


def expected_curve(ranges):
    """Accuracy in percent over THRESHOLDS from {(lo, hi): correct images} (inclusive)."""
    curve = np.zeros(THRESHOLDS.size)
    for (lo, hi), count in ranges.items():
        curve[(THRESHOLDS >= lo - 1e-9) & (THRESHOLDS <= hi + 1e-9)] = count * 100 / 5
    return curve


def test_hand_derived_box_metrics_and_classification():
    ev = LocalizationEvaluator()
    ev.accumulate(MAPS, GT, logits=torch.tensor(LOGITS), labels=torch.tensor(LABELS))
    res = ev.compute()
    # Largest component, IoU .5: map 0 for t <= .49, map 1 for t >= .8, map 4 always.
    np.testing.assert_array_equal(res["loc_curve"], expected_curve(
        {(0, 0.49): 2, (0.5, 0.79): 1, (0.8, 0.99): 2}))
    assert res["max_box_acc"] == 40.0 and res["max_box_acc_threshold"] == 0.0
    assert res["gt_known_loc"] == 40.0  # at 0.2: maps 0 and 4
    # All components: map 2 becomes correct; at IoU .3 map 0 is correct at every threshold,
    # at IoU .7 never.
    np.testing.assert_array_equal(res["box_acc_curves_all"][0.3], expected_curve(
        {(0, 0.79): 3, (0.8, 0.99): 4}))
    np.testing.assert_array_equal(res["box_acc_curves_all"][0.5], expected_curve(
        {(0, 0.49): 3, (0.5, 0.79): 2, (0.8, 0.99): 3}))
    np.testing.assert_array_equal(res["box_acc_curves_all"][0.7], expected_curve(
        {(0, 0.79): 2, (0.8, 0.99): 3}))
    assert res["max_box_acc_v2_per_iou"] == {0.3: 80.0, 0.5: 60.0, 0.7: 60.0}
    assert res["max_box_acc_v2_thresholds"] == {0.3: 0.8, 0.5: 0.0, 0.7: 0.8}
    assert res["max_box_acc_v2"] == pytest.approx(200 / 3, abs=1e-12)
    # Top-1 correct: 0, 1, 2; top-5: 0, 1, 2, 4; GT-known at 0.2: 0, 4.
    assert res["top1_cls"] == 60.0 and res["top5_cls"] == 80.0
    assert res["top1_loc"] == 20.0 and res["top5_loc"] == 40.0
    assert "pxap" not in res and res["num_images"] == 5


def reference_box_accuracies(maps, gt_boxes, thresholds, iou_thresholds):
    """MaxBoxAcc curves as the reference evaluation computes them: OpenCV per threshold."""
    cv2 = pytest.importorskip("cv2")
    largest = np.zeros(len(thresholds))
    every = np.zeros((len(iou_thresholds), len(thresholds)))
    for scoremap, gt in zip(maps, gt_boxes):
        height, width = scoremap.shape
        image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
        for k, t in enumerate(thresholds):
            _, binary = cv2.threshold(image, int(t * np.max(image)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            best = {}
            for name, kept in (("largest", [max(contours, key=cv2.contourArea)] if contours
                                else []), ("all", contours)):
                boxes = []
                for c in kept:
                    x, y, w, h = cv2.boundingRect(c)
                    boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
                boxes = np.array(boxes or [[0, 0, 0, 0]], dtype=float)[:, None]
                ix = np.maximum(0, np.minimum(boxes[..., 2], gt[:, 2])
                                - np.maximum(boxes[..., 0], gt[:, 0]) + 1)
                iy = np.maximum(0, np.minimum(boxes[..., 3], gt[:, 3])
                                - np.maximum(boxes[..., 1], gt[:, 1]) + 1)
                area = lambda b: (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
                inter = ix * iy
                best[name] = (inter / (area(boxes) + area(gt) - inter)).max()
            largest[k] += best["largest"] >= 0.5
            for d, delta in enumerate(iou_thresholds):
                every[d, k] += best["all"] >= delta
    return largest * 100 / len(maps), every * 100 / len(maps)


def test_box_curves_equal_an_opencv_reference_loop():
    # CAM-like maps: one to three Gaussian blobs over smooth noise; ground truth around the
    # first blob, jittered, so that accuracy varies over the thresholds.
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:40, 0:48]
    coarse = torch.from_numpy(rng.random((24, 1, 7, 7)))
    maps = 0.3 * torch.nn.functional.interpolate(coarse, size=(40, 48), mode="bicubic",
                                                 align_corners=False)[:, 0].numpy()
    gt = []
    for m in maps:
        for k in range(rng.integers(1, 4)):
            cy, cx, sigma = rng.uniform(5, 35), rng.uniform(5, 43), rng.uniform(2, 8)
            m += rng.uniform(0.5, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
            if k == 0:
                box = np.array([cx - 2 * sigma, cy - 2 * sigma, cx + 2 * sigma, cy + 2 * sigma])
                box = np.clip(box + rng.normal(0, 2, size=4), 0, [47, 39, 47, 39]).astype(int)
                gt.append(box[None])
    low = maps.min(axis=(1, 2), keepdims=True)
    maps = (maps - low) / (maps.max(axis=(1, 2), keepdims=True) - low)
    thresholds = np.arange(0, 1, 0.02)
    ev = LocalizationEvaluator(thresholds=thresholds)
    ev.accumulate(maps, gt)
    res = ev.compute()
    largest, every = reference_box_accuracies(maps, gt, thresholds, (0.3, 0.5, 0.7))
    np.testing.assert_array_equal(res["loc_curve"], largest)
    for d, delta in enumerate((0.3, 0.5, 0.7)):
        np.testing.assert_array_equal(res["box_acc_curves_all"][delta], every[d])
    assert res["max_box_acc_v2"] == pytest.approx(every.max(axis=1).mean(), abs=1e-12)
    assert 20 < res["max_box_acc"] < 90  # neither trivially right nor trivially wrong


def test_streaming_equals_one_shot():
    one = LocalizationEvaluator()
    one.accumulate(MAPS, GT, logits=LOGITS, labels=LABELS, masks=MAPS > 0.6)
    streamed = LocalizationEvaluator()
    for part in (slice(0, 2), slice(2, 2), slice(2, 5)):
        streamed.accumulate(MAPS[part], GT[part], logits=LOGITS[part], labels=LABELS[part],
                            masks=MAPS[part] > 0.6)
    a, b = one.compute(), streamed.compute()
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert {k: np.asarray(v).tolist() for k, v in a[key].items()} == \
                {k: np.asarray(v).tolist() for k, v in b[key].items()}
        else:
            np.testing.assert_array_equal(a[key], b[key])


def test_per_image_results_add_up_to_the_aggregates():
    evaluator = LocalizationEvaluator(per_image=True, cam_threshold=0.2)
    for part in (slice(0, 2), slice(2, 5)):
        evaluator.accumulate(MAPS[part], GT[part], logits=LOGITS[part], labels=LABELS[part])
    out = evaluator.compute()
    correct, top1 = out["per_image_correct"], out["per_image_top1"]
    assert correct.shape == (len(MAPS), out["thresholds"].size) and correct.dtype == bool
    np.testing.assert_allclose(correct.mean(axis=0) * 100, out["loc_curve"])
    assert top1.mean() * 100 == pytest.approx(out["top1_cls"])
    plain = LocalizationEvaluator()
    plain.accumulate(MAPS, GT, logits=LOGITS, labels=LABELS)
    assert "per_image_correct" not in plain.compute()
    assert "per_image_iou_all" not in plain.compute()


def test_per_image_all_component_ious_give_the_maxboxaccv2_curves():
    evaluator = LocalizationEvaluator(per_image=True)
    for part in (slice(0, 3), slice(3, 5)):
        evaluator.accumulate(MAPS[part], GT[part])
    out = evaluator.compute()
    iou = out["per_image_iou_all"]
    assert iou.shape == (len(MAPS), out["thresholds"].size) and iou.dtype == np.float32
    assert 0 < iou.max() <= 1
    for delta, curve in out["box_acc_curves_all"].items():
        np.testing.assert_allclose((iou >= delta).mean(axis=0) * 100, curve)
    # The largest component is one of all components: its IoU never exceeds the best of all.
    largest = out["per_image_correct"]
    assert not np.any(largest & (iou < 0.5))


def test_cam_threshold_outside_the_grid_is_evaluated_exactly():
    # At exactly 0.5 the ring of ring(0.5) drops out (127 > int(127.5) is false): core box.
    coarse = LocalizationEvaluator(thresholds=[0.0, 0.3, 0.6, 0.9], cam_threshold=0.5)
    exact = LocalizationEvaluator(thresholds=[0.5], cam_threshold=0.5)
    gt = [np.array([[4, 4, 6, 6]])]
    for ev in (coarse, exact):
        ev.accumulate(ring_map(0.5)[None], gt)
    res = coarse.compute()
    assert res["gt_known_loc"] == 100.0 == exact.compute()["loc_curve"][0]
    np.testing.assert_array_equal(res["loc_curve"], [0.0, 0.0, 100.0, 100.0])
    assert res["thresholds"].tolist() == [0.0, 0.3, 0.6, 0.9]


def test_all_zero_map_is_the_one_pixel_box_at_the_origin():
    # As in the reference, an empty foreground gives box [0, 0, 0, 0], one inclusive pixel.
    ev = LocalizationEvaluator(iou_thresholds=(0.2, 0.3))
    ev.accumulate(np.zeros((2, 6, 6)), [np.array([[0, 0, 0, 0]]), np.array([[0, 0, 1, 1]])])
    res = ev.compute()
    assert np.all(res["loc_curve"] == 50.0)  # IoU 1 and 1/4
    assert res["max_box_acc_v2_per_iou"] == {0.2: 100.0, 0.3: 50.0}


def test_predictions_instead_of_logits():
    ev = LocalizationEvaluator()
    ev.accumulate(MAPS, GT, preds=np.array([0, 1, 2, 0, 0]), labels=LABELS)
    res = ev.compute()
    assert res["top1_cls"] == 60.0 and res["top1_loc"] == 20.0 and "top5_cls" not in res


@pytest.mark.parametrize("kwargs, pattern", [
    ({"score_maps": np.stack([MAPS[0], MAPS[1], np.full((10, 10), np.nan)])},
     r"score map at batch index 2 holds NaN or inf \(1 such maps"),
    ({"score_maps": MAPS[:3] * 2}, r"batch index 0 has values in \[0.0, 2.0\], outside \[0, 1\]"),
    ({"masks": np.zeros((3, 8, 8))}, r"masks has shape \(3, 8, 8\) but score_maps \(3, 10, 10\)"),
    ({"gt_boxes": [GT[0], np.zeros((0, 4)), GT[2]]}, r"batch index 1 has no ground-truth box"),
    ({"gt_boxes": GT[:2]}, r"2 ground-truth box sets for 3 score maps"),
    ({"labels": LABELS[:3]}, r"needs both labels and logits"),
    ({"logits": LOGITS[:2], "labels": LABELS[:3]}, r"logits has shape \(2, 6\); expected \(3, C\)"),
    # A box beyond the map: rescaled with swapped sizes, or not at all.
    ({"gt_boxes": [GT[0], np.array([[2, 2, 11, 6]]), GT[2]]},
     r"gt_boxes\[1\] = \[\[2.0, 2.0, 11.0, 6.0\]\] lies outside the 10 x 10 score map"),
    # The reference's combined mask (1 foreground, 255 ignore) is not a foreground mask.
    ({"masks": np.where(np.eye(10, dtype=bool), 255, 1)[None].repeat(3, 0)},
     r"masks holds values other than 0 and 1 \(\[255\]"),
    ({"masks": np.ones((3, 10, 10)), "ignore": np.full((3, 10, 10), 0.7)},
     r"ignore holds values other than 0 and 1 \(\[0.7"),
])
def test_bad_input_is_named(kwargs, pattern):
    args = {"score_maps": MAPS[:3], "gt_boxes": GT[:3], **kwargs}
    with pytest.raises(MetricInputError, match=pattern):
        LocalizationEvaluator(image_size=(10, 10)).accumulate(**args)


def test_image_size_and_batch_consistency_are_checked():
    ev = LocalizationEvaluator(image_size=(12, 10))
    with pytest.raises(MetricInputError, match=r"\(5, 10, 10\) but image_size is \(12, 10\)"):
        ev.accumulate(MAPS, GT)
    ev = LocalizationEvaluator()
    ev.accumulate(MAPS[:1], GT[:1], masks=MAPS[:1] > 0.6)
    with pytest.raises(MetricInputError, match="accumulate call 1: masks missing"):
        ev.accumulate(MAPS[1:2], GT[1:2])
    with pytest.raises(MetricInputError, match="before any score map"):
        LocalizationEvaluator().compute()


def reference_pxap(maps, masks, ignore_boxes, thresholds):
    """PxAP as the reference evaluation computes it: one np.histogram per image."""
    edges = np.append(thresholds, [1.0, 2.0, 3.0])
    true_hist = np.zeros(len(thresholds) + 2, dtype=float)
    false_hist = np.zeros(len(thresholds) + 2, dtype=float)
    for scoremap, mask, box in zip(maps, masks, ignore_boxes):
        fg = mask > 0.5
        ignore = np.logical_and(box > 0.5, np.logical_not(fg))
        gt_mask = fg.astype(np.uint8) + 255 * ignore.astype(np.uint8)
        true_hist += np.histogram(scoremap[gt_mask == 1], bins=edges)[0].astype(float)
        false_hist += np.histogram(scoremap[gt_mask == 0], bins=edges)[0].astype(float)
    num_true = true_hist.sum()
    tp = true_hist[::-1].cumsum()
    fn = num_true - tp
    fp = false_hist[::-1].cumsum()
    nonzero = (tp + fp) != 0
    with np.errstate(invalid="ignore"):
        precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return (precision[1:] * np.diff(recall))[nonzero[1:]].sum() * 100


IRREGULAR_BINS = np.unique(np.concatenate([
    [0.0, 0.5, 0.5 + 1e-12, 0.5 + 2e-12, 1 - 1e-15],  # several edges inside one lookup cell
    np.random.default_rng(6).random(40)]))


@pytest.mark.parametrize("thresholds", [np.arange(0, 1, 0.01), np.arange(0, 1, 0.001),
                                        IRREGULAR_BINS], ids=["0.01", "0.001", "irregular"])
def test_pxap_bit_identical_to_reference_loop(thresholds):
    rng = np.random.default_rng(3)
    n, h, w = 12, 24, 20
    maps = rng.random((n, h, w))
    maps[:2] = rng.choice(thresholds, size=(2, h, w))  # scores exactly on the bin edges
    maps[2:4] = np.round(maps[2:4], 2)  # k / 100, sometimes one ulp off k * 0.01
    maps[4] = maps[4] ** 8  # mostly tiny scores
    maps[5] = np.where(maps[5] > 0.5, 1.0, 0.0)  # scores equal to 1
    maps[6:] = maps[6:].astype(np.float32)  # given to the evaluator as float32 below
    masks = (rng.random((n, h, w)) < maps ** 2).astype(np.uint8)
    ignore = np.zeros((n, h, w), dtype=np.uint8)
    ignore[:, 3:12, 5:15] = 1
    ev = LocalizationEvaluator(thresholds=np.arange(0, 1, 0.1), pxap_bins=thresholds)
    boxes = [np.array([[0, 0, 5, 5]])] * n
    ev.accumulate(maps[:6], boxes[:6], masks=masks[:6], ignore=ignore[:6])
    ev.accumulate(torch.from_numpy(maps[6:].astype(np.float32)), boxes[6:],
                  masks=torch.from_numpy(masks[6:]), ignore=ignore[6:])
    assert ev.compute()["pxap"] == reference_pxap(maps, masks, ignore, thresholds)


def test_pxap_hand_case_and_ignore_region():
    # Scores: foreground 0.9, 0.3; background 0.6, 0.1. From the top: 0.9 (P 1, R .5),
    # 0.6 (P .5, R .5), 0.3 (P 2/3, R 1), 0.1 (P .5, R 1): AP = 1 * .5 + 2/3 * .5.
    maps = np.array([[[0.9, 0.6], [0.3, 0.1]]])
    masks = np.array([[[1, 0], [1, 0]]], dtype=np.uint8)
    ev = LocalizationEvaluator()
    ev.accumulate(maps, [np.array([[0, 0, 1, 1]])], masks=masks)
    res = ev.compute()
    assert res["pxap"] == pytest.approx(100 * (0.5 + 1 / 3), abs=1e-12)
    assert res["pxap_recall"][-1] == 1.0 and res["pxap_precision"][-1] == 0.5
    # Ignoring the 0.6 background pixel (and the 0.9 foreground pixel, which stays since
    # foreground beats ignore) leaves a perfect ranking.
    ev = LocalizationEvaluator()
    ev.accumulate(maps, [np.array([[0, 0, 1, 1]])], masks=masks,
                  ignore=np.array([[[1, 1], [0, 0]]]))
    assert ev.compute()["pxap"] == 100.0


def test_mask_only_evaluation_reports_no_box_metrics():
    ev = LocalizationEvaluator()
    ev.accumulate(MAPS[:2], None, masks=MAPS[:2] > 0.6, preds=[0, 2], labels=[0, 1])
    res = ev.compute()
    assert res["top1_cls"] == 50.0 and res["pxap"] == 100.0
    assert not {"top1_loc", "max_box_acc", "gt_known_loc", "loc_curve"} & res.keys()
    with pytest.raises(MetricInputError, match="neither gt_boxes nor masks"):
        ev.accumulate(MAPS[:2], None)


def test_pxap_needs_foreground():
    ev = LocalizationEvaluator()
    ev.accumulate(MAPS[:1], GT[:1], masks=np.zeros((1, 10, 10)))
    with pytest.raises(MetricInputError, match="no foreground pixel"):
        ev.compute()


@pytest.mark.parametrize("src, dst", [((375, 500), (224, 224)), ((7, 9), (10, 13)),
                                      ((9, 9), (4, 4))])
def test_resize_masks_matches_opencv_nearest(src, dst):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(4)
    masks = [(rng.random(src) > 0.5).astype(np.uint8) * 255 for _ in range(2)]
    ours = resize_masks(masks, dst)
    reference = np.stack([cv2.resize(np.float32(m), dst[::-1], interpolation=cv2.INTER_NEAREST)
                          for m in masks])
    assert ours.shape == (2, *dst) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, reference)


def test_resize_masks_keeps_opencvs_pixel_for_every_source_size_up_to_2048():
    cv2 = pytest.importorskip("cv2")
    for target in (224, 64):
        for source in range(1, 2049):
            row = np.arange(source, dtype=np.float32)[None].repeat(2, 0)
            reference = cv2.resize(row, (target, 2), interpolation=cv2.INTER_NEAREST)
            np.testing.assert_array_equal(resize_masks([row], (2, target))[0], reference,
                                          err_msg=f"width {source} -> {target}")
            np.testing.assert_array_equal(resize_masks([row.T], (target, 2))[0], reference.T,
                                          err_msg=f"height {source} -> {target}")


def tiny_coco(categories=(1,)):
    from pycocotools.coco import COCO

    gt = COCO()
    boxes = [(1, [10, 10, 20, 20]), (1, [50, 50, 30, 40]), (2, [5, 5, 40, 40])]  # x, y, w, h
    gt.dataset = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
        "annotations": [{"id": k + 1, "image_id": img, "category_id": 1, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0}
                        for k, (img, box) in enumerate(boxes)],
    }
    gt.createIndex()
    return gt


def perfect_detections():
    xyxy = np.array([[10, 10, 30, 30], [50, 50, 80, 90], [5, 5, 45, 45]], dtype=np.float32)
    return [1, 1, 2], xyxy, [0.9, 0.8, 0.7], [1, 1, 1]


def test_detections_to_coco_converts_to_xywh():
    results = detections_to_coco(*perfect_detections())
    assert results[1] == {"image_id": 1, "category_id": 1, "bbox": [50.0, 50.0, 30.0, 40.0],
                          "score": pytest.approx(0.8)}
    with pytest.raises(MetricInputError, match="first at index 0"):
        detections_to_coco([1], [[10, 10, 5, 30]], [0.5], [1])


def test_coco_perfect_detections_score_100():
    res = coco_detection_eval(tiny_coco(), detections_to_coco(*perfect_detections()))
    assert res.mean_ap == {0.0: 100.0, 0.25: 100.0}
    assert res.per_class_ap[0.25] == {1: 100.0}
    curve = precision_recall_curve(res, 0.25)
    assert curve.recall.shape == (101,) and np.all(curve.precision == 1.0)


def test_coco_false_positive_with_higher_score():
    # A disjoint detection in image 2 with score 0.95. IoU 0.25: ranked F, T, T, T; precision
    # 0, 1/2, 2/3, 3/4 at recall 0, 1/3, 2/3, 1; COCO's envelope is 3/4 everywhere -> AP 75.
    # IoU 0: it matches image 2's box (no overlap needed), and the true box there finds its
    # ground truth taken: T, T, T, F -> precision 1 up to recall 1 -> AP 100.
    ids, xyxy, scores, cats = perfect_detections()
    results = detections_to_coco(ids + [2], np.vstack([xyxy, [[60, 60, 90, 90]]]),
                                 scores + [0.95], cats + [1])
    res = coco_detection_eval(tiny_coco(), results)
    assert res.mean_ap[0.25] == pytest.approx(75.0, abs=1e-12)
    assert res.mean_ap[0.0] == pytest.approx(100.0, abs=1e-12)
    curve = precision_recall_curve(res, 0.25, category_id=1)
    assert precision_at_recall(curve, 0.3) == pytest.approx(0.75)
    # Without the envelope's help: a low-scoring false positive does not lower AP.
    results[-1]["score"] = 0.1
    assert coco_detection_eval(tiny_coco(), results).mean_ap[0.25] == pytest.approx(100.0)


def test_coco_category_without_ground_truth_is_nan_and_counted():
    with pytest.warns(MetricWarning, match="1 of 2 categories have no ground truth"):
        res = coco_detection_eval(tiny_coco(categories=(1, 7)),
                                  detections_to_coco(*perfect_detections()), iou_thresholds=[0.5])
    assert res.mean_ap == {0.5: 100.0}
    assert res.per_class_ap[0.5][1] == 100.0 and np.isnan(res.per_class_ap[0.5][7])


def test_coco_empty_detections_and_unknown_ids():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert coco_detection_eval(tiny_coco(), []).mean_ap == {0.0: 0.0, 0.25: 0.0}
    with pytest.raises(MetricInputError, match="1 image ids and 0 category ids"):
        coco_detection_eval(tiny_coco(), detections_to_coco([3], [[0, 0, 5, 5]], [0.5], [1]))
