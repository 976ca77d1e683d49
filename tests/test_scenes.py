"""Scene-level detection metrics with an interval over scenes (wsolkit.evaluation.scenes)."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest

from wsolkit.evaluation import scenes
from wsolkit.evaluation.localization import EvaluationError
from wsolkit.methods.cosine_dcm import score_separation_auc
from wsolkit.metrics import MetricWarning, coco_detection_eval, detections_to_coco
from wsolkit.reporting import bootstrap_statistic


def coco_ground_truth(images: dict[int, list[tuple[int, list[float]]]], categories=(1, 2, 3)):
    """A pycocotools COCO from ``{image id: [(category id, [x, y, w, h]), ...]}``."""
    from pycocotools.coco import COCO

    annotations = []
    for image_id, objects in images.items():
        for category, box in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category, "bbox": list(box),
                                "area": float(box[2] * box[3]), "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": [{"id": i, "width": 100, "height": 100} for i in images],
                    "categories": [{"id": c, "name": str(c)} for c in categories],
                    "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def random_problem(seed: int, n_images: int = 8):
    """Ground truth and detections with distinct scores, some near and some far from objects."""
    rng = np.random.default_rng(seed)
    images, results = {}, []
    for image_id in range(10, 10 + n_images):
        objects = []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 60, size=2)
            objects.append((int(rng.integers(1, 4)), [x, y, rng.uniform(10, 40), rng.uniform(10, 40)]))
        images[image_id] = objects
        for category in range(1, 4):
            if rng.random() < 0.7:
                own = [box for c, box in objects if c == category]
                if own and rng.random() < 0.6:  # near one of its objects
                    box = list(np.asarray(own[0]) + rng.uniform(-6, 6, size=4))
                else:
                    box = [*rng.uniform(0, 70, size=2), *rng.uniform(5, 30, size=2)]
                results.append({"image_id": image_id, "category_id": category,
                                "bbox": [float(v) for v in box], "score": float(rng.random())})
    return images, results


def evaluate(coco, results, ids):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        return coco_detection_eval(coco, results, iou_thresholds=(0.0, 0.25), image_ids=ids)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unweighted_metrics_equal_cocoeval_exactly(seed):
    images, results = random_problem(seed)
    coco = coco_ground_truth(images)
    ids = list(images)[::-1]  # the scenes' order need not be COCOeval's (sorted) order
    reference = evaluate(coco, results, ids)
    matches = scenes.match_detections(coco, results, ids)
    metrics = scenes.detection_metrics(matches)
    for t, iou in enumerate((0.0, 0.25)):
        assert metrics["map"][0, t] == reference.mean_ap[iou]
        expected = np.where(reference.precision[t] > -1, reference.precision[t], np.nan)
        np.testing.assert_array_equal(metrics["per_class"][0, t], expected)
        keep = (reference.precision[t] > -1).any(axis=0)
        np.testing.assert_array_equal(metrics["precision"][0, t],
                                      reference.precision[t][:, keep].mean(axis=1))
    # A looser IoU can only turn false positives into true positives.
    assert metrics["map"][0, 0] >= metrics["map"][0, 1]


def test_average_precision_by_hand():
    # One class, two objects; detections ranked TP (0.9), FP (0.8), TP (0.7):
    # recall 0.5, 0.5, 1; precision 1, 0.5, 2/3, interpolated 1, 2/3, 2/3. Recall points
    # 0.00..0.50 (51 of them) read 1, the 50 points above read 2/3.
    coco = coco_ground_truth({1: [(1, [0, 0, 10, 10]), (1, [50, 50, 10, 10])]}, categories=(1,))
    results = detections_to_coco([1, 1, 1], [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]],
                                 [0.9, 0.8, 0.7], [1, 1, 1])
    metrics = scenes.detection_metrics(scenes.match_detections(coco, results, [1], (0.5,)))
    assert metrics["map"][0, 0] == pytest.approx(100 * (51 + 50 * 2 / 3) / 101)
    assert metrics["recall"][0, 0] == pytest.approx(100.0)
    assert metrics["precision"][0, 0, 30] == pytest.approx(1.0)
    assert metrics["precision"][0, 0, 51] == pytest.approx(2 / 3)


def duplicated(images, results, counts):
    """The problem with image ``i`` repeated ``counts[i]`` times under new ids."""
    new_images, new_results = {}, []
    for (image_id, objects), count in zip(images.items(), counts):
        for copy in range(int(count)):
            new_id = 1000 * (copy + 1) + image_id
            new_images[new_id] = objects
            new_results += [{**r, "image_id": new_id} for r in results if r["image_id"] == image_id]
    return new_images, new_results


def test_weights_count_scenes_as_if_they_were_repeated():
    images, results = random_problem(3, n_images=6)
    coco = coco_ground_truth(images)
    matches = scenes.match_detections(coco, results, list(images))
    counts = np.array([2, 0, 1, 3, 0, 1])
    weighted = scenes.detection_metrics(matches, counts)
    big_images, big_results = duplicated(images, results, counts)
    reference = evaluate(coco_ground_truth(big_images), big_results, list(big_images))
    for t, iou in enumerate((0.0, 0.25)):
        assert weighted["map"][0, t] == pytest.approx(reference.mean_ap[iou], abs=1e-9)
    # Several weightings at once give the rows of one call each.
    both = scenes.detection_metrics(matches, np.stack([np.ones(6), counts]))
    np.testing.assert_array_equal(both["map"][1], weighted["map"][0])
    np.testing.assert_array_equal(both["map"][0], scenes.detection_metrics(matches)["map"][0])


def test_category_without_objects_under_a_weighting_is_left_out():
    coco = coco_ground_truth({1: [(1, [0, 0, 10, 10])], 2: [(2, [0, 0, 10, 10])]}, categories=(1, 2))
    results = detections_to_coco([1, 2], [[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [1, 2])
    matches = scenes.match_detections(coco, results, [1, 2], (0.5,))
    # Scene 1 alone: class 1 found perfectly, class 2 has no object and does not count.
    only_first = scenes.detection_metrics(matches, [1, 0])
    assert only_first["map"][0, 0] == pytest.approx(100.0)
    assert np.isnan(only_first["per_class"][0, 0, :, 1]).all()
    assert scenes.detection_metrics(matches)["map"][0, 0] == pytest.approx(50.0)


def test_matches_survive_the_round_trip_and_check_their_inputs():
    images, results = random_problem(4)
    coco = coco_ground_truth(images)
    matches = scenes.match_detections(coco, results, list(images))
    again = scenes.DetectionMatches.from_arrays(matches.to_arrays())
    np.testing.assert_array_equal(scenes.detection_metrics(again)["map"],
                                  scenes.detection_metrics(matches)["map"])
    with pytest.raises(EvaluationError, match="not among"):
        scenes.match_detections(coco, results, list(images)[1:])
    with pytest.raises(EvaluationError, match="expected"):
        scenes.detection_metrics(matches, np.ones(3))


def test_bootstrap_weights_reproduce_bootstrap_statistic():
    rng = np.random.default_rng(0)
    values = [rng.normal(size=7), rng.normal(size=5)]
    weights = scenes.bootstrap_weights([7, 5], replicates=200, seed=3)
    assert [w.shape for w in weights] == [(201, 7), (201, 5)]
    assert (weights[0][0] == 1).all() and (weights[0][1:].sum(axis=1) == 7).all()
    ours = scenes.seed_interval([w @ v / w.sum(axis=1) for w, v in zip(weights, values)])
    reference = bootstrap_statistic(values, lambda s, index: values[s][index].mean(),
                                    replicates=200, seed=3)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)


def test_seed_interval_needs_replicates_and_is_nan_without_an_estimate():
    assert scenes.seed_interval([np.array([1.0, 0.0, 2.0]), np.array([3.0, 2.0, 4.0])]) == \
        pytest.approx((2.0, 1.05, 2.95))
    with pytest.raises(EvaluationError):
        scenes.seed_interval([np.array([1.0])])
    assert np.isnan(scenes.seed_interval([np.array([np.nan, 1.0, 2.0])])).all()


def test_weighted_auc_is_the_pooled_auc_and_counts_repeats():
    rng = np.random.default_rng(1)
    scene = np.repeat(np.arange(4), 6)
    values = np.round(rng.normal(size=scene.size), 1)  # rounded: ties occur
    positive = rng.random(scene.size) < 0.4
    pairs = scenes.pair_counts(values, positive, scene, 4)
    pos = np.bincount(scene[positive], minlength=4)
    neg = np.bincount(scene[~positive], minlength=4)
    auc = scenes.weighted_auc(pairs, pos, neg, np.ones(4))
    assert auc[0] == pytest.approx(score_separation_auc(values[positive], values[~positive]))
    counts = np.array([2, 0, 1, 3])
    repeated = np.concatenate([np.flatnonzero(scene == s) for s in range(4) for _ in range(counts[s])])
    expected = score_separation_auc(values[repeated][positive[repeated]],
                                    values[repeated][~positive[repeated]])
    assert scenes.weighted_auc(pairs, pos, neg, counts)[0] == pytest.approx(expected)


def test_weighted_share_and_relative_gain_by_hand():
    # Kept 1 of 2 cells in scene 0 and 3 of 4 in scene 1: pooled 4 / 6; scene 1 twice: 7 / 10.
    np.testing.assert_allclose(scenes.weighted_share([1, 3], [2, 4], [[1, 1], [1, 2]]),
                               [400 / 6, 70.0])
    np.testing.assert_allclose(scenes.relative_gain([12.0, 5.0, 1.0], [10.0, 10.0, 0.0]),
                               [20.0, -50.0, np.nan])


def test_short_class_names():
    assert scenes.short_class_name("red_solid_ochre_plain") == "red solid/ochre"
    assert scenes.short_class_name("traffic_light") == "traffic light"
    assert scenes.class_palette(3).shape == (3, 4)


def test_detection_set_original_image_and_scenes_with_classes():
    import torch

    from wsolkit.evaluation import DetectionSet

    image = torch.zeros(3, 4, 6, dtype=torch.uint8)
    image[:, :, 3:] = 200
    data = DetectionSet(images=[image, image], image_ids=[1, 2], orig_sizes=[(8, 12), (4, 6)],
                        boxes=[np.zeros((2, 4)), np.zeros((2, 4))],
                        labels=[np.array([0, 0]), np.array([0, 1])], masks=None, coco=None,
                        category_ids=[1, 2])
    big = data.original_image(0)
    assert big.shape == (3, 8, 12) and big.dtype == torch.uint8
    assert int(big[0, 0, 0]) == 0 and int(big[0, 0, 11]) == 200
    assert data.with_classes(2) == [1] and data.with_classes(3) == [0, 1]


def test_ratio_and_match_arrays():
    np.testing.assert_allclose(scenes.ratio([3.0, 1.0], [2.0, 0.0]), [1.5, np.nan])
    assert set(scenes.MATCH_ARRAYS) == set(scenes.DetectionMatches.from_arrays(
        {name: np.zeros(1) for name in scenes.MATCH_ARRAYS}).to_arrays())


def test_two_arms_are_compared_replicate_by_replicate_within_each_seed():
    from wsolkit.evaluation.scenes import compare_per_seed, format_interval

    first = [np.array([4.0, 5.0, 3.0, 4.0]), np.array([6.0, 6.0, 6.0, 6.0])]
    second = [np.array([2.0, 2.0, 2.0, 2.0]), np.array([3.0, 4.0, 2.0, 3.0])]
    estimate, low, high = compare_per_seed(first, second)
    assert estimate == pytest.approx(2.5)  # the full samples: (4-2 + 6-3) / 2
    assert low <= estimate <= high and high <= 3.0
    assert compare_per_seed(first, second, "ratio")[0] == pytest.approx((2 + 2) / 2)
    assert compare_per_seed(first, second, "gain")[0] == pytest.approx(100.0)
    assert format_interval((0.756, 0.7401, 0.78)) == "0.76 [0.74, 0.78]"
    with pytest.raises(EvaluationError, match="how"):
        compare_per_seed(first, second, "sum")
    with pytest.raises(EvaluationError, match="seeds"):
        compare_per_seed(first, second[:1])
