"""Tests of wsolkit.methods.improving_cam and the per-image threshold evaluation."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wsolkit.boxes import best_iou_per_threshold
from wsolkit.chapter import data_extra, train_or_load
from wsolkit.cam import class_activation_maps
from wsolkit.evaluation import (
    LocalizationSet,
    evaluate_image_thresholds,
    evaluate_localization,
    image_threshold_ious,
)
from wsolkit.evaluation.localization import score_maps_of
from wsolkit.evaluation.tables import (
    MapEvaluations,
    TableError,
    arm_mean,
    chosen_thresholds,
    claim,
    compare,
    max_box_acc_v2,
    mean_curve,
    per_image,
    row_scores,
    rule_text,
    score_table,
    seeds_of,
)
from wsolkit.methods.improving_cam import (
    PAPER_THRESHOLDS,
    WGAP,
    ThresholdInputError,
    automatic_thresholds,
    boundary_means,
    plot_signed_parts,
    plot_threshold_selection,
    recombined_cams,
    recombined_map_fn,
    signed_cams,
    softmax_weighted_cams,
    spatial_softmax,
    threshold_chooser,
    wgap,
)
from wsolkit.metrics import LocalizationEvaluator
from wsolkit.models import build_model
from wsolkit.runs import load_model
from wsolkit.train import TrainConfig, model_from_config, toy_images

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------- WGAP


@pytest.mark.parametrize("device", DEVICES)
def test_wgap_of_a_constant_map_is_gap_up_to_the_printed_area_factor(device):
    features = torch.full((2, 3, 4, 5), 2.5, device=device)
    features[1, 2] = -1.0
    gap = features.mean(dim=(2, 3))
    torch.testing.assert_close(WGAP(divide_by_area=False)(features), gap)
    torch.testing.assert_close(WGAP()(features), gap / 20)  # eq. 1 divides by w h = 20
    torch.testing.assert_close(spatial_softmax(features), torch.full_like(features, 1 / 20))


def test_wgap_hand_computed():
    # One channel [[0, ln 3]]: softmax weights 1/4 and 3/4, weighted sum 3 ln3 / 4, over 2 cells.
    features = torch.tensor([[[[0.0, math.log(3.0)]]]])
    assert wgap(features).item() == pytest.approx(3 * math.log(3.0) / 8, rel=1e-6)
    assert WGAP()(features).item() == pytest.approx(3 * math.log(3.0) / 8, rel=1e-6)


@pytest.mark.parametrize("divide_by_area", [True, False])
def test_wgap_is_a_drop_in_pooling_and_its_exact_map_adds_up_to_the_logits(divide_by_area):
    torch.manual_seed(0)
    gap_model = build_model("simple_gap", 4, widths=(4, 4, 4, 8)).eval()
    wgap_model = build_model("simple_gap", 4, widths=(4, 4, 4, 8),
                             pooling=WGAP(divide_by_area)).eval()
    assert gap_model.state_dict().keys() == wgap_model.state_dict().keys()
    wgap_model.load_state_dict(gap_model.state_dict())
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        logits, features = wgap_model(images)
        gap_logits, _ = gap_model(images)
    cam = features["cam"]
    weight, bias = wgap_model.classifier.weight, wgap_model.classifier.bias
    torch.testing.assert_close(logits, wgap(cam, divide_by_area) @ weight.T + bias)
    exact = softmax_weighted_cams(cam, weight, None)
    total = exact.mean(dim=(2, 3)) if divide_by_area else exact.sum(dim=(2, 3))
    torch.testing.assert_close(total + bias, logits, atol=1e-5, rtol=1e-5)
    # The usual CAM no longer averages to the logits: it averages to the GAP network's.
    plain = class_activation_maps(cam, weight, bias)
    torch.testing.assert_close(plain.mean(dim=(2, 3)), gap_logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain.mean(dim=(2, 3)), logits, atol=1e-3)


# ---------------------------------------------------------------- recombined CAM


def test_signed_and_recombined_cams_hand_computed():
    # Channels P1 = [1, 2], P2 = [3, 0], P3 = [0, 1]; class 0 weights (2, -1, -3).
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]], [[0.0, 1.0]]]])
    weight = torch.tensor([[2.0, -1.0, -3.0], [1.0, 1.0, 1.0]])
    positive, negative = signed_cams(features, weight, torch.tensor([0]))
    torch.testing.assert_close(positive, torch.tensor([[[2.0, 4.0]]]))
    torch.testing.assert_close(negative, torch.tensor([[[-3.0, -3.0]]]))
    cam = class_activation_maps(features, weight, classes=torch.tensor([0]))
    torch.testing.assert_close(positive + negative, cam)  # eq. 2: [-1, 1]
    recombined = recombined_cams(features, weight, torch.tensor([0]))
    torch.testing.assert_close(recombined, torch.tensor([[[5.0, 7.0]]]))  # eq. 3
    torch.testing.assert_close(recombined, positive + negative.abs())


def test_recombined_map_fn_reads_the_model_classifier():
    torch.manual_seed(1)
    model = build_model("simple_gap", 3, widths=(4, 4, 4, 6)).eval()
    with torch.no_grad():
        _, features = model(torch.rand(2, 3, 16, 16))
        maps = recombined_map_fn(model, features, torch.tensor([2, 0]))
    weight = model.classifier.weight.detach()
    expected = torch.stack([torch.einsum("k,khw->hw", weight[2].abs(), features["cam"][0]),
                            torch.einsum("k,khw->hw", weight[0].abs(), features["cam"][1])])
    torch.testing.assert_close(maps, expected)


# ---------------------------------------------------------------- automatic threshold


def nested_squares() -> torch.Tensor:
    """9 x 9 map by Chebyshev distance d from the centre: 1.0 (d=0), 0.72 (1), 0.22 (2),
    0.02 (3), 0.04 on the image frame (4)."""
    d = torch.maximum((torch.arange(9) - 4).abs()[:, None], (torch.arange(9) - 4).abs()[None, :])
    values = torch.tensor([1.0, 0.72, 0.22, 0.02, 0.04])
    return values[d]


def test_boundary_means_of_nested_squares():
    means, counts = boundary_means(nested_squares(), PAPER_THRESHOLDS)
    expected = np.full(21, np.nan)
    expected[0] = 0.04                 # everything is above 0: the boundary is the frame
    expected[1:5] = 0.22               # 0.05 ... 0.2: the 5 x 5 square, border d = 2
    expected[5:15] = 0.72              # 0.25 ... 0.7: the 3 x 3 square
    expected[15:20] = 1.0              # 0.75 ... 0.95: the centre alone
    np.testing.assert_allclose(means[0], expected, rtol=1e-6)
    assert counts[0, 0] == 32 and counts[0, 1] == 16 and counts[0, 5] == 8 and counts[0, 15] == 1
    assert counts[0, 20] == 0


@pytest.mark.parametrize("rule, expected", [
    ("first_above_mean", 0.05),   # D = 0.18 at 0.05 > mean D = 0.96 / 19
    ("largest", 0.25),            # D = 0.50 at 0.25
    ("last_above_mean", 0.75),    # D = 0.28 at 0.75
])
def test_automatic_threshold_rules_on_nested_squares(rule, expected):
    found = automatic_thresholds(nested_squares(), rule)
    assert found.thresholds[0] == pytest.approx(expected)
    assert found.mean_difference[0] == pytest.approx(0.96 / 19, rel=1e-5)
    nonzero = np.flatnonzero(np.nan_to_num(found.differences[0]) > 1e-6)
    np.testing.assert_array_equal(nonzero, [1, 5, 15])
    assert found.undecided == 0


def test_automatic_threshold_undecided_maps_are_reported():
    maps = torch.stack([torch.zeros(6, 6), torch.ones(6, 6), nested_squares()[:6, :6]])
    first = automatic_thresholds(maps, "first_above_mean")
    assert np.isnan(first.thresholds[0]) and np.isnan(first.thresholds[1])
    assert first.undecided == 2
    assert not np.isnan(first.thresholds[2])
    largest = automatic_thresholds(maps, "largest")
    # A constant map has D = 0 everywhere: "largest" takes the first, 0.05; the empty map has none.
    assert np.isnan(largest.thresholds[0]) and largest.thresholds[1] == pytest.approx(0.05)
    with pytest.raises(ThresholdInputError, match="rule"):
        automatic_thresholds(maps, "median")
    with pytest.raises(ThresholdInputError, match="shape"):
        automatic_thresholds(torch.zeros(2, 2, 3, 3))


# ---------------------------------------------------------------- per-image threshold evaluation


def test_image_threshold_ious_equal_fixed_threshold_columns():
    maps = np.stack([nested_squares().numpy()] * 3)
    maps[1] = maps[1].T[::-1]
    boxes = [np.array([[2, 2, 6, 6]], np.float32), np.array([[3, 3, 5, 5]], np.float32),
             np.array([[0, 0, 8, 8]], np.float32)]
    ious = image_threshold_ious(maps, boxes, [0.1, 0.5, 0.0])
    grid = best_iou_per_threshold(maps, boxes, np.array([0.0, 0.1, 0.5]))
    np.testing.assert_allclose(ious, [grid[0, 1], grid[1, 2], grid[2, 0]])
    # Reference boxes are [x, y, x + w, y + h] scored with inclusive areas: the 5 x 5 square
    # at 2..6 gives [2, 2, 7, 7] (IoU 25 / 36 with [2, 2, 6, 6]); the whole 9 x 9 map is
    # clipped to [0, 0, 8, 8].
    np.testing.assert_allclose(ious, [25 / 36, 9 / 16, 1.0])


def _tiny_split(n=12, size=32, num_classes=3, seed=0) -> LocalizationSet:
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(num_classes, (n,), generator=g)
    corners = torch.randint(0, size // 2, (n, 2), generator=g)
    boxes = [np.array([[x, y, x + size // 2 - 1, y + size // 2 - 1]], np.float32)
             for x, y in corners.tolist()]
    return LocalizationSet(images, labels, boxes, None, None, [str(i) for i in range(n)])


def test_a_fixed_chooser_reproduces_gt_known_and_top1_loc():
    torch.manual_seed(0)
    model = build_model("simple_gap", 3, widths=(4, 4, 4, 8)).eval()
    data = _tiny_split()
    norm = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    reference = evaluate_localization(model, data, cam_threshold=0.3, device="cpu", **norm)
    ours = evaluate_image_thresholds(
        model, data, {"fixed": lambda m: np.full(m.shape[0], 0.3),
                      "none": lambda m: np.full(m.shape[0], np.nan)},
        fallback=0.3, device="cpu", batch_size=5, **norm)
    assert ours["top1_cls"] == pytest.approx(reference["top1_cls"])
    for name, undecided in (("fixed", 0), ("none", 12)):
        entry = ours["choosers"][name]
        assert entry["gt_known_loc"] == pytest.approx(reference["gt_known_loc"])
        assert entry["top1_loc"] == pytest.approx(reference["top1_loc"])
        assert entry["undecided"] == undecided
        assert entry["ious"].shape == (12,)
    automatic = evaluate_image_thresholds(model, data, {"auto": threshold_chooser()},
                                          device="cpu", **norm)["choosers"]["auto"]
    assert np.all(np.isin(np.round(automatic["thresholds"], 2), PAPER_THRESHOLDS))


# ---------------------------------------------------------------- WGAP runs


def test_wgap_runs_are_cached_apart_and_reload_with_their_pooling(tmp_path, monkeypatch):
    monkeypatch.setenv("WSOL_RUNS_DIR", str(tmp_path))
    data = toy_images(16, image_size=16, num_classes=2)
    base = dict(model="simple_gap", num_classes=2, image_size=16, epochs=1, batch_size=8, lr=0.01,
                amp="off", extra={"dataset": "cub", "data_root": "unused", "split": "train"})

    def config(method):
        return TrainConfig(**base, model_kwargs={"widths": [4, 4, 4, 8]}, method=method)

    printed, mean = {"wgap": {}}, {"wgap": {"divide_by_area": False}}
    assert model_from_config(config(printed)).pooling.divide_by_area
    assert not model_from_config(config(mean)).pooling.divide_by_area
    gap_run = train_or_load("t-gap", config({}), data, progress=False)
    wgap_run = train_or_load("t-wgap", config(printed), data, progress=False)
    assert gap_run.run_dir != wgap_run.run_dir
    model = load_model(wgap_run.run_dir)
    assert isinstance(model.pooling, WGAP) and model.pooling.divide_by_area
    images = data.images[:4].float() / 255
    with torch.no_grad():
        logits, features = model(images)
    torch.testing.assert_close(logits, model.classifier(wgap(features["cam"])))
    assert train_or_load("t-wgap", config(printed), data, progress=False).cached
    with pytest.raises(ValueError, match="wgap.*unknown option.*'area'.*divide_by_area"):
        model_from_config(config({"wgap": {"area": False}}))


def test_a_wgap_run_builds_its_training_data_from_the_configuration(tmp_path, monkeypatch):
    # What each torchrun process does: the data from the configuration, the pooling by name.
    monkeypatch.setenv("WSOL_RUNS_DIR", str(tmp_path))
    root = Path(__file__).parent / "fixtures" / "cub"
    config = TrainConfig(model="simple_gap", model_kwargs={"widths": [4, 4, 4, 8]},
                         method={"wgap": {"divide_by_area": False}}, num_classes=3, image_size=16, epochs=1, batch_size=4, amp="off",
                         extra=data_extra("cub", root, val_per_class=1))
    record = train_or_load("t-data", config, progress=False)
    assert record.log()[0]["epoch"] == 1
    assert isinstance(load_model(record.run_dir).pooling, WGAP)
    # The command line (what torchrun starts once per GPU) imports nothing but wsolkit.train and
    # the data factory; the method registry finds the method module itself.
    run_dir = tmp_path / "cli"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    subprocess.run([sys.executable, "-m", "wsolkit.train", "--config", str(run_dir / "config.json"),
                    "--run-dir", str(run_dir), "--data", "wsolkit.chapter:training_data",
                    "--progress", "off"], check=True, capture_output=True, timeout=300)
    assert isinstance(load_model(run_dir).pooling, WGAP)


def test_the_per_image_outputs_add_up_to_the_aggregates_and_the_maps_to_the_evaluated_ones():
    torch.manual_seed(0)
    model = build_model("simple_gap", 3, widths=(4, 4, 4, 8)).eval()
    data = _tiny_split()
    norm = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    reference = evaluate_localization(model, data, keep_maps=True, device="cpu", **norm)
    ours = evaluate_image_thresholds(model, data, {"auto": threshold_chooser()}, device="cpu",
                                     batch_size=5, **norm)
    np.testing.assert_array_equal(ours["per_image_top1"], reference["per_image_top1"])
    entry = ours["choosers"]["auto"]
    assert entry["per_image_correct"].dtype == bool
    assert entry["per_image_correct"].mean() * 100 == pytest.approx(entry["gt_known_loc"])
    np.testing.assert_array_equal(entry["per_image_correct"], entry["ious"] >= 0.5)
    maps = score_maps_of(model, data, [4, 1], device="cpu", **norm)
    torch.testing.assert_close(maps, reference["maps"][[4, 1]])


# ---------------------------------------------------------------- tables and claims


def _hand_made(correct, top1, iou_all, chosen=None, ious=None, undecided=0, val=None):
    """A MapEvaluations over the thresholds 0, 0.1, 0.2, 0.3 (fixed at 0.2)."""
    iou_all = np.asarray(iou_all, dtype=np.float32)
    fixed = {"thresholds": np.array([0.0, 0.1, 0.2, 0.3]), "cam_threshold": 0.2,
             "per_image_correct": np.asarray(correct, dtype=bool),
             "per_image_top1": np.asarray(top1, dtype=bool), "per_image_iou_all": iou_all,
             "max_box_acc_v2": max_box_acc_v2(iou_all)}
    automatic = None if chosen is None else {"choosers": {"auto": {
        "thresholds": np.asarray(chosen), "ious": np.asarray(ious), "undecided": undecided}}}
    return MapEvaluations(fixed, automatic, val)


def test_per_image_values_under_each_threshold_rule_hand_computed():
    ev = _hand_made(correct=[[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]], top1=[1, 0, 1],
                    iou_all=np.zeros((3, 4)), chosen=[0.1, 0.3, 0.2], ious=[0.6, 0.4, 0.5],
                    undecided=1, val=0.1)
    np.testing.assert_array_equal(per_image(ev, "fixed", "GT-known loc"), [0, 100, 100])
    np.testing.assert_array_equal(per_image(ev, "fixed", "top-1 loc"), [0, 0, 100])
    np.testing.assert_array_equal(per_image(ev, "val", "GT-known loc"), [100, 100, 100])
    np.testing.assert_array_equal(per_image(ev, "val", "top-1 loc"), [100, 0, 100])
    np.testing.assert_array_equal(per_image(ev, "auto", "GT-known loc"), [100, 0, 100])
    np.testing.assert_array_equal(per_image(ev, "auto", "top-1 cls"), [100, 0, 100])
    # One given threshold of the grid for every image ("at:<t>").
    np.testing.assert_array_equal(per_image(ev, "at:0.3", "GT-known loc"), [0, 0, 100])
    np.testing.assert_array_equal(per_image(ev, "at:0", "top-1 loc"), [100, 0, 100])
    assert row_scores(ev, "at:0.3")["threshold"] == pytest.approx(0.3)
    with pytest.raises(TableError, match="0.25 is not among"):
        per_image(ev, "at:0.25", "GT-known loc")
    with pytest.raises(TableError, match="'at:high'"):
        per_image(ev, "at:high", "GT-known loc")
    scores = row_scores(ev, "auto")
    assert scores["GT-known loc"] == pytest.approx(200 / 3)
    assert scores["threshold"] == pytest.approx(0.2) and scores["fallbacks"] == 1
    assert row_scores(ev, "fixed")["threshold"] == pytest.approx(0.2)
    assert np.isnan(row_scores(ev, "fixed")["PxAP"])
    with pytest.raises(TableError, match="'largest'.*\\['auto'\\]"):
        per_image(ev, "largest", "GT-known loc")
    with pytest.raises(TableError, match="no validation-chosen threshold"):
        per_image(_hand_made([[1, 1, 1, 1]], [1], [[0, 0, 0, 0]]), "val", "GT-known loc")
    with pytest.raises(TableError, match="0.15 is not among"):
        per_image(MapEvaluations(ev.fixed, None, 0.15), "val", "top-1 loc")
    with pytest.raises(TableError, match="metric"):
        per_image(ev, "fixed", "MaxBoxAccV2")


def test_max_box_acc_v2_hand_computed_and_from_the_evaluator():
    iou = [[0.8, 0.4], [0.2, 0.6]]
    # IoU 0.3: best column 100; IoU 0.5: 50 at both; IoU 0.7: 50 at the first threshold.
    assert max_box_acc_v2(iou) == pytest.approx(200 / 3)
    assert max_box_acc_v2(iou, counts=[2, 0]) == pytest.approx(100.0)
    assert max_box_acc_v2(iou, counts=[0, 3]) == pytest.approx(200 / 3)  # 100, 100, 0
    rng = np.random.default_rng(0)
    maps = rng.random((6, 16, 16)) ** 3
    boxes = [np.array([[2 + i, 3, 9 + i, 12]], np.float64) for i in range(6)]
    evaluator = LocalizationEvaluator(per_image=True)
    evaluator.accumulate(maps, boxes)
    out = evaluator.compute()
    assert out["per_image_iou_all"].shape == (6, out["thresholds"].size)
    assert max_box_acc_v2(out["per_image_iou_all"]) == pytest.approx(out["max_box_acc_v2"])


def _two_arms():
    """Two methods, seeds 0 and 1, four images each."""
    evals = {}
    for seed in (0, 1):
        evals["A", seed, "cam"] = _hand_made(
            correct=np.ones((4, 4)), top1=[1, 1, 1, seed], iou_all=np.full((4, 4), 0.8),
            chosen=[0.1] * 4, ious=[0.9] * 4)
        evals["B", seed, "cam"] = _hand_made(
            correct=np.zeros((4, 4)), top1=[1, 1, 0, 0],
            iou_all=[[0.8, 0, 0, 0], [0.4, 0, 0, 0], [0, 0, 0, 0], [0, 0.6, 0, 0]],
            chosen=[0.1] * 4, ious=[0.1] * 4, undecided=seed)
    return evals


def test_score_table_summarises_the_seeds_of_each_arm():
    table = score_table(_two_arms(), {"A": ("A", "cam", "fixed"), "B, auto": ("B", "cam", "auto")},
                        ["top-1 cls", "GT-known loc", "threshold", "fallbacks"])
    assert table.loc["A", "top-1 cls"] == "87.5 (75.0-100.0)"
    assert table.loc["A", "GT-known loc"] == "100.0"
    assert table.loc["B, auto", "GT-known loc"] == "0.0"
    assert table.loc["B, auto", "threshold"] == "0.10" and table.loc["B, auto", "fallbacks"] == "1"
    assert arm_mean(_two_arms(), ("A", "cam", "fixed"), "top-1 cls") == pytest.approx(87.5)
    assert seeds_of(_two_arms(), "A", "cam") == [0, 1]
    with pytest.raises(TableError, match="'recombined' of 'A'"):
        seeds_of(_two_arms(), "A", "recombined")


def test_compare_pairs_images_and_seeds_and_takes_the_max_inside_each_replicate():
    evals = _two_arms()
    a, b = ("A", "cam", "fixed"), ("B", "cam", "fixed")
    estimate, low, high = compare(evals, a, b, "top-1 cls")
    assert estimate == pytest.approx((87.5 - 50.0))  # A: 100 and 75, B: 50 and 50
    assert low <= estimate <= high
    assert compare(evals, a, a, "top-1 cls") == (0.0, 0.0, 0.0)
    # MaxBoxAccV2: A is 100 at every IoU. B at IoU 0.3 is 50 (images 0 and 1 at the first
    # threshold; image 3 only at the second, so not 75: one threshold for all images), at 0.5
    # and 0.7 it is 25.
    assert max_box_acc_v2(evals["B", 0, "cam"].fixed["per_image_iou_all"]) == \
        pytest.approx((50 + 25 + 25) / 3)
    estimate, low, high = compare(evals, a, b, "MaxBoxAccV2", replicates=200)
    assert estimate == pytest.approx(100 - 100 / 3)
    assert low <= estimate <= high and high <= 100
    assert compare(evals, b, b, "MaxBoxAccV2", replicates=50) == (0.0, 0.0, 0.0)
    single = compare(evals, a, None, "GT-known loc")
    assert single == (100.0, 100.0, 100.0)
    del evals["B", 1, "cam"]
    with pytest.raises(TableError, match="same seeds"):
        compare(evals, a, b, "top-1 cls")


def test_a_claim_of_more_than_zero_needs_the_whole_interval_above_zero():
    # One image of 40 is better in A, none worse: the interval's low end is exactly 0.
    n = 40
    first = _hand_made(np.ones((n, 4)), np.ones(n), np.zeros((n, 4)))
    better = np.ones(n)
    better[0] = 0
    second = _hand_made(np.ones((n, 4)), better, np.zeros((n, 4)))
    evals = {("A", 0, "cam"): first, ("B", 0, "cam"): second}
    a, b = ("A", "cam", "fixed"), ("B", "cam", "fixed")
    strict = claim(evals, "A classifies better", a, b, "top-1 cls", data="toy")
    assert strict["rule"] == "Δ top-1 cls > 0"
    assert strict["measured"].startswith("+2.5 [+0.0, ")
    assert strict["verdict"] == "inconclusive" and strict["data"] == "toy"
    assert claim(evals, "at least", a, b, "top-1 cls", 0, ">=")["verdict"] == "holds"
    within = claim(evals, "keeps classification", a, b, "top-1 cls", 10, "within")
    assert within["rule"] == "|Δ top-1 cls| <= 10 points" and within["verdict"] == "holds"
    worse = claim(evals, "B is better", b, a, "top-1 cls", 0, ">")
    assert worse["verdict"] == "fails"  # the whole interval is <= 0
    margin = claim(evals, "by the paper's margin", a, b, "top-1 cls", 27.9, ">=")
    assert margin["rule"] == "Δ top-1 cls >= +27.9 points" and margin["verdict"] == "fails"
    assert rule_text("top-1 cls", 90, ">=", paired=False) == "top-1 cls >= 90%"


def test_chosen_thresholds_and_mean_curve_read_every_seed():
    evals = _two_arms()
    frame = chosen_thresholds(evals, "B", "cam", ["auto"])
    assert len(frame) == 8 and set(frame["seed"]) == {0, 1}
    np.testing.assert_allclose(frame["threshold"], 0.1)
    for seed in (0, 1):
        evals["A", seed, "cam"].fixed["loc_curve"] = np.array([10.0, 20, 30, 40]) * (seed + 1)
    thresholds, curve = mean_curve(evals, "A", "cam")
    np.testing.assert_allclose(curve, [15, 30, 45, 60])
    np.testing.assert_allclose(thresholds, [0, 0.1, 0.2, 0.3])


def test_automatic_thresholds_with_fallback():
    maps = torch.stack([torch.zeros(9, 9), nested_squares()])
    found = automatic_thresholds(maps, "largest")
    np.testing.assert_allclose(found.with_fallback(0.2), [0.2, 0.25])


def test_the_figures_draw_one_panel_per_map_and_image():
    import matplotlib

    matplotlib.use("Agg")
    images = torch.zeros(2, 3, 9, 9, dtype=torch.uint8)
    maps = torch.stack([nested_squares()] * 2)
    boxes = [np.array([[2, 2, 6, 6]])] * 2
    fig = plot_signed_parts(images, boxes, {"a": maps, "b": maps, "c": maps})
    assert len(fig.axes) == 2 * 4
    fig = plot_threshold_selection(images[0], maps[0], boxes[0])
    # first_above_mean picks 0.05 here (the 5 x 5 square, IoU 25 / 36 with the box at 2..6).
    assert "first_above_mean 0.05: IoU 0.69" in fig.axes[2].get_title()


def test_the_papers_differences_read_its_printed_rows():
    from wsolkit.methods.improving_cam import PAPER_TABLES, paper_difference

    assert paper_difference("cub", "Ours", "VGG-CAM[6]", "top-1 loc") == pytest.approx(27.90)
    assert paper_difference("cub", "Ours", "VGG-CAM[6]", "top-1 cls") == pytest.approx(-0.32)
    assert paper_difference("ilsvrc", "Ours", "VGG-ADL[9]", "top-1 loc") == pytest.approx(5.2)
    assert paper_difference("cub", "Ours", "VGG-I²C[13]", "GT-known loc") is None
    assert len(PAPER_TABLES["cub"][1]) == 13 and len(PAPER_TABLES["ilsvrc"][1]) == 12


def test_evaluate_map_caches_every_evaluation_with_its_per_image_arrays(tmp_path):
    from wsolkit.evaluation.tables import evaluate_map

    torch.manual_seed(0)
    model = build_model("simple_gap", 3, widths=(4, 4, 4, 8)).eval()
    test, val = _tiny_split(seed=0), _tiny_split(seed=1)
    config = TrainConfig(model="simple_gap", num_classes=3, image_size=32)
    loads = []
    loader = lambda: loads.append(1) or model
    first = evaluate_map(tmp_path, "test", loader, test, config,
                         choosers={"auto": threshold_chooser()}, val_data=val)
    again = evaluate_map(tmp_path, "test", loader, test, config,
                         choosers={"auto": threshold_chooser()}, val_data=val)
    assert len(loads) == 3 and again.fixed["cached"] and again.automatic["cached"]
    np.testing.assert_array_equal(again.fixed["per_image_iou_all"],
                                  first.fixed["per_image_iou_all"])
    assert max_box_acc_v2(again.fixed["per_image_iou_all"]) == \
        pytest.approx(again.fixed["max_box_acc_v2"])
    reference = evaluate_localization(model, val, mean=config.mean, std=config.std)
    assert again.val_threshold == pytest.approx(
        reference["thresholds"][int(np.argmax(reference["loc_curve"]))])
    scores = row_scores(again, "fixed")
    assert scores["GT-known loc"] == pytest.approx(again.fixed["gt_known_loc"])
    assert scores["top-1 loc"] == pytest.approx(again.fixed["top1_loc"])
    assert row_scores(again, "auto")["GT-known loc"] == \
        pytest.approx(again.automatic["choosers"]["auto"]["gt_known_loc"])
