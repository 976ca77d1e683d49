"""Attention-based Dropout Layer, ADL (Choe & Shim, CVPR 2019).

A parameter-free plug-in for a feature map ``F`` (``(N, K, h, w)``), active in training only:

1. self-attention map: the channel mean ``A = mean_k F[:, k]`` (``(N, 1, h, w)``);
2. drop mask: ``M_drop = 1[A < gamma * max_{i,j} A]`` per image, which zeroes the most
   discriminative cells (those at or above ``gamma`` times the maximum; ``gamma`` is the "drop
   threshold", 0.8 for VGG and 0.9 for ResNet in the thesis of chapter 3);
3. importance map: ``M_imp = sigmoid(A)``;
4. with probability ``drop_rate`` (0.75 in the paper) the layer outputs ``F * M_drop``, otherwise
   ``F * M_imp``. As in the reference code, one draw decides for the whole batch.

In evaluation mode ADL is the identity. The maps assume a non-negative feature map (after a ReLU
or a max-pool), as at every position where the paper plugs it.

In a configuration: ``TrainConfig(method={"adl": {"positions": ["pool3", "conv5_3"],
"drop_rate": 0.75, "gamma": 0.8}})``; the score map is the plain CAM.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wsolkit.methods.registry import MethodParts, register_method

__all__ = ["ADL", "adl_maps"]


def adl_maps(features: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ADL's two candidate maps for a batch of feature maps.

    Args:
        features: ``(N, K, h, w)`` float tensor.
        gamma: drop threshold as a fraction of each image's attention maximum.

    Returns:
        ``(importance, drop_mask)``, both ``(N, 1, h, w)`` in ``features.dtype``:
        ``sigmoid(A)`` and ``1[A < gamma * max A]`` with ``A`` the channel mean.
    """
    attention = features.mean(dim=1, keepdim=True)
    threshold = gamma * attention.amax(dim=(2, 3), keepdim=True)
    return torch.sigmoid(attention), (attention < threshold).to(features.dtype)


class ADL(nn.Module):
    """Attention-based dropout layer: ``(N, K, h, w) -> (N, K, h, w)``.

    Args:
        drop_rate: probability of applying the drop mask (else the importance map).
        gamma: drop threshold in ``[0, 1]``.
    """

    def __init__(self, drop_rate: float = 0.75, gamma: float = 0.8) -> None:
        super().__init__()
        if not 0.0 <= drop_rate <= 1.0:
            raise ValueError(f"ADL: drop_rate must be in [0, 1], got {drop_rate!r}.")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"ADL: gamma must be in [0, 1], got {gamma!r}.")
        self.drop_rate = float(drop_rate)
        self.gamma = float(gamma)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return features
        importance, drop_mask = adl_maps(features, self.gamma)
        # The draw stays on the device: no host synchronisation per layer.
        use_drop = torch.rand((), device=features.device) < self.drop_rate
        return features * torch.where(use_drop, drop_mask, importance)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, gamma={self.gamma}"


def build(model: nn.Module, config, positions: str | Sequence[str], drop_rate: float = 0.75,
          gamma: float = 0.8) -> MethodParts:
    """An :class:`ADL` after each of ``positions`` (stage names of the backbone)."""
    if isinstance(positions, str):
        positions = [positions]
    return MethodParts(plugins={pos: ADL(drop_rate, gamma) for pos in positions})


register_method("adl", build)
