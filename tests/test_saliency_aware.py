"""Chen & Hsu's saliency-aware method (wsolkit.methods.saliency_aware), by hand and end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wsolkit.methods import MethodError
from wsolkit.methods import saliency_aware as sa
from wsolkit.models import build_model
from wsolkit.runs import load_model
from wsolkit.train import ConfigError, TrainConfig, fit, model_from_config, toy_data

from method_checks import assert_trains_exactly_like_cam

SMALL = {"simple_gap": (64, {}), "vgg16_gap": (64, {"width": 0.125, "small_input": True}),
         "resnet50_gap": (64, {"width": 0.125, "small_input": True}),
         "alexnet_gap": (224, {}), "googlenet_gap": (224, {})}


def toy_config(tmp_path, method, **overrides):
    base = dict(model="simple_gap", model_kwargs={"widths": [8, 8, 16, 16]}, num_classes=4,
                image_size=16, epochs=2, batch_size=8, lr=0.05, hflip=False,
                deterministic=True, amp="off", method=method,
                extra={"toy_data": {"num_samples": 32, "target_cache": str(tmp_path / "t")}})
    base.update(overrides)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------ the decoder


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_the_decoder_gives_one_map_in_0_1_at_the_input_size_for_every_backbone(arch):
    size, kwargs = SMALL[arch]
    config = TrainConfig(model=arch, model_kwargs={"pretrained": False, **kwargs}
                         if arch != "simple_gap" else {}, num_classes=3, image_size=size,
                         method={"saliency_aware": {"triplet_weight": 0.0}})
    model = model_from_config(config).eval()
    with torch.no_grad():
        logits, features = model(torch.randn(2, 3, size, size) * 3)
    saliency = features["saliency"]
    assert logits.shape == (2, 3)
    assert saliency.shape == (2, 1, size, size)
    assert 0 <= float(saliency.min()) and float(saliency.max()) <= 1
    decoder = model.heads["saliency"]
    # One block per 2x step from the last feature map to the input.
    last = features["cam"].shape[-1]
    assert len(decoder.blocks) == round(np.log2(size / last))
    assert sa.saliency_map_fn(model, features, torch.zeros(2, dtype=torch.long)).shape == (2, size, size)


def test_the_decoder_takes_the_last_stage_of_each_size_as_its_skip():
    model = build_model("simple_gap", 2)
    assert sa.decoder_skips(model, 64) == [("block1", 64), ("block2", 32), ("block3", 16)]
    assert model.training  # probing the sizes leaves the mode alone
    decoder = sa.SaliencyDecoder(model.channels, sa.decoder_skips(model, 64), 64, 8, stride=2)
    assert decoder.skip_names == ["block3", "block2"] and decoder.residual_scale == 2
    with pytest.raises(MethodError, match="stride"):
        sa.SaliencyDecoder(model.channels, sa.decoder_skips(model, 64), 64, 8, stride=3)


# ------------------------------------------------------------------------- pseudo saliency


def test_the_pseudo_map_is_the_normalised_mean_of_the_proposal_boxes():
    boxes = np.array([[0, 0, 4, 4], [2, 2, 6, 6], [0, 0, 2, 2]], np.float32)
    got = sa.proposal_saliency(boxes, 6, 6)
    want = np.zeros((6, 6))
    for x1, y1, x2, y2 in boxes.astype(int):
        want[y1:y2, x1:x2] += 1
    np.testing.assert_allclose(got, want / want.max())
    np.testing.assert_allclose(sa.proposal_saliency(boxes, 6, 6, count=1),
                               np.pad(np.ones((4, 4)), ((0, 2), (0, 2))))
    assert sa.proposal_saliency(np.zeros((0, 4)), 3, 5).shape == (3, 5)
    assert not sa.proposal_saliency(np.zeros((0, 4)), 3, 5).any()
    with pytest.raises(ValueError, match="count"):
        sa.proposal_saliency(boxes, 6, 6, count=0)


def test_selective_search_finds_a_lone_square_and_the_pseudo_map_peaks_on_it():
    image = np.full((64, 64, 3), 40, np.uint8)
    image[20:44, 8:32] = (230, 30, 30)  # a red square, x 8..31, y 20..43
    boxes = sa.selective_search_boxes(image)
    assert boxes.shape[1] == 4 and len(boxes) >= 2
    assert ((boxes[:, 0] >= 0) & (boxes[:, 2] <= 64) & (boxes[:, 1] >= 0) & (boxes[:, 3] <= 64)).all()
    assert [8, 20, 32, 44] in boxes.astype(int).tolist()  # the square's own box
    saliency = sa.pseudo_saliency(image)
    assert saliency.shape == (64, 64) and saliency.max() == 1
    assert saliency[20:44, 8:32].mean() > saliency[:, 40:].mean()
    # A large image is proposed on a smaller copy and its boxes scaled back to its size.
    large = np.kron(image, np.ones((4, 4, 1), np.uint8))
    big_boxes = sa.selective_search_boxes(large, max_side=64)
    assert big_boxes.max() <= 256 and big_boxes[:, 2:].max() > 64
    with pytest.raises(ValueError, match="uint8"):
        sa.selective_search_boxes(image.astype(np.float32))


def test_the_target_key_names_every_proposal_option():
    keys = {sa.pseudo_saliency_spec(**o).key for o in
            ({}, {"count": 5}, {"strategy": "single"}, {"base_k": 50}, {"sigma": 0.5},
             {"max_side": 128})}
    assert len(keys) == 6
    # ... and the code and OpenCV build behind the map.
    import cv2

    assert f"code={sa._proposal_code()}" in sa.pseudo_saliency_spec().key
    sa._proposal_code.cache_clear()
    real = cv2.__version__
    try:
        cv2.__version__ = "0.0.0"
        assert sa.pseudo_saliency_spec().key not in keys
    finally:
        cv2.__version__ = real
        sa._proposal_code.cache_clear()


# ------------------------------------------------------------------------------- the losses


def test_foreground_and_background_images_by_hand():
    images = torch.tensor([[[[1.0, 0.5], [0.2, 0.0]]]]).repeat(1, 3, 1, 1)
    saliency = torch.tensor([[[[1.0, 0.0], [0.5, 0.25]]]])
    fore, back = sa.foreground_background(images, saliency)
    torch.testing.assert_close(fore[0, 1], torch.tensor([[1.0, 0.0], [0.1, 0.0]]))
    torch.testing.assert_close(back[0, 2], torch.tensor([[0.0, 0.5], [0.1, 0.0]]))
    torch.testing.assert_close(fore + back, images)


def test_the_map_loss_is_the_root_mean_square_difference_per_image():
    saliency = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [0.0, 0.0]]]])
    # Image 1: sqrt(mean(1)) = 1; image 2: sqrt(1/4) = 0.5.
    assert float(sa.map_loss(saliency, target)) == pytest.approx(0.75)
    # A target of another size is resized to the decoder's.
    assert float(sa.map_loss(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 2, 2))) == pytest.approx(0, abs=1e-5)


class Pixels(nn.Module):
    """A fixed F that is the image itself, 2 x 2 average-pooled: n = 3 * 4 * 4."""

    def forward(self, x):
        return nn.functional.avg_pool2d(x, 2).flatten(1)


def test_the_triplet_term_rewards_a_foreground_image_like_the_input():
    images = torch.rand(4, 3, 8, 8) + 0.1
    whole = torch.ones(4, 1, 8, 8)  # x^f = x: d_pos = 0, and x^b black
    nothing = torch.zeros(4, 1, 8, 8)  # x^f black, x^b = x
    losses = {}
    for name, saliency in (("whole", whole), ("nothing", nothing)):
        fore, back = sa.foreground_background(images, saliency)
        d_pos, d_neg = sa.triplet_distances(Pixels(), images, fore, back)
        n = 3 * 4 * 4
        pooled = Pixels()(images)
        if name == "whole":
            torch.testing.assert_close(d_pos, torch.zeros(4))
            torch.testing.assert_close(d_neg, pooled.pow(2).sum(1) / n)
        losses[name] = {form: float(sa.triplet_loss(d_pos, d_neg, form)) for form in sa.TRIPLET_FORMS}
    # The text's reading prefers the foreground image that matches the input ...
    assert losses["whole"]["text"] < losses["nothing"]["text"]
    # ... and eq. 5 as printed the opposite.
    assert losses["whole"]["printed"] > losses["nothing"]["printed"]
    with pytest.raises(MethodError, match="triplet form"):
        sa.triplet_loss(torch.zeros(1), torch.zeros(1), "hinge")


def test_the_anchor_gets_no_gradient_and_the_masked_images_do():
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    saliency = torch.full((2, 1, 8, 8), 0.5, requires_grad=True)
    fore, back = sa.foreground_background(images.detach(), saliency)
    d_pos, d_neg = sa.triplet_distances(Pixels(), images, fore, back)
    (d_pos - d_neg).sum().backward()
    assert images.grad is None and saliency.grad is not None and saliency.grad.abs().sum() > 0


# ----------------------------------------------------------------------- end to end, frozen F


def test_f_stays_frozen_through_training_and_the_checkpoint_restores_it(tmp_path):
    config = toy_config(tmp_path, {"saliency_aware": {"perceptual": "random", "decoder_width": 4}})
    train, val = toy_data(config)
    assert set(train.targets) == {"pseudo_saliency"}
    summary = fit(None, train, config, val_data=val, run_dir=tmp_path / "run", progress=False)
    last = summary["history"][-1]
    for term in ("map", "triplet", "d_pos", "d_neg", "saliency_mean"):
        assert np.isfinite(last[term])
    assert last["map_weight"] == 1.0 and last["triplet_weight"] == 1.0
    trained, fresh = load_model(tmp_path / "run"), model_from_config(config)
    assert not any(p.requires_grad for p in trained.frozen["perceptual"].parameters())
    for (name, before), after in zip(fresh.frozen["perceptual"].state_dict().items(),
                                     trained.frozen["perceptual"].state_dict().values()):
        torch.testing.assert_close(after, before, msg=name)
    # The encoder and the decoder did train.
    assert not torch.equal(trained.stages["block1"][0].weight, fresh.stages["block1"][0].weight)
    assert not torch.equal(trained.heads["saliency"].out.weight, fresh.heads["saliency"].out.weight)


def test_with_both_losses_off_the_run_trains_exactly_the_cam_network(tmp_path):
    off = assert_trains_exactly_like_cam(
        tmp_path, toy_config(tmp_path, {}),
        toy_config(tmp_path, {"saliency_aware": {"map_weight": 0, "triplet_weight": 0}}))
    assert "saliency" in off.heads


def test_f_from_a_run_is_its_pooled_last_map_with_its_normalisation(tmp_path, monkeypatch):
    monkeypatch.setenv("WSOL_RUNS_DIR", str(tmp_path / "runs"))
    source = toy_config(tmp_path, {}, epochs=1, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    train, _ = toy_data(source)
    run_dir = tmp_path / "runs" / "source-run"
    fit(None, train, source, run_dir=run_dir, progress=False)
    config = toy_config(tmp_path, {"saliency_aware": {"perceptual": "run:source-run"}})
    features = model_from_config(config).frozen["perceptual"].network
    images = torch.rand(2, 3, 16, 16)
    network = load_model(run_dir)
    want = network((images - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5)[1]["cam"].mean((2, 3))
    torch.testing.assert_close(features(images), want)


@pytest.mark.parametrize("options, message", [
    ({}, "needs a feature network: pass perceptual="),
    ({"perceptual": "run:no-such-run"}, "no checkpoint.pt"),
    ({"perceptual": "imagenet"}, r"perceptual = 'imagenet'; expected one of \['run:<run folder>'"),
    ({"perceptual": "random", "map_weight": -1}, "map_weight"),
    ({"perceptual": "random", "triplet": "hinge"}, "triplet"),
    ({"perceptual": "random", "triplet_images": 0}, "triplet_images"),
    ({"perceptual": "random", "proposals": {"k": 3}}, "unknown proposal option"),
])
def test_bad_options_are_clear_errors(tmp_path, monkeypatch, options, message):
    monkeypatch.setenv("WSOL_RUNS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        model_from_config(toy_config(tmp_path, {"saliency_aware": options}))


def test_the_rows_of_the_tables_differ_in_one_option_each():
    rows = {row: sa.row_options(row, "run:f", decoder_stride=2)["saliency_aware"] for row in sa.ROWS}
    assert rows["Ours"] == {"perceptual": "run:f", "decoder_stride": 2}
    assert rows["Ours w/o L_tri"] == {"decoder_stride": 2, "triplet_weight": 0.0}  # no F to build
    assert rows["Ours, random F"]["perceptual"] == "random"
    with pytest.raises(Exception, match="row"):
        sa.row_options("Ours w/o both", "run:f")


def test_pseudo_maps_that_are_the_masks_score_perfectly_and_a_wrong_shape_is_refused():
    from wsolkit.evaluation import LocalizationSet

    masks = torch.zeros(3, 16, 16, dtype=torch.uint8)
    boxes = []
    for i, (x, y) in enumerate(((2, 3), (6, 1), (4, 8))):
        masks[i, y:y + 6, x:x + 7] = 1
        boxes.append(np.array([[x, y, x + 6, y + 5]], np.float32))  # inclusive corners
    data = LocalizationSet(images=torch.zeros(3, 3, 16, 16, dtype=torch.uint8),
                           labels=torch.zeros(3, dtype=torch.long), boxes=boxes, masks=masks,
                           part_boxes=None, ids=["a", "b", "c"])
    evaluation = sa.evaluate_pseudo_maps(masks.float(), data)
    assert evaluation.fixed["pxap"] == pytest.approx(100.0)
    assert evaluation.fixed["max_box_acc_v2"] == pytest.approx(100.0)
    assert evaluation.fixed["per_image_top1"].all()
    with pytest.raises(ValueError, match="expected \\(3, 16, 16\\)"):
        sa.evaluate_pseudo_maps(masks.float()[:2], data)


def test_decoder_views_split_each_image_into_its_foreground_and_background():
    config = TrainConfig(model="simple_gap", num_classes=3, image_size=16,
                         method={"saliency_aware": {"triplet_weight": 0.0}})
    model = model_from_config(config)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    views = sa.decoder_views(model, images, mean=config.mean, std=config.std)
    assert views["saliency"].shape == (2, 16, 16)
    torch.testing.assert_close(views["foreground"] + views["background"], images.float() / 255)
    torch.testing.assert_close(views["foreground"], views["saliency"][:, None] * images.float() / 255)
