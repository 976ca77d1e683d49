"""CUB-200-2011 (Wah et al., 2011) in the layout of its official download.

Layout of ``root`` (the extracted ``CUB_200_2011/`` folder)::

    images.txt               "<image id> <class folder>/<file>.jpg"
    image_class_labels.txt   "<image id> <class id, 1-based>"
    train_test_split.txt     "<image id> <1 = train | 0 = test>"
    bounding_boxes.txt       "<image id> x y w h" (floats; several lines per id are all kept,
                             a repeated line is an error)
    classes.txt              "<class id> <class folder>"
    images/<class folder>/<file>.jpg
    segmentations/<class folder>/<file>.png    optional: the separate segmentation release
    part_boxes.txt           optional, not in the official release: "<image id> x y w h"
    val_images.txt           optional: "<image id>" per line, a validation subset of train

Splits. ``"test"`` is the official test split (``0`` in ``train_test_split.txt``). The official
train split is divided into ``"train"`` and ``"val"``: if ``val_images.txt`` exists its ids form
``"val"`` (each must be a train image); otherwise ``"val"`` holds ``val_per_class`` images of
every class, the ones whose ``sha256("<val_seed>:<image id>")`` hex digests sort first. That
choice depends only on the files and the seed (no random number generator whose stream could
change between library versions). ``"train"`` is the official train split without ``"val"``;
building it raises :class:`~wsolkit.data.common.EmptySplitError` when the hold-out leaves a class
without any train image (a small dataset with ``val_per_class`` or more train images per class
only), naming the largest ``val_per_class`` that fits.
This validation set is not the CUBV2 set of wsolevaluation (Choe et al., CVPR 2020), which
consists of extra images; put its ids in ``val_images.txt`` to use another subset.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from wsolkit.data.common import (
    AnnotatedImages,
    BoxChecker,
    DatasetFormatError,
    EmptySplitError,
    boxes_array,
    check_split,
    image_size,
    left_out_note,
    parse_number,
    read_fields,
    require_dir,
    require_file,
    xywh_to_xyxy,
)

IMAGES = "images.txt"
LABELS = "image_class_labels.txt"
SPLIT = "train_test_split.txt"
BOXES = "bounding_boxes.txt"
CLASSES = "classes.txt"
PART_BOXES = "part_boxes.txt"
VAL_IMAGES = "val_images.txt"

#: The expected form of each file, quoted in errors and by ``python -m wsolkit.data verify``.
EXPECTED = {
    IMAGES: '"<image id> <class folder>/<file>.jpg" per line',
    LABELS: '"<image id> <class id, 1-based>" per line',
    SPLIT: '"<image id> <1 = train | 0 = test>" per line',
    BOXES: '"<image id> x y w h" per line (floats, pixels)',
    CLASSES: '"<class id> <class folder>" per line, ids 1, 2, ... in order',
    PART_BOXES: '"<image id> x y w h" per line (floats, pixels)',
    VAL_IMAGES: '"<image id>" per line, ids of train images (1 in train_test_split.txt)',
    "images": "a folder images/<class folder>/<file>.jpg as listed in images.txt",
}
REQUIRED_FILES = (IMAGES, LABELS, SPLIT, BOXES, CLASSES)


def _read_id_table(
    root: str, name: str, num_fields: int | tuple[int, int | None]
) -> dict[str, tuple[int, list[str]]]:
    """Read ``"<id> ..."`` lines into ``{id: (line number, other fields)}``, ids unique."""
    path = require_file(os.path.join(root, name), EXPECTED[name])
    table: dict[str, tuple[int, list[str]]] = {}
    for number, fields in read_fields(path, num_fields, EXPECTED[name]):
        if fields[0] in table:
            raise DatasetFormatError(
                f"{path}:{number}: image id {fields[0]} already appeared on line "
                f"{table[fields[0]][0]}; expected each id once"
            )
        table[fields[0]] = (number, fields[1:])
    return table


#: Per image id: the ``[x1, y1, x2, y2]`` rows, their ``"file:line"`` and the box as written.
Boxes = dict[str, tuple[list[list[float]], list[str], list[str]]]


def _read_boxes(path: str, known_ids: dict[str, Any]) -> Boxes:
    """Read ``"<id> x y w h"`` lines into ``{id: (xyxy rows, "file:line" sources, as written)}``.

    A line that repeats an earlier box of the same image (the same four numbers) is an error: the
    official files list each box once, so a repeat is an editing slip that would double the box.
    """
    boxes: Boxes = defaultdict(lambda: ([], [], []))
    seen: dict[tuple[str, tuple[float, ...]], int] = {}
    name = os.path.basename(path)
    for number, fields in read_fields(path, 5, EXPECTED[name]):
        where = f"{path}:{number}"
        if fields[0] not in known_ids:
            raise DatasetFormatError(
                f"{where}: image id {fields[0]} is not in {IMAGES}; expected ids of {IMAGES}"
            )
        x, y, w, h = [parse_number(f, float, where, EXPECTED[name]) for f in fields[1:]]
        key = (fields[0], (x, y, w, h))
        if key in seen:
            raise DatasetFormatError(
                f"{where}: box x y w h = {' '.join(fields[1:])} of image id {fields[0]} repeats "
                f"line {seen[key]}; expected each box once: remove the repeated line"
            )
        seen[key] = number
        rows, sources, written = boxes[fields[0]]
        rows.append(xywh_to_xyxy(x, y, w, h))
        sources.append(where)
        written.append(f"x y w h = {' '.join(fields[1:])}")
    return boxes


def _holdout_order(image_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def load_mask(path: str, size: tuple[int, int]) -> np.ndarray:
    """Read a CUB segmentation PNG and binarise it as wsolevaluation does.

    The segmentation release stores soft masks (values 0..255, some files in RGB or with alpha);
    they are converted to grayscale and foreground is ``value > 127``, i.e. above one half.

    Args:
        path: the PNG file.
        size: ``(H, W)`` of the image the mask belongs to.

    Returns:
        ``(H, W)`` uint8 array, 1 on the object.

    Raises:
        DatasetFormatError: the file is unreadable or its size differs from the image's.
    """
    try:
        with Image.open(path) as image:
            image.load()
            values = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetFormatError(
            f"{path}: cannot decode the segmentation ({error}); extract the CUB segmentation "
            "release again"
        ) from error
    if values.shape != tuple(size):
        raise DatasetFormatError(
            f"{path}: segmentation is {values.shape[1]}x{values.shape[0]} (W x H) but its image is "
            f"{size[1]}x{size[0]}; expected the same size"
        )
    return (values > 127).astype(np.uint8)


class CUBDataset(AnnotatedImages):
    """CUB-200-2011 with image-level labels, all ground-truth boxes and optional masks.

    All text files are parsed, cross-checked and the boxes validated against the image sizes
    (read from the image headers) when the dataset is built; images and masks are decoded per
    item.

    Args:
        root: the ``CUB_200_2011`` folder (layout in the module docstring).
        split: ``"train"``, ``"val"`` or ``"test"`` (see the module docstring for ``"val"``).
        transform: callable on the whole sample dict (e.g. :func:`wsolkit.data.train_transform`),
            so that boxes and masks move with the image; ``None`` returns PIL images.
        with_masks: ``True`` to require segmentations, ``False`` to ignore them, ``"auto"`` to
            load them when the segmentation folder exists.
        segmentation_root: folder holding ``<class folder>/<file>.png``; defaults to
            ``root/segmentations``.
        val_per_class: images per class held out from train for ``"val"`` when there is no
            ``val_images.txt``.
        val_seed: seed of that holdout.
        on_bad_box: ``"error"``, ``"clip"`` or ``"skip"`` (see :class:`wsolkit.data.BoxChecker`).
        on_degenerate_box: ``"error"`` (the official release has no box of zero width or
            height) or ``"skip"`` to leave such boxes out with a counted warning.

    Attributes:
        class_names: the ``C`` names from ``classes.txt``; labels index this list (0-based).
        num_classes: ``C``.
        image_ids: ids (strings, as in ``images.txt``) of the split, in file order.
        labels: ``(N,)`` int64 array of 0-based labels.
        sizes: ``N`` tuples ``(H, W)``.
        boxes: ``N`` arrays ``(K_i, 4)`` float32, ``[x1, y1, x2, y2]``.
        part_boxes: ``N`` arrays ``(P_i, 4)`` float32 if ``part_boxes.txt`` exists (``P_i`` may
            be 0), else ``None``.
        has_masks: whether samples carry a ``"mask"``.
        num_boxes_clipped, num_boxes_skipped, num_images_without_boxes: what ``on_bad_box``
            did (all 0 with ``"error"``).
        num_degenerate_boxes: boxes of zero width or height left out (``on_degenerate_box``).

    Raises:
        DatasetFormatError: a missing or malformed file, naming the file, the line and the
            expected form; an empty ``classes.txt`` or ``images.txt``; two image ids for one
            file; a repeated box line.
        EmptySplitError: ``"train"`` when the validation hold-out takes every train image of a
            class.
        BadBoxError: a box outside its image or without area (``on_bad_box="error"``).

    A sample is ``{"image", "label", "boxes", "mask" (if has_masks), "part_boxes" (if
    available), "image_id", "path", "orig_size"}``; see :mod:`wsolkit`.
    """

    SPLITS = ("train", "val", "test")

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        with_masks: bool | str = "auto",
        segmentation_root: str | os.PathLike | None = None,
        val_per_class: int = 5,
        val_seed: int = 0,
        on_bad_box: str = "error",
        on_degenerate_box: str = "error",
    ):
        check_split(split, self.SPLITS, "CUBDataset")
        if with_masks not in (True, False, "auto"):
            raise ValueError(f"with_masks={with_masks!r}; expected True, False or 'auto'")
        self.root = root = os.fspath(root)
        self.split = split
        self.transform = transform
        require_dir(root, "the extracted CUB_200_2011 folder with images.txt, classes.txt, ...")

        classes_path = require_file(os.path.join(root, CLASSES), EXPECTED[CLASSES])
        self.class_names: list[str] = []
        for number, fields in read_fields(classes_path, 2, EXPECTED[CLASSES]):
            if fields[0] != str(len(self.class_names) + 1):
                raise DatasetFormatError(
                    f"{classes_path}:{number}: class id {fields[0]}; expected "
                    f"{len(self.class_names) + 1} ({EXPECTED[CLASSES]})"
                )
            self.class_names.append(fields[1])
        if not self.class_names:
            raise DatasetFormatError(
                f"{classes_path}: no classes (the file is empty); expected {EXPECTED[CLASSES]}"
            )
        self.num_classes = len(self.class_names)

        images = _read_id_table(root, IMAGES, 2)
        images_path = os.path.join(root, IMAGES)
        if not images:
            raise DatasetFormatError(
                f"{images_path}: no images (the file is empty); expected {EXPECTED[IMAGES]}"
            )
        named: dict[str, tuple[str, int]] = {}
        for image_id, (number, (relpath,)) in images.items():
            if relpath in named:
                other, line = named[relpath]
                raise DatasetFormatError(
                    f"{images_path}:{number}: image id {image_id} names the file {relpath}, "
                    f"which image id {other} names on line {line}; expected one id per file"
                )
            named[relpath] = (image_id, number)
        labels = _read_id_table(root, LABELS, 2)
        official = _read_id_table(root, SPLIT, 2)
        for name, table in ((LABELS, labels), (SPLIT, official)):
            path = os.path.join(root, name)
            for image_id, (number, _) in table.items():
                if image_id not in images:
                    raise DatasetFormatError(
                        f"{path}:{number}: image id {image_id} is not in {IMAGES}; "
                        f"expected the ids of {IMAGES}"
                    )
            for image_id, (number, _) in images.items():
                if image_id not in table:
                    raise DatasetFormatError(
                        f"{path}: no line for image id {image_id} ({IMAGES}:{number}); "
                        f"expected {EXPECTED[name]} for every image"
                    )
        is_train: dict[str, bool] = {}
        for image_id, (number, (flag,)) in official.items():
            if flag not in ("0", "1"):
                raise DatasetFormatError(
                    f"{os.path.join(root, SPLIT)}:{number}: split flag {flag!r}; "
                    f"expected {EXPECTED[SPLIT]}"
                )
            is_train[image_id] = flag == "1"

        label_of: dict[str, int] = {}
        labels_path = os.path.join(root, LABELS)
        for image_id, (number, (text,)) in labels.items():
            where = f"{labels_path}:{number}"
            value = parse_number(text, int, where, EXPECTED[LABELS])
            if not 1 <= value <= self.num_classes:
                raise DatasetFormatError(
                    f"{where}: class id {value} is out of range; expected 1..{self.num_classes} "
                    f"as listed in {CLASSES}"
                )
            label_of[image_id] = value - 1
            folder = os.path.dirname(images[image_id][1][0])
            if folder and folder != self.class_names[value - 1]:
                raise DatasetFormatError(
                    f"{where}: image {images[image_id][1][0]} is in folder {folder!r} but its "
                    f"class id {value} is {self.class_names[value - 1]!r} in {CLASSES}; expected "
                    "the folder of each image to be its class"
                )

        val_ids = self._val_ids(root, images, is_train, label_of, val_per_class, val_seed)
        if split == "train":
            self._check_holdout(root, images, is_train, label_of, val_ids, val_per_class)
        if split == "test":
            ids = [i for i in images if not is_train[i]]
        elif split == "val":
            ids = [i for i in images if i in val_ids]
        else:
            ids = [i for i in images if is_train[i] and i not in val_ids]

        boxes = _read_boxes(require_file(os.path.join(root, BOXES), EXPECTED[BOXES]), images)
        part_path = os.path.join(root, PART_BOXES)
        parts = _read_boxes(part_path, images) if os.path.isfile(part_path) else None

        seg_root = os.fspath(segmentation_root or os.path.join(root, "segmentations"))
        if with_masks is True:
            require_dir(seg_root, "the CUB segmentation release: <class folder>/<file>.png")
        self.has_masks = with_masks is True or (with_masks == "auto" and os.path.isdir(seg_root))

        checker = BoxChecker(on_bad_box, f"CUB {split}", on_degenerate_box)
        images_dir = os.path.join(root, "images")
        require_dir(images_dir, EXPECTED["images"])
        self.image_ids: list[str] = ids
        self.paths: list[str] = []
        self.mask_paths: list[str] | None = [] if self.has_masks else None
        self.labels = np.array([label_of[i] for i in ids], dtype=np.int64)
        self.sizes: list[tuple[int, int]] = []
        self.boxes: list[np.ndarray] = []
        self.part_boxes: list[np.ndarray] | None = None if parts is None else []
        for image_id in ids:
            relpath = images[image_id][1][0]
            path = os.path.join(images_dir, relpath)
            size = image_size(path)
            if image_id not in boxes:
                raise DatasetFormatError(
                    f"{os.path.join(root, BOXES)}: no box for image id {image_id} ({relpath}); "
                    f"expected at least one line {EXPECTED[BOXES]} per image"
                )
            rows, sources, written = boxes[image_id]
            self.boxes.append(checker(boxes_array(rows), sources, size, path, written=written)[0])
            if parts is not None:
                rows, sources, written = parts.get(image_id, ([], [], []))
                self.part_boxes.append(
                    checker(
                        boxes_array(rows), sources, size, path, required=False, written=written
                    )[0]
                )
            if self.mask_paths is not None:
                mask_path = os.path.join(seg_root, os.path.splitext(relpath)[0] + ".png")
                require_file(mask_path, f"the segmentation of {path} (a PNG, values 0..255)")
                self.mask_paths.append(mask_path)
            self.paths.append(path)
            self.sizes.append(size)
        checker.finish()
        self.num_boxes_clipped = checker.num_clipped
        self.num_boxes_skipped = checker.num_skipped
        self.num_images_without_boxes = checker.num_images_without_boxes
        self.num_degenerate_boxes = checker.num_degenerate

    def _check_holdout(
        self,
        root: str,
        images: dict[str, tuple[int, list[str]]],
        is_train: dict[str, bool],
        label_of: dict[str, int],
        val_ids: set[str],
        val_per_class: int,
    ) -> None:
        """Refuse a train split that the validation hold-out leaves without some class."""
        train_per_class: dict[int, int] = defaultdict(int)
        kept_per_class: dict[int, int] = defaultdict(int)
        for image_id in images:
            if is_train[image_id]:
                train_per_class[label_of[image_id]] += 1
                kept_per_class[label_of[image_id]] += image_id not in val_ids
        emptied = sorted(c for c, n in train_per_class.items() if kept_per_class[c] == 0)
        if not emptied:
            return
        first = emptied[0]
        name = f"class {first + 1} ({self.class_names[first]})"
        others = f" and {len(emptied) - 1} other classes" if len(emptied) > 1 else ""
        val_path = os.path.join(root, VAL_IMAGES)
        if os.path.isfile(val_path):
            raise EmptySplitError(
                f"{val_path}: lists every train image of {name} "
                f"({train_per_class[first]} images){others}, so the train split has none of it; "
                "expected each class to keep at least one train image: list fewer images there"
            )
        fits = min(train_per_class.values()) - 1
        advice = (
            f"pass val_per_class={fits} (the most that leaves every class a train image)"
            if fits > 0
            else "pass val_per_class=0 (no validation split)"
        )
        raise EmptySplitError(
            f"CUB train at {root}: the validation hold-out (val_per_class={val_per_class} images "
            f"per class, no {VAL_IMAGES}) takes all {train_per_class[first]} train images of "
            f"{name}{others}, which leaves the train split without them; expected more "
            f"than {val_per_class} train images per class: {advice}, or list the validation "
            f"images in {val_path} ({EXPECTED[VAL_IMAGES]})"
        )

    @staticmethod
    def _val_ids(
        root: str,
        images: dict[str, tuple[int, list[str]]],
        is_train: dict[str, bool],
        label_of: dict[str, int],
        val_per_class: int,
        val_seed: int,
    ) -> set[str]:
        path = os.path.join(root, VAL_IMAGES)
        if os.path.isfile(path):
            val: dict[str, int] = {}
            for number, (image_id,) in read_fields(path, 1, EXPECTED[VAL_IMAGES]):
                where = f"{path}:{number}"
                if image_id not in images:
                    raise DatasetFormatError(
                        f"{where}: image id {image_id} is not in {IMAGES}; "
                        f"expected {EXPECTED[VAL_IMAGES]}"
                    )
                if not is_train[image_id]:
                    raise DatasetFormatError(
                        f"{where}: image id {image_id} is a test image in {SPLIT}; "
                        f"expected {EXPECTED[VAL_IMAGES]}"
                    )
                if image_id in val:
                    raise DatasetFormatError(
                        f"{where}: image id {image_id} already appeared on line {val[image_id]}; "
                        "expected each id once"
                    )
                val[image_id] = number
            return set(val)
        if val_per_class < 0:
            raise ValueError(f"val_per_class={val_per_class}; expected a count >= 0")
        by_class: dict[int, list[str]] = defaultdict(list)
        for image_id in images:
            if is_train[image_id]:
                by_class[label_of[image_id]].append(image_id)
        held: set[str] = set()
        for members in by_class.values():
            members.sort(key=lambda i: _holdout_order(i, val_seed))
            held.update(members[:val_per_class])
        return held

    box_keys = ("boxes", "part_boxes")

    def _orig_size(self, index: int, image) -> tuple[int, int]:
        return self.sizes[index]

    def _extra_fields(self, index: int) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.part_boxes is not None:
            extra["part_boxes"] = torch.tensor(self.part_boxes[index])
        if self.mask_paths is not None:
            extra["mask"] = torch.from_numpy(load_mask(self.mask_paths[index], self.sizes[index]))
        return extra

    def __repr__(self) -> str:
        return (
            f"CUBDataset(root={self.root!r}, split={self.split!r}: {len(self)} images, "
            f"{self.num_classes} classes, {sum(map(len, self.boxes))} boxes, "
            f"masks={self.has_masks}{left_out_note(self)})"
        )
