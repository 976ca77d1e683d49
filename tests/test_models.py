"""Backbones (wsolkit.models) and the plug-in methods ADL and Hide-and-Seek (wsolkit.methods)."""

import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from wsolkit.methods import ADL, HideAndSeek, adl_maps, hide_patches
from wsolkit.train import ConfigError, TrainConfig, model_from_config
from wsolkit.models import (
    PretrainedWeightsNotFound,
    UnknownModelError,
    UnknownPositionError,
    available_models,
    available_positions,
    build_model,
    load_torchvision_state_dict,
    parameter_groups,
    weights_path,
)
from wsolkit.models.inception import TransformInput

# (name, options, input side): small inputs keep the full-size networks cheap on a CPU.
CASES = [
    ("vgg16_gap", {}, 32),
    ("vgg16_gap", {"width": 0.25, "small_input": True}, 64),
    ("resnet50_gap", {}, 32),
    ("resnet50_gap", {"width": 0.125, "small_input": True}, 32),
    ("alexnet_gap", {}, 67),
    ("googlenet_gap", {}, 32),
    ("inceptionv3_gap", {}, 64),
    ("simple_gap", {}, 32),
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


_BUILT = {}


def _built(name, options):
    """One evaluation-mode instance per case, shared by the tests that only read it."""
    key = (name, tuple(sorted(options.items())))
    if key not in _BUILT:
        _BUILT[key] = build_model(name, 3, **options).eval()
    return _BUILT[key]


@pytest.mark.parametrize("name,options,side", CASES)
def test_logits_are_the_spatial_mean_of_the_cams(name, options, side):
    # The equivalence CAM rests on: GAP + linear == mean over cells of W . F (+ bias).
    model = _built(name, options)
    with torch.no_grad():
        logits, features = model(torch.randn(2, 3, side, side))
        cams = torch.einsum("ck,nkhw->nchw", model.classifier.weight, features["cam"])
        expected = cams.mean(dim=(2, 3)) + model.classifier.bias
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,options,side", CASES)
def test_features_are_named_stages_with_declared_channels(name, options, side):
    model = _built(name, options)
    with torch.no_grad():
        _, features = model(torch.randn(1, 3, side, side))
    assert list(features) == available_positions(name) + ["cam"]
    assert model.positions == available_positions(name)
    for key, value in features.items():
        assert value.shape[1] == model.channels[key], key
    assert model.classifier.in_features == model.channels["cam"]


@pytest.mark.parametrize(
    "name,options,side,cam_shape",
    [
        ("vgg16_gap", {}, 224, (1024, 14, 14)),
        ("vgg16_gap", {"width": 0.25, "small_input": True}, 64, (256, 8, 8)),
        ("vgg16_gap", {"width": 0.25, "small_input": True}, 96, (256, 12, 12)),
        ("resnet50_gap", {"width": 0.25, "small_input": True}, 64, (512, 8, 8)),
        ("alexnet_gap", {}, 224, (1024, 13, 13)),
        ("simple_gap", {}, 64, (128, 8, 8)),
    ],
)
def test_cam_resolution_matches_the_papers(name, options, side, cam_shape):
    model = build_model(name, 2, **options).eval()
    with torch.no_grad():
        _, features = model(torch.zeros(1, 3, side, side))
    assert tuple(features["cam"].shape[1:]) == cam_shape


def test_reduced_vgg_keeps_the_topology_at_a_fraction_of_the_parameters():
    full = build_model("vgg16_gap", 10)
    small = build_model("vgg16_gap", 10, width=0.25, small_input=True)
    assert small.positions == full.positions
    n_full = sum(p.numel() for p in full.parameters())
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < n_full / 12  # widths / 4 -> about 1/16 of the weights
    assert [type(m).__name__ for m in small.stages["pool4"]] == ["MaxPool2d"]
    assert small.stages["pool4"][0].stride == 1 and full.stages["pool4"][0].stride == 2


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor
        self.seen = None

    def forward(self, x):
        self.seen = tuple(x.shape)
        return x * self.factor


def test_plugins_run_after_their_position_and_their_output_is_recorded():
    plain = build_model("vgg16_gap", 4, width=0.125, small_input=True).eval()
    plugin = Scale(2.0)
    plugged = build_model("vgg16_gap", 4, width=0.125, small_input=True, plugins={"pool4": plugin}).eval()
    plugged.load_state_dict(plain.state_dict())  # parameter-free plug-in: same keys
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        _, f0 = plain(x)
        _, f1 = plugged(x)
    assert plugin.seen == tuple(f0["pool4"].shape)
    torch.testing.assert_close(f1["conv4_3"], f0["conv4_3"])
    torch.testing.assert_close(f1["pool4"], 2 * f0["pool4"])
    assert not torch.allclose(f1["cam"], f0["cam"])


def test_unknown_names_raise_with_the_valid_choices():
    with pytest.raises(UnknownPositionError, match="conv5_3"):
        build_model("vgg16_gap", 4, width=0.125, plugins={"pool5": nn.Identity()})
    with pytest.raises(UnknownModelError, match="simple_gap"):
        build_model("vgg19_gap", 4)
    with pytest.raises(UnknownModelError, match="resnet50_gap"):
        available_positions("resnet18")
    with pytest.raises(TypeError, match="width"):
        build_model("simple_gap", 4, widht=2)
    assert set(available_models()) == {"vgg16_gap", "resnet50_gap", "alexnet_gap", "googlenet_gap",
                                       "inceptionv3_gap", "simple_gap"}


def test_pooling_is_replaceable_by_module_and_names_go_through_methods():
    model = build_model("simple_gap", 3, pooling=nn.AdaptiveMaxPool2d(1)).eval()
    with torch.no_grad():
        logits, features = model(torch.randn(2, 3, 16, 16))
        expected = model.classifier(features["cam"].amax(dim=(2, 3)))
    torch.testing.assert_close(logits, expected)
    # A configuration names a pooling through its method, never as a bare string.
    with pytest.raises(TypeError, match="method"):
        build_model("simple_gap", 3, pooling="wgap")
    wgap = model_from_config(TrainConfig(model="simple_gap", num_classes=3,
                                         method={"wgap": {"divide_by_area": False}}))
    assert type(wgap.pooling).__name__ == "WGAP" and not wgap.pooling.divide_by_area


def test_parameter_groups_partition_backbone_and_new_layers():
    model = build_model("vgg16_gap", 5, width=0.125, plugins={"pool3": nn.Conv2d(16, 16, 1)})
    groups = parameter_groups(model)
    ids = {name: {id(p) for p in params} for name, params in groups.items()}
    assert not ids["backbone"] & ids["head"]
    assert ids["backbone"] | ids["head"] == {id(p) for p in model.parameters()}
    assert id(model.classifier.weight) in ids["head"]
    assert id(model.head[0].weight) in ids["head"]
    assert id(model.plugins["pool3"].weight) in ids["head"]
    assert id(model.stages["conv5_3"][0].weight) in ids["backbone"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every download of these tests fails as it does offline (torch.hub fetches through this)."""

    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def test_missing_pretrained_file_names_the_exact_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainedWeightsNotFound) as err:
        build_model("vgg16_gap", 10, pretrained=True)
    message = str(err.value)
    assert str(tmp_path / "checkpoints" / "vgg16-397923af.pth") in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert f"into {tmp_path / 'checkpoints'}/" in message and "URLError" in message
    assert not (tmp_path / "checkpoints" / "vgg16-397923af.pth").exists()
    with pytest.raises(ValueError, match="width 1.0"):
        build_model("vgg16_gap", 10, pretrained=True, width=0.5)


def test_pretrained_googlenet_loads_torchvision_weights_and_input_transform(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = torchvision.models.GoogLeNet(aux_logits=True, transform_input=True, init_weights=False).eval()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "googlenet-1378be20.pth")
    model = build_model("googlenet_gap", 7, pretrained=True).eval()
    assert isinstance(model.stages["stem"][0], TransformInput)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        r = reference._transform_input(x)
        for layer in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
                      "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            r = getattr(reference, layer)(r)
        _, features = model(x)
    torch.testing.assert_close(features["inception4e"], r)


def test_pretrained_vgg_weights_land_in_the_right_layers(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    (tmp_path / "checkpoints").mkdir()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    torch.save(state, tmp_path / "checkpoints" / "vgg16-397923af.pth")
    model = build_model("vgg16_gap", 3, pretrained=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _, f = model(x)
        torch.testing.assert_close(f["conv5_3"], features[:30](x))  # up to conv5_3's ReLU, no pool5


def test_missing_weights_are_downloaded_into_the_hub_cache_with_the_hash_check(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    stand_in = {"features.0.weight": torch.arange(6.0).reshape(2, 3)}
    calls = []

    def download(url, dst, hash_prefix=None, progress=True):  # what torch.hub does online
        calls.append((url, dst, hash_prefix))
        torch.save(stand_in, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    state = load_torchvision_state_dict("alexnet")
    torch.testing.assert_close(state, stand_in)
    path = tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert calls == [("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", str(path), "7be5be79")]
    assert weights_path("alexnet") == path and path.is_file()
    # Cached now: read from the hub folder without another download.
    torch.testing.assert_close(load_torchvision_state_dict("alexnet"), stand_in)
    assert len(calls) == 1


def test_a_failed_hash_check_or_an_unreadable_cache_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def corrupt(url, dst, hash_prefix=None, progress=True):
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "0123abcd")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", corrupt)
    with pytest.raises(PretrainedWeightsNotFound, match=r"could not be downloaded from "
                       r"https://download\.pytorch\.org/models/vgg16-397923af\.pth .*invalid hash"):
        load_torchvision_state_dict("vgg16")
    (tmp_path / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"half a file")
    with pytest.raises(RuntimeError, match=r"vgg16-397923af\.pth cannot be read .*delete the file"):
        load_torchvision_state_dict("vgg16")


def test_resnet_state_dict_keys_match_torchvision():
    ours = build_model("resnet50_gap", 3)
    trunk_keys = set()
    for stage, module in ours.stages.items():
        prefix = "" if stage == "stem" else f"{stage}."
        trunk_keys |= {prefix + k for k in module.state_dict()}
    tv_keys = {k for k in torchvision.models.resnet50().state_dict() if not k.startswith("fc.")}
    assert trunk_keys == tv_keys


# ----------------------------------------------------------------------------- ADL


def _adl_input():
    # Channel mean A = [[0, 2], [4, 4]]; max 4.
    ch0 = torch.tensor([[0.0, 2.0], [4.0, 8.0]])
    ch1 = torch.tensor([[0.0, 2.0], [4.0, 0.0]])
    return torch.stack([ch0, ch1])[None]


def test_adl_maps_by_hand():
    importance, drop = adl_maps(_adl_input(), gamma=0.8)  # threshold 3.2
    torch.testing.assert_close(drop[0, 0], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(importance[0, 0], torch.sigmoid(torch.tensor([[0.0, 2.0], [4.0, 4.0]])))
    _, drop_low = adl_maps(_adl_input(), gamma=0.4)  # threshold 1.6: only the 0 cell survives
    torch.testing.assert_close(drop_low[0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_adl_applies_drop_mask_importance_map_or_nothing():
    x = _adl_input()
    always_drop = ADL(drop_rate=1.0, gamma=0.8).train()
    out = always_drop(x)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 2.0], [0.0, 0.0]]))
    torch.testing.assert_close(out[0, 1], torch.tensor([[0.0, 2.0], [0.0, 0.0]]))
    never_drop = ADL(drop_rate=0.0, gamma=0.8).train()
    torch.testing.assert_close(never_drop(x), x * torch.sigmoid(x.mean(1, keepdim=True)))
    assert torch.equal(ADL(drop_rate=1.0).eval()(x), x)


def test_adl_drop_rate_is_the_fraction_of_batches_with_the_drop_mask():
    adl = ADL(drop_rate=0.75, gamma=0.8).train()
    x = _adl_input()
    drops = sum(bool(adl(x)[0, 0, 1, 0] == 0) for _ in range(2000))
    assert 1400 < drops < 1600  # binomial(2000, 0.75): mean 1500, sd 19


def _adl_config(**options):
    return TrainConfig(model="vgg16_gap", model_kwargs={"width": 0.125}, num_classes=3,
                       method={"adl": options})


def test_adl_plugins_from_method_options():
    model = model_from_config(_adl_config(positions=["pool3", "conv5_3"], drop_rate=0.5, gamma=0.9))
    assert set(model.plugins) == {"pool3", "conv5_3"}
    assert all(isinstance(m, ADL) and m.gamma == 0.9 for m in model.plugins.values())
    model.eval()
    plain = build_model("vgg16_gap", 3, width=0.125)
    plain.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], plain.eval()(x)[0])  # identity at evaluation
    with pytest.raises(ConfigError, match="adll.*registered methods are.*'adl'"):
        model_from_config(TrainConfig(model="simple_gap", num_classes=3, method={"adll": {}}))
    with pytest.raises(ConfigError, match="threshold.*gamma"):
        model_from_config(_adl_config(positions=["pool3"], threshold=0.8))
    with pytest.raises(UnknownPositionError, match="pool9"):
        model_from_config(_adl_config(positions=["pool9"]))


# ----------------------------------------------------------------------------- Hide-and-Seek


def test_hide_patches_hides_whole_grid_cells_with_the_fill_value():
    images = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5) + 1
    g = torch.Generator().manual_seed(3)
    out = hide_patches(images, 2, 0.5, fill=(-1.0, -2.0, -3.0), generator=g)
    hidden_draw = torch.rand((2, 1, 3, 3), generator=torch.Generator().manual_seed(3)) < 0.5
    assert 0 < int(hidden_draw.sum()) < 18  # the seed gives both kinds of cell
    for n in range(2):
        for i in range(3):
            for j in range(3):
                rows, cols = slice(2 * i, min(2 * i + 2, 5)), slice(2 * j, min(2 * j + 2, 5))
                cell = out[n, :, rows, cols]
                if hidden_draw[n, 0, i, j]:
                    for c, v in enumerate((-1.0, -2.0, -3.0)):
                        assert torch.all(cell[c] == v)
                else:
                    assert torch.equal(cell, images[n, :, rows, cols])


def test_hide_patches_extremes_and_rate():
    images = torch.rand(4, 3, 8, 8)
    assert torch.equal(hide_patches(images, 4, 0.0), images)
    assert torch.all(hide_patches(images, 4, 1.0) == 0)
    assert torch.equal(hide_patches(images, 0, 1.0), images)
    ones = torch.ones(500, 1, 16, 16)
    hidden = (hide_patches(ones, 4, 0.3, generator=torch.Generator().manual_seed(0)) == 0).float().mean()
    assert abs(float(hidden) - 0.3) < 0.02  # 8000 cells: sd 0.005


def test_hide_and_seek_as_configured_batch_transform():
    config = TrainConfig(model="simple_gap", num_classes=3,
                         method={"hide_and_seek": {"patch": 4, "p": 1.0, "fill": 0.5}})
    transform = model_from_config(config).training_parts.batch_transform
    assert isinstance(transform, HideAndSeek)
    assert torch.all(transform(torch.rand(2, 3, 8, 8)) == 0.5)
    mixed = HideAndSeek(patch_size=(0, 4), p=1.0)
    outs = {bool(torch.all(mixed(torch.ones(1, 1, 4, 4), torch.Generator().manual_seed(s)) == 0)) for s in range(20)}
    assert outs == {True, False}  # size 0 (nothing hidden) and 4 (everything) both drawn
