"""MS COCO 2017 through pycocotools: detection samples and the object-crop classification set.

Layout of ``root``::

    annotations/instances_train2017.json
    annotations/instances_val2017.json
    train2017/<12-digit id>.jpg
    val2017/<12-digit id>.jpg

Classes are the ``categories`` of the JSON file sorted by ``id``; label ``i`` is the ``i``-th of
them (COCO 2017 has 80 categories with ids 1..90 and gaps), so labels are contiguous and 0-based.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from wsolkit.data.common import (
    BoxChecker,
    DatasetFormatError,
    annotation_fingerprint,
    apply_transform,
    boxes_array,
    check_split,
    load_image,
    require_dir,
    require_file,
    xywh_to_xyxy,
)

SPLITS = ("train", "val")
EXPECTED_JSON = (
    'COCO instances JSON: {"images": [{"id", "file_name", "width", "height"}, ...], '
    '"annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "iscrowd", '
    '"segmentation"}, ...], "categories": [{"id", "name"}, ...]}'
)


def annotation_path(root: str, split: str) -> str:
    """``root/annotations/instances_<split>2017.json``."""
    return os.path.join(root, "annotations", f"instances_{split}2017.json")


def image_dir(root: str, split: str) -> str:
    """``root/<split>2017``."""
    return os.path.join(root, f"{split}2017")


def load_coco(root: str, split: str) -> tuple[COCO, str, str]:
    """Load and check the annotation file of one split.

    Args:
        root: the COCO root (module docstring).
        split: ``"train"`` or ``"val"``.

    Returns:
        ``(coco, annotation path, image folder)``.

    Raises:
        DatasetFormatError: a missing file or folder, invalid JSON, missing keys, or an
            annotation whose image or category is not listed.
    """
    path = require_file(annotation_path(root, split), EXPECTED_JSON)
    folder = require_dir(image_dir(root, split), f"the {split}2017 images, <file_name> per image")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(path)
    except json.JSONDecodeError as error:
        raise DatasetFormatError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg}); expected {EXPECTED_JSON}"
        ) from None
    except (KeyError, TypeError, AssertionError) as error:
        raise DatasetFormatError(
            f"{path}: malformed annotation file ({type(error).__name__}: {error}); "
            f"expected {EXPECTED_JSON}"
        ) from None
    for key in ("images", "annotations", "categories"):
        if key not in coco.dataset:
            raise DatasetFormatError(f"{path}: no {key!r} list; expected {EXPECTED_JSON}")
    for ann in coco.dataset["annotations"]:
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
                raise DatasetFormatError(
                    f"{path}: annotation {ann.get('id', '?')} has no {key!r}; "
                    f"expected {EXPECTED_JSON}"
                )
        if ann["image_id"] not in coco.imgs:
            raise DatasetFormatError(
                f"{path}: annotation {ann['id']} refers to image_id {ann['image_id']}, which is "
                "not in 'images'; expected the id of a listed image"
            )
        if ann["category_id"] not in coco.cats:
            raise DatasetFormatError(
                f"{path}: annotation {ann['id']} has category_id {ann['category_id']}, out of "
                f"range; expected one of the {len(coco.cats)} ids in 'categories'"
            )
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise DatasetFormatError(
                f"{path}: annotation {ann['id']} has bbox {bbox!r}; expected [x, y, w, h] numbers"
            )
    for image in coco.dataset["images"]:
        for key in ("id", "file_name", "width", "height"):
            if key not in image:
                raise DatasetFormatError(
                    f"{path}: image {image.get('id', '?')} has no {key!r}; expected {EXPECTED_JSON}"
                )
    return coco, path, folder


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _COCOBase(Dataset):
    """Class bookkeeping shared by both COCO datasets."""

    def _init_classes(self, coco: COCO) -> None:
        self.category_ids: list[int] = sorted(coco.cats)
        self.cat_id_to_index: dict[int, int] = {c: i for i, c in enumerate(self.category_ids)}
        self.class_names: list[str] = [coco.cats[c]["name"] for c in self.category_ids]
        self.num_classes = len(self.category_ids)

    def _image_path(self, image: dict[str, Any]) -> str:
        path = os.path.join(self.image_dir, image["file_name"])
        if not os.path.isfile(path):
            raise DatasetFormatError(
                f"{path}: image file not found (image id {image['id']} of {self.annotation_path}); "
                "check that the images were extracted completely"
            )
        return path


class COCODetection(_COCOBase):
    """COCO 2017 detection samples: every instance's box and class, masks on request.

    Args:
        root: the COCO root (module docstring).
        split: ``"train"`` or ``"val"``.
        transform: callable on the whole sample dict; boxes (``"boxes"``) and masks
            (``"masks"``) move with the image. ``None`` returns PIL images.
        with_masks: add ``"masks"``, ``(K, H, W)`` uint8 from ``annToMask`` (crowd RLEs included).
        on_bad_box: ``"error"``, ``"clip"`` or ``"skip"`` (see :class:`wsolkit.data.BoxChecker`);
            a skipped box drops its whole instance.

    Attributes:
        category_ids: sorted COCO category ids; ``labels`` index this list.
        cat_id_to_index: ``{category id: label}``.
        class_names, num_classes: names and count of the categories.
        image_ids: COCO image ids (ints) in ascending order; every listed image is kept, with
            ``K = 0`` instances when it has none.
        num_boxes_clipped, num_boxes_skipped: what ``on_bad_box`` did.

    A sample is ``{"image", "boxes": (K, 4) float32 xyxy, "labels": (K,) int64,
    "category_ids": (K,) int64, "iscrowd": (K,) bool, "annotation_ids": (K,) int64,
    "masks": (K, H, W) uint8 if with_masks, "image_id": str, "path", "orig_size": (H, W)}``.
    Crowd instances are kept and flagged by ``"iscrowd"``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        with_masks: bool = False,
        on_bad_box: str = "error",
    ):
        check_split(split, SPLITS, "COCODetection")
        self.root = os.fspath(root)
        self.split = split
        self.transform = transform
        self.with_masks = with_masks
        self.coco, self.annotation_path, self.image_dir = load_coco(self.root, split)
        self._init_classes(self.coco)
        checker = BoxChecker(on_bad_box, f"COCO {split}2017")
        self.image_ids: list[int] = sorted(self.coco.imgs)
        self.paths: list[str] = []
        self.boxes: list[np.ndarray] = []
        self._anns: list[list[dict[str, Any]]] = []
        for image_id in self.image_ids:
            image = self.coco.imgs[image_id]
            path = self._image_path(image)
            anns = sorted(self.coco.imgToAnns[image_id], key=lambda a: a["id"])
            rows = boxes_array([xywh_to_xyxy(*a["bbox"]) for a in anns])
            sources = [f"{self.annotation_path} (annotation {a['id']})" for a in anns]
            boxes, kept = checker(
                rows, sources, (image["height"], image["width"]), path, required=False
            )
            self.paths.append(path)
            self.boxes.append(boxes)
            self._anns.append([anns[k] for k in kept])
        checker.finish()
        self.num_boxes_clipped = checker.num_clipped
        self.num_boxes_skipped = checker.num_skipped

    def __len__(self) -> int:
        return len(self.image_ids)

    def annotation_fingerprint(self) -> str:
        """What defines this split, hashed: image files, image ids, boxes and their classes."""
        labels = [np.asarray([a["category_id"] for a in anns], dtype=np.int64) for anns in self._anns]
        return annotation_fingerprint(self.root, self.paths, np.asarray(self.image_ids, dtype=np.int64),
                                      self.boxes, labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = load_image(self.paths[index])
        info = self.coco.imgs[self.image_ids[index]]
        if (image.height, image.width) != (info["height"], info["width"]):
            raise DatasetFormatError(
                f"{self.paths[index]}: image is {image.width}x{image.height} but "
                f"{self.annotation_path} says {info['width']}x{info['height']} (image id "
                f"{info['id']}); expected the annotated size"
            )
        anns = self._anns[index]
        sample: dict[str, Any] = {
            "image": image,
            "boxes": torch.tensor(self.boxes[index]),
            "labels": torch.tensor(
                [self.cat_id_to_index[a["category_id"]] for a in anns], dtype=torch.int64
            ),
            "category_ids": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "iscrowd": torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool),
            "annotation_ids": torch.tensor([a["id"] for a in anns], dtype=torch.int64),
            "image_id": str(self.image_ids[index]),
            "path": self.paths[index],
            "orig_size": (image.height, image.width),
        }
        if self.with_masks:
            masks = np.zeros((len(anns), image.height, image.width), dtype=np.uint8)
            with warnings.catch_warnings():
                # pycocotools' compiled decoder predates NumPy 2's __array__(copy=...) protocol
                # and triggers this warning on every call; the masks it returns are correct.
                warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
                for k, ann in enumerate(anns):
                    masks[k] = self.coco.annToMask(ann)
            sample["masks"] = torch.from_numpy(masks)
        return apply_transform(sample, self.transform, mask_keys=("masks",))

    def __repr__(self) -> str:
        return (
            f"COCODetection(root={self.root!r}, split={self.split!r}: {len(self)} images, "
            f"{self.num_classes} classes, {sum(map(len, self.boxes))} instances)"
        )


class COCOObjectCrops(_COCOBase):
    """Object-crop classification on COCO (Barz & Denzler, VISAPP 2022).

    One sample per non-crowd instance: the image cropped to the instance's box, rounded to
    integer pixels (halves up) and clipped to the image; the label is the instance's class.
    Instances smaller than ``min_size`` pixels in both dimensions (``w < min_size and
    h < min_size``, on the annotated box) are skipped, and so are boxes that round to no area;
    both are counted, as are the crowd instances left out.

    Args:
        root: the COCO root.
        split: ``"train"`` or ``"val"``.
        min_size: the size threshold in pixels.
        transform: callable on the whole sample dict (the crop's box moves with it).
        on_bad_box: ``"error"``, ``"clip"`` or ``"skip"``, applied before cropping.

    Attributes:
        category_ids, cat_id_to_index, class_names, num_classes: as :class:`COCODetection`.
        crops: ``N`` int64 arrays ``[x1, y1, x2, y2]`` in the source image.
        labels: ``(N,)`` int64.
        annotation_ids, source_image_ids: per crop, the COCO ids.
        num_instances: all instances in the annotation file.
        num_crowd: crowd instances, not used.
        num_skipped_small: instances skipped by ``min_size``.
        num_skipped_empty: instances whose rounded box has no area.
        num_boxes_clipped, num_boxes_skipped: what ``on_bad_box`` did.

    A sample is ``{"image": the crop, "label", "boxes": (1, 4) float32, the whole crop
    [0, 0, w, h], "crop_box": (4,) int64 in the source image, "annotation_id": int,
    "image_id": str (source image), "path", "orig_size": (h, w) of the crop}``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        min_size: int = 32,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        on_bad_box: str = "error",
    ):
        check_split(split, SPLITS, "COCOObjectCrops")
        self.root = os.fspath(root)
        self.split = split
        self.min_size = min_size
        self.transform = transform
        self.coco, self.annotation_path, self.image_dir = load_coco(self.root, split)
        self._init_classes(self.coco)
        checker = BoxChecker(on_bad_box, f"COCO {split}2017 crops")
        self.paths: list[str] = []
        self.crops: list[np.ndarray] = []
        labels: list[int] = []
        self.annotation_ids: list[int] = []
        self.source_image_ids: list[int] = []
        self.num_instances = len(self.coco.dataset["annotations"])
        self.num_crowd = self.num_skipped_small = self.num_skipped_empty = 0
        for image_id in sorted(self.coco.imgs):
            image = self.coco.imgs[image_id]
            anns = sorted(self.coco.imgToAnns[image_id], key=lambda a: a["id"])
            crowd = [bool(a.get("iscrowd", 0)) for a in anns]
            self.num_crowd += sum(crowd)
            anns = [a for a, c in zip(anns, crowd) if not c]
            if not anns:
                continue
            path = self._image_path(image)
            rows = boxes_array([xywh_to_xyxy(*a["bbox"]) for a in anns])
            sources = [f"{self.annotation_path} (annotation {a['id']})" for a in anns]
            size = (image["height"], image["width"])
            boxes, kept = checker(rows, sources, size, path, required=False)
            for box, k in zip(boxes, kept):
                _, _, w, h = anns[k]["bbox"]
                if w < min_size and h < min_size:
                    self.num_skipped_small += 1
                    continue
                crop = np.floor(box.astype(np.float64) + 0.5).astype(np.int64)
                crop[[0, 2]] = crop[[0, 2]].clip(0, size[1])
                crop[[1, 3]] = crop[[1, 3]].clip(0, size[0])
                if crop[2] <= crop[0] or crop[3] <= crop[1]:
                    self.num_skipped_empty += 1
                    continue
                self.paths.append(path)
                self.crops.append(crop)
                labels.append(self.cat_id_to_index[anns[k]["category_id"]])
                self.annotation_ids.append(anns[k]["id"])
                self.source_image_ids.append(image_id)
        checker.finish()
        self.labels = np.array(labels, dtype=np.int64)
        self.num_boxes_clipped = checker.num_clipped
        self.num_boxes_skipped = checker.num_skipped

    def summary(self) -> str:
        """One paragraph: crops made and every instance not used, with the reason."""
        return (
            f"COCO {self.split}2017 object crops: {len(self)} crops of {self.num_classes} classes "
            f"from {self.num_instances} instances; not used: {self.num_crowd} crowd instances, "
            f"{self.num_skipped_small} smaller than {self.min_size} px in both dimensions, "
            f"{self.num_skipped_empty} with no area after rounding, {self.num_boxes_skipped} "
            f"bad boxes skipped (on_bad_box); {self.num_boxes_clipped} boxes clipped"
        )

    def __len__(self) -> int:
        return len(self.crops)

    def annotation_fingerprint(self) -> str:
        """What defines this set of crops, hashed: image files, crops, labels, annotation ids."""
        return annotation_fingerprint(self.root, self.paths, self.crops, self.labels,
                                      np.asarray(self.annotation_ids, dtype=np.int64))

    def __getitem__(self, index: int) -> dict[str, Any]:
        x1, y1, x2, y2 = (int(v) for v in self.crops[index])
        image = load_image(self.paths[index]).crop((x1, y1, x2, y2))
        sample: dict[str, Any] = {
            "image": image,
            "label": int(self.labels[index]),
            "boxes": torch.tensor([[0.0, 0.0, x2 - x1, y2 - y1]], dtype=torch.float32),
            "crop_box": torch.tensor(self.crops[index]),
            "annotation_id": self.annotation_ids[index],
            "image_id": str(self.source_image_ids[index]),
            "path": self.paths[index],
            "orig_size": (y2 - y1, x2 - x1),
        }
        return apply_transform(sample, self.transform)

    def __repr__(self) -> str:
        return (
            f"COCOObjectCrops(root={self.root!r}, split={self.split!r}, "
            f"min_size={self.min_size}): {self.summary()}"
        )
