"""CAM backbones: ``forward(x) -> (logits, features)`` with named maps and plug-in positions.

Every model is a :class:`~wsolkit.models.base.GAPNet`: named stages, a head, a replaceable
pooling (global average pooling by default) and ``model.classifier``, the ``nn.Linear`` on the
pooled features, so that the class activation map of class ``c`` is
``einsum("k,nkhw->nhw", model.classifier.weight[c], features["cam"])``.

====================== ============================================== =====================
name                   reference                                      CAM at 224 px
====================== ============================================== =====================
``vgg16_gap``          Zhou et al. 2016; ``wsolevaluation``           1024 x 14 x 14
``resnet50_gap``       ``wsolevaluation`` (layer4 stride 1)           2048 x 14 x 14
``alexnet_gap``        Zhou et al. 2016                               1024 x 13 x 13
``googlenet_gap``      Zhou et al. 2016                               1024 x 14 x 14
``inceptionv3_gap``    SPG / ADL / ``wsolevaluation``                 1024 x 14 x 14
``simple_gap``         the synthetic benchmark's prototype            128 x 8 x 8 at 64 px
====================== ============================================== =====================

Reduced variants for CPU runs: ``build_model("vgg16_gap", C, width=0.25, small_input=True)``
(8 x 8 CAM at 64 px) and ``build_model("resnet50_gap", C, width=0.25, small_input=True)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from torch import nn

from .alexnet import alexnet_gap
from .base import (
    FrozenNetwork,
    GAPNet,
    GlobalAvgPool,
    UnknownModelError,
    UnknownPositionError,
    init_new_layers,
)
from .inception import googlenet_gap, inceptionv3_gap
from .pretrained import PretrainedWeightsNotFound, load_torchvision_state_dict, weights_path
from .resnet import resnet50_gap
from .simple import simple_gap
from .vgg import vgg16_gap

__all__ = [
    "FrozenNetwork",
    "GAPNet",
    "GlobalAvgPool",
    "PretrainedWeightsNotFound",
    "UnknownModelError",
    "UnknownPositionError",
    "alexnet_gap",
    "available_models",
    "available_positions",
    "build_model",
    "googlenet_gap",
    "inceptionv3_gap",
    "init_new_layers",
    "load_torchvision_state_dict",
    "parameter_groups",
    "resnet50_gap",
    "simple_gap",
    "unwrap",
    "vgg16_gap",
    "weights_path",
]

_BUILDERS = {
    "vgg16_gap": vgg16_gap,
    "resnet50_gap": resnet50_gap,
    "alexnet_gap": alexnet_gap,
    "googlenet_gap": googlenet_gap,
    "inceptionv3_gap": inceptionv3_gap,
    "simple_gap": simple_gap,
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(_BUILDERS)


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise UnknownModelError(f"unknown model {name!r}; valid names are {available_models()}.")


def available_positions(model_name: str) -> list[str]:
    """Plug-in positions (stage names, forward order) of a registered model.

    Raises:
        UnknownModelError: ``model_name`` is not registered (the message lists the valid names).
    """
    _check_name(model_name)
    return list(_BUILDERS[model_name].positions)


def build_model(
    name: str,
    num_classes: int,
    pretrained: bool | str = False,
    plugins: Mapping[str, nn.Module] | None = None,
    **kwargs,
) -> GAPNet:
    """Build a registered CAM backbone.

    Args:
        name: one of :func:`available_models`.
        num_classes: number of classes ``C``.
        pretrained: ``True`` (or a torchvision weights tag) to load torchvision's ImageNet weights
            from the torch hub cache, downloaded there once if missing (torchvision's mechanism).
        plugins: ``{position: module}``: ``module`` (``(N, K, h, w) -> (N, K, h, w)``) is applied
            after that stage; positions from :func:`available_positions`.
        **kwargs: architecture options (``width``, ``small_input``, ...; see each builder's
            docstring). ``pooling`` may be a module; a training configuration names a pooling
            through the method that defines it (``TrainConfig(method={"wgap": {}})``).

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        UnknownModelError: unknown ``name``.
        UnknownPositionError: a plug-in position the model does not have.
        TypeError: an option the builder does not take (the message lists those it takes).
    """
    _check_name(name)
    builder = _BUILDERS[name]
    accepted = [p for p in inspect.signature(builder).parameters if p not in ("num_classes",)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; it takes {accepted}.")
    if plugins:
        bad = sorted(set(plugins) - set(builder.positions))
        if bad:
            raise UnknownPositionError(
                f"{name}: unknown plug-in position(s) {bad}; valid positions are {list(builder.positions)}."
            )
    if "pooling" in kwargs and not isinstance(kwargs["pooling"], (nn.Module, type(None))):
        raise TypeError(
            f"{name}: pooling must be an nn.Module, got {kwargs['pooling']!r}; a configuration names "
            "a pooling through its method, e.g. TrainConfig(method={'wgap': {}}).")
    return builder(num_classes, pretrained, plugins=plugins, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split a model's trainable parameters into the backbone and the new head.

    Args:
        model: a :class:`GAPNet` (possibly wrapped by DDP or ``torch.compile``), or any module
            (then everything counts as ``"head"``).

    Returns:
        ``{"backbone": [...], "head": [...]}``: backbone = parameters of the stages (the part
        ImageNet weights initialise); head = everything else (added convolutions, classifier,
        plug-ins, pooling). Each trainable parameter appears exactly once.
    """
    model = unwrap(model)
    backbone_ids: set[int] = set()
    backbone: list[nn.Parameter] = []
    if isinstance(model, GAPNet):
        for stage in model.backbone_stage_names:
            for p in model.stages[stage].parameters():
                if p.requires_grad and id(p) not in backbone_ids:
                    backbone_ids.add(id(p))
                    backbone.append(p)
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone_ids]
    return {"backbone": backbone, "head": head}
