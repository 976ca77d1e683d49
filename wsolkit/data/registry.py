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

from wsolkit.data.common import (
    BadBoxError,
    DatasetFormatError,
    DatasetWarning,
    check_split,
    short_float,
)

__all__ = ["DATASETS", "VERIFY_SPLITS", "get_dataset", "verify"]


#: Dataset names of :func:`get_dataset`, mapped to ``(module, class)``; imported on first use.
DATASETS = {
    "cub": ("wsolkit.data.cub", "CUBDataset"),
    "ilsvrc": ("wsolkit.data.ilsvrc", "ILSVRCDataset"),
    "coco": ("wsolkit.data.coco", "COCODetection"),
    "coco_crops": ("wsolkit.data.coco", "COCOObjectCrops"),
    "openimages": ("wsolkit.data.openimages", "OpenImagesDataset"),
}


def get_dataset(name: str, root: str | os.PathLike, split: str, **kwargs: Any) -> Any:
    """Build a dataset by name.

    Args:
        name: ``"cub"``, ``"ilsvrc"``, ``"coco"``, ``"coco_crops"`` or ``"openimages"``.
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
    "openimages": ("train", "val", "test"),
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
            xml = ilsvrc.default_annotation_dir(root, layout, "val")
            csv = os.path.join(root, ilsvrc.VAL_CSV)
            if not os.path.isdir(xml) and not os.path.isfile(csv):
                problems.append(
                    f"missing {xml} or {csv}: expected validation boxes as "
                    f"{ilsvrc.EXPECTED['xml']} or {ilsvrc.EXPECTED[ilsvrc.VAL_CSV]}"
                )
    elif name == "openimages":
        from wsolkit.data import openimages

        for split in splits:
            needed.append((os.path.join(root, split), f"the {split} images as "
                           f"{split}/<class>/<image>.jpg", os.path.isdir))
            try:
                openimages.find_metadata(root, split)
            except DatasetFormatError as error:
                problems.append(str(error))
    else:
        from wsolkit.data import coco

        for split in splits:
            needed.append((coco.annotation_path(root, split), coco.EXPECTED_JSON, os.path.isfile))
            needed.append((coco.image_dir(root, split), f"the {split}2017 images", os.path.isdir))
    missing = [f"missing {path}: expected {what}" for path, what, ok in needed if not ok(path)]
    return missing + problems


#: Options :func:`verify` builds each dataset with, beyond the split.
VERIFY_OPTIONS = {"cub": {}, "ilsvrc": {}, "coco": {"with_masks": True}, "openimages": {}}


def _build(
    name: str,
    root: str,
    split: str,
    options: dict[str, Any],
    problems: list[str],
    say: Callable[[str], None],
) -> Any:
    """Build one split for :func:`verify`; ``None`` (and the reasons in ``problems``) if it fails.

    The warnings of the build (what the loader left out or read leniently, with counts) are
    passed to ``say``; if boxes are bad, the split is built again with ``on_bad_box="skip"`` to
    count them all.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetWarning)
        try:
            dataset = get_dataset(name, root, split, **options)
        except BadBoxError as error:
            problems.append(str(error))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DatasetWarning)
                try:
                    dataset = get_dataset(name, root, split, on_bad_box="skip", **options)
                except DatasetFormatError as other:
                    problems.append(str(other))
                    return None
            problems.append(
                f"{name} {split}: {dataset.num_boxes_skipped} bad boxes in all (outside the image "
                "or without area)"
            )
        except DatasetFormatError as error:
            problems.append(str(error))
            return None
    say(repr(dataset))
    for warning in caught:
        if issubclass(warning.category, DatasetWarning):
            say(f"warning: {warning.message}")
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return dataset


def _compare_val_sources(xml: Any, csv: Any) -> list[str]:
    """Where ILSVRC's ``LOC_val_solution.csv`` and the val XML files disagree (labels, boxes)."""
    def rows(boxes: Any) -> list[str]:
        # ILSVRC writes integer pixel coordinates: show 14, not 14.0.
        return [
            " ".join(short_float(v).removesuffix(".0") for v in box)
            for box in sorted(boxes.tolist())
        ]

    # Both builds list the same val images (each checks that every image has an annotation and
    # every annotation an image), so they align index by index.
    differ = [
        index
        for index in range(len(xml))
        if xml.labels[index] != csv.labels[index]
        or rows(xml.boxes[index]) != rows(csv.boxes[index])
    ]
    if not differ:
        return []
    k = differ[0]
    return [
        f"{os.path.join(csv.root, 'LOC_val_solution.csv')} and {xml.annotation_dir} disagree on "
        f"{len(differ)} val images, the first {xml.image_ids[k]}: {csv.wnids[csv.labels[k]]} "
        f"{'; '.join(rows(csv.boxes[k]))} in the CSV, {xml.wnids[xml.labels[k]]} "
        f"{'; '.join(rows(xml.boxes[k]))} in the XML (xmin ymin xmax ymax); expected the same "
        "boxes in both: download the one that is wrong again"
    ]


def _decode_all(
    dataset: Any, description: str, progress: bool, workers: int
) -> list[str]:
    """Decode every sample of ``dataset`` (images, masks) on ``workers`` threads.

    Decoding (PIL, pycocotools) releases the GIL for most of its time, so threads give most of a
    process pool's speed without copying the dataset. Problems come back in index order.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    def decode(index: int) -> str | None:
        try:
            dataset[index]
        except DatasetFormatError as error:
            return str(error)
        return None

    problems: list[str] = []
    chunk = 256 * workers  # bounded: 1.3 million futures at once would cost far more memory
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(dataset), desc=description, unit="img", disable=not progress, mininterval=1.0
    ) as bar:
        for start in range(0, len(dataset), chunk):
            for problem in pool.map(decode, range(start, min(start + chunk, len(dataset)))):
                if problem is not None:
                    problems.append(problem)
                bar.update()
    return problems


def verify(
    name: str,
    root: str | os.PathLike,
    full: bool = False,
    *,
    splits: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> list[str]:
    """Check a dataset root and list what is missing or malformed.

    Checks the layout (every missing file or folder, with what it should hold), then builds each
    split with ``on_bad_box="error"``, which parses and cross-checks every annotation and
    validates every box; if boxes are bad, the split is built again with ``on_bad_box="skip"``
    to count them all. COCO is built with its masks, so every segmentation is checked. For
    ILSVRC val, ``LOC_val_solution.csv`` is read and checked too when it sits beside the XML
    folder, and the two must agree. With ``full``, every image (and every CUB or COCO mask) is
    also decoded: this is what finds truncated or empty image files.

    What the loaders leave out by default (COCO boxes of zero width or height, polygons of
    fewer than 3 points, ILSVRC XML files whose ``<size>`` differs from the image) is not a
    problem; its counts are logged as ``warning: ...`` lines.

    Args:
        name: ``"cub"``, ``"ilsvrc"``, ``"coco"`` or ``"openimages"``.
        root: the dataset root.
        full: decode every image too (on ILSVRC's 1.33 million files this is long; with
            ``progress`` the bar shows the rate and the time left).
        splits: the splits to check; all by default (:data:`VERIFY_SPLITS`).
        log: called with one line per fact found (counts of images, classes, boxes, what was
            left out); e.g. ``print``.
        progress: show a progress bar while decoding (``full``).
        workers: threads that decode; default ``min(8, os.cpu_count())``.

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
    workers = workers or min(8, os.cpu_count() or 1)
    if not os.path.isdir(root):
        return [f"missing {root}: expected the {name} dataset root"]
    problems = _layout_problems(name, root, splits)
    if problems:
        return problems
    for split in splits:
        dataset = _build(name, root, split, VERIFY_OPTIONS[name], problems, say)
        if name == "ilsvrc" and split == "val":
            from wsolkit.data import ilsvrc

            xml_dir = ilsvrc.default_annotation_dir(root, ilsvrc.detect_layout(root), split)
            if os.path.isdir(xml_dir) and os.path.isfile(os.path.join(root, ilsvrc.VAL_CSV)):
                csv = _build(name, root, split, {"val_source": "csv"}, problems, say)
                if dataset is not None and csv is not None:
                    problems.extend(_compare_val_sources(dataset, csv))
        if dataset is None:
            continue
        if len(dataset) == 0:
            problems.append(f"{name} {split}: no images; expected at least one ({dataset!r})")
            continue
        if full:
            problems.extend(_decode_all(dataset, f"{name} {split}", progress, workers))
            say(f"{name} {split}: decoded {len(dataset)} images")
            resized = getattr(dataset, "num_masks_resized", 0)
            if resized:
                say(f"warning: {name} {split}: {resized} mask file(s) at another size than their "
                    "image, resized to it (nearest)")
    # A fault in a file every split reads (classes.txt, say) is reported once.
    return list(dict.fromkeys(problems))
