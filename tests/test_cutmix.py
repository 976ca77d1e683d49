"""CutMix (wsolkit.methods.cutmix): the box, the paste, the mixed loss, by hand and end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsolkit.methods import available_methods
from wsolkit.methods.cutmix import CutMix, Mixing, cut_box, cutmix_loss, mix_batch
from wsolkit.runs import load_model
from wsolkit.train import fit, toy_data

from method_checks import assert_trains_exactly_like_cam, toy_method_config


def test_the_box_follows_the_reference_rule_by_hand():
    # sqrt(1 - 0.75) = 0.5: a side of 5 px, halved down to 2 on each side of the centre.
    assert cut_box(10, 10, 0.75, (5, 5)) == (3, 3, 7, 7)
    # Clipped at the border: the top-right corner keeps only what lies inside.
    assert cut_box(10, 10, 0.75, (0, 9)) == (0, 7, 2, 10)
    # Height and width scale separately on a non-square image.
    assert cut_box(8, 20, 0.0, (4, 10)) == (0, 0, 8, 20)
    assert cut_box(8, 20, 1.0, (4, 10)) == (4, 10, 4, 10)  # nothing cut


@pytest.mark.parametrize("bad", [dict(lam=-0.1), dict(lam=1.5), dict(centre=(10, 0))])
def test_a_box_outside_its_terms_is_a_clear_error(bad):
    args = dict(lam=0.5, centre=(1, 1)) | bad
    with pytest.raises(ValueError, match="cut_box"):
        cut_box(10, 10, args["lam"], args["centre"])


def test_every_image_gets_its_partners_box_and_keeps_the_rest():
    torch.manual_seed(3)
    images = torch.randn(6, 3, 12, 12)
    before = images.clone()
    mixed, mixing = mix_batch(images, beta=1.0)
    torch.testing.assert_close(images, before, rtol=0, atol=0)  # the input is untouched
    top, left, bottom, right = mixing.box
    inside = torch.zeros(12, 12, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    for i in range(6):
        j = int(mixing.perm[i])
        assert torch.equal(mixed[i][:, inside], images[j][:, inside])
        assert torch.equal(mixed[i][:, ~inside], images[i][:, ~inside])
    assert mixing.lam == pytest.approx(1 - inside.sum().item() / 144)
    assert sorted(mixing.perm.tolist()) == list(range(6))


def test_lambda_follows_a_beta_distribution_of_the_kept_share():
    # Beta(1, 1) is uniform: the drawn share to keep averages 1/2; the kept share after the
    # box (truncated and clipped, so never smaller than drawn) a little above.
    torch.manual_seed(0)
    images = torch.zeros(2, 1, 64, 64)
    kept = np.array([mix_batch(images, beta=1.0)[1].lam for _ in range(2000)])
    assert 0.5 < kept.mean() < 0.75
    assert kept.min() >= 0.0 and kept.max() <= 1.0
    # A large beta concentrates lambda at 1/2: a box away from the border then has the side
    # 2 * (int(64 * sqrt(1 - lambda)) // 2), 44 or 46 px for lambda within 0.48-0.52.
    sides = set()
    for _ in range(300):
        top, left, bottom, right = mix_batch(images, beta=500.0)[1].box
        if top > 0 and left > 0 and bottom < 64 and right < 64:
            assert bottom - top == right - left
            sides.add(bottom - top)
    assert sides and sides <= {44, 46}


def test_p_zero_mixes_nothing_and_p_one_always_mixes():
    torch.manual_seed(1)
    images = torch.randn(4, 3, 8, 8)
    same, mixing = mix_batch(images, beta=1.0, p=0.0)
    assert torch.equal(same, images) and mixing.lam == 1.0
    assert mixing.perm.tolist() == [0, 1, 2, 3]
    draws = [mix_batch(images, beta=1.0, p=0.5)[1] for _ in range(400)]
    mixed_share = np.mean([d.box != (0, 0, 0, 0) for d in draws])
    assert 0.4 < mixed_share < 0.6


def test_the_loss_mixes_the_two_cross_entropies_by_the_kept_share():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    labels = torch.tensor([0, 1])
    mixing = Mixing(torch.tensor([1, 0]), 0.25, (0, 0, 1, 1))
    own = F.cross_entropy(logits, labels)
    partner = F.cross_entropy(logits, torch.tensor([1, 0]))
    expected = 0.25 * own + 0.75 * partner
    torch.testing.assert_close(cutmix_loss(logits, labels, mixing), expected)
    unmixed = Mixing(torch.tensor([0, 1]), 1.0, (0, 0, 0, 0))
    torch.testing.assert_close(cutmix_loss(logits, labels, unmixed), own)


def test_the_loss_refuses_a_batch_its_transform_did_not_mix():
    mixer = CutMix()
    images = torch.randn(4, 3, 8, 8)

    class Ctx:
        pass

    ctx = Ctx()
    ctx.images = images
    with pytest.raises(RuntimeError, match="not mixed by this CutMix"):
        mixer.loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), {}, ctx)
    ctx.images = mixer(images)
    assert torch.isfinite(mixer.loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), {}, ctx))


@pytest.mark.parametrize("options", [{"beta": 0.0}, {"beta": -1.0}, {"p": 1.5}])
def test_bad_options_are_clear_errors(options):
    with pytest.raises(ValueError, match="CutMix"):
        CutMix(**options)


def test_cutmix_is_registered_and_trains_end_to_end(tmp_path):
    assert "cutmix" in available_methods()
    config = toy_method_config({"cutmix": {"beta": 1.0, "p": 1.0}})
    train, _ = toy_data(config)
    summary = fit(None, train, config, run_dir=tmp_path / "run", progress=False)
    assert all(np.isfinite(r["loss"]) for r in summary["history"])
    # A second run with the same seed mixes the same boxes: the weights are identical.
    fit(None, train, config, run_dir=tmp_path / "again", progress=False)
    first, again = load_model(tmp_path / "run"), load_model(tmp_path / "again")
    for name, value in first.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_cutmix_that_never_mixes_trains_exactly_the_cam_network(tmp_path):
    assert_trains_exactly_like_cam(tmp_path, toy_method_config({}),
                                   toy_method_config({"cutmix": {"beta": 1.0, "p": 0.0}}))
