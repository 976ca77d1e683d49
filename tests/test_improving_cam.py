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
from wsolkit.methods.improving_cam import (
    PAPER_THRESHOLDS,
    WGAP,
    ThresholdInputError,
    automatic_thresholds,
    boundary_means,
    recombined_cams,
    recombined_map_fn,
    signed_cams,
    softmax_weighted_cams,
    spatial_softmax,
    threshold_chooser,
    wgap,
)
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
