"""OpenImages30k (Choe et al., CVPR 2020): wsolevaluation's third dataset, in the layout of its
download, with instance masks and ignore regions for PxAP.

The reference's two archives unpack into a checkout folder::

    dataset/OpenImages/                    the root
        train/<class>/<image>.jpg
        val/<class>/<image>.jpg
        val/<class>/<image>_m<class>_<instance>.png   one per instance: 0 background, 255 object
        val/<class>/<image>_ignore.png                 255 where pixels are left out of PxAP
        test/...                                       as val
    metadata/OpenImages/<split>/           the annotation, in wsolevaluation's metadata form
        image_ids.txt      "<split>/<class>/<image>.jpg"
        class_labels.txt   "<image id>,<class index>"
        localization.txt   val and test: "<image id>,<mask path>,<ignore path>" per instance,
                           the ignore path on an image's first line only (paths from the root)

There is no ``image_sizes.txt`` and no box: OpenImages30k is scored by PxAP alone. The metadata
folder is ``<root>/metadata/<split>`` or, in a reference checkout,
``<root>/../../metadata/OpenImages/<split>``; ``metadata_root`` names another folder that holds
the split folders.

A sample's ``"mask"`` is 1 on any instance of the image's class and ``"ignore"`` 1 on the ignore
region outside them, both ``(H, W)`` uint8 at the image's size (val and test). A mask pixel counts
as foreground when it is above 0, the reference's ``> 0.5`` on the 0..255 values; a mask at another
size than its image is resized to it with OpenCV's nearest-neighbour rule, and the loader counts
those (:class:`DatasetWarning`). The evaluator (:mod:`wsolkit.evaluation.folder`) reads the mask
files itself, straight to the evaluation size, as the reference does.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from wsolkit.data.common import (
    AnnotatedImages,
    DatasetFormatError,
    DatasetWarning,
    check_split,
    image_size,
    require_dir,
)

__all__ = ["EXPECTED_METADATA", "OpenImagesDataset", "find_metadata", "load_instance_mask"]

SPLITS = ("train", "val", "test")

#: What a metadata folder holds, for messages.
EXPECTED_METADATA = ("a wsolevaluation metadata folder: image_ids.txt, class_labels.txt and, for "
                     "val and test, localization.txt")


def find_metadata(root: str | os.PathLike, split: str,
                  metadata_root: str | os.PathLike | None = None) -> str:
    """The metadata folder of ``split``: ``<metadata_root>/<split>``, else the first of
    ``<root>/metadata/<split>`` and ``<root>/../../metadata/OpenImages/<split>`` that exists.

    Raises:
        DatasetFormatError: none exists (the message names every place looked at).
    """
    root = os.path.abspath(os.fspath(root))
    if metadata_root is not None:
        candidates = [os.path.join(os.fspath(metadata_root), split)]
    else:
        checkout = os.path.dirname(os.path.dirname(root))
        candidates = [os.path.join(root, "metadata", split),
                      os.path.join(checkout, "metadata", "OpenImages", split)]
    for folder in candidates:
        if os.path.isdir(folder):
            return folder
    raise DatasetFormatError(
        f"OpenImages {split} at {root}: no metadata folder at {' or '.join(candidates)}; "
        f"expected {EXPECTED_METADATA} (wsolevaluation's metadata/OpenImages/{split}); pass "
        "metadata_root= for the folder that holds the split folders")


def load_instance_mask(path: str) -> np.ndarray:
    """One mask PNG as ``(H, W)`` bool, foreground where the value is above 0.

    Raises:
        DatasetFormatError: the file is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as image:
            image.load()
            values = np.asarray(image.convert("L"))
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: mask file not found; expected the PNG that "
                                 "localization.txt names, extract the annotations again") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetFormatError(f"{path}: cannot decode the mask ({error}); extract the "
                                 "OpenImages annotations again") from error
    return values > 0


def _at_size(mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """``mask`` at ``(H, W)`` (OpenCV's nearest neighbour), and whether it had to be resized."""
    if mask.shape == tuple(size):
        return mask, False
    import cv2

    resized = cv2.resize(mask.astype(np.uint8), (size[1], size[0]),
                         interpolation=cv2.INTER_NEAREST)
    return resized.astype(bool), True


class OpenImagesDataset(AnnotatedImages):
    """One split of OpenImages30k.

    Args:
        root: the ``dataset/OpenImages`` folder of the download.
        split: ``"train"``, ``"val"`` or ``"test"``.
        transform: a whole-sample transform (masks move with the image).
        metadata_root: the folder holding ``train/``, ``val/``, ``test/`` metadata folders
            (default: found beside the root, :func:`find_metadata`).
        with_masks: ``"auto"`` (val and test), ``True`` (an error for train) or ``False``.

    Raises:
        DatasetFormatError: no metadata folder, a malformed metadata line, an image or mask file
            that is missing, or a class folder whose images carry different labels.
    """

    mask_keys = ("mask", "ignore")

    def __init__(self, root: str | os.PathLike, split: str = "val", transform=None, *,
                 metadata_root: str | os.PathLike | None = None,
                 with_masks: bool | str = "auto"):
        from wsolkit.data.metadata import MetadataError, read_metadata

        check_split(split, SPLITS, "OpenImages")
        if with_masks not in (True, False, "auto"):
            raise ValueError(f"with_masks={with_masks!r}; expected True, False or 'auto'")
        if with_masks is True and split == "train":
            raise ValueError("OpenImages train has no masks (wsolevaluation's training split "
                             "carries class labels only); use with_masks='auto' or False")
        self.root = os.fspath(root)
        self.split = split
        self.transform = transform
        require_dir(self.root, "the dataset/OpenImages folder of wsolevaluation's download "
                    "(train/, val/, test/ with <class>/<image>.jpg)")
        self.metadata_dir = find_metadata(self.root, split, metadata_root)
        self.has_masks = with_masks is not False and split != "train"
        try:
            self.metadata = read_metadata(self.metadata_dir, localization=self.has_masks)
        except MetadataError as error:
            raise DatasetFormatError(str(error)) from None
        self.image_ids = list(self.metadata.image_ids)
        self.labels = np.array([self.metadata.labels[i] for i in self.image_ids], dtype=np.int64)
        self.paths = [os.path.join(self.root, *i.split("/")) for i in self.image_ids]
        self.boxes = [np.zeros((0, 4), dtype=np.float32) for _ in self.image_ids]
        self.class_names = self._class_folders()
        self.num_classes = len(self.class_names)
        missing = [p for p in self.paths if not os.path.isfile(p)]
        if missing:
            raise DatasetFormatError(
                f"{missing[0]}: image file not found ({len(missing)} of the {len(self.paths)} "
                f"images of {self.metadata_dir}/image_ids.txt are missing); expected "
                f"<root>/<image id>, extract the OpenImages images into {self.root}")
        self.mask_paths: list[tuple[list[str], str]] | None = None
        if self.has_masks:
            self.mask_paths = []
            for image_id in self.image_ids:
                instances, ignore = self.metadata.mask_paths[image_id]
                self.mask_paths.append(([os.path.join(self.root, *p.split("/"))
                                         for p in instances],
                                        os.path.join(self.root, *ignore.split("/"))
                                        if ignore else ""))
            files = [p for instances, ignore in self.mask_paths for p in instances + [ignore] if p]
            absent = [p for p in files if not os.path.isfile(p)]
            if absent:
                raise DatasetFormatError(
                    f"{absent[0]}: mask file not found ({len(absent)} of the {len(files)} mask "
                    f"files of {self.metadata_dir}/localization.txt are missing); expected the "
                    f"PNGs beside the images, extract the OpenImages annotations into {self.root}")
        self.sizes = [image_size(p) for p in self.paths]
        self.num_masks_resized = 0

    def _class_folders(self) -> list[str]:
        """Class names (the ``<class>`` folders) by label; one label per folder."""
        names: dict[int, str] = {}
        seen: dict[str, tuple[int, str]] = {}
        for image_id, label in zip(self.image_ids, self.labels.tolist()):
            parts = image_id.split("/")
            folder = parts[-2] if len(parts) >= 2 else ""
            if folder in seen and seen[folder][0] != label:
                raise DatasetFormatError(
                    f"{self.metadata_dir}/class_labels.txt: {image_id} has class {label} but "
                    f"{seen[folder][1]} in the same folder {folder!r} has class {seen[folder][0]}; "
                    "expected one class per class folder")
            seen.setdefault(folder, (label, image_id))
            names.setdefault(label, folder)
        count = max(names) + 1
        return [names.get(k, f"<class {k}: no image in this split>") for k in range(count)]

    def _orig_size(self, index: int, image) -> tuple[int, int]:
        return self.sizes[index]

    def masks(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(foreground, ignore)`` ``(H, W)`` uint8 at the image's size; ignore excludes the
        foreground, as the reference's combined mask does."""
        size = self.sizes[index]
        instances, ignore_path = self.mask_paths[index]
        resized = 0
        foreground = np.zeros(size, dtype=bool)
        for path in instances:
            mask, changed = _at_size(load_instance_mask(path), size)
            foreground |= mask
            resized += changed
        ignore = np.zeros(size, dtype=bool)
        if ignore_path:
            ignore, changed = _at_size(load_instance_mask(ignore_path), size)
            resized += changed
            ignore = ignore & ~foreground
        if resized:
            # Warned once per split; the count goes on (``verify`` prints the total).
            if not self.num_masks_resized:
                warnings.warn(DatasetWarning(
                    f"OpenImages {self.split}: {resized} mask file(s) of {self.image_ids[index]} "
                    f"are not {size[1]}x{size[0]} like the image and were resized to it "
                    "(nearest); num_masks_resized counts every such file"), stacklevel=3)
            self.num_masks_resized += resized
        return foreground.astype(np.uint8), ignore.astype(np.uint8)

    def _extra_fields(self, index: int) -> dict[str, Any]:
        if self.mask_paths is None:
            return {}
        foreground, ignore = self.masks(index)
        return {"mask": torch.from_numpy(foreground), "ignore": torch.from_numpy(ignore)}

    def __repr__(self) -> str:
        instances = sum(len(m[0]) for m in self.mask_paths) if self.mask_paths else 0
        return (f"OpenImagesDataset(root={self.root!r}, split={self.split!r}: {len(self)} images, "
                f"{self.num_classes} classes, {instances} instance masks, "
                f"masks={self.has_masks}, metadata={self.metadata_dir!r})")
