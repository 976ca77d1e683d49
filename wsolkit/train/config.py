"""The training configuration: :class:`TrainConfig`, everything that determines a run, as JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NON_RESULT_FIELDS", "ConfigError", "TrainConfig",
           "result_fields"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Fields that change how fast a run goes but not what it computes; left out of comparisons
# between a checkpoint's configuration and the current one (and of the run cache's hash).
NON_RESULT_FIELDS = ("num_workers",)


class ConfigError(ValueError):
    """A training configuration (or data that does not fit it) is invalid."""


_OPTIMIZERS = ("sgd", "adam", "adamw")
_SCHEDULES = ("constant", "step", "cosine", "sgdr")
_AMP = ("auto", "bf16", "off")


@dataclass
class TrainConfig:
    """Everything that determines a training run; JSON-serialisable (:meth:`to_dict`).

    Attributes:
        model: registry name for :func:`wsolkit.models.build_model`.
        model_kwargs: its options (``pretrained``, ``width``, ``small_input``, ...).
        num_classes: number of classes.
        image_size: side of the (square) training images in pixels.
        epochs: number of epochs.
        batch_size: images per step *per process*.
        optimizer: ``"sgd"`` (with ``momentum``, ``nesterov``), ``"adam"`` or ``"adamw"`` (``betas``).
        lr: learning rate of the backbone parameter group.
        head_lr_mult: the new layers' learning rate is ``lr * head_lr_mult``. ``None`` means 10
            when the backbone starts from ImageNet weights (``model_kwargs["pretrained"]``), as
            fine-tuning recipes of the WSOL literature do (Choe et al., CVPR 2020), and 1 when
            the whole network is trained from scratch.
        weight_decay: L2 penalty on every parameter (``decoupled`` for AdamW).
        schedule: ``"constant"``, ``"step"`` (``lr_gamma`` every ``step_size`` epochs),
            ``"cosine"`` (to ``min_lr_ratio * lr`` at the end) or ``"sgdr"`` (cosine with warm
            restarts, Loshchilov & Hutter 2017: cycles of ``cycle_epochs * cycle_mult**i``
            epochs; with ``cycle_mult=2`` the doubling cycles of Barz & Denzler, VISAPP 2022).
            Every schedule starts with a linear warm-up over ``warmup_epochs`` (may be 0).
        seed: the seed everything random is derived from.
        deterministic: deterministic algorithms (``torch.use_deterministic_algorithms``, cuDNN
            without benchmarking); slower on GPUs.
        amp: ``"auto"`` (bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere:
            :func:`resolved_amp`), ``"bf16"`` or ``"off"``. The run's summary records what
            ``"auto"`` became.
        channels_last: ``"auto"`` (on for CUDA and for CPUs, where it measured 1.2x and 1.4x
            faster for the default-profile models, see ``benchmarks/README.md``; off on other
            devices), or a bool.
        compile: wrap the model in ``torch.compile``.
        method: ``{method name: options}`` of :mod:`wsolkit.methods`, e.g.
            ``{"hide_and_seek": {"patch": 16, "p": 0.5}}``; ``{}`` is CAM (cross-entropy, GAP).
        mean, std: per-channel normalisation applied on the device to ``[0, 1]`` images.
        normalize: apply it. Set ``False`` for a ``Dataset`` whose transform already normalises
            (``wsolkit.data.train_transform`` does by default); :func:`fit` checks the first batch
            and raises if ``[0, 1]`` images are expected but normalised ones arrive.
        hflip: random horizontal flips (:class:`TensorImages` data only; a ``Dataset`` brings its
            own augmentation).
        crop_scale: if set, a light random-resized crop (:class:`TensorImages` only): a square
            covering a uniform ``[crop_scale, 1]`` fraction of the image area, resized back
            bilinearly.
        val_every: evaluate ``val_data`` every this many epochs (and after the last one).
        num_workers: ``DataLoader`` worker processes (``Dataset`` data only); does not change
            results.
        extra: free-form options for chapters (recorded and hashed, never read by :func:`fit`).
    """

    model: str = "simple_gap"
    model_kwargs: dict = field(default_factory=dict)
    num_classes: int = 10
    image_size: int = 64
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 5e-4
    head_lr_mult: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 30
    lr_gamma: float = 0.1
    cycle_epochs: int = 12
    cycle_mult: int = 2
    min_lr_ratio: float = 0.0
    seed: int = 0
    deterministic: bool = False
    amp: str = "auto"
    channels_last: Any = "auto"
    compile: bool = False
    method: dict = field(default_factory=dict)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    normalize: bool = True
    hflip: bool = True
    crop_scale: float | None = None
    val_every: int = 1
    num_workers: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"TrainConfig.{name} = {getattr(self, name)!r}: expected {expected}.")

        for name in ("num_classes", "image_size", "epochs", "batch_size", "step_size",
                     "cycle_epochs", "cycle_mult", "val_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "a positive int")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise bad("num_workers", "an int >= 0")
        if self.optimizer not in _OPTIMIZERS:
            raise bad("optimizer", f"one of {_OPTIMIZERS}")
        if self.schedule not in _SCHEDULES:
            raise bad("schedule", f"one of {_SCHEDULES}")
        if self.amp not in _AMP:
            raise bad("amp", f"one of {_AMP}")
        if self.channels_last not in ("auto", True, False):
            raise bad("channels_last", "'auto', True or False")
        if not self.lr > 0:
            raise bad("lr", "a float > 0")
        if self.head_lr_mult is not None and not self.head_lr_mult > 0:
            raise bad("head_lr_mult", "None or a float > 0")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(
                "TrainConfig: weight_decay and warmup_epochs must be >= 0 and min_lr_ratio in [0, 1], "
                f"got {self.weight_decay!r}, {self.warmup_epochs!r}, {self.min_lr_ratio!r}."
            )
        if self.crop_scale is not None and not 0 < self.crop_scale <= 1:
            raise bad("crop_scale", "None or a float in (0, 1]")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"TrainConfig: mean and std need 3 values (std > 0), got {self.mean!r}, {self.std!r}.")
        for name in ("model_kwargs", "method", "extra"):
            if not isinstance(getattr(self, name), Mapping):
                raise bad(name, "a dict")
        self.betas = tuple(self.betas)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        try:
            json.dumps(self.to_dict(), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"TrainConfig must be JSON-serialisable (plain numbers, strings, lists, dicts): {err}"
            ) from None

    @property
    def normalization(self) -> dict:
        """``{"mean", "std"}``: the per-channel normalisation the model was trained with, as the
        keyword arguments of the functions that run a trained model on raw images."""
        return {"mean": self.mean, "std": self.std}

    def to_dict(self) -> dict:
        """A JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainConfig:
        """Rebuild from :meth:`to_dict`'s output; unknown keys raise :class:`ConfigError`."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"TrainConfig: unknown field(s) {unknown}; valid fields are {names}.")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a configuration written as JSON (e.g. by :meth:`to_dict`)."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err}); expected a TrainConfig dict.") from None
        return cls.from_dict(data)

    def resolved_head_lr_mult(self) -> float:
        if self.head_lr_mult is not None:
            return float(self.head_lr_mult)
        return 10.0 if self.model_kwargs.get("pretrained") else 1.0


def result_fields(config: TrainConfig | Mapping) -> dict:
    """The configuration as a dict without :data:`NON_RESULT_FIELDS`."""
    d = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    return {k: v for k, v in d.items() if k not in NON_RESULT_FIELDS}


