"""MS COCO 2017 through pycocotools: detection samples and the object-crop classification set.

Layout of ``root``::

    annotations/instances_train2017.json
    annotations/instances_val2017.json
    train2017/<12-digit id>.jpg
    val2017/<12-digit id>.jpg

Classes are the ``categories`` of the JSON file sorted by ``id``; label ``i`` is the ``i``-th of
them (COCO 2017 has 80 categories with ids 1..90 and gaps), so labels are contiguous and 0-based.

The official release has a few boxes of zero width or height (annotation 918 of
``instances_train2017.json`` is ``[296.65, 388.33, 1.03, 0.0]``): by default
(``on_degenerate_box="skip"``) such instances are left out, counted in ``num_degenerate_boxes``
and in one :class:`~wsolkit.data.DatasetWarning`. A box that is malformed (not four numbers, a
negative size, outside the image) is an error.
"""

from __future__ import annotations

import codecs
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
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from wsolkit.data.common import (
    BoxChecker,
    DatasetFormatError,
    DatasetWarning,
    annotation_fingerprint,
    apply_transform,
    boxes_array,
    check_split,
    left_out_note,
    load_image,
    require_dir,
    require_file,
    xywh_to_xyxy,
)

SPLITS = ("train", "val")
EXPECTED_JSON = (
    'COCO instances JSON: {"images": [{"id", "file_name", "width", "height"}, ...], '
    '"annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "iscrowd", '
    '"segmentation"}, ...], "categories": [{"id", "name"}, ...]} with integer ids, each id once'
)
EXPECTED_SEGMENTATION = (
    'polygons [[x1, y1, x2, y2, x3, y3, ...], ...] (numbers, at least 3 points each) or an RLE '
    '{"size": [height, width], "counts": [...] or "..."} of the image\'s size'
)


def annotation_path(root: str, split: str) -> str:
    """``root/annotations/instances_<split>2017.json``."""
    return os.path.join(root, "annotations", f"instances_{split}2017.json")


def image_dir(root: str, split: str) -> str:
    """``root/<split>2017``."""
    return os.path.join(root, f"{split}2017")


def _written(value: Any) -> str:
    """A JSON value as the file writes it: ``139``, ``"139"`` (a string), ``[296.65, 0.0]``."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_json(path: str) -> Any:
    """``json.load`` whose failures name the file, the line and the column."""
    with open(path, "rb") as handle:
        has_bom = handle.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
    if has_bom:
        warnings.warn(
            f"{path}: starts with a UTF-8 byte-order mark (U+FEFF, added by some editors); it was "
            "ignored. Save the file as plain UTF-8 to silence this warning",
            DatasetWarning,
            stacklevel=4,
        )
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DatasetFormatError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg} at column {error.colno}); "
            f"expected {EXPECTED_JSON}"
        ) from None
    except UnicodeDecodeError as error:
        raise DatasetFormatError(
            f"{path}: not UTF-8 text ({error.reason}); expected {EXPECTED_JSON}"
        ) from None


def _check_document(document: Any, path: str) -> None:
    """Check the structure and the ids of a COCO instances file before pycocotools indexes it.

    pycocotools keys its indexes by id, so a repeated id silently replaces an earlier entry (the
    boxes of one image end up on another file): every repeat is an error here, naming both
    entries by their position in the file's lists.
    """
    if not isinstance(document, dict):
        raise DatasetFormatError(
            f"{path}: the top level is a JSON {type(document).__name__}; expected {EXPECTED_JSON}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise DatasetFormatError(f"{path}: no {key!r} list; expected {EXPECTED_JSON}")

    def entries(key: str, required: tuple[str, ...]):
        for index, entry in enumerate(document[key]):
            where = f"{path}: {key}[{index}]"
            if not isinstance(entry, dict):
                raise DatasetFormatError(f"{where} is {_written(entry)}; expected {EXPECTED_JSON}")
            for field in required:
                if field not in entry:
                    raise DatasetFormatError(f"{where} has no {field!r}; expected {EXPECTED_JSON}")
            if not _is_id(entry["id"]):
                raise DatasetFormatError(
                    f"{where} has id {_written(entry['id'])}; expected an integer id"
                )
            yield index, entry, where

    categories: dict[int, int] = {}
    for index, category, where in entries("categories", ("id", "name")):
        if category["id"] in categories:
            raise DatasetFormatError(
                f"{where} has id {category['id']}, as categories[{categories[category['id']]}] "
                "does; expected each category id once"
            )
        categories[category["id"]] = index
    images: dict[int, int] = {}
    files: dict[str, int] = {}
    for index, image, where in entries("images", ("id", "file_name", "width", "height")):
        if image["id"] in images:
            other = document["images"][images[image["id"]]]
            raise DatasetFormatError(
                f"{where} (file_name {_written(image['file_name'])}) has id {image['id']}, as "
                f"images[{images[image['id']]}] (file_name {_written(other['file_name'])}) does; "
                "expected each image id once (boxes are matched to images by id)"
            )
        images[image["id"]] = index
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            raise DatasetFormatError(
                f"{where} has file_name {_written(image['file_name'])}; expected a file name"
            )
        if image["file_name"] in files:
            other = files[image["file_name"]]
            raise DatasetFormatError(
                f"{where} (id {image['id']}) has file_name {_written(image['file_name'])}, as "
                f"images[{other}] (id {document['images'][other]['id']}) does; expected one "
                "entry per image file"
            )
        files[image["file_name"]] = index
        for field in ("width", "height"):
            if not _is_id(image[field]) or image[field] < 1:
                raise DatasetFormatError(
                    f"{where} (id {image['id']}) has {field} {_written(image[field])}; expected a "
                    "positive integer (pixels)"
                )
    annotations: dict[int, int] = {}
    for index, ann, where in entries("annotations", ("id", "image_id", "category_id", "bbox")):
        where = f"{path}: annotation {ann['id']} (annotations[{index}])"
        if ann["id"] in annotations:
            raise DatasetFormatError(
                f"{where}: id {ann['id']} also belongs to annotations[{annotations[ann['id']]}]; "
                "expected each annotation id once"
            )
        annotations[ann["id"]] = index
        for field, known, what in (
            ("image_id", images, "'images'"),
            ("category_id", categories, "'categories'"),
        ):
            value = ann[field]
            if not _is_id(value):
                raise DatasetFormatError(
                    f"{where} has {field} {_written(value)}, not an integer; expected the "
                    f"integer id of an entry of {what}"
                )
            if value not in known:
                raise DatasetFormatError(
                    f"{where} has {field} {value}, which is not in {what} ({len(known)} ids); "
                    f"expected the id of an entry of {what}"
                )
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise DatasetFormatError(
                f"{where} has bbox {_written(bbox)}; expected [x, y, w, h], four finite numbers"
            )
        if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd", 0), float):
            raise DatasetFormatError(
                f"{where} has iscrowd {_written(ann['iscrowd'])}; expected 0 or 1"
            )


def load_coco(root: str, split: str) -> tuple[COCO, str, str]:
    """Load and check the annotation file of one split.

    Args:
        root: the COCO root (module docstring).
        split: ``"train"`` or ``"val"``.

    Returns:
        ``(coco, annotation path, image folder)``.

    Raises:
        DatasetFormatError: a missing file or folder, invalid JSON, missing keys, an id that is
            not an integer or appears twice (images, annotations, categories), two images with
            one file name, or an annotation whose image or category is not listed. Values are
            quoted as the file writes them.
    """
    path = require_file(annotation_path(root, split), EXPECTED_JSON)
    folder = require_dir(image_dir(root, split), f"the {split}2017 images, <file_name> per image")
    document = _read_json(path)
    _check_document(document, path)
    coco = COCO()
    coco.dataset = document
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, path, folder


def _rle_string_runs(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``), or
    ``None`` when the string ends inside a number."""
    runs: list[int] = []
    position = 0
    while position < len(text):
        value = shift = 0
        more = True
        while more:
            if position == len(text):
                return None
            code = ord(text[position]) - 48
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def check_segmentation(ann: dict[str, Any], image: dict[str, Any], where: str) -> tuple[Any, int]:
    """Check an annotation's ``segmentation`` and keep what pycocotools can rasterise.

    Polygons of fewer than 3 points (fewer than 6 numbers, or an odd count) cannot be
    rasterised; they are left out and counted, as detectron2 does.

    Args:
        ann: the annotation.
        image: its entry of ``images`` (for ``height`` and ``width``).
        where: the annotation's place, quoted in errors.

    Returns:
        ``(segmentation, unusable)``: the polygons that can be rasterised (a list, perhaps
        empty) or the RLE dict; the number of polygons left out.

    Raises:
        DatasetFormatError: no ``segmentation``, or one that is neither polygons nor an RLE of
            the image's size.
    """
    if "segmentation" not in ann:
        raise DatasetFormatError(
            f"{where} has no 'segmentation'; expected {EXPECTED_SEGMENTATION}, or build the "
            "dataset with with_masks=False"
        )
    segmentation = ann["segmentation"]
    if isinstance(segmentation, list):
        usable = []
        for k, polygon in enumerate(segmentation):
            numeric = isinstance(polygon, list) and all(_is_number(v) for v in polygon)
            if not numeric:
                raise DatasetFormatError(
                    f"{where}: polygon {k} of its segmentation is {_written(polygon)}; expected "
                    f"{EXPECTED_SEGMENTATION}"
                )
            if len(polygon) >= 6 and len(polygon) % 2 == 0:
                usable.append(polygon)
        return usable, len(segmentation) - len(usable)
    if isinstance(segmentation, dict) and set(segmentation) >= {"size", "counts"}:
        size, counts = segmentation["size"], segmentation["counts"]
        if size != [image["height"], image["width"]]:
            raise DatasetFormatError(
                f"{where}: its RLE segmentation has size {_written(size)} but image "
                f"{image['id']} is [{image['height']}, {image['width']}] ([height, width]); "
                f"expected {EXPECTED_SEGMENTATION}"
            )
        runs = _rle_string_runs(counts) if isinstance(counts, str) else counts
        # pycocotools fills a mask from its runs without checking them: runs that do not cover
        # the image exactly leave pixels of uninitialised memory.
        if (
            not isinstance(runs, list)
            or not all(_is_id(c) and c >= 0 for c in runs)
            or sum(runs) != size[0] * size[1]
        ):
            raise DatasetFormatError(
                f"{where}: its RLE counts {_written(counts)} are not run lengths (integers "
                f">= 0) summing to {size[0]} x {size[1]} = {size[0] * size[1]} pixels; "
                f"expected {EXPECTED_SEGMENTATION}"
            )
        return segmentation, 0
    raise DatasetFormatError(
        f"{where} has segmentation {_written(segmentation)}; expected {EXPECTED_SEGMENTATION}"
    )


def decode_segmentation(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """Rasterise a segmentation checked by :func:`check_segmentation`.

    Returns:
        ``(height, width)`` uint8, 1 on the object (all 0 when no polygon was usable).

    Raises:
        DatasetFormatError: pycocotools cannot decode it (a corrupt compressed RLE string).
    """
    if isinstance(segmentation, list) and not segmentation:
        return np.zeros((height, width), dtype=np.uint8)
    try:
        with warnings.catch_warnings():
            # pycocotools' compiled decoder predates NumPy 2's __array__(copy=...) protocol
            # and triggers this warning on every call; the masks it returns are correct.
            warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
            if isinstance(segmentation, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation["counts"], list):
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            mask = mask_utils.decode(rle)
    except Exception as error:  # pycocotools raises bare Exception, TypeError, ValueError ...
        raise DatasetFormatError(
            f"{where}: cannot decode its segmentation ({type(error).__name__}: {error}); "
            f"expected {EXPECTED_SEGMENTATION}"
        ) from None
    if mask.shape != (height, width):
        raise DatasetFormatError(
            f"{where}: its segmentation decodes to {mask.shape[1]}x{mask.shape[0]} (W x H), not "
            f"the image's {width}x{height}; expected {EXPECTED_SEGMENTATION}"
        )
    return np.ascontiguousarray(mask, dtype=np.uint8)


def _check_boxes(
    checker: BoxChecker, anns: list[dict[str, Any]], image: dict[str, Any], path: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Run the checker on the instances of one image; returns ``(boxes kept, their indices)``."""
    rows = boxes_array([xywh_to_xyxy(*a["bbox"]) for a in anns])
    sources = [f"{source} (annotation {a['id']})" for a in anns]
    written = [f"bbox {_written(a['bbox'])}" for a in anns]
    size = (image["height"], image["width"])
    return checker(rows, sources, size, path, required=False, written=written)


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
        with_masks: add ``"masks"``, ``(K, H, W)`` uint8 rasterised by pycocotools (crowd RLEs
            included); every segmentation is checked when the dataset is built
            (:func:`check_segmentation`).
        on_bad_box: ``"error"``, ``"clip"`` or ``"skip"`` (see :class:`wsolkit.data.BoxChecker`);
            a skipped box drops its whole instance.
        on_degenerate_box: ``"skip"`` (default; the official release has such boxes) leaves
            instances whose box has zero width or height out, with a counted warning;
            ``"error"`` treats them as bad boxes.

    Attributes:
        category_ids: sorted COCO category ids; ``labels`` index this list.
        cat_id_to_index: ``{category id: label}``.
        class_names, num_classes: names and count of the categories.
        image_ids: COCO image ids (ints) in ascending order; every listed image is kept, with
            ``K = 0`` instances when it has none.
        num_boxes_clipped, num_boxes_skipped: what ``on_bad_box`` did.
        num_degenerate_boxes: instances left out for a box of zero width or height.
        num_unusable_polygons: polygons of fewer than 3 points left out of the masks (with
            ``with_masks``; warned).
        num_instances_without_mask: instances kept whose segmentation had no usable polygon
            (their mask is all 0; with ``with_masks``; warned).

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
        on_degenerate_box: str = "skip",
    ):
        check_split(split, SPLITS, "COCODetection")
        self.root = os.fspath(root)
        self.split = split
        self.transform = transform
        self.with_masks = with_masks
        self.coco, self.annotation_path, self.image_dir = load_coco(self.root, split)
        self._init_classes(self.coco)
        checker = BoxChecker(on_bad_box, f"COCO {split}2017", on_degenerate_box)
        self.image_ids: list[int] = sorted(self.coco.imgs)
        self.paths: list[str] = []
        self.boxes: list[np.ndarray] = []
        self._anns: list[list[dict[str, Any]]] = []
        self._segmentations: list[list[Any]] | None = [] if with_masks else None
        self.num_unusable_polygons = self.num_instances_without_mask = 0
        first_unusable = None
        for image_id in self.image_ids:
            image = self.coco.imgs[image_id]
            path = self._image_path(image)
            anns = sorted(self.coco.imgToAnns[image_id], key=lambda a: a["id"])
            boxes, kept = _check_boxes(checker, anns, image, path, self.annotation_path)
            self.paths.append(path)
            self.boxes.append(boxes)
            self._anns.append([anns[k] for k in kept])
            if self._segmentations is not None:
                segmentations = []
                for k in kept:
                    where = f"{self.annotation_path}: annotation {anns[k]['id']}"
                    segmentation, unusable = check_segmentation(anns[k], image, where)
                    self.num_unusable_polygons += unusable
                    if unusable and first_unusable is None:
                        first_unusable = where
                    self.num_instances_without_mask += segmentation == []
                    segmentations.append(segmentation)
                self._segmentations.append(segmentations)
        checker.finish()
        self.num_boxes_clipped = checker.num_clipped
        self.num_boxes_skipped = checker.num_skipped
        self.num_degenerate_boxes = checker.num_degenerate
        if self.num_unusable_polygons or self.num_instances_without_mask:
            warnings.warn(
                f"COCO {split}2017: left {self.num_unusable_polygons} polygons of fewer than 3 "
                f"points out of the masks (the first in {first_unusable}); "
                f"{self.num_instances_without_mask} instances have no usable polygon, so their "
                "mask is empty",
                DatasetWarning,
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.image_ids)

    def instances(self, index: int) -> list[dict[str, Any]]:
        """The annotations kept for image ``index`` (COCO's dicts, in the order of ``boxes``)."""
        return list(self._anns[index])

    def instance_masks(self, index: int) -> np.ndarray:
        """``(K, H, W)`` uint8 masks of image ``index``'s kept instances, without decoding the
        image (``with_masks`` only)."""
        if self._segmentations is None:
            raise ValueError("COCODetection was built without masks; pass with_masks=True")
        info = self.coco.imgs[self.image_ids[index]]
        masks = np.zeros((len(self._anns[index]), info["height"], info["width"]), dtype=np.uint8)
        for k, (ann, segmentation) in enumerate(zip(self._anns[index],
                                                    self._segmentations[index])):
            where = f"{self.annotation_path}: annotation {ann['id']}"
            masks[k] = decode_segmentation(segmentation, info["height"], info["width"], where)
        return masks

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
        if self._segmentations is not None:
            sample["masks"] = torch.from_numpy(self.instance_masks(index))
        return apply_transform(sample, self.transform, mask_keys=("masks",))

    def __repr__(self) -> str:
        return (
            f"COCODetection(root={self.root!r}, split={self.split!r}: {len(self)} images, "
            f"{self.num_classes} classes, {sum(map(len, self.boxes))} instances"
            f"{left_out_note(self)})"
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
        on_degenerate_box: ``"skip"`` (default) or ``"error"``, as :class:`COCODetection`.

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
        num_degenerate_boxes: instances whose box has zero width or height, left out.

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
        on_degenerate_box: str = "skip",
    ):
        check_split(split, SPLITS, "COCOObjectCrops")
        self.root = os.fspath(root)
        self.split = split
        self.min_size = min_size
        self.transform = transform
        self.coco, self.annotation_path, self.image_dir = load_coco(self.root, split)
        self._init_classes(self.coco)
        checker = BoxChecker(on_bad_box, f"COCO {split}2017 crops", on_degenerate_box)
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
            size = (image["height"], image["width"])
            boxes, kept = _check_boxes(checker, anns, image, path, self.annotation_path)
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
        self.num_degenerate_boxes = checker.num_degenerate

    def summary(self) -> str:
        """One paragraph: crops made and every instance not used, with the reason."""
        return (
            f"COCO {self.split}2017 object crops: {len(self)} crops of {self.num_classes} classes "
            f"from {self.num_instances} instances; not used: {self.num_crowd} crowd instances, "
            f"{self.num_degenerate_boxes} with a box of zero width or height, "
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
