"""Frozen feature networks that a loss compares images with.

Two methods of the book measure distances between images in the feature space of a fixed
network: Chen & Hsu's perceptual triplet loss (``F``, an ImageNet ResNet-50) and Kou et al.'s
inter-sample module (``f``, an ImageNet AlexNet). :func:`feature_network` builds such a network
from one configuration string, the same for both:

``"run:<run folder>"``
    the global average of the last feature map of a trained run in the runs folder, with the
    normalisation it was trained with (the benchmark's stand-in for ImageNet weights);
``"imagenet_resnet50"``
    torchvision's ResNet-50, its 2048-d pooled features, from a local weights file;
``"imagenet_alexnet"``
    torchvision's AlexNet, the 4096-d output of its second fully connected layer (after the
    ReLU), from a local weights file;
``"random"``
    a randomly initialised network of the run's own backbone (an ablation).

Nothing is downloaded: a missing weights file is an error naming the path
(:func:`wsolkit.models.weights_path`). The caller wraps the result in
:class:`~wsolkit.models.FrozenNetwork` (``MethodParts.frozen``), so it is never trained and is
saved in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wsolkit.methods.registry import MethodError

__all__ = ["FEATURE_NETWORKS", "FeatureNetwork", "FeatureNetworkError", "feature_network"]

#: The forms of :func:`feature_network`'s specification (``run:`` takes a folder name).
FEATURE_NETWORKS = ("run:<run folder>", "imagenet_resnet50", "imagenet_alexnet", "random")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class FeatureNetworkError(MethodError):
    """A feature network's specification is unknown, or its run is missing (a method's option
    error, so a training configuration reports it as one)."""


class FeatureNetwork(nn.Module):
    """``[0, 1]`` images ``(N, 3, H, W)`` to ``(N, n)`` float32 feature vectors.

    Args:
        network: a :class:`wsolkit.models.GAPNet` (the vector is the global average of its last
            feature map) or any module returning ``(N, ...)``, flattened.
        mean, std: the normalisation ``network`` was trained with.
    """

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.network((images - self.mean) / self.std)
        if isinstance(out, tuple):  # a GAPNet: (logits, features)
            return out[1]["cam"].float().mean(dim=(2, 3))
        return out.float().flatten(1)


def _expected(owner: str, option: str, spec) -> FeatureNetworkError:
    return FeatureNetworkError(
        f"{owner}: {option} = {spec!r}; expected one of {list(FEATURE_NETWORKS)}.")


def feature_network(spec: str | None, config, *, owner: str, option: str) -> FeatureNetwork:
    """Build the feature network ``spec`` describes (see the module docstring).

    Args:
        spec: the specification; ``None`` is an error (so that no run gets a random network by
            accident).
        config: the run's ``TrainConfig`` (its backbone for ``"random"``).
        owner, option: the method and option that asked, for the messages.

    Raises:
        FeatureNetworkError: an unknown form, ``None``, or a run that is not in the runs folder.
        wsolkit.models.PretrainedWeightsNotFound: an ImageNet form without its local file.
    """
    from wsolkit.models import build_model, load_torchvision_state_dict

    if spec is None:
        raise FeatureNetworkError(
            f"{owner}: this loss needs a feature network: pass {option}='run:<run folder>', "
            "'imagenet_resnet50', 'imagenet_alexnet' or 'random' (there is no default, so that "
            "the network is never random by accident).")
    if not isinstance(spec, str):
        raise _expected(owner, option, spec)
    if spec == "random":
        network = build_model(config.model, config.num_classes,
                              **{**config.model_kwargs, "pretrained": False})
        return FeatureNetwork(network, config.mean, config.std)
    if spec in ("imagenet_resnet50", "imagenet_alexnet"):
        import torchvision

        arch = spec[len("imagenet_"):]
        network = getattr(torchvision.models, arch)()
        network.load_state_dict(load_torchvision_state_dict(arch))
        if arch == "resnet50":
            network.fc = nn.Identity()
        else:  # keep fc6 and fc7 (with their ReLUs), drop the last layer
            network.classifier = network.classifier[:-1]
        return FeatureNetwork(network, *_IMAGENET)
    if spec.startswith("run:"):
        from wsolkit.profiles import runs_dir
        from wsolkit.runs import load_model
        from wsolkit.train import TrainConfig, load_checkpoint

        run_dir = runs_dir() / spec[len("run:"):]
        if not (run_dir / "checkpoint.pt").exists():
            raise FeatureNetworkError(
                f"{owner}: the {option} network's run {run_dir} has no checkpoint.pt; train that "
                "run first (its chapter, or wsolkit.chapter.train_or_load).")
        # The normalisation the network was trained with is in its checkpoint's configuration.
        source = TrainConfig.from_dict(load_checkpoint(run_dir / "checkpoint.pt")["config"])
        return FeatureNetwork(load_model(run_dir), source.mean, source.std)
    raise _expected(owner, option, spec)
