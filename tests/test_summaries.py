"""Cached evaluations to a chapter's numbers, on hand-made evaluation dicts."""

import numpy as np
import pytest
import torch

from wsolkit.evaluation import (
    EvaluationError, compare_conventions, correct_at_validation_choice, localization_summary,
    per_image_percent, threshold_index,
)

THRESHOLDS = np.round(np.arange(0, 1, 0.05), 2)


def _evaluation(curve, correct):
    return {"thresholds": THRESHOLDS, "loc_curve": np.asarray(curve, dtype=float),
            "top1_cls": 90.0, "top1_loc": 20.0, "gt_known_loc": 25.0, "max_box_acc_v2": 30.0,
            "per_image_correct": np.asarray(correct, dtype=bool),
            "per_image_top1": np.array([1, 0, 1])}


def test_the_test_split_is_scored_at_the_threshold_the_validation_split_chose():
    val_curve = np.zeros(len(THRESHOLDS))
    val_curve[6] = 50.0  # the validation split prefers 0.3
    correct = np.zeros((3, len(THRESHOLDS)), dtype=bool)
    correct[:2, 6] = True
    test = _evaluation(np.arange(len(THRESHOLDS)), correct)
    row = localization_summary(_evaluation(val_curve, correct), test)
    assert row["val-chosen threshold"] == pytest.approx(0.3)
    assert row["GT-known @val-chosen"] == 6.0  # the test curve at 0.3, not the test's best
    assert np.isnan(row["PxAP"]) and np.isnan(row["CAM max in part (%)"])
    (at_choice,) = correct_at_validation_choice([_evaluation(val_curve, correct)], [test])
    assert at_choice.tolist() == [100.0, 100.0, 0.0]


def test_per_image_values_come_in_percent_per_seed_and_missing_entries_are_named():
    correct = np.eye(3, len(THRESHOLDS), dtype=bool)
    seeds = [_evaluation(np.zeros(20), correct)] * 2
    values = per_image_percent(seeds, "per_image_correct", threshold_index(THRESHOLDS, 0.05))
    assert len(values) == 2 and values[0].tolist() == [0.0, 100.0, 0.0]
    assert per_image_percent(seeds, "per_image_top1")[1].tolist() == [100.0, 0.0, 100.0]
    with pytest.raises(EvaluationError, match="per_image_part_hit"):
        per_image_percent(seeds, "per_image_part_hit")
    with pytest.raises(EvaluationError, match="column"):
        per_image_percent(seeds, "per_image_top1", 0)
    with pytest.raises(EvaluationError, match="grid"):
        threshold_index(THRESHOLDS, 1.5)


def test_the_two_box_conventions_differ_on_a_map_whose_box_is_one_pixel_off():
    maps = torch.zeros(1, 16, 16)
    maps[0, 4:12, 4:12] = 1.0
    # Ground truth [4, 4, 11, 11] inclusive: the reference protocol's box is [4, 4, 12, 12].
    out = compare_conventions(maps, [np.array([[4, 4, 11, 11]])])
    assert set(out) == {"reference", "pixel"}
    assert out["pixel"]["GT-known @0.2"] == 100.0
    assert out["reference"]["MaxBoxAccV2"] <= out["pixel"]["MaxBoxAccV2"]
