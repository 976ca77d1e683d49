"""One protocol for every row: choose on a split with full supervision, report on test.

Choe et al. (CVPR 2020) let a WSOL method see localization labels on one small held-out split
only (their *train-fullsup*), to choose its hyper-parameters and its CAM threshold, and report
on a test split nothing was chosen on. Here:

* CUB layout: the full-supervision split is ``val`` (images held out of training), the test
  split ``test``;
* ILSVRC layout (no held-out split besides ``val``): ``val`` is divided per class, a fixed
  :data:`FULLSUP_PER_CLASS` images of each class (the first by a hash of the image id, so the
  division depends on nothing but the ids) for full supervision and the rest for test.

For a method, the protocol chooses, on the full-supervision split and never on test,

1. the score map (a method's hyper-parameter: its plain CAM or its own map): the one with the
   best mean MaxBoxAccV2 over the seeds;
2. per seed, the CAM threshold of GT-known and top-1 loc: the one with the best GT-known loc.

The chapters' cached evaluations of whole splits are reused: on the ILSVRC layout the
per-image results of ``val`` are divided into the two parts, so nothing is recomputed. PxAP,
a curve over every pixel of the split, is reported only where the test split is a whole
cached split with masks (CUB layout).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsolkit.evaluation import LocalizationSet, cached_evaluation, load_localization_set
from wsolkit.evaluation.tables import MapEvaluations, max_box_acc_v2

__all__ = ["FULLSUP_PER_CLASS", "PER_IMAGE", "ProtocolSplits", "fullsup_rows", "on_protocol",
           "protocol_splits", "run_evaluations", "split_part"]

#: Images per class the ILSVRC layout's full-supervision part takes from ``val``: the CUB
#: layout's ``val`` has about as many per class, and Choe et al.'s ImageNet train-fullsup 10.
FULLSUP_PER_CLASS = 25
#: The per-image arrays a part of a split keeps.
PER_IMAGE = ("per_image_correct", "per_image_iou_all", "per_image_top1")


@dataclass
class ProtocolSplits:
    """The two splits of one layout and where each sits in the chapters' cached evaluations.

    Attributes:
        layout: ``"cub"`` or ``"ilsvrc"``.
        root: the dataset root.
        evaluated: ``{cached split name: the whole split as the chapters evaluate it}``.
        parts: ``{"fullsup" | "test": (cached split name, rows or None for all)}``.
        fullsup, test: the two parts themselves (for maps computed here: references).
    """

    layout: str
    root: Path
    evaluated: dict[str, LocalizationSet]
    parts: dict[str, tuple[str, np.ndarray | None]]
    fullsup: LocalizationSet
    test: LocalizationSet

    def describe(self) -> str:
        """The division in words, with the image counts."""
        source = {name: (split, "all" if rows is None else f"{len(rows)} of")
                  for name, (split, rows) in self.parts.items()}
        return (f"full supervision: {len(self.fullsup)} images ({source['fullsup'][1]} "
                f"'{source['fullsup'][0]}'); test: {len(self.test)} images "
                f"({source['test'][1]} '{source['test'][0]}')")


def fullsup_rows(ids: Sequence[str], labels: Sequence[int], per_class: int) -> np.ndarray:
    """Rows of the full-supervision part: in every class, the ``per_class`` images whose ids
    hash lowest (SHA-256), sorted. Deterministic, independent of the order of the split.

    Raises:
        ValueError: a class with no more than ``per_class`` images (nothing left for test).
    """
    labels = np.asarray(labels)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in ids]
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) <= per_class:
            raise ValueError(f"class {int(label)} has {len(members)} images; taking {per_class} "
                             "for full supervision leaves none for test (lower per_class).")
        chosen += sorted(members, key=lambda row: keys[row])[:per_class]
    return np.sort(np.asarray(chosen, dtype=np.int64))


def protocol_splits(layout: str, root: str | os.PathLike, size: int, *,
                    per_class: int = FULLSUP_PER_CLASS) -> ProtocolSplits:
    """The full-supervision and test splits of a layout (see the module's docstring)."""
    from wsolkit.data import CUBDataset, ILSVRCDataset

    root = Path(root)
    if layout == "cub":
        val = load_localization_set(CUBDataset(root, "val"), size)
        test = load_localization_set(CUBDataset(root, "test"), size)
        return ProtocolSplits(layout, root, {"val": val, "test": test},
                              {"fullsup": ("val", None), "test": ("test", None)}, val, test)
    if layout == "ilsvrc":
        val = load_localization_set(ILSVRCDataset(root, "val"), size)
        chosen = fullsup_rows(val.ids, val.labels.numpy(), per_class)
        rest = np.setdiff1d(np.arange(len(val)), chosen)
        return ProtocolSplits(layout, root, {"val": val},
                              {"fullsup": ("val", chosen), "test": ("val", rest)},
                              val.subset(chosen), val.subset(rest))
    raise ValueError(f"layout {layout!r}; expected 'cub' or 'ilsvrc'.")


def split_part(result: Mapping[str, Any], rows: np.ndarray | None) -> dict:
    """One part of a cached evaluation of a whole split: its per-image arrays at ``rows``, the
    GT-known curve and MaxBoxAccV2 recomputed from them; PxAP only for the whole split."""
    if rows is None:
        return dict(result)
    part = {k: result[k] for k in ("thresholds", "cam_threshold")}
    part.update({k: np.asarray(result[k])[rows] for k in PER_IMAGE if k in result})
    part["loc_curve"] = part["per_image_correct"].mean(axis=0) * 100.0
    part["max_box_acc_v2"] = max_box_acc_v2(part["per_image_iou_all"])
    part["pxap"] = float("nan")
    return part


def on_protocol(fullsup: Mapping[str, Any], test: Mapping[str, Any]) -> MapEvaluations:
    """The test evaluation with its threshold chosen on the full-supervision part (the best
    GT-known loc, the first of equal ones): rule ``"val"`` of :mod:`wsolkit.evaluation.tables`
    scores it."""
    curve = np.asarray(fullsup["loc_curve"], dtype=np.float64)
    if not np.all(np.isfinite(curve)):
        raise ValueError("on_protocol: the full-supervision GT-known curve has non-finite values.")
    threshold = float(np.asarray(fullsup["thresholds"])[int(np.argmax(curve))])
    return MapEvaluations(dict(test), None, threshold)


def run_evaluations(run_dir: str | os.PathLike, splits: ProtocolSplits,
                    map_name: str) -> tuple[MapEvaluations, float]:
    """One run's map under the protocol: ``(test evaluation with its threshold chosen on full
    supervision, full-supervision MaxBoxAccV2)``, from the run's cached evaluations (computed
    and cached where the chapter did not evaluate that map)."""
    from wsolkit.runs import load_model
    from wsolkit.train import TrainConfig

    run_dir = Path(run_dir)
    config = TrainConfig.from_json(run_dir / "config.json")
    loader = functools.partial(load_model, run_dir)
    whole = {split: cached_evaluation(run_dir, split, loader, data, config, map_name=map_name)
             for split, data in splits.evaluated.items()}
    fullsup, test = (split_part(whole[split], rows)
                     for split, rows in (splits.parts["fullsup"], splits.parts["test"]))
    return on_protocol(fullsup, test), float(fullsup["max_box_acc_v2"])
