"""The methods of the leaderboard and the chapter runs each is read from.

Every row reuses the runs its chapter trained, found in the run cache by name
(``<stem>-s<seed>-<config hash>``) and kept only if they were trained on the dataset root being
evaluated, in its current version (the split fingerprint stored in the run's configuration). A
row whose chapter has not been executed on this profile is reported as missing, with the chapter
that trains it. The one weakly supervised method no chapter trains, CutMix (every paper of the
book quotes it as the standard augmentation row), is a shared baseline that the leaderboard
trains itself (:func:`train_added_runs`), with the recipe of every other baseline.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wsolkit.chapter import data_extra, data_root_of
from wsolkit.profiles import runs_dir

__all__ = ["CHAPTER", "ENTRIES", "LAYOUTS", "Entry", "FoundRuns", "LeaderboardError", "entry",
           "find_runs", "train_added_runs"]

#: The leaderboard's own chapter: the owner of the runs it trains.
CHAPTER = "06_leaderboard"

#: The dataset layouts of the leaderboard.
LAYOUTS = ("cub", "ilsvrc")

# Keys of TrainConfig.extra that name the data but are not options of its loader.
_NOT_OPTIONS = ("dataset", "data_root", "split", "split_fingerprint", "chapter",
                "degenerate_boxes_left_out")


class LeaderboardError(ValueError):
    """An unknown method or layout, or a run folder that cannot be read."""


@dataclass(frozen=True)
class Entry:
    """One method of the leaderboard.

    Attributes:
        method: the row's name.
        paper: where the method comes from.
        chapter: the notebook that trains its runs.
        stems: ``{layout: run-name stem}``; the runs are ``<stem>-s<seed>-<hash>``.
        maps: the candidate score maps (a hyper-parameter: the protocol picks one per method
            on the full-supervision split).
        absent: why a layout without a stem has no runs (the reason the board gives).
    """

    method: str
    paper: str
    chapter: str
    stems: Mapping[str, str]
    maps: tuple[str, ...] = ("cam",)
    absent: str = "not trained on this layout by its chapter"


def _both(stem: str) -> dict[str, str]:
    return {layout: stem.format(layout=layout) for layout in LAYOUTS}


#: Every weakly supervised method the book trains, in the order of the chapters.
ENTRIES = (
    Entry("CAM", "Zhou et al. 2016", "00_cam_baseline",
          {"cub": "00_cam_baseline-cam", "ilsvrc": "02_improving_cam-ilsvrc-cam"}),
    Entry("Hide-and-Seek", "Singh & Lee 2017", "00_cam_baseline",
          {"cub": "00_cam_baseline-has", "ilsvrc": "04_saliency_aware-ilsvrc-has"}),
    Entry("ADL", "Choe & Shim 2019", "02_improving_cam", _both("02_improving_cam-{layout}-adl")),
    Entry("CAM, recombined (RCAM)", "Zhang, Chang & Bui 2020", "02_improving_cam",
          {"cub": "00_cam_baseline-cam", "ilsvrc": "02_improving_cam-ilsvrc-cam"},
          ("recombined",)),
    Entry("WGAP", "Zhang, Chang & Bui 2020", "02_improving_cam",
          _both("02_improving_cam-{layout}-wgap"), ("cam", "recombined", "softmax_weighted")),
    Entry("CAM (cross-entropy), chapter 01 recipe", "Barz & Denzler 2022", "01_cosine_dcm",
          {"ilsvrc": "01_cosine_dcm-ilsvrc-ce"}),
    Entry("DCM, one-hot cosine loss", "Barz & Denzler 2022", "01_cosine_dcm",
          {"ilsvrc": "01_cosine_dcm-ilsvrc-cos"}, ("cosine_similarity",)),
    # Chapter 01 trains the hierarchy embeddings on COCO scenes only, as the paper's
    # hierarchy experiment (Sec. 4.4) does; its ILSVRC-layout check compares one-hot with CAM.
    Entry("DCM, hierarchy cosine loss", "Barz & Denzler 2022", "01_cosine_dcm", {},
          ("cosine_similarity",),
          absent="trained by its chapter on the COCO layout only (scenes, the paper's Sec. 4.4), "
                 "which this protocol does not score"),
    Entry("ASS", "Zhang 2020", "03_selection_and_hiding",
          _both("03_selection_and_hiding-{layout}-ass")),
    Entry("AMH", "Zhang 2020", "03_selection_and_hiding",
          _both("03_selection_and_hiding-{layout}-amh")),
    Entry("Saliency aware", "Chen & Hsu 2019", "04_saliency_aware",
          _both("04_saliency_aware-{layout}-sa"), ("cam", "saliency")),
    Entry("CAMsIntra", "Kou et al. 2021", "05_cams2i", _both("05_cams2i-{layout}-camsintra"),
          ("cam", "inner_cam", "cams2i")),
    Entry("CAMs2i", "Kou et al. 2021", "05_cams2i", _both("05_cams2i-{layout}-cams2i"),
          ("cam", "inner_cam", "cams2i")),
    Entry("CutMix", "Yun et al. 2019", CHAPTER, _both(CHAPTER + "-{layout}-cutmix")),
)


def entry(method: str) -> Entry:
    """The entry named ``method``."""
    for candidate in ENTRIES:
        if candidate.method == method:
            return candidate
    raise LeaderboardError(f"no leaderboard entry {method!r}; expected one of "
                           f"{[e.method for e in ENTRIES]}.")


@dataclass
class FoundRuns:
    """The runs of one stem in the run cache.

    Attributes:
        runs: ``{seed: run folder}`` of complete runs trained on the evaluated data.
        superseded: complete runs of the same stem and seed left out for a newer one (a
            configuration edited since: the newest ``results.json`` wins).
        other_data: complete runs of the stem trained on another dataset root, or on another
            version of this one.
        incomplete: run folders without ``results.json`` (interrupted, or training now).
    """

    runs: dict[int, Path] = field(default_factory=dict)
    superseded: int = 0
    other_data: int = 0
    incomplete: int = 0


def _same_data(extra: Mapping, layout: str, root: Path) -> bool:
    if extra.get("dataset") != layout:
        return False
    try:
        if data_root_of(dict(extra)).resolve() != root:
            return False
    except KeyError:
        return False
    options = {k: v for k, v in extra.items() if k not in _NOT_OPTIONS}
    current = data_extra(layout, root, extra.get("split", "train"), **options)
    return current["split_fingerprint"] == extra.get("split_fingerprint")


def find_runs(stem: str, layout: str, root: str | os.PathLike,
              runs_root: str | os.PathLike | None = None) -> FoundRuns:
    """The complete runs ``<stem>-s<seed>-<hash>`` trained on ``root`` as it is now.

    Args:
        stem: a run-name stem (:attr:`Entry.stems`).
        layout: ``"cub"`` or ``"ilsvrc"``, the dataset the runs must have trained on.
        root: that dataset's root.
        runs_root: the run cache (default :func:`wsolkit.profiles.runs_dir`, the chapters').

    Raises:
        LeaderboardError: a ``results.json`` that is not JSON (named).
    """
    if layout not in LAYOUTS:
        raise LeaderboardError(f"layout {layout!r}; expected one of {LAYOUTS}.")
    folder = Path(runs_root) if runs_root is not None else runs_dir()
    pattern = re.compile(rf"^{re.escape(stem)}-s(\d+)-[0-9a-f]{{10}}$")
    root = Path(root).resolve()
    found, newest = FoundRuns(), {}
    candidates = sorted(folder.iterdir()) if folder.is_dir() else []
    for run_dir in candidates:
        match = pattern.match(run_dir.name)
        if not match or not run_dir.is_dir():
            continue
        results = run_dir / "results.json"
        if not results.exists():
            found.incomplete += 1
            continue
        try:
            record = json.loads(results.read_text())
        except json.JSONDecodeError as err:
            raise LeaderboardError(f"{results} is not valid JSON ({err}); delete the run "
                                   "folder to retrain it.") from None
        if not _same_data(record["config"].get("extra", {}), layout, root):
            found.other_data += 1
            continue
        seed = int(match.group(1))
        finished = str(record.get("provenance", {}).get("finished", ""))
        if seed in newest:
            found.superseded += 1
            if finished <= newest[seed]:
                continue
        newest[seed] = finished
        found.runs[seed] = run_dir
    found.runs = dict(sorted(found.runs.items()))
    return found


def train_added_runs(layout: str, root: str | os.PathLike, settings: Mapping, seeds, *,
                     launcher: str = "local", progress: bool | str = "auto") -> dict:
    """Train, or read from the run cache, the runs the leaderboard adds on one layout: every
    shared baseline whose owner is :data:`CHAPTER` (:data:`wsolkit.baselines.OWNERS`), once per
    seed, with the recipe ``settings`` (:func:`wsolkit.baselines.recipe`).

    Returns:
        ``{(method, seed): RunRecord}``; without native bf16 the missing runs train two at a
        time (:func:`wsolkit.chapter.train_or_load_all`).
    """
    from wsolkit.baselines import OWNERS, baseline
    from wsolkit.chapter import train_or_load_all
    from wsolkit.data import get_dataset

    if layout not in LAYOUTS:
        raise LeaderboardError(f"layout {layout!r}; expected one of {LAYOUTS}.")
    methods = [m for (d, m), owner in OWNERS.items() if d == layout and owner == CHAPTER]
    options = {"train_boxes": False} if layout == "ilsvrc" else {}
    num_classes = get_dataset(layout, root, "train", **options).num_classes
    # The paper profile shares no runs between chapters: the runs are then this chapter's own.
    own = {} if settings.get("shared", False) else {"chapter": CHAPTER}
    runs = {(method, seed): baseline(layout, method, seed, root, num_classes,
                                     settings=settings, **own)
            for method in methods for seed in seeds}
    return train_or_load_all(runs, launcher=launcher, progress=progress)
