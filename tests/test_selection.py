"""Tests of wsolkit.methods.selection (ASS, thesis chapter 3) and wsolkit.methods.dual_hiding
(AMH, chapter 4): hand-made attention maps with known branches, expected points and areas."""

import json

import numpy as np
import pytest
import torch

from wsolkit.methods import MethodError
from wsolkit.methods.dual_hiding import (
    DualHiding,
    area_mask,
    channel_scores,
    dual_hiding_mask,
    expected_points,
    soft_argmax,
)
from wsolkit.methods.selection import (
    BRANCHES,
    AttentionSelection,
    SelectionSettings,
    count_components,
    dispersion,
    drop_mask,
    select_branches,
    selection_masks,
    self_attention,
)
from wsolkit.train import ConfigError, TrainConfig, fit, model_from_config, toy_images

HIDDEN, PASSED, DISPERSED = (BRANCHES.index(b) for b in ("hidden", "passed", "dispersed"))


def _attention(cells: dict, size: int = 16, base: float = 0.0) -> torch.Tensor:
    a = torch.full((1, 1, size, size), base)
    for (r, c), v in cells.items():
        a[0, 0, r, c] = v
    return a


# ---------------------------------------------------------------- eqs. 10-12


def test_self_attention_is_the_channel_mean_eq_10():
    f = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    assert torch.equal(self_attention(f)[:, 0], f.mean(1))
    assert self_attention(f).shape == (2, 1, 2, 2)


def test_drop_masks_of_eq_11_hand_computed():
    a = torch.tensor([[[[0.0, 0.1, 0.2], [0.5, 0.79, 0.8], [0.9, 1.0, 0.3]]]])
    assert drop_mask(a, 0.8, "above")[0, 0].tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 1]]
    # The background mask keeps what is at or above 0.2 of the maximum.
    assert drop_mask(a, 0.2, "below")[0, 0].tolist() == [[0, 0, 1], [1, 1, 1], [1, 1, 1]]


def test_dispersion_is_the_summed_coordinate_variance_plus_mu2_components_eq_12():
    on = torch.zeros(1, 5, 5, dtype=torch.bool)
    on[0, 0, 0] = on[0, 0, 4] = on[0, 4, 0] = on[0, 4, 4] = True
    # Columns 0, 4, 0, 4 and rows 0, 0, 4, 4: population variances 4 + 4.
    assert dispersion(on).item() == pytest.approx(8.0)
    assert count_components(on).item() == 4
    assert dispersion(on, mu1=0.5, mu2=2.0).item() == pytest.approx(0.5 * 8 + 2 * 4)
    block = torch.zeros(1, 5, 5, dtype=torch.bool)
    block[0, 1:3, 1:3] = True
    block[0, 3, 3] = True  # diagonal neighbour: the same 8-connected component
    assert count_components(block).item() == 1
    assert dispersion(torch.zeros(1, 5, 5, dtype=torch.bool)).item() == 0.0


# ---------------------------------------------------------------- Algorithm 1


def test_algorithm_1_branches_on_hand_made_attention_maps():
    settings = SelectionSettings(dispersion_threshold=40.0)
    # Scattered peaks at the four corners of a 16 x 16 map: variance 56.25 + 56.25.
    corners = _attention({(0, 0): 1.0, (0, 15): 1.0, (15, 0): 1.0, (15, 15): 1.0}, base=0.5)
    # A small object: a 4 x 4 blob (6 % of the map) on a zero background.
    small = _attention({(r, c): 1.0 for r in range(6, 10) for c in range(6, 10)})
    # A large object (half the map at 0.5) with a compact 2 x 2 peak (4 of 128 cells: 3 %).
    large = _attention({**{(r, c): 0.5 for r in range(16) for c in range(8)},
                        **{(r, c): 1.0 for r in (7, 8) for c in (3, 4)}})
    # The same large object whose peak covers 48 of its 128 cells (38 % > 30 %).
    broad = _attention({**{(r, c): 0.5 for r in range(16) for c in range(8)},
                        **{(r, c): 1.0 for r in range(6) for c in range(8)}})
    got = select_branches(torch.cat([corners, small, large, broad]), settings)
    assert got.tolist() == [DISPERSED, PASSED, HIDDEN, PASSED]
    # The estimated area of `corners` is the whole map, so without the dispersion test it
    # would be hidden; the map-size scaling raises the threshold past its 112.5.
    assert select_branches(corners, settings, dispersion_scale=3.0).item() == HIDDEN


def test_selection_masks_follow_the_branch():
    settings = SelectionSettings()
    base = torch.full((1, 1, 16, 16), 0.05)
    corners = base.clone()
    corners[0, 0, [0, 0, 15, 15], [0, 15, 0, 15]] = 1.0
    corners[0, 0, 4:12, 4:12] = 0.5
    large = torch.zeros(1, 1, 16, 16)
    large[0, 0, :, :8] = 0.5
    large[0, 0, 7:9, 3:5] = 1.0
    features = torch.cat([corners, large]).repeat(1, 3, 1, 1)
    masks, branches = selection_masks(features, settings)
    assert branches.tolist() == [DISPERSED, HIDDEN]
    # Dispersed: the peaks and the background (0.05 < 0.2) are hidden, the object kept.
    assert masks[0, 0, 0, 0] == 0 and masks[0, 0, 2, 2] == 0 and masks[0, 0, 6, 6] == 1
    # Hidden: exactly the 2 x 2 peak.
    assert int((masks[1, 0] == 0).sum()) == 4 and masks[1, 0, 7, 3] == 0


def test_a_constant_attention_map_passes_unchanged():
    assert select_branches(torch.zeros(2, 1, 8, 8)).tolist() == [PASSED, PASSED]


def test_the_plugin_is_the_identity_at_evaluation_and_counts_branches_in_training():
    layer = AttentionSelection()
    x = torch.rand(4, 8, 16, 16)
    assert torch.equal(layer.eval()(x), x)
    layer.train()(x)
    assert layer.branch_counts.sum().item() == 4
    always = AttentionSelection(strategy="always_drop").train()
    out = always(x)
    assert always.branch_counts.tolist() == [0, 0, 4]
    assert torch.equal(out, x * drop_mask(self_attention(x), 0.8, "above"))


def test_bad_options_name_the_value():
    with pytest.raises(MethodError, match="drop = 1.5"):
        SelectionSettings(drop=1.5)
    with pytest.raises(MethodError, match="strategy"):
        AttentionSelection(strategy="sometimes")
    cfg = dict(model="simple_gap", model_kwargs={"widths": [4, 4, 4, 8]}, num_classes=2,
               image_size=32)
    with pytest.raises(ConfigError, match="unknown option.*dorp"):
        model_from_config(TrainConfig(**cfg, method={"ass": {"positions": ["pool3"],
                                                             "dorp": 0.8}}))
    with pytest.raises(ConfigError, match="reference_sides"):
        model_from_config(TrainConfig(**cfg, method={"ass": {
            "positions": ["pool3"], "reference_sides": {"pool2": 28}}}))


def test_training_logs_the_branch_shares_per_position(tmp_path):
    data = toy_images(32, image_size=32, num_classes=2)
    config = TrainConfig(model="simple_gap", model_kwargs={"widths": [4, 4, 8, 8]},
                         num_classes=2, image_size=32, epochs=2, batch_size=16, lr=0.05,
                         method={"ass": {"positions": ["pool2", "block4"]}})
    fit(None, data, config, run_dir=tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    for record in records:
        for position in ("pool2", "block4"):
            shares = [record[f"ass/{position}/{b}"] for b in BRANCHES]
            assert sum(shares) == pytest.approx(1.0)
        assert record["ass"] == 0.0 and record["ass_weight"] == 0.0


# ---------------------------------------------------------------- AMH


def test_soft_argmax_is_the_centre_of_mass():
    p = torch.zeros(1, 2, 5, 7)
    p[0, 0, 1, 2] = 0.25
    p[0, 0, 3, 6] = 0.75
    p[0, 1] = 1 / 35
    points = soft_argmax(p)
    assert points[0, 0].tolist() == pytest.approx([0.25 * 1 + 0.75 * 3, 0.25 * 2 + 0.75 * 6])
    assert points[0, 1].tolist() == pytest.approx([2.0, 3.0])


def test_area_mask_hides_a_square_around_each_point_clipped_at_the_edges():
    mask = area_mask(torch.tensor([[[2.2, 3.0], [0.0, 7.0]]]), (6, 8), side=3)[0, 0]
    hidden = {(int(r), int(c)) for r, c in zip(*np.nonzero((mask == 0).numpy()))}
    around = {(r, c) for r in (1, 2, 3) for c in (2, 3, 4)}
    corner = {(0, 6), (0, 7), (1, 6), (1, 7)}
    assert hidden == around | corner
    even = area_mask(torch.tensor([[[2.2, 3.0]]]), (6, 8), side=2)[0, 0]
    assert int((even == 0).sum()) == 4 and even[2, 3] == 0


def test_expected_points_of_the_top_channel_and_of_the_attention_map():
    f = torch.zeros(1, 3, 8, 8)
    f[0, 0, 1, 1] = 3.0   # a weak channel
    f[0, 1, 6, 5] = 27.0  # the second channel, peaked at (6, 5)
    f[0, 2, 2, 6] = 36.0  # the top channel; the attention map: 12 at (2, 6), 9 at (6, 5)
    assert channel_scores(f).argmax(1).item() == 2
    assert channel_scores(f, "mean").argmax(1).item() == 2
    points = expected_points(f, channel_points=2, spatial_points=1, side=2)
    channel = points["channel"][0]
    assert channel[0].tolist() == pytest.approx([2.0, 6.0], abs=1e-6)
    assert channel[1].tolist() == pytest.approx([6.0, 5.0], abs=1e-6)
    # e^12 against e^9 and 62 cells at e^0 (and e^1): 95 % of the mass at (2, 6).
    assert points["spatial"][0, 0].tolist() == pytest.approx([2.19, 5.95], abs=0.02)
    # A second spatial point is sought after the first area is removed: near (6, 5).
    two = expected_points(f, channel_points=0, spatial_points=2, side=2)["spatial"][0]
    assert two[1].tolist() == pytest.approx([6.0, 5.0], abs=0.05)
    assert "channel" not in expected_points(f, channel_points=0, side=2)


def test_the_dual_mask_combines_the_attention_mask_and_the_two_areas():
    # The strongest channel peaks at (1, 1); the attention map (channel mean) at (6, 6).
    f = torch.zeros(1, 4, 8, 8)
    f[0, 0, 1, 1] = 20.0
    f[0, 1:, 6, 6] = 12.0
    mask = dual_hiding_mask(f, hide_side=3 / 8)[0, 0]  # 3 x 3 squares
    hidden = {(int(r), int(c)) for r, c in zip(*np.nonzero((mask == 0).numpy()))}
    square = {(r, c) for r in range(3) for c in range(3)}
    assert hidden == square | {(r + 5, c + 5) for r, c in square}
    only_attention = dual_hiding_mask(f, channel_points=0, spatial_points=0)[0, 0]
    assert only_attention[6, 6] == 0 and int((only_attention == 0).sum()) == 1


def test_the_dual_hiding_plugin_uses_the_selection_strategy():
    large = torch.zeros(1, 1, 16, 16)
    large[0, 0, :, :8] = 0.5
    large[0, 0, 7:9, 3:5] = 1.0
    small = torch.zeros(1, 1, 16, 16)
    small[0, 0, 6:9, 6:9] = 1.0
    x = torch.cat([large, small]).repeat(1, 4, 1, 1)
    layer = DualHiding().train()
    out = layer(x)
    assert layer.branch_counts.tolist() == [0, 1, 1]
    assert torch.equal(out[1], x[1])
    assert (out[0] == 0).all(0).sum() > 4  # more than ADL's 2 x 2 peak is hidden
    assert torch.equal(layer.eval()(x), x)
    with pytest.raises(MethodError, match="hide_side"):
        DualHiding(hide_side=0)


@pytest.mark.parametrize("backbone, size", [("simple_gap", 64), ("vgg16_gap", 224)])
def test_the_plug_positions_keep_the_sizes_of_vggs_maps_relative_to_the_last(backbone, size):
    from wsolkit.methods.selection import BACKBONE_POSITIONS, VGG16_SIDES, plug_positions
    from wsolkit.models import build_model

    model = build_model(backbone, 3).eval()
    with torch.no_grad():
        features = model(torch.zeros(1, 3, size, size))[1]
    table = BACKBONE_POSITIONS[backbone]
    last = features[table["conv5_3"]].shape[-1]
    for vgg, side in VGG16_SIDES.items():
        assert features[table[vgg]].shape[-1] / last == side / 14
    positions, sides = plug_positions(["pool3", "pool4", "conv5_3"], backbone)
    if backbone == "vgg16_gap":
        assert positions == ["pool3", "pool4", "conv5_3"] and sides is None
    else:
        assert positions == ["pool2", "pool3", "block4"]
        assert sides == {"pool2": 28, "pool3": 14, "block4": 14}
    with pytest.raises(MethodError, match="pool5"):
        plug_positions(["pool5"], backbone)


def test_plug_options_name_a_row_of_tables_1_and_7_on_a_backbone():
    from wsolkit.methods.selection import plug_options

    got = plug_options("amh", "simple_gap", "+ pool4", hide_side=0.5)
    assert got == {"amh": {"positions": ["pool3", "block4"],
                           "reference_sides": {"pool3": 14, "block4": 14}, "hide_side": 0.5}}
    assert plug_options("ass", "vgg16_gap")["ass"]["reference_sides"] is None
    with pytest.raises(MethodError, match="plug row"):
        plug_options("ass", "simple_gap", "+ pool5")
