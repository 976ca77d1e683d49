"""The network shape every CAM backbone shares: named stages, plug-in positions, a GAP head.

Class activation mapping (Zhou et al., CVPR 2016) needs a network whose last convolutional map
``F`` (``(N, K, h, w)``) is globally average pooled and fed to one linear layer ``W`` (``(C, K)``,
bias ``b``). Because pooling and the linear layer are both linear, the logits equal the spatial
mean of the class activation maps::

    logits[n, c] = mean_{i,j} (sum_k W[c, k] * F[n, k, i, j]) + b[c]

:class:`GAPNet` is that network with the extension points that methods
(:mod:`wsolkit.methods`) use:

* ``stages``: an ordered dict of named blocks. The output of every stage is returned in the
  ``features`` dict under the stage's name (after any plug-in at that position), so no forward
  hook is ever needed to read an intermediate map.
* ``plugins``: modules inserted after named stages (``"pool3"``, ``"pool4"``, ...). A plug-in maps a
  feature map to a feature map of the same shape and decides itself what it does in training and
  in evaluation (ADL, for instance, is the identity in evaluation).
* ``pooling``: the module that turns the CAM feature map into one vector per image; global average
  pooling by default, replaceable (a weighted GAP, for instance).
* ``heads``: auxiliary heads run after the classifier on the whole ``features`` dict (any stage's
  map), each storing its output in ``features`` under its own name (a decoder, a second
  classifier at an inner stage).
* ``frozen``: networks that only a loss uses (a perceptual network), never trained and always in
  evaluation mode; they are part of the state dict, so checkpoints carry them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "GAPNet",
    "FrozenNetwork",
    "GlobalAvgPool",
    "UnknownModelError",
    "UnknownPositionError",
    "init_new_layers",
]


class UnknownModelError(ValueError):
    """Raised when a model name is not in the registry of :mod:`wsolkit.models`."""


class UnknownPositionError(ValueError):
    """Raised when a plug-in is requested at a position the backbone does not have."""


class GlobalAvgPool(nn.Module):
    """Global average pooling: ``(N, K, h, w) -> (N, K)`` (the pooling of CAM)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class FrozenNetwork(nn.Module):
    """A network that is never trained: no parameter requires a gradient and ``train()`` keeps it
    in evaluation mode (BatchNorm statistics and dropout stay fixed). Gradients still flow through
    it to its input, as a perceptual loss needs."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> FrozenNetwork:
        return super().train(False)

    def forward(self, *args, **kwargs):
        return self.network(*args, **kwargs)


def init_new_layers(module: nn.Module) -> None:
    """Initialise freshly created layers as the reference WSOL code does ("he" mode).

    Convolutions: Kaiming normal (fan-out, ReLU gain), zero bias. BatchNorm: weight 1, bias 0.
    Linear: normal with std 0.01, zero bias (the classifier of Choe et al., CVPR 2020).

    Args:
        module: the module whose sub-modules are (re-)initialised in place.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def check_width(model: str, width: float, pretrained) -> None:
    """Refuses a non-positive channel multiplier, and ImageNet weights for a reduced width."""
    if width <= 0:
        raise ValueError(f"{model}: width must be > 0, got {width!r}.")
    if pretrained and width != 1.0:
        raise ValueError(
            f"{model}: ImageNet weights exist for width 1.0 only, got width={width}; "
            "use pretrained=False for reduced variants."
        )


class GAPNet(nn.Module):
    """A CAM network: named stages, optional plug-ins, a head, pooling and a linear classifier.

    Args:
        name: the registry name of the architecture (``"vgg16_gap"``, ...), kept for messages.
        stages: ``(name, module)`` pairs run in order; each output is recorded in ``features``.
        head: the layers added after the last stage (e.g. conv3x3 to 1024 channels + ReLU), or
            ``nn.Identity()``. Its output is ``features["cam"]``, the map fed to the pooling.
        cam_channels: number of channels ``K`` of ``features["cam"]``.
        num_classes: number of classes ``C``.
        channels: channel count of each stage's output, by stage name.
        plugins: ``{position: module}`` inserted after those stages. Unknown positions raise
            :class:`UnknownPositionError` listing the valid ones.
        pooling: module mapping ``(N, K, h, w)`` to ``(N, K)`` or ``(N, K, 1, 1)``; defaults to
            :class:`GlobalAvgPool`.
        backbone_stage_names: stages whose parameters count as "backbone" in
            :func:`wsolkit.models.parameter_groups` (pre-trainable); the rest is "head".

    Attributes:
        classifier: ``nn.Linear(K, C)`` on the pooled features, so that
            ``CAM[n, c] = einsum("k,khw->hw", classifier.weight[c], features["cam"][n])``.
    """

    def __init__(
        self,
        name: str,
        stages: Sequence[tuple[str, nn.Module]],
        head: nn.Module,
        cam_channels: int,
        num_classes: int,
        *,
        channels: Mapping[str, int],
        plugins: Mapping[str, nn.Module] | None = None,
        pooling: nn.Module | None = None,
        backbone_stage_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{name}: num_classes must be a positive int, got {num_classes!r}.")
        self.arch = name
        self.stages = nn.ModuleDict(dict(stages))
        self.channels = dict(channels)
        self.channels["cam"] = cam_channels
        plugins = dict(plugins or {})
        unknown = sorted(set(plugins) - set(self.stages))
        if unknown:
            raise UnknownPositionError(
                f"{name}: unknown plug-in position(s) {unknown}; valid positions are "
                f"{list(self.stages)} (plug-ins run after the named stage)."
            )
        for pos, module in plugins.items():
            if not isinstance(module, nn.Module):
                raise TypeError(
                    f"{name}: the plug-in at {pos!r} must be an nn.Module, got {type(module).__name__}."
                )
        self.plugins = nn.ModuleDict(plugins)
        self.head = head
        self.pooling = pooling if pooling is not None else GlobalAvgPool()
        self.classifier = nn.Linear(cam_channels, num_classes)
        init_new_layers(self.classifier)
        self.backbone_stage_names = tuple(
            backbone_stage_names if backbone_stage_names is not None else self.stages.keys()
        )
        # Empty unless a method adds some: no parameters, so the state dict of a plain network
        # is unchanged by their presence.
        self.heads = nn.ModuleDict()
        self.frozen = nn.ModuleDict()

    def add_plugin(self, position: str, module: nn.Module) -> None:
        """Insert ``module`` after stage ``position``; after any plug-in already there."""
        if position not in self.stages:
            raise UnknownPositionError(
                f"{self.arch}: unknown plug-in position {position!r}; valid positions are "
                f"{list(self.stages)} (plug-ins run after the named stage).")
        if not isinstance(module, nn.Module):
            raise TypeError(f"{self.arch}: the plug-in at {position!r} must be an nn.Module, "
                            f"got {type(module).__name__}.")
        if position in self.plugins:
            module = nn.Sequential(self.plugins[position], module)
        self.plugins[position] = module

    def add_head(self, name: str, head: nn.Module) -> None:
        """Add an auxiliary head: ``head(features)`` is stored as ``features[name]``."""
        taken = set(self.stages) | {"cam"} | set(self.heads)
        if name in taken or not isinstance(head, nn.Module):
            raise ValueError(f"{self.arch}: head {name!r} must be an nn.Module with a name not in "
                             f"{sorted(taken)}.")
        self.heads[name] = head

    def add_frozen(self, name: str, network: nn.Module) -> None:
        """Add a network that only a loss uses, as ``self.frozen[name]`` (:class:`FrozenNetwork`)."""
        if name in self.frozen:
            raise ValueError(f"{self.arch}: a frozen network {name!r} exists already.")
        self.frozen[name] = network if isinstance(network, FrozenNetwork) else FrozenNetwork(network)

    @property
    def positions(self) -> list[str]:
        """The plug-in positions (stage names) in forward order."""
        return list(self.stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the network.

        Args:
            x: ``(N, 3, H, W)`` float images, normalised as the backbone expects.

        Returns:
            ``(logits, features)``: logits ``(N, C)``; features maps every stage name to its output
            ``(N, K_s, h_s, w_s)`` (after the plug-in at that stage, i.e. what the rest of the
            network sees), ``"cam"`` to the ``(N, K, h, w)`` map fed to the pooling, and each
            auxiliary head's name to its output.
        """
        features: dict[str, torch.Tensor] = {}
        for name, stage in self.stages.items():
            x = stage(x)
            if name in self.plugins:
                x = self.plugins[name](x)
            features[name] = x
        x = self.head(x)
        features["cam"] = x
        pooled = self.pooling(x).flatten(1)
        logits = self.classifier(pooled)
        for name, head in self.heads.items():
            features[name] = head(features)
        return logits, features
