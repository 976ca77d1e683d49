"""The ground truth of one split in wsolevaluation's metadata form: read, written, or made from a
wsolkit dataset root.

Choe et al.'s ``wsolevaluation`` (CVPR 2020) describes each split by four text files in one
folder (``metadata/<dataset>/<split>/``):

========================= ====================================================================
file                      lines
========================= ====================================================================
``image_ids.txt``         ``<image id>`` (a path relative to the image root, e.g.
                          ``001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg``)
``class_labels.txt``      ``<image id>,<class index>``
``image_sizes.txt``       ``<image id>,<width>,<height>`` (width first); only boxes need it,
                          and the reference's OpenImages folders have none
``localization.txt``      boxes: ``<image id>,<x0>,<y0>,<x1>,<y1>``, one line per box, in original
                          pixels; masks (OpenImages): ``<image id>,<mask path>,<ignore path>``,
                          one line per instance mask, the ignore path on the first line only
                          (paths relative to a mask root)
========================= ====================================================================

:func:`read_metadata` reads such a folder (a training split's has no ``localization.txt``:
pass ``localization=False``), checking every line (an unknown image id, a size that is not two
positive integers, a box outside its image: each an error naming the file and line);
:func:`metadata_from_dataset` makes the same from a wsolkit root (CUB, ILSVRC, OpenImages30k,
COCO as (image, category) items); :func:`write_metadata` writes it, so that a user can run the
reference on exactly our ground truth. Sizes are kept as named
:class:`ImageSize` fields, never as a bare pair, because the reference stores ``(w, h)`` where
``wsolkit`` functions take ``(H, W)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["FILES", "ImageSize", "Metadata", "MetadataError", "metadata_from_dataset",
           "read_metadata", "write_metadata"]

#: The four files of a metadata folder.
FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")


class MetadataError(ValueError):
    """A metadata folder is incomplete or malformed (the message names the file and line)."""


@dataclass(frozen=True)
class ImageSize:
    """An image's size, by name."""

    width: int
    height: int

    @property
    def hw(self) -> tuple[int, int]:
        """``(height, width)``, the order of ``wsolkit`` functions."""
        return (self.height, self.width)


@dataclass
class Metadata:
    """The ground truth of one split.

    Attributes:
        image_ids: in file order.
        labels: ``{image id: class index}``.
        sizes: ``{image id: ImageSize}`` of the original images.
        boxes: ``{image id: (G, 4) float64 [x0, y0, x1, y1]}`` in original pixels, or ``None``
            for a mask-only split (OpenImages).
        mask_paths: ``{image id: (instance mask paths, ignore path)}`` relative to a mask
            root, or ``None``.
        masks: ``{image id: loader}`` for a dataset whose masks come with its samples, each
            ``loader() -> (H, W)`` uint8 0/1 at the original size, or a pair
            ``(foreground, ignore)`` of such arrays, or ``None``.
        source: where the ground truth was read from (for messages).
        mask_root: the folder ``mask_paths`` are relative to, where it is known (a wsolkit
            OpenImages root; a reference checkout's ``dataset/OpenImages``), else ``None``.
    """

    image_ids: list[str]
    labels: dict[str, int]
    sizes: dict[str, ImageSize]
    boxes: dict[str, np.ndarray] | None = None
    mask_paths: dict[str, tuple[list[str], str]] | None = None
    masks: dict[str, Callable[[], np.ndarray]] | None = field(default=None, repr=False)
    source: str = ""
    mask_root: str | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def has_masks(self) -> bool:
        return self.mask_paths is not None or self.masks is not None


def _lines(path: Path, fields: tuple[int, ...], expected: str):
    """``(line number, fields)`` of every non-empty line with one of ``fields`` comma fields."""
    if not path.is_file():
        raise MetadataError(f"{path}: missing; a wsolevaluation metadata folder holds "
                            "image_ids.txt, class_labels.txt, localization.txt and, for boxes, "
                            "image_sizes.txt.")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.split(",")
            if len(parts) not in fields:
                raise MetadataError(f"{path}:{number}: {line!r}; expected {expected}.")
            yield number, parts


def _number(text: str, kind, where: str, expected: str):
    try:
        return kind(text)
    except ValueError:
        raise MetadataError(f"{where}: {text!r} is not {expected}.") from None


def read_metadata(folder: str | os.PathLike, *, localization: bool = True) -> Metadata:
    """Read a wsolevaluation metadata folder (see the module docstring).

    Args:
        folder: the split's folder, e.g. ``wsolevaluation/metadata/OpenImages/test``.
        localization: ``False`` for a split without ``localization.txt`` (the reference's
            training splits); boxes and masks are then ``None``.

    Where the folder sits in a reference checkout (``<checkout>/metadata/OpenImages/<split>``)
    and ``<checkout>/dataset/OpenImages`` exists, that is the mask root, as the reference's
    default ``--mask_root dataset/`` makes it.

    Raises:
        MetadataError: a missing file, a malformed line, an image id that ``image_ids.txt``
            does not list, an image without a label or a localization, a box without a size
            or outside its image, or a localization file that mixes boxes and masks.
    """
    folder = Path(folder)
    ids_path, labels_path, sizes_path, loc_path = (folder / name for name in FILES)
    image_ids: list[str] = []
    seen: dict[str, int] = {}
    for number, (image_id,) in _lines(ids_path, (1,), "one image id per line"):
        if image_id in seen:
            raise MetadataError(f"{ids_path}:{number}: image id {image_id!r} again (first on "
                                f"line {seen[image_id]}).")
        seen[image_id] = number
        image_ids.append(image_id)
    if not image_ids:
        raise MetadataError(f"{ids_path}: lists no image.")

    def known(path: Path, number: int, image_id: str) -> str:
        if image_id not in seen:
            raise MetadataError(f"{path}:{number}: image id {image_id!r} is not in {ids_path}.")
        return image_id

    labels = {}
    for number, (image_id, text) in _lines(labels_path, (2,), "'<image id>,<class index>'"):
        value = _number(text, int, f"{labels_path}:{number}", "a class index")
        if value < 0:
            raise MetadataError(f"{labels_path}:{number}: class index {value} < 0.")
        labels[known(labels_path, number, image_id)] = value
    sizes = {}
    size_lines = (_lines(sizes_path, (3,), "'<image id>,<width>,<height>'")
                  if sizes_path.is_file() else ())
    for number, (image_id, w, h) in size_lines:
        where = f"{sizes_path}:{number}"
        size = ImageSize(_number(w, int, where, "a width in pixels"),
                         _number(h, int, where, "a height in pixels"))
        if size.width < 1 or size.height < 1:
            raise MetadataError(f"{where}: size {w} x {h}; expected positive integers.")
        sizes[known(sizes_path, number, image_id)] = size
    boxes: dict[str, list] = {}
    masks: dict[str, tuple[list[str], str]] = {}
    loc_lines = _lines(loc_path, (3, 5), "'<image id>,<x0>,<y0>,<x1>,<y1>' (boxes) or "
                       "'<image id>,<mask path>,<ignore path>' (masks)") if localization else ()
    for number, parts in loc_lines:
        where = f"{loc_path}:{number}"
        image_id = known(loc_path, number, parts[0])
        if (len(parts) == 5 and masks) or (len(parts) == 3 and boxes):
            raise MetadataError(f"{where}: mixes box lines and mask lines; a localization file "
                                "holds one kind.")
        if len(parts) == 3:
            if image_id in masks:
                if parts[2]:
                    raise MetadataError(f"{where}: a second ignore path for {image_id!r}; only "
                                        "its first line names one.")
                masks[image_id][0].append(parts[1])
            else:
                masks[image_id] = ([parts[1]], parts[2])
            continue
        box = [_number(v, float, where, "a coordinate") for v in parts[1:]]
        size = sizes.get(image_id)
        if size is None:
            raise MetadataError(f"{where}: {image_id!r} has no line in {sizes_path} (boxes are "
                                "in original pixels, so each boxed image needs its size).")
        x0, y0, x1, y1 = box
        if not (0 <= x0 <= x1 <= size.width and 0 <= y0 <= y1 <= size.height):
            raise MetadataError(
                f"{where}: box {box} is not [x0, y0, x1, y1] inside its {size.width} x "
                f"{size.height} image (width x height, from {sizes_path}).")
        boxes.setdefault(image_id, []).append(box)
    tables = [(labels_path, labels)] + [(sizes_path, sizes)] * bool(boxes or sizes)
    tables += [(loc_path, boxes or masks)] * localization
    for path, table in tables:
        missing = [i for i in image_ids if i not in table]
        if missing:
            raise MetadataError(f"{path}: no line for {len(missing)} image(s) of {ids_path}, "
                                f"e.g. {missing[0]!r}; nothing is evaluated without it.")
    return Metadata(image_ids, labels, sizes,
                    boxes={k: np.asarray(v, dtype=np.float64) for k, v in boxes.items()}
                    if boxes else None,
                    mask_paths=masks or None, source=str(folder),
                    mask_root=_reference_mask_root(folder) if masks else None)


def _reference_mask_root(folder: Path) -> str | None:
    """``<checkout>/dataset/OpenImages`` for ``<checkout>/metadata/OpenImages/<split>``."""
    folder = folder.resolve()
    if folder.parent.name != "OpenImages" or folder.parent.parent.name != "metadata":
        return None
    root = folder.parents[2] / "dataset" / "OpenImages"
    return str(root) if root.is_dir() else None


def write_metadata(metadata: Metadata, folder: str | os.PathLike) -> list[Path]:
    """Write ``metadata`` as a wsolevaluation metadata folder (boxes, or mask paths).

    Returns:
        The files written (``image_sizes.txt`` only where sizes are known).

    Raises:
        MetadataError: a split with neither boxes nor mask paths (masks that come with a
            dataset's samples have no paths to write).
    """
    from wsolkit.io import atomic_write_text

    if metadata.boxes is None and metadata.mask_paths is None:
        raise MetadataError(f"{metadata.source}: no boxes and no mask paths to write; the "
                            "reference's localization.txt holds one of them.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = metadata.image_ids
    lines = {
        "image_ids.txt": [i for i in ids],
        "class_labels.txt": [f"{i},{metadata.labels[i]}" for i in ids],
    }
    if metadata.sizes:
        lines["image_sizes.txt"] = [f"{i},{metadata.sizes[i].width},{metadata.sizes[i].height}"
                                    for i in ids]
    if metadata.boxes is not None:
        lines["localization.txt"] = [f"{i}," + ",".join(_coordinate(v) for v in box)
                                     for i in ids for box in metadata.boxes[i]]
    else:
        lines["localization.txt"] = [f"{i},{path},{ignore if k == 0 else ''}"
                                     for i in ids
                                     for k, path in enumerate(metadata.mask_paths[i][0])
                                     for ignore in [metadata.mask_paths[i][1]]]
    written = []
    for name in (name for name in FILES if name in lines):
        path = folder / name
        atomic_write_text("".join(line + "\n" for line in lines[name]), path)
        written.append(path)
    return written


def _coordinate(value: float) -> str:
    """A coordinate as the reference's metadata writes it: integers without a decimal point."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def metadata_from_dataset(name: str, root: str | os.PathLike, split: str, **options) -> Metadata:
    """The ground truth of a split of a wsolkit dataset root (``"cub"``, ``"ilsvrc"``,
    ``"openimages"`` or ``"coco"``).

    COCO is multi-label, and the protocol scores one class per image, so each pair of an image
    and a category with at least one non-crowd instance in it is one item, with the id
    ``<file name>/<category id>`` (its map: ``<maps>/<file name>/<category id>.npy``), the
    category's index as the class, the boxes of its non-crowd instances, and masks (``coco``
    with ``with_masks=True``, the default) in which its instances are foreground and its crowd
    regions are left out of PxAP like OpenImages' ignore regions. Pairs with crowd regions only
    are left out and counted (:class:`~wsolkit.data.DatasetWarning`).

    OpenImages30k's is its own metadata, checked against the files by the loader, with the
    images' sizes and the root as the mask root. For CUB and ILSVRC, image ids are the images'
    paths relative to the image folder (the reference's ids: CUB's ``images/`` and ILSVRC's
    split folder), boxes the loader's (after its documented handling
    of degenerate boxes, which it counts), sizes the images' own, and masks (CUB, where the
    segmentations are present) the loader's. ``options`` go to the loader
    (:func:`wsolkit.data.get_dataset`: ``val_per_class``, ``on_bad_box``, ...).

    Raises:
        MetadataError: an unknown dataset name.
    """
    from wsolkit.data import get_dataset
    from wsolkit.data.common import image_size

    if name not in ("cub", "ilsvrc", "openimages", "coco"):
        raise MetadataError(f"dataset {name!r}: expected 'cub', 'ilsvrc', 'openimages' or "
                            "'coco'.")
    if name == "coco":
        return _coco_metadata(root, split, **options)
    dataset = get_dataset(name, root, split, **options)
    if name == "openimages":
        return Metadata(list(dataset.image_ids), dict(dataset.metadata.labels),
                        {i: ImageSize(width=int(s[1]), height=int(s[0]))
                         for i, s in zip(dataset.image_ids, dataset.sizes)},
                        mask_paths=dataset.metadata.mask_paths,
                        source=f"openimages {split} at {root}", mask_root=str(root))
    image_ids, labels, sizes, boxes, masks = [], {}, {}, {}, {}
    base = Path(root) / "images" if name == "cub" else None
    for index, path in enumerate(dataset.paths):
        if base is not None:
            image_id = Path(path).relative_to(base).as_posix()
        else:
            image_id = Path(path).relative_to(Path(path).parents[1]).as_posix()
        size = dataset.sizes[index] if dataset.sizes[index] is not None else image_size(path)
        image_ids.append(image_id)
        labels[image_id] = int(dataset.labels[index])
        sizes[image_id] = ImageSize(width=int(size[1]), height=int(size[0]))
        boxes[image_id] = np.asarray(dataset.boxes[index], dtype=np.float64).reshape(-1, 4)
        if getattr(dataset, "mask_paths", None) is not None:
            masks[image_id] = _mask_loader(dataset.mask_paths[index], size)
    return Metadata(image_ids, labels, sizes, boxes=boxes, masks=masks or None,
                    source=f"{name} {split} at {root}")


def _coco_metadata(root, split: str, with_masks: bool = True, **options) -> Metadata:
    """One item per (image, category) pair of a COCO split (see :func:`metadata_from_dataset`)."""
    import warnings

    from wsolkit.data import COCODetection, DatasetWarning

    dataset = COCODetection(root, split, with_masks=with_masks, **options)
    image_ids, labels, sizes, boxes, masks = [], {}, {}, {}, {}
    crowd_only = 0
    for index, coco_id in enumerate(dataset.image_ids):
        info = dataset.coco.imgs[coco_id]
        instances = dataset.instances(index)
        for category in sorted({a["category_id"] for a in instances}):
            rows = [k for k, a in enumerate(instances) if a["category_id"] == category]
            objects = [k for k in rows if not instances[k].get("iscrowd", 0)]
            if not objects:
                crowd_only += 1
                continue
            item = f"{info['file_name']}/{category}"
            image_ids.append(item)
            labels[item] = dataset.cat_id_to_index[category]
            sizes[item] = ImageSize(width=int(info["width"]), height=int(info["height"]))
            boxes[item] = np.asarray(dataset.boxes[index][objects], dtype=np.float64)
            if with_masks:
                crowd = [k for k in rows if k not in objects]
                masks[item] = _coco_mask_loader(dataset, index, objects, crowd)
    if crowd_only:
        warnings.warn(DatasetWarning(
            f"COCO {split}2017: left out {crowd_only} (image, category) pairs whose only "
            "instances are crowd regions (no object box to localize)"), stacklevel=3)
    return Metadata(image_ids, labels, sizes, boxes=boxes, masks=masks or None,
                    source=f"coco {split} at {root} (image, category) pairs")


def _coco_mask_loader(dataset, index: int, objects: list[int], crowd: list[int]):
    def load() -> tuple[np.ndarray, np.ndarray]:
        instances = dataset.instance_masks(index)
        foreground = instances[objects].any(axis=0)
        ignore = instances[crowd].any(axis=0) & ~foreground if crowd else \
            np.zeros_like(foreground)
        return foreground.astype(np.uint8), ignore.astype(np.uint8)
    return load


def _mask_loader(path: str, size) -> Callable[[], np.ndarray]:
    from wsolkit.data.cub import load_mask

    return lambda: load_mask(path, tuple(size))
