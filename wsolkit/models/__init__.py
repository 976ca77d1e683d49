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
from collections.abc import Callable, Mapping

from torch import nn

from .alexnet import alexnet_gap
from .base import GAPNet, GlobalAvgPool, UnknownModelError, UnknownPositionError, init_new_layers
from .inception import googlenet_gap, inceptionv3_gap
from .pretrained import PretrainedWeightsNotFound, load_torchvision_state_dict, weights_path
from .resnet import resnet50_gap
from .simple import simple_gap
from .vgg import vgg16_gap

__all__ = [
    "GAPNet",
    "GlobalAvgPool",
    "PretrainedWeightsNotFound",
    "UnknownModelError",
    "UnknownPositionError",
    "alexnet_gap",
    "available_models",
    "available_poolings",
    "available_positions",
    "build_model",
    "googlenet_gap",
    "inceptionv3_gap",
    "init_new_layers",
    "load_torchvision_state_dict",
    "parameter_groups",
    "register_pooling",
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

# Stage names in forward order; they do not depend on width or input-size options.
_POSITIONS = {
    "vgg16_gap": ["pool1", "pool2", "pool3", "conv4_3", "pool4", "conv5_3"],
    "resnet50_gap": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "alexnet_gap": ["pool1", "pool2", "conv3", "conv4", "conv5"],
    "googlenet_gap": ["stem", "inception3a", "inception3b", "pool3", "inception4a",
                      "inception4b", "inception4c", "inception4d", "inception4e"],
    "inceptionv3_gap": ["stem", "mixed_5b", "mixed_5c", "mixed_5d", "pool3", "mixed_6a",
                        "mixed_6b", "mixed_6c", "mixed_6d", "mixed_6e"],
    "simple_gap": ["block1", "pool1", "block2", "pool2", "block3", "pool3", "block4"],
}


_POOLINGS: dict[str, Callable[..., nn.Module]] = {"gap": GlobalAvgPool}


def register_pooling(name: str, factory: Callable[..., nn.Module]) -> None:
    """Register a pooling module so that configurations can name it.

    Args:
        name: the name used as ``pooling="name"`` or ``pooling={"name": name, **options}``.
        factory: ``factory(**options) -> nn.Module`` mapping ``(N, K, h, w)`` to ``(N, K)``.
    """
    _POOLINGS[name] = factory


def available_poolings() -> list[str]:
    """Registered pooling names (``"gap"`` built in)."""
    return sorted(_POOLINGS)


def _resolve_pooling(pooling):
    if pooling is None or isinstance(pooling, nn.Module):
        return pooling
    if isinstance(pooling, str):
        name, options = pooling, {}
    elif isinstance(pooling, Mapping) and "name" in pooling:
        options = dict(pooling)
        name = options.pop("name")
    else:
        raise TypeError(
            f"pooling must be an nn.Module, a registered name or {{'name': ..., **options}}, got {pooling!r}."
        )
    if name not in _POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; registered poolings are {available_poolings()} "
                         "(a method module registers its own on import, e.g. "
                         "wsolkit.methods.improving_cam: 'wgap', 'wgap_mean').")
    return _POOLINGS[name](**options)


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
    return list(_POSITIONS[model_name])


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
            from the local torch hub cache; never downloads.
        plugins: ``{position: module}``: ``module`` (``(N, K, h, w) -> (N, K, h, w)``) is applied
            after that stage; positions from :func:`available_positions`.
        **kwargs: architecture options (``width``, ``small_input``, ...; see each builder's
            docstring). ``pooling`` may be a module, a name from :func:`register_pooling` or
            ``{"name": ..., **options}`` (names keep configurations JSON-serialisable).

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
        bad = sorted(set(plugins) - set(_POSITIONS[name]))
        if bad:
            raise UnknownPositionError(
                f"{name}: unknown plug-in position(s) {bad}; valid positions are {_POSITIONS[name]}."
            )
    if "pooling" in kwargs:
        kwargs["pooling"] = _resolve_pooling(kwargs["pooling"])
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
