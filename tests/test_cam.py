"""Tests of wsolkit.cam: hand-computed maps and equivalences to a GAP network and to OpenCV."""

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from wsolkit.cam import (
    CamInputError,
    DegenerateMapWarning,
    cams_to_score_maps,
    class_activation_maps,
    grad_cam,
    normalize_maps,
    topk_classes,
    upsample_maps,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class TinyGapNet(nn.Module):
    """conv -> ReLU -> conv -> GAP -> linear, returning (logits, features) as wsolkit models do."""

    def __init__(self, num_classes=5, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        feats = self.body(x)
        return self.fc(feats.mean(dim=(2, 3))), {"last": feats}


@pytest.fixture(params=DEVICES)
def gap_net(request):
    torch.manual_seed(0)
    net = TinyGapNet().to(request.param).eval()
    images = torch.rand(4, 3, 12, 10, device=request.param)
    return net, images


def test_cam_spatial_mean_with_bias_equals_gap_logits(gap_net):
    net, images = gap_net
    with torch.no_grad():
        logits, feats = net(images)
        cams = class_activation_maps(feats["last"], net.fc.weight, net.fc.bias)
    assert cams.shape == (4, 5, 6, 5)
    torch.testing.assert_close(cams.mean(dim=(2, 3)), logits, atol=1e-5, rtol=0)


def test_cam_class_selections_agree_with_all_classes(gap_net):
    net, images = gap_net
    with torch.no_grad():
        logits, feats = net(images)
        feats = feats["last"]
        every = class_activation_maps(feats, net.fc.weight, net.fc.bias)
        labels = torch.tensor([0, 3, 4, 3], device=feats.device)
        one = class_activation_maps(feats, net.fc.weight, net.fc.bias, classes=labels)
        top = topk_classes(logits, 3)
        three = class_activation_maps(feats, net.fc.weight, net.fc.bias, classes=top)
        fixed = class_activation_maps(feats, net.fc.weight, classes=2)
    rows = torch.arange(4, device=feats.device)
    torch.testing.assert_close(one, every[rows, labels], atol=1e-6, rtol=0)
    assert three.shape == (4, 3, 6, 5)
    torch.testing.assert_close(three, every[rows[:, None], top], atol=1e-6, rtol=0)
    torch.testing.assert_close(fixed, every[:, 2] - net.fc.bias[2], atol=1e-6, rtol=0)


def test_cam_hand_computed():
    # Two channels on a 1x2 grid: cell values (1, 2) and (3, -1).
    feats = torch.tensor([[[[1.0, 3.0]], [[2.0, -1.0]]]])
    weight = torch.tensor([[1.0, 0.0], [2.0, -1.0]])
    bias = torch.tensor([0.5, -0.5])
    cams = class_activation_maps(feats, weight, bias)
    expected = torch.tensor([[[[1.5, 3.5]], [[-0.5, 6.5]]]])
    torch.testing.assert_close(cams, expected)
    assert class_activation_maps(feats, weight, classes=[1]).tolist() == [[[0.0, 7.0]]]


@pytest.mark.parametrize("classes, pattern", [
    (torch.tensor([5]), r"indices in \[5, 5\].*2 classes"),
    (torch.tensor([0.0]), r"integer class indices"),
    (torch.tensor([0, 1]), r"expected an int, \(1,\)"),
])
def test_cam_rejects_bad_classes(classes, pattern):
    feats = torch.zeros(1, 2, 3, 3)
    with pytest.raises(CamInputError, match=pattern):
        class_activation_maps(feats, torch.zeros(2, 2), classes=classes)


def test_cam_rejects_channel_mismatch():
    with pytest.raises(CamInputError, match=r"weight has shape \(4, 3\).*expected weight \(C, 2\)"):
        class_activation_maps(torch.zeros(1, 2, 3, 3), torch.zeros(4, 3))


def test_topk_classes_hand_case():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0], [5.0, -2.0, 0.0, 4.0]])
    assert topk_classes(logits, 2).tolist() == [[1, 2], [0, 3]]
    with pytest.raises(CamInputError, match="k = 5 but logits has 4 classes"):
        topk_classes(logits, 5)


def test_grad_cam_on_gap_net_is_relu_cam_over_cell_count(gap_net):
    # d logit_c / d A_k(i, j) = W_ck / (h w), so alpha_k = W_ck / (h w) and
    # Grad-CAM = ReLU(sum_k W_ck A_k) / (h w) = ReLU(CAM without bias) / (h w).
    net, images = gap_net
    labels = torch.tensor([1, 0, 4, 2], device=images.device)
    with torch.no_grad():  # Grad-CAM must still work inside no_grad
        maps = grad_cam(net, images, labels, "last")
        _, feats = net(images)
        cams = class_activation_maps(feats["last"], net.fc.weight, classes=labels)
    h, w = cams.shape[-2:]
    assert maps.shape == (4, h, w) and not maps.requires_grad
    torch.testing.assert_close(maps, torch.relu(cams) / (h * w), atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in net.parameters())


def test_grad_cam_defaults_to_predicted_class(gap_net):
    net, images = gap_net
    with torch.no_grad():
        predicted = net(images)[0].argmax(dim=1)
    torch.testing.assert_close(grad_cam(net, images, None, "last"),
                               grad_cam(net, images, predicted, "last"))


def test_grad_cam_names_missing_key(gap_net):
    net, images = gap_net
    with pytest.raises(CamInputError, match=r"'conv5' is not among the model's features"):
        grad_cam(net, images, 0, "conv5")


def test_normalize_minmax_and_max_hand_cases():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 4.0]], [[-1.0, 2.0], [1.0, 4.0]]])
    minmax = normalize_maps(maps, "minmax")
    torch.testing.assert_close(minmax, torch.tensor([[[0, 0.25], [0.5, 1]], [[0, 0.6], [0.4, 1]]]))
    peak = normalize_maps(maps, "max")
    torch.testing.assert_close(peak, torch.tensor([[[0, 0.25], [0.5, 1]], [[0, 0.5], [0.25, 1]]]))


def test_normalize_minmax_bit_identical_to_reference():
    rng = np.random.default_rng(0)
    maps = (rng.normal(size=(5, 17, 13)) * 7).astype(np.float32)
    expected = []
    for cam in maps.copy():  # the reference evaluation's in-place normalisation
        cam -= cam.min()
        cam /= cam.max()
        expected.append(cam)
    out = normalize_maps(maps)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert np.array_equal(out, np.stack(expected))


@pytest.mark.parametrize("mode", ["minmax", "max"])
def test_normalize_degenerate_maps_give_zeros_and_an_exact_count(mode):
    maps = np.stack([
        np.zeros((3, 3)),  # all zero
        np.full((3, 3), 2.5),  # constant (degenerate for minmax only)
        np.arange(9.0).reshape(3, 3),  # fine
        np.where(np.eye(3) > 0, np.nan, 1.0),  # NaN
        np.where(np.eye(3) > 0, np.inf, 1.0),  # inf
        -np.arange(9.0).reshape(3, 3),  # no positive value (degenerate for max only)
    ])
    with pytest.warns(DegenerateMapWarning) as record:
        out = normalize_maps(maps, mode)
    assert len(record) == 1
    # minmax: zero, constant, NaN, inf; max: zero, NaN, inf, no positive value.
    assert re.search(r"4 of 6 maps set to zeros: 2 hold NaN or inf, 2 are .* 1 of them all zero",
                     str(record[0].message))
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert (out[[0, 3, 4]] == 0).all()
    assert out[2].max() == 1.0
    constant_out, negative_out = (0.0, 1.0) if mode == "minmax" else (1.0, 0.0)
    assert (out[1] == constant_out).all() and out[5].max() == negative_out


def test_normalize_clean_maps_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalize_maps(torch.rand(4, 5, 5) + 0.01)


def test_upsample_bicubic_matches_opencv_inter_cubic_14_to_224():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(3, 14, 14)).astype(np.float32)
    ours = upsample_maps(maps, (224, 224), mode="bicubic")
    reference = np.stack([cv2.resize(m, (224, 224), interpolation=cv2.INTER_CUBIC) for m in maps])
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    # Equal up to float32 rounding (observed max difference 5e-7).
    np.testing.assert_allclose(ours, reference, atol=2e-6, rtol=0)
    bilinear = upsample_maps(maps, (224, 224), mode="bilinear")
    reference = np.stack([cv2.resize(m, (224, 224), interpolation=cv2.INTER_LINEAR) for m in maps])
    np.testing.assert_allclose(bilinear, reference, atol=2e-6, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_cams_to_score_maps_is_cam_upsample_normalise(device):
    torch.manual_seed(2)
    feats = torch.randn(3, 4, 7, 7, device=device)
    weight = torch.randn(6, 4, device=device)
    labels = torch.tensor([5, 0, 2], device=device)
    maps = cams_to_score_maps(feats, weight, labels, (56, 56))
    manual = class_activation_maps(feats, weight, classes=labels)
    manual = torch.nn.functional.interpolate(manual[:, None], size=(56, 56), mode="bicubic",
                                             align_corners=False)[:, 0]
    low = manual.amin(dim=(1, 2), keepdim=True)
    manual = (manual - low) / (manual.amax(dim=(1, 2), keepdim=True) - low)
    assert maps.shape == (3, 56, 56) and maps.device.type == device
    torch.testing.assert_close(maps, manual, atol=0, rtol=0)
    assert maps.amin(dim=(1, 2)).tolist() == [0.0] * 3
    assert maps.amax(dim=(1, 2)).tolist() == [1.0] * 3
    as_array = cams_to_score_maps(feats, weight, labels, (56, 56), as_numpy=True)
    assert isinstance(as_array, np.ndarray) and np.array_equal(as_array, maps.cpu().numpy())
