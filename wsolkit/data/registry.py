"""Datasets by name, and ``verify``: the checks a user runs on a download.

:func:`get_dataset` builds a loader from its name; :func:`verify` checks a dataset root's layout
and every annotation (and, with ``full``, decodes every image). This module imports the loaders,
which import only :mod:`wsolkit.data.common`, so there is no import cycle.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from wsolkit.data.common import BadBoxError, DatasetFormatError, DatasetWarning, check_split

__all__ = ["DATASETS", "VERIFY_SPLITS", "get_dataset", "verify"]


#: Dataset names of :func:`get_dataset`, mapped to ``(module, class)``; imported on first use.
DATASETS = {
    "cub": ("wsolkit.data.cub", "CUBDataset"),
    "ilsvrc": ("wsolkit.data.ilsvrc", "ILSVRCDataset"),
    "coco": ("wsolkit.data.coco", "COCODetection"),
    "coco_crops": ("wsolkit.data.coco", "COCOObjectCrops"),
}


def get_dataset(name: str, root: str | os.PathLike, split: str, **kwargs: Any) -> Any:
    """Build a dataset by name.

    Args:
        name: ``"cub"``, ``"ilsvrc"``, ``"coco"`` or ``"coco_crops"``.
        root: the dataset root.
        split: the split, e.g. ``"train"``, ``"val"``, ``"test"``.
        **kwargs: passed to the loader (``transform``, ``on_bad_box``, ...).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    module, cls = DATASETS[name]
    return getattr(importlib.import_module(module), cls)(root, split, **kwargs)


#: The splits :func:`verify` checks by default.
VERIFY_SPLITS = {
    "cub": ("train", "val", "test"),
    "ilsvrc": ("train", "val"),
    "coco": ("train", "val"),
}


def _layout_problems(name: str, root: str, splits: Sequence[str]) -> list[str]:
    """Missing files and folders of a dataset root, each with the expected layout."""
    needed: list[tuple[str, str, Callable[[str], bool]]] = []
    problems: list[str] = []
    if name == "cub":
        from wsolkit.data import cub

        for file in cub.REQUIRED_FILES:
            needed.append((os.path.join(root, file), cub.EXPECTED[file], os.path.isfile))
        needed.append((os.path.join(root, "images"), cub.EXPECTED["images"], os.path.isdir))
    elif name == "ilsvrc":
        from wsolkit.data import ilsvrc

        try:
            layout = ilsvrc.detect_layout(root)
        except DatasetFormatError as error:
            return [str(error)]
        data = os.path.join(root, "ILSVRC", "Data", "CLS-LOC") if layout == "kaggle" else root
        for split in splits:
            needed.append((os.path.join(data, split), f"the {split} images", os.path.isdir))
        if layout == "kaggle":
            mapping = os.path.join(root, ilsvrc.MAPPING)
            needed.append((mapping, ilsvrc.EXPECTED[ilsvrc.MAPPING], os.path.isfile))
        if "val" in splits:
            xml = (
                os.path.join(root, "ILSVRC", "Annotations", "CLS-LOC", "val")
                if layout == "kaggle"
                else os.path.join(root, "val_boxes")
            )
            csv = os.path.join(root, ilsvrc.VAL_CSV)
            if not os.path.isdir(xml) and not os.path.isfile(csv):
                problems.append(
                    f"missing {xml} or {csv}: expected validation boxes as "
                    f"{ilsvrc.EXPECTED['xml']} or {ilsvrc.EXPECTED[ilsvrc.VAL_CSV]}"
                )
    else:
        from wsolkit.data import coco

        for split in splits:
            needed.append((coco.annotation_path(root, split), coco.EXPECTED_JSON, os.path.isfile))
            needed.append((coco.image_dir(root, split), f"the {split}2017 images", os.path.isdir))
    missing = [f"missing {path}: expected {what}" for path, what, ok in needed if not ok(path)]
    return missing + problems


def verify(
    name: str,
    root: str | os.PathLike,
    full: bool = False,
    *,
    splits: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[str]:
    """Check a dataset root and list what is missing or malformed.

    Checks the layout (every missing file or folder, with what it should hold), then builds each
    split with ``on_bad_box="error"``, which parses and cross-checks every annotation and
    validates every box; if boxes are bad, the split is built again with ``on_bad_box="skip"``
    to count them all. With ``full``, every image (and CUB mask) is also decoded.

    Args:
        name: ``"cub"``, ``"ilsvrc"`` or ``"coco"``.
        root: the dataset root.
        full: decode every image too (slow on the full datasets).
        splits: the splits to check; all by default (:data:`VERIFY_SPLITS`).
        log: called with one line per fact found (counts of images, classes, boxes); e.g.
            ``print``.

    Returns:
        The problems, one string each; empty when the root is fine.

    Raises:
        ValueError: an unknown dataset name or split.
    """
    if name not in VERIFY_SPLITS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(VERIFY_SPLITS)}")
    splits = tuple(splits or VERIFY_SPLITS[name])
    for split in splits:
        check_split(split, VERIFY_SPLITS[name], f"verify {name}")
    root = os.fspath(root)
    say = log or (lambda line: None)
    if not os.path.isdir(root):
        return [f"missing {root}: expected the {name} dataset root"]
    problems = _layout_problems(name, root, splits)
    if problems:
        return problems
    for split in splits:
        try:
            dataset = get_dataset(name, root, split)
        except BadBoxError as error:
            problems.append(str(error))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DatasetWarning)
                try:
                    dataset = get_dataset(name, root, split, on_bad_box="skip")
                except DatasetFormatError as other:
                    problems.append(str(other))
                    continue
            problems.append(
                f"{name} {split}: {dataset.num_boxes_skipped} bad boxes in all (outside the image "
                "or without area)"
            )
        except DatasetFormatError as error:
            problems.append(str(error))
            continue
        say(repr(dataset))
        if len(dataset) == 0:
            problems.append(f"{name} {split}: no images; expected at least one ({dataset!r})")
            continue
        if full:
            for index in range(len(dataset)):
                try:
                    dataset[index]
                except DatasetFormatError as error:
                    problems.append(str(error))
            say(f"{name} {split}: decoded {len(dataset)} images")
    return problems
