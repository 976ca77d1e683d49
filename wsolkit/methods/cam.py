"""CAM (Zhou et al., CVPR 2016): the baseline every other method changes.

Training is plain cross-entropy on a GAP network (no method options: ``TrainConfig(method={})``).
The score map of class ``c`` is the class activation map, eq. 2 of the paper, without the bias
(which min-max normalisation removes anyway)::

    M_c(i, j) = sum_k w_ck F_k(i, j)

with ``F = features["cam"]`` and ``w = model.classifier.weight``. Registered as the map ``"cam"``,
which every model has, whatever its methods.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from wsolkit.cam import class_activation_maps
from wsolkit.methods.registry import register_method

__all__ = ["cam_map_fn"]


def cam_map_fn(model: torch.nn.Module, features: Mapping[str, torch.Tensor],
               classes: torch.Tensor) -> torch.Tensor:
    """The plain CAM of ``classes`` (Zhou et al. 2016), without bias, from ``features["cam"]``."""
    return class_activation_maps(features["cam"], model.classifier.weight, classes=classes)


register_method("cam", maps={"cam": cam_map_fn})
