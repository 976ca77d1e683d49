"""The baseline runs the chapters share: CAM, Hide-and-Seek, ADL, WGAP and CutMix on the CUB and
ILSVRC layouts.

Training is the book's largest cost, so a model that several chapters compare against is trained
once. A run is found by its name and the hash of its configuration (:mod:`wsolkit.runs`), so a
chapter reuses another's run exactly when it asks for the same name and the same configuration;
:func:`baseline` is the one place that makes them. On the ``smoke`` and ``default`` profiles the
CUB-layout CAM and Hide-and-Seek runs are chapter 00's, the ILSVRC-layout Hide-and-Seek runs
chapter 04's, CutMix the leaderboard's (chapter 06: no paper of the book trains it, every table
quotes it), and ADL, WGAP and the ILSVRC-layout CAM chapter 02's;
chapters 03 onwards train only their own methods, with :func:`training_config` and the same
recipe, so that every comparison with a baseline differs in the method alone.

On the ``paper`` profile each chapter follows its own paper's recipe (learning rate, batch), so
:func:`training_config` takes overrides and a chapter trains the baselines it needs itself (pass
``chapter=`` to :func:`baseline`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from wsolkit.chapter import data_extra
from wsolkit.profiles import check_choice, select
from wsolkit.train import TrainConfig

__all__ = ["BASELINES", "DATASETS", "OWNERS", "RECIPES", "baseline", "baseline_options",
           "baseline_run", "recipe", "training_config"]

DATASETS = ("cub", "ilsvrc")

# The embedded benchmark's ILSVRC-layout images are few enough to preload; real ILSVRC is
# streamed with the standard augmentation.
_COMMON = dict(adl_positions=["pool2", "pool3", "block4"], has_patch=16, shared=True,
               preload_ilsvrc=True,
               step_size={"cub": 15, "ilsvrc": 15})
#: The training recipe of each profile (chapter 02's, which chapter 00's CAM runs match):
#: ``default`` trains the simple_gap network for 30 epochs on the CUB layout and 15 on the
#: ILSVRC layout (its images are of the same kind); ``paper`` fine-tunes VGG16-GAP from
#: ImageNet weights with lr 1e-4, batch 64, new layers at 10x (Zhang, Chang & Bui, section 5).
#: A shorter ``default`` (8 and 6 epochs at lr 0.4) trains CAM to the same classification and
#: localization at a quarter of the cost, but not the hiding methods, which lose 5-10 points
#: of classification and change seven of chapter 02's and seven of chapter 03's verdicts
#: (``benchmarks/README.md``, "The default schedule"), so the book keeps this one.
RECIPES = {
    "smoke": dict(_COMMON, backbone="simple_gap", model_kwargs={}, size=64, seeds=[0],
                  batch_size=32, lr=0.05, optimizer="sgd", schedule="cosine", warmup=0.0,
                  head_lr_mult=None, epochs={"cub": 2, "ilsvrc": 2}),
    "default": dict(_COMMON, backbone="simple_gap", model_kwargs={}, size=64, seeds=[0, 1, 2],
                    batch_size=64, lr=0.05, optimizer="sgd", schedule="cosine", warmup=1.0,
                    head_lr_mult=None, epochs={"cub": 30, "ilsvrc": 15}),
    "paper": dict(_COMMON, backbone="vgg16_gap", model_kwargs={"pretrained": True}, size=224,
                  seeds=[0, 1, 2], batch_size=64, lr=1e-4, optimizer="sgd", schedule="step",
                  warmup=0.0, head_lr_mult=10.0, epochs={"cub": 50, "ilsvrc": 10},
                  step_size={"cub": 15, "ilsvrc": 3},
                  adl_positions=["pool3", "pool4", "conv5_3"], has_patch=56, shared=False,
                  preload_ilsvrc=False),
}

#: The baseline methods and their short names in run names.
BASELINES = {"CAM": "cam", "HaS": "has", "ADL": "adl", "WGAP": "wgap", "CutMix": "cutmix"}

#: The chapter that trains each shared baseline on the ``smoke`` and ``default`` profiles.
OWNERS = {("cub", "CAM"): "00_cam_baseline", ("cub", "HaS"): "00_cam_baseline",
          ("ilsvrc", "HaS"): "04_saliency_aware", ("cub", "CutMix"): "06_leaderboard",
          ("ilsvrc", "CutMix"): "06_leaderboard"}


def recipe(profile: str) -> dict:
    """The profile's recipe (a copy: edit it freely)."""
    return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
            for k, v in select(profile, RECIPES).items()}


def baseline_options(method: str, settings: Mapping) -> dict:
    """``TrainConfig.method`` of a baseline: CAM none, Hide-and-Seek the recipe's patch with
    p = 0.5 (chapter 00's), ADL at the recipe's positions (drop rate 0.75, threshold 0.8, as
    Choe & Shim use for VGG), WGAP the softmax-weighted mean, CutMix with beta = 1 on every
    batch (the defaults of Choe et al.'s re-evaluation code)."""
    check_choice("baseline", method, tuple(BASELINES))
    return {"CAM": {},
            "HaS": {"hide_and_seek": {"patch": settings["has_patch"], "p": 0.5}},
            "ADL": {"adl": {"positions": list(settings["adl_positions"]), "drop_rate": 0.75,
                            "gamma": 0.8}},
            "WGAP": {"wgap": {"divide_by_area": False}},
            "CutMix": {"cutmix": {"beta": 1.0, "p": 1.0}}}[method]


def training_config(dataset: str, root: str | os.PathLike, num_classes: int, seed: int,
                    method: Mapping, *, settings: Mapping, chapter: str,
                    backbone: str | None = None, batch_size: int | None = None,
                    **overrides) -> TrainConfig:
    """One run's configuration under a recipe.

    Args:
        dataset: ``"cub"`` or ``"ilsvrc"``; ``root`` its dataset root.
        num_classes: the training split's classes.
        seed: the run's seed.
        method: ``TrainConfig.method``.
        settings: a :func:`recipe` (possibly edited).
        chapter: the chapter that owns the run (part of the configuration, and so of its hash).
        backbone, batch_size: the notebook's overrides (``None``: the recipe's).
        overrides: further ``TrainConfig`` fields (a paper's learning rate, say).
    """
    check_choice("dataset", dataset, DATASETS)
    preloaded = {"preload": True} if dataset == "ilsvrc" and settings["preload_ilsvrc"] else {}
    fields = dict(model=backbone or settings["backbone"], model_kwargs=settings["model_kwargs"],
                  image_size=settings["size"], batch_size=batch_size or settings["batch_size"],
                  optimizer=settings["optimizer"], lr=settings["lr"], weight_decay=5e-4,
                  head_lr_mult=settings["head_lr_mult"], schedule=settings["schedule"],
                  warmup_epochs=settings["warmup"], num_classes=num_classes,
                  epochs=settings["epochs"][dataset], step_size=settings["step_size"][dataset],
                  seed=seed, method=dict(method))
    fields.update(overrides)
    fields["extra"] = {**data_extra(dataset, root, **preloaded), "chapter": chapter}
    return TrainConfig(**fields)


def baseline(dataset: str, method: str, seed: int, root: str | os.PathLike, num_classes: int, *,
             settings: Mapping, backbone: str | None = None, batch_size: int | None = None,
             chapter: str | None = None, **overrides) -> tuple[str, TrainConfig]:
    """The shared baseline run ``(name, config)`` of ``method`` (a key of :data:`BASELINES`).

    With ``settings["shared"]`` and no ``chapter``, the run is the one its owner
    (:data:`OWNERS`, else chapter 02) trains: CUB-layout CAM and Hide-and-Seek are chapter 00's
    ``00_cam_baseline-<method>-s<seed>``, ILSVRC-layout Hide-and-Seek chapter 04's, the others
    ``02_improving_cam-<dataset>-<method>-s<seed>``. With ``chapter``, the run is that chapter's
    own (the ``paper`` profile, where each paper's recipe differs).
    """
    short = BASELINES[check_choice("baseline", method, tuple(BASELINES))]
    if chapter is None:
        if not settings.get("shared", False):
            raise ValueError("baseline: this recipe shares no runs between chapters (the "
                             "'paper' profile); pass chapter= to train the chapter's own.")
        chapter = OWNERS.get((dataset, method), "02_improving_cam")
    name = (f"{chapter}-{short}-s{seed}" if chapter == "00_cam_baseline"
            else f"{chapter}-{dataset}-{short}-s{seed}")
    config = training_config(dataset, root, num_classes, seed, baseline_options(method, settings),
                             settings=settings, chapter=chapter, backbone=backbone,
                             batch_size=batch_size, **overrides)
    return name, config


def baseline_run(dataset: str, method: str, seed: int, root: str | os.PathLike, *,
                 settings: Mapping, backbone: str | None = None, progress: bool | str = "auto"):
    """The shared baseline run itself (a :class:`wsolkit.runs.RunRecord`): read from the run
    cache, or trained now. For a chapter that uses another dataset's baseline as a frozen
    network (chapter 04's perceptual network is the other layout's CAM)."""
    from wsolkit.chapter import train_or_load
    from wsolkit.data import get_dataset

    options = {"train_boxes": False} if dataset == "ilsvrc" else {}
    num_classes = get_dataset(dataset, root, "train", **options).num_classes
    name, config = baseline(dataset, method, seed, root, num_classes, settings=settings,
                            backbone=backbone)
    return train_or_load(name, config, progress=progress)
