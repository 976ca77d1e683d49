"""A run's network: the backbone a configuration names, with its methods' parts put in."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from wsolkit.methods.registry import MethodError, TrainingParts, attach_parts, build_methods
from wsolkit.models import build_model, unwrap

from .config import ConfigError, TrainConfig

__all__ = ["method_targets", "model_from_config", "training_parts"]


def model_from_config(config: TrainConfig | Mapping, *, pretrained: bool | str | None = None) -> nn.Module:
    """Build the model a configuration describes, with every part of its methods, seeded by
    ``config.seed``.

    The backbone is built first, then each method of ``config.method`` (in the order listed) adds
    its plug-ins, heads, pooling and frozen networks; the parts the training loop uses (losses,
    batch transform, sampler, targets) are kept on the model as ``model.training_parts``
    (:func:`training_parts`).

    Args:
        config: a :class:`TrainConfig` or its dict.
        pretrained: overrides ``model_kwargs["pretrained"]`` (``False`` when the weights come from
            a checkpoint anyway).

    Returns:
        The model on the CPU; the caller's random state is left untouched.

    Raises:
        ConfigError: an unknown method or options its method does not take.
    """
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    kwargs = dict(config.model_kwargs)
    if pretrained is not None:
        kwargs["pretrained"] = pretrained
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config.model, config.num_classes, **kwargs)
        try:
            parts = build_methods(config.method, model, config)
            model.training_parts = attach_parts(model, list(config.method), parts)
        except MethodError as err:
            raise ConfigError(f"TrainConfig.method = {config.method!r}: {err}") from None
    return model


def training_parts(model: nn.Module, config: TrainConfig) -> TrainingParts:
    """The loop's parts of ``model``'s methods (those :func:`model_from_config` kept on it).

    Raises:
        ConfigError: ``config.method`` names methods but the model was built without them.
    """
    parts = getattr(unwrap(model), "training_parts", None)
    if parts is None:
        if config.method:
            raise ConfigError(
                f"the model was not built from its configuration, whose methods "
                f"{sorted(config.method)} it lacks; build it with model_from_config(config) "
                "(or pass model=None to fit).")
        return TrainingParts()
    return parts


def method_targets(config: TrainConfig | Mapping) -> dict:
    """``{name: TargetSpec}``: the per-image targets the configuration's methods train against
    (give them to :func:`wsolkit.train.preload`)."""
    return dict(model_from_config(config, pretrained=False).training_parts.targets)
