"""The optimiser and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from wsolkit.models import parameter_groups

from .config import TrainConfig

__all__ = ["lr_factor", "make_optimizer"]



def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier at optimisation step ``step`` (0-based).

    Args:
        config: supplies ``schedule``, ``epochs``, ``warmup_epochs``, ``step_size``, ``lr_gamma``,
            ``cycle_epochs``, ``cycle_mult`` and ``min_lr_ratio``.
        step: steps taken before this one.
        steps_per_epoch: optimisation steps per epoch.

    Returns:
        ``lr(step) / lr``: linear warm-up ``(step + 1) / warmup_steps`` first, then

        * constant: 1;
        * step: ``lr_gamma ** (epoch // step_size)``;
        * cosine: ``m + (1 - m) (1 + cos(pi t)) / 2`` with ``t`` the fraction of the post-warm-up
          steps done and ``m = min_lr_ratio``;
        * sgdr: the same within each cycle, cycles of ``cycle_epochs * cycle_mult**i`` epochs
          starting after the warm-up (restart = back to 1).
    """
    spe = steps_per_epoch
    warm = round(config.warmup_epochs * spe)
    if step < warm:
        return (step + 1) / warm
    m = config.min_lr_ratio
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "step":
        return config.lr_gamma ** ((step // spe) // config.step_size)
    if config.schedule == "cosine":
        t = (step - warm) / max(1, config.epochs * spe - warm)
        return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * t))
    pos, cycle = step - warm, config.cycle_epochs * spe
    while pos >= cycle:
        pos -= cycle
        cycle *= config.cycle_mult
    return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * pos / cycle))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model)
    mult = config.resolved_head_lr_mult()
    param_groups = [
        {"params": groups["backbone"], "lr": config.lr, "base_lr": config.lr, "name": "backbone"},
        {"params": groups["head"], "lr": config.lr * mult, "base_lr": config.lr * mult, "name": "head"},
    ]
    param_groups = [g for g in param_groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(param_groups, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
