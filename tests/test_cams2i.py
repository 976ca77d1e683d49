"""Kou et al.'s inter-intra regulated CAMs (wsolkit.methods.cams2i), by hand and end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsolkit.methods import MethodError, StepContext, build_methods, score_map
from wsolkit.methods import cams2i as c2
from wsolkit.models import build_model
from wsolkit.runs import load_model
from wsolkit.train import ConfigError, TrainConfig, fit, model_from_config, toy_data

from method_checks import assert_trains_exactly_like_cam, toy_method_config

SMALL = {"simple_gap": (64, {}, "pool3"),
         "vgg16_gap": (64, {"width": 0.125, "small_input": True}, "pool3"),
         "resnet50_gap": (64, {"width": 0.125, "small_input": True}, "layer3"),
         "alexnet_gap": (224, {}, "pool2")}


# --------------------------------------------------------------------- eq. 3 and eq. 5


def test_the_confidence_mask_of_a_hand_made_map():
    s2 = torch.tensor([[[0.0, 0.0], [0.0, 4.0]]])
    mask, mu0, mu1 = c2.confidence_mask(s2)
    # mu0 = 1; distances 1, 1, 1, 3; mu1 = 1.5: the three cells below mu1 are flipped.
    assert mu0.tolist() == [1.0] and mu1.tolist() == [1.5]
    assert mask.tolist() == [[[-1.0, -1.0], [-1.0, 3.0]]]
    normalised, _, _ = c2.confidence_mask(s2, normalise=True)
    torch.testing.assert_close(normalised, torch.tensor([[[-1 / 3, -1 / 3], [-1 / 3, 1.0]]]))
    xi = c2.confidence_thresholds(s2)
    assert xi["xi1"].tolist() == [2.5] and xi["xi2"].tolist() == [-0.5]
    # On the min-max scale of the map (0 .. 4): 2.5 / 4 and -0.5 / 4.
    assert xi["xi1_normalised"].tolist() == [0.625] and xi["xi2_normalised"].tolist() == [-0.125]
    assert xi["foreground_share"].tolist() == [0.25] and xi["background_share"].tolist() == [0.0]


def test_a_distance_equal_to_mu1_keeps_its_sign_and_maps_are_taken_per_image():
    s2 = torch.tensor([[[0.0, 2.0]], [[5.0, 5.0]]])
    mask, mu0, mu1 = c2.confidence_mask(s2)
    assert mask[0].tolist() == [[1.0, 1.0]]  # mu1 > distance is false: unchanged
    assert mu0.tolist() == [1.0, 5.0] and mu1.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        c2.confidence_mask(torch.zeros(4, 4))


# --------------------------------------------------------------------------- eq. 4 and 6


def test_eq_4_as_printed_by_hand_with_gradients_into_both_maps():
    s2 = torch.tensor([[[0.0, 0.0], [0.0, 4.0]]], requires_grad=True)
    s1 = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]], requires_grad=True)
    loss = c2.interaction_loss(s1, s2, "printed")
    # (1 - 0)^2 * -1 + (2 - 4)^2 * 3 = 11
    assert float(loss.detach()) == pytest.approx(11.0)
    loss.backward()
    assert s1.grad.abs().sum() > 0 and s2.grad.abs().sum() > 0


def test_the_bounded_reading_of_eq_4_by_hand_with_s2_as_the_target():
    s2 = torch.tensor([[[0.0, 0.0], [0.0, 4.0]]], requires_grad=True)
    s1 = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]], requires_grad=True)
    loss = c2.interaction_loss(s1, s2)
    # min-max: S1 -> 0.5, 0, 0, 1 and S2 -> 0, 0, 0, 1; mask / 3 -> -1/3 (x3), 1.
    assert float(loss.detach()) == pytest.approx(0.25 * (-1 / 3) / 4)
    loss.backward()
    assert s2.grad is None and s1.grad.abs().sum() > 0
    # Bounded: a map pushed as far as it goes from S2 on every ambiguous cell stays >= -1.
    far = c2.interaction_loss(torch.randn(16, 8, 8) * 1e4, torch.randn(16, 8, 8))
    assert -1.0 <= float(far) <= 1.0
    with pytest.raises(MethodError, match="interaction"):
        c2.interaction_loss(s1, s2, "raw")


def test_eq_6_by_hand_with_y1_as_the_target():
    y1 = torch.tensor([[0.0, 0.0]], requires_grad=True)
    y2 = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    loss = c2.agreement_loss(y1, y2)
    assert float(loss.detach()) == pytest.approx(2 * 0.25 ** 2)  # (0.5 - 0.75)^2 + (0.5 - 0.25)^2
    loss.backward()
    assert y1.grad is None and y2.grad.abs().sum() > 0
    y1.grad = None
    c2.agreement_loss(y1, y2, detach_first=False).backward()
    assert y1.grad.abs().sum() > 0


def test_the_intra_weight_ramps_from_0_to_1_over_half_the_epochs():
    config = toy_method_config({"cams2i": {"inter_weight": 0}}, epochs=10)
    model = build_model("simple_gap", 4, widths=[8, 8, 16, 16])
    (parts,) = build_methods(config.method, model, config)
    term = parts.losses["intra"]

    def at(epochs_done):
        steps = 4
        return term.weight_at(StepContext(None, {}, None, 0, int(epochs_done * steps), steps,
                                          epochs_done / 10, model))

    assert at(0) == 0.0 and at(2.5) == pytest.approx(0.5) and at(5) == 1.0 and at(9) == 1.0
    config = toy_method_config({"cams2i": {"inter_weight": 0, "ramp": 0.0}}, epochs=10)
    (parts,) = build_methods(config.method, model, config)
    assert parts.losses["intra"].weight == 1.0
    assert parts.batch_sampler is None and not parts.frozen  # CAMsIntra: no f, plain batches


# --------------------------------------------------------------------------- eqs. 8-10


def test_the_weighted_images_of_eq_8():
    images = torch.ones(1, 3, 2, 2)
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 1, 0, 0] = 100.0  # class 1 certain at one cell, every other cell sigmoid(0) = 0.5
    fore, back = c2.weighted_images(images, maps, torch.tensor([1]))
    torch.testing.assert_close(fore[0, 0], torch.tensor([[1.0, 0.5], [0.5, 0.5]]))
    torch.testing.assert_close(back[0, 0], torch.tensor([[0.0, 0.5], [0.5, 0.5]]))
    fore0, _ = c2.weighted_images(images, maps, torch.tensor([0]))
    torch.testing.assert_close(fore0, torch.full((1, 3, 2, 2), 0.5))
    # A map coarser than the image is upsampled.
    fore, _ = c2.weighted_images(torch.ones(1, 3, 8, 8), torch.zeros(1, 2, 2, 2), torch.tensor([0]))
    assert fore.shape == (1, 3, 8, 8)


def test_p_ij_and_the_inter_sample_loss_of_hand_made_features():
    # Images 0 and 1 share class 0; image 2 is alone in class 1: one pair.
    fore = torch.tensor([[1.0, 0.0], [1.0, 2.0], [5.0, 5.0]])
    back = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    difference, pairs = c2.pair_probabilities(fore, back, torch.tensor([0, 0, 1]))
    assert pairs.tolist() == [[0, 1]]
    # n = 2: d+ = (|(0, -2)|^2 + 0) / 4 = 1; d- = (|(1, 0)|^2 + |(1, 2)|^2) / 4 = 1.5.
    torch.testing.assert_close(difference, torch.tensor([-0.5]))
    p = 1 / (1 + math.exp(-0.5))
    assert float(torch.sigmoid(-difference)) == pytest.approx(p)
    assert float(c2.inter_sample_loss(difference)) == pytest.approx(-math.log(p))
    # Three images of one class: three pairs, the loss their mean.
    difference, pairs = c2.pair_probabilities(fore, back, torch.tensor([2, 2, 2]))
    assert pairs.tolist() == [[0, 1], [0, 2], [1, 2]]
    assert float(c2.inter_sample_loss(difference)) == pytest.approx(
        float(torch.nn.functional.softplus(difference).mean()))
    empty, _ = c2.pair_probabilities(fore, back, torch.tensor([0, 1, 2]))
    assert empty.numel() == 0 and float(c2.inter_sample_loss(empty)) == 0.0


def test_every_batch_of_the_sampler_holds_at_least_two_images_of_each_of_its_classes():
    config = toy_method_config({"cams2i": {"features": "random"}}, batch_size=12,
                        num_classes=5)
    model = build_model("simple_gap", 5, widths=[8, 8, 16, 16])
    (parts,) = build_methods(config.method, model, config)
    sampler = parts.batch_sampler
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 11 + [3] * 2 + [4] * 9)
    for epoch in range(5):
        order = sampler.order(labels, 12, torch.Generator().manual_seed(epoch))
        assert len(order) == sampler.steps(labels, 12) * 12 > 0
        assert len(set(order.tolist())) == len(order)  # no image twice in an epoch
        for batch in order.view(-1, 12):
            counts = torch.bincount(labels[batch])
            assert (counts[counts > 0] >= 2).all(), counts


# --------------------------------------------------------------------------- the network


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_s2_sits_where_the_map_has_the_last_maps_size_and_every_map_has_one_size(arch):
    size, kwargs, position = SMALL[arch]
    config = TrainConfig(model=arch, model_kwargs={"pretrained": False, **kwargs}
                         if arch != "simple_gap" else {}, num_classes=3, image_size=size,
                         method={"cams2i": {"inter_weight": 0}})
    model = model_from_config(config).eval()
    assert model.heads["inner_classifier"].position == position
    classes = torch.tensor([0, 2])
    with torch.no_grad():
        _, features = model(torch.randn(2, 3, size, size))
        cam = score_map("cam")(model, features, classes)
        for name in ("inner_cam", "cams2i"):
            assert score_map(name)(model, features, classes).shape == cam.shape
        combined = score_map("cams2i")(model, features, classes)
    assert 0 <= float(combined.min()) and float(combined.max()) <= 1


def test_the_combined_map_is_the_mean_of_the_two_normalised_maps():
    model = build_model("simple_gap", 3)
    config = TrainConfig(num_classes=3, image_size=64, method={"cams2i": {"inter_weight": 0}})
    model = model_from_config(config).eval()
    with torch.no_grad():
        _, features = model(torch.randn(2, 3, 64, 64))
        classes = torch.tensor([1, 0])
        s1 = score_map("cam")(model, features, classes)
        s1 = s1 + model.classifier.bias[classes].view(-1, 1, 1)
        s2 = score_map("inner_cam")(model, features, classes)
        norm = lambda m: (m - m.amin((1, 2), keepdim=True)) / (
            m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True))
        torch.testing.assert_close(score_map("cams2i")(model, features, classes),
                                   (norm(s1) + norm(s2)) / 2)
        # S2's logits are the spatial mean of its maps; S1's (with the bias) of the CAM's.
        out = c2.branch_outputs(model, torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8),
                                classes, mean=config.mean, std=config.std)
        rows = torch.arange(2)
        torch.testing.assert_close(out["s1"].mean((1, 2)), out["logits1"][rows, classes])
        torch.testing.assert_close(out["s2"].mean((1, 2)), out["logits2"][rows, classes])


# --------------------------------------------------------------------------- end to end


def test_cams2i_trains_with_a_frozen_f_and_its_checkpoint_restores_it(tmp_path):
    config = toy_method_config({"cams2i": {"features": "random", "ramp": 0.0}})
    train, val = toy_data(config)
    summary = fit(None, train, config, val_data=val, run_dir=tmp_path / "run", progress=False)
    last = summary["history"][-1]
    for term in ("inner_ce", "intra", "interaction", "agreement", "inter", "p_mean",
                 "confident_share", "inner_acc"):
        assert np.isfinite(last[term]), term
    assert last["pairs"] >= 4  # 8 images in groups of 2: 4 pairs per batch at least
    trained, fresh = load_model(tmp_path / "run"), model_from_config(config)
    assert not any(p.requires_grad for p in trained.frozen["inter_features"].parameters())
    for (name, before), after in zip(fresh.frozen["inter_features"].state_dict().items(),
                                     trained.frozen["inter_features"].state_dict().values()):
        torch.testing.assert_close(after, before, msg=name)
    head = trained.heads["inner_classifier"].net[0].weight
    assert not torch.equal(head, fresh.heads["inner_classifier"].net[0].weight)


def test_with_every_term_off_the_run_trains_exactly_the_cam_network(tmp_path):
    off = assert_trains_exactly_like_cam(
        tmp_path, toy_method_config({}),
        toy_method_config({"cams2i": {"inner_weight": 0, "intra_weight": 0,
                                         "inter_weight": 0}}))
    assert "inner_classifier" in off.heads


@pytest.mark.parametrize("options, message", [
    ({}, "needs a feature network: pass features="),
    ({"features": "alexnet"}, r"features = 'alexnet'; expected one of"),
    ({"features": "random", "interaction": "raw"}, "interaction = 'raw'"),
    ({"features": "random", "ramp": 2}, "ramp = 2"),
    ({"features": "random", "per_class": 1}, "needs pairs"),
    ({"features": "random", "inter_images": 3}, "multiple of per_class"),
    ({"features": "random", "inter_weight": -1}, "inter_weight = -1"),
    ({"inter_weight": 0, "position": "block4"}, "a stage before the last"),
    ({"inter_weight": 0, "hidden": 0}, "hidden = 0"),
])
def test_bad_options_are_clear_errors(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        model_from_config(toy_method_config({"cams2i": options}))


def test_the_rows_differ_in_one_option_each_and_camsintra_needs_no_f():
    rows = {row: c2.row_options(row, "run:f", inter_images=16)["cams2i"] for row in c2.ROWS}
    assert rows["CAMs2i"] == {"features": "run:f", "inter_images": 16}
    assert rows["CAMsIntra"] == {"inter_weight": 0.0}
    assert rows["CAMs2i, eq. 4 as printed"]["interaction"] == "printed"
    assert rows["CAMs2i, ramp over all epochs"]["ramp"] == 1.0
    with pytest.raises(ValueError, match="row"):
        c2.row_options("CAMs3i", None)


def test_the_paper_tables_are_complete_and_table_6_contradicts_the_text_on_ilsvrc():
    tables = c2.PAPER_TABLES
    assert len(tables["Table 1"]) == 12 and len(tables["Table 2"]) == 11
    assert len(tables["Table 3"]) == 8 and len(tables["Table 4"]) == 14
    assert len(tables["Table 5"]) == 6
    best = {d: min(row, key=row.get) for d, row in tables["Table 6"].items()}
    assert best == {"CUB": 0.6, "ILSVRC": 0.6} and c2.PAPER_THETA["ILSVRC"] == 0.7
    # Table 2's CAMs2i row is Table 6's 0.7.
    assert tables["Table 2"]["VGG16-CAMs2i"][0] == tables["Table 6"]["ILSVRC"][0.7]

