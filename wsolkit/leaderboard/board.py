"""Rows of the leaderboard: every method and reference under the protocol, scored on test.

A :class:`Row` holds, per seed, the test evaluation of the map the protocol chose, with its
threshold chosen on full supervision (:mod:`wsolkit.leaderboard.protocol`). :func:`scores`
gives each metric with a 95% interval over the test images of every seed
(:func:`wsolkit.evaluation.tables.compare`), :func:`difference` a paired difference of two rows,
and :func:`board_table` the whole board as one table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsolkit.evaluation.tables import MapEvaluations, compare

from .entries import Entry, find_runs
from .protocol import ProtocolSplits, on_protocol, run_evaluations
from .references import (CENTER_SIGMAS, center_gaussian_maps, evaluate_reference,
                         few_shot_maps, mask_upper_bound_maps, train_few_shot)

__all__ = ["LAYOUT_NAMES", "METRICS", "Missing", "Row", "board_table", "box_accuracy_at",
           "chosen_on_test",
           "center_row", "formatted_board",
           "difference", "few_shot_row", "method_row", "scores", "upper_bound_row"]

#: The reported metrics, in the table's order.
METRICS = ("MaxBoxAccV2", "PxAP", "top-1 loc", "GT-known loc", "top-1 cls")
LAYOUT_NAMES = {"cub": "CUB layout", "ilsvrc": "ILSVRC layout"}
_ARM_RULE = "val"  # the threshold chosen on the full-supervision split


@dataclass
class Row:
    """One method (or reference) on one layout, under the protocol.

    Attributes:
        layout, method, source: where it comes from (``source``: the paper, or the definition).
        kind: ``"WSOL"`` or ``"reference"``.
        map_name: the score map the protocol chose.
        evaluations: ``{seed: test evaluation, threshold chosen on full supervision}``.
        fullsup_v2: ``{candidate map: mean full-supervision MaxBoxAccV2 over the seeds}``, the
            numbers the map was chosen by.
        classifies: whether the row has a classifier (top-1 cls and top-1 loc).
        deterministic: one evaluation that does not depend on a seed (paired with every seed
            of the other row in :func:`difference`).
        runs: the run folders it reads.
    """

    layout: str
    method: str
    source: str
    kind: str
    map_name: str
    evaluations: dict[int, MapEvaluations]
    fullsup_v2: dict[str, float] = field(default_factory=dict)
    classifies: bool = True
    deterministic: bool = False
    runs: list[Path] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.evaluations)


@dataclass
class Missing:
    """A method the board cannot fill on a layout, and why (with what would fill it)."""

    layout: str
    method: str
    chapter: str
    reason: str


def method_row(entry: Entry, splits: ProtocolSplits, *, min_seeds: int = 1,
               runs_root: str | os.PathLike | None = None) -> Row | Missing:
    """An entry's row: its runs on the layout's root, the map chosen on full supervision.

    Returns :class:`Missing` where the layout has no stem for the entry or fewer than
    ``min_seeds`` runs were found (the reason counts what was found instead).
    """
    stem = entry.stems.get(splits.layout)
    if stem is None:
        return Missing(splits.layout, entry.method, entry.chapter, entry.absent)
    found = find_runs(stem, splits.layout, splits.root, runs_root)
    if len(found.runs) < min_seeds:
        extra = [f"{n} {what}" for n, what in ((found.other_data, "on other data"),
                                                (found.incomplete, "incomplete")) if n]
        return Missing(splits.layout, entry.method, entry.chapter,
                       f"{len(found.runs)} of {min_seeds} seeds in the run cache"
                       + (f" ({', '.join(extra)})" if extra else "")
                       + f"; execute {entry.chapter} on this profile")
    per_map = {name: {seed: run_evaluations(run_dir, splits, name)
                      for seed, run_dir in found.runs.items()} for name in entry.maps}
    fullsup_v2 = {name: float(np.mean([v2 for _, v2 in runs.values()]))
                  for name, runs in per_map.items()}
    chosen = max(entry.maps, key=lambda name: fullsup_v2[name])  # first of equal ones
    return Row(splits.layout, entry.method, entry.paper, "WSOL", chosen,
               {seed: ev for seed, (ev, _) in per_map[chosen].items()}, fullsup_v2,
               runs=list(found.runs.values()))


def _reference(splits: ProtocolSplits, method: str, source: str, maps_of,
               candidates: Mapping[str, object], *, seeds=(0,), deterministic=True) -> Row:
    """A reference row from ``maps_of(candidate, seed, data) -> maps``: each candidate
    evaluated on full supervision, the best by MaxBoxAccV2 evaluated on test."""
    fullsup = {name: {seed: evaluate_reference(maps_of(value, seed, splits.fullsup),
                                               splits.fullsup) for seed in seeds}
               for name, value in candidates.items()}
    fullsup_v2 = {name: float(np.mean([r["max_box_acc_v2"] for r in runs.values()]))
                  for name, runs in fullsup.items()}
    chosen = max(candidates, key=lambda name: fullsup_v2[name])
    evaluations = {seed: on_protocol(fullsup[chosen][seed], evaluate_reference(
        maps_of(candidates[chosen], seed, splits.test), splits.test)) for seed in seeds}
    return Row(splits.layout, method, source, "reference", chosen, evaluations, fullsup_v2,
               classifies=False, deterministic=deterministic)


def center_row(splits: ProtocolSplits, sigmas: Sequence[float] = CENTER_SIGMAS) -> Row:
    """The centre-Gaussian baseline, its width chosen on full supervision."""
    candidates = {f"gaussian, sigma {s:g}": s for s in sigmas}
    return _reference(splits, "Centre Gaussian", "Choe et al. 2020's centre baseline",
                      lambda s, _, data: center_gaussian_maps(len(data), data.size, s),
                      candidates)


def upper_bound_row(splits: ProtocolSplits, grid: int) -> Row:
    """The mask at the CAM's resolution (box masks where the split has no masks)."""
    source = "object masks" if splits.test.masks is not None else "box masks"
    return _reference(splits, f"True mask on the {grid}x{grid} CAM grid",
                      f"{source} averaged onto the CAM grid (an upper bound)",
                      lambda _, __, data: mask_upper_bound_maps(data, grid)[0],
                      {source: grid})


def few_shot_row(splits: ProtocolSplits, seeds: Sequence[int], *, grid: int,
                 runs_root: str | os.PathLike | None = None, progress=None,
                 **settings) -> Row:
    """The few-shot fully supervised baseline: one localizer per seed trained on the
    full-supervision split's boxes (:func:`~wsolkit.leaderboard.references.train_few_shot`),
    its threshold chosen on that same split."""
    records = {}
    for seed in seeds:
        records[seed] = train_few_shot(splits.layout, splits.fullsup, seed, grid=grid,
                                       runs_root=runs_root, **settings)
        if progress is not None:
            progress(records[seed])
    row = _reference(splits, "Few-shot fully supervised",
                     f"trained on the {len(splits.fullsup)} full-supervision images' boxes",
                     lambda _, seed, data: few_shot_maps(records[seed].run_dir, data),
                     {"foreground score": None}, seeds=tuple(seeds), deterministic=False)
    row.runs = [r.run_dir for r in records.values()]
    return row


def _evals(row: Row, label: str, seeds: Sequence[int]) -> dict:
    source = row.evaluations[row.seeds[0]] if row.deterministic else None
    return {(label, seed, row.map_name): source or row.evaluations[seed] for seed in seeds}


def scores(row: Row, *, replicates: int | None = None) -> dict[str, tuple[float, float, float]]:
    """``{metric: (mean over seeds, low, high)}`` for :data:`METRICS`: a 95% interval over
    the test images of every seed; PxAP's low and high are the seeds' smallest and largest
    (a curve over all pixels, not resampled); NaN where a metric does not apply."""
    evals = _evals(row, "row", row.seeds)
    arm = ("row", row.map_name, _ARM_RULE)
    out = {}
    for metric in METRICS:
        if metric == "PxAP":
            values = [float(ev.fixed.get("pxap", math.nan)) for ev in row.evaluations.values()]
            out[metric] = ((math.nan,) * 3 if any(math.isnan(v) for v in values)
                           else (float(np.mean(values)), min(values), max(values)))
        elif metric in ("top-1 loc", "top-1 cls") and not row.classifies:
            out[metric] = (math.nan,) * 3
        else:
            out[metric] = compare(evals, arm, None, metric, replicates=replicates)
    return out


def difference(first: Row, second: Row, metric: str = "MaxBoxAccV2", *,
               replicates: int | None = None) -> tuple[float, float, float]:
    """``first - second`` in points with a 95% interval, paired by test image and seed (a
    deterministic row is paired with every seed of the other).

    Raises:
        ValueError: the rows are on different layouts or share no seed.
    """
    if first.layout != second.layout:
        raise ValueError(f"difference: {first.method} is on {first.layout} and "
                         f"{second.method} on {second.layout}.")
    if first.deterministic and second.deterministic:
        seeds = first.seeds
    elif first.deterministic or second.deterministic:
        seeds = (second if first.deterministic else first).seeds
    else:
        seeds = sorted(set(first.seeds) & set(second.seeds))
    if not seeds:
        raise ValueError(f"difference: {first.method} has the seeds {first.seeds} and "
                         f"{second.method} {second.seeds}; none in common.")
    evals = {**_evals(first, "first", seeds), **_evals(second, "second", seeds)}
    return compare(evals, ("first", first.map_name, _ARM_RULE),
                   ("second", second.map_name, _ARM_RULE), metric, replicates=replicates)


def board_table(rows: Sequence[Row], *, replicates: int | None = None):
    """The board: one line per row, each metric's mean with its ``low`` and ``high``, the
    chosen map and the mean threshold chosen on full supervision; sorted by layout, then by
    MaxBoxAccV2 (best first)."""
    import pandas as pd

    records = []
    for row in rows:
        record = {"layout": LAYOUT_NAMES[row.layout], "method": row.method, "kind": row.kind,
                  "source": row.source, "map": row.map_name,
                  "seeds": "-" if row.deterministic else len(row.seeds),
                  "threshold": float(np.mean([ev.val_threshold
                                              for ev in row.evaluations.values()]))}
        for metric, (estimate, low, high) in scores(row, replicates=replicates).items():
            record.update({metric: estimate, f"{metric} low": low, f"{metric} high": high})
        records.append(record)
    table = pd.DataFrame(records)
    return table.sort_values(["layout", "MaxBoxAccV2"], ascending=[True, False],
                             ignore_index=True)


def box_accuracy_at(row: Row, iou: float) -> float:
    """MaxBoxAcc at one IoU criterion: the best box accuracy over the thresholds (of all
    components' boxes, as in MaxBoxAccV2) on test, mean over the seeds, in percent."""
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"box_accuracy_at: IoU criterion {iou!r}; expected in (0, 1].")
    values = []
    for evaluation in row.evaluations.values():
        ious = np.asarray(evaluation.fixed["per_image_iou_all"], dtype=np.float64)
        values.append(float((ious >= iou).mean(axis=0).max() * 100.0))
    return float(np.mean(values))


def formatted_board(table, digits: int = 1):
    """:func:`board_table` for reading: each metric as ``mean [low, high]`` ("-" where it
    does not apply; PxAP's brackets are the seeds' range)."""
    shown = table[["layout", "method", "kind", "map", "seeds"]].copy()
    for metric in METRICS:
        cells = []
        for estimate, low, high in zip(table[metric], table[f"{metric} low"],
                                       table[f"{metric} high"]):
            cells.append("-" if math.isnan(estimate) else
                         f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]")
        shown[metric] = cells
    shown["threshold"] = [f"{t:.2f}" for t in table["threshold"]]
    return shown


def chosen_on_test(row: Row) -> tuple[float, float]:
    """``(GT-known loc at the threshold chosen on full supervision, GT-known loc at the best
    threshold of the test split itself)``, means over the seeds, in percent: what choosing on
    test, as many papers do, would have reported instead."""
    protocol, optimistic = [], []
    for evaluation in row.evaluations.values():
        correct = np.asarray(evaluation.fixed["per_image_correct"], dtype=np.float64)
        thresholds = np.asarray(evaluation.fixed["thresholds"], dtype=np.float64)
        column = int(np.flatnonzero(np.isclose(thresholds, evaluation.val_threshold))[0])
        protocol.append(correct[:, column].mean() * 100.0)
        optimistic.append(correct.mean(axis=0).max() * 100.0)
    return float(np.mean(protocol)), float(np.mean(optimistic))
