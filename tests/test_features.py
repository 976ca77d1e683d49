"""The frozen feature networks of the losses (wsolkit.models.features): ImageNet networks from
local files only, runs from the run cache, and clear errors."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from wsolkit.methods import saliency_aware as sa
from wsolkit.models import PretrainedWeightsNotFound, weights_path
from wsolkit.models.features import FeatureNetworkError, feature_network
from wsolkit.train import TrainConfig

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub folder, and every download failing as it does offline."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def _reference(arch: str):
    """The torchvision network and what its feature vector should be."""
    if arch == "resnet50":
        network = torchvision.models.resnet50().eval()
        return network, lambda x: nn.Sequential(*list(network.children())[:-1])(x).flatten(1), 2048
    network = torchvision.models.alexnet().eval()
    return network, lambda x: network.classifier[:-1](
        torch.flatten(network.avgpool(network.features(x)), 1)), 4096


@pytest.mark.parametrize("arch", ["resnet50", "alexnet"])
def test_an_imagenet_network_is_read_from_its_local_file_and_gives_its_documented_vector(
        arch, offline_hub):
    config = TrainConfig(num_classes=2, image_size=64)
    spec = f"imagenet_{arch}"
    with pytest.raises(PretrainedWeightsNotFound):
        feature_network(spec, config, owner="test", option="f")  # no file, and no network
    reference, vector, dimension = _reference(arch)
    path = weights_path(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), path)
    features = feature_network(spec, config, owner="test", option="f").eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        got, want = features(images), vector((images - IMAGENET_MEAN) / IMAGENET_STD)
    assert got.shape == (2, dimension) and (got >= 0).all()  # both end in a ReLU
    torch.testing.assert_close(got, want)


def test_the_saliency_aware_f_is_the_same_network(offline_hub):
    reference, vector, _ = _reference("resnet50")
    path = weights_path("resnet50")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), path)
    features = sa.perceptual_network("imagenet_resnet50", TrainConfig(num_classes=2)).eval()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(features(images),
                                   vector((images - IMAGENET_MEAN) / IMAGENET_STD))


@pytest.mark.parametrize("spec, message", [
    (None, "needs a feature network: pass f='run:<run folder>'"),
    ("imagenet", r"f = 'imagenet'; expected one of \['run:<run folder>'"),
    (3, "f = 3; expected one of"),
    ("run:missing", "no checkpoint.pt"),
])
def test_bad_specifications_name_the_option_and_the_forms(spec, message, tmp_path, monkeypatch):
    monkeypatch.setenv("WSOL_RUNS_DIR", str(tmp_path))
    with pytest.raises(FeatureNetworkError, match=message):
        feature_network(spec, TrainConfig(num_classes=2), owner="test", option="f")
