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
``image_sizes.txt``       ``<image id>,<width>,<height>`` (width first)
``localization.txt``      boxes: ``<image id>,<x0>,<y0>,<x1>,<y1>``, one line per box, in original
                          pixels; masks (OpenImages): ``<image id>,<mask path>,<ignore path>``,
                          one line per instance mask, the ignore path on the first line only
                          (paths relative to a mask root)
========================= ====================================================================

:func:`read_metadata` reads such a folder, checking every line (an unknown image id, a size that
is not two positive integers, a box outside its image: each an error naming the file and line);
:func:`metadata_from_dataset` makes the same from a wsolkit root; :func:`write_metadata` writes it,
so that a user can run the reference on exactly our ground truth. Sizes are kept as named
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
            ``loader() -> (H, W)`` uint8 0/1 at the original size, or ``None``.
        source: where the ground truth was read from (for messages).
    """

    image_ids: list[str]
    labels: dict[str, int]
    sizes: dict[str, ImageSize]
    boxes: dict[str, np.ndarray] | None = None
    mask_paths: dict[str, tuple[list[str], str]] | None = None
    masks: dict[str, Callable[[], np.ndarray]] | None = field(default=None, repr=False)
    source: str = ""

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def has_masks(self) -> bool:
        return self.mask_paths is not None or self.masks is not None


def _lines(path: Path, fields: tuple[int, ...], expected: str):
    """``(line number, fields)`` of every non-empty line with one of ``fields`` comma fields."""
    if not path.is_file():
        raise MetadataError(f"{path}: missing; a wsolevaluation metadata folder holds "
                            f"{', '.join(FILES)}.")
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


def read_metadata(folder: str | os.PathLike) -> Metadata:
    """Read a wsolevaluation metadata folder (see the module docstring).

    Raises:
        MetadataError: a missing file, a malformed line, an image id that ``image_ids.txt``
            does not list, an image without a label, a size or a box, a box outside its image,
            or a localization file that mixes boxes and masks.
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
    for number, (image_id, w, h) in _lines(sizes_path, (3,), "'<image id>,<width>,<height>'"):
        where = f"{sizes_path}:{number}"
        size = ImageSize(_number(w, int, where, "a width in pixels"),
                         _number(h, int, where, "a height in pixels"))
        if size.width < 1 or size.height < 1:
            raise MetadataError(f"{where}: size {w} x {h}; expected positive integers.")
        sizes[known(sizes_path, number, image_id)] = size
    boxes: dict[str, list] = {}
    masks: dict[str, tuple[list[str], str]] = {}
    for number, parts in _lines(loc_path, (3, 5), "'<image id>,<x0>,<y0>,<x1>,<y1>' (boxes) or "
                                "'<image id>,<mask path>,<ignore path>' (masks)"):
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
            raise MetadataError(f"{where}: {image_id!r} has no line in {sizes_path}.")
        x0, y0, x1, y1 = box
        if not (0 <= x0 <= x1 <= size.width and 0 <= y0 <= y1 <= size.height):
            raise MetadataError(
                f"{where}: box {box} is not [x0, y0, x1, y1] inside its {size.width} x "
                f"{size.height} image (width x height, from {sizes_path}).")
        boxes.setdefault(image_id, []).append(box)
    for path, table in ((labels_path, labels), (sizes_path, sizes),
                        (loc_path, boxes or masks)):
        missing = [i for i in image_ids if i not in table]
        if missing:
            raise MetadataError(f"{path}: no line for {len(missing)} image(s) of {ids_path}, "
                                f"e.g. {missing[0]!r}; nothing is evaluated without it.")
    return Metadata(image_ids, labels, sizes,
                    boxes={k: np.asarray(v, dtype=np.float64) for k, v in boxes.items()}
                    if boxes else None,
                    mask_paths=masks or None, source=str(folder))


def write_metadata(metadata: Metadata, folder: str | os.PathLike) -> list[Path]:
    """Write ``metadata`` as a wsolevaluation metadata folder (boxes, or mask paths).

    Returns:
        The four files written.

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
        "image_sizes.txt": [f"{i},{metadata.sizes[i].width},{metadata.sizes[i].height}"
                            for i in ids],
    }
    if metadata.boxes is not None:
        lines["localization.txt"] = [f"{i}," + ",".join(_coordinate(v) for v in box)
                                     for i in ids for box in metadata.boxes[i]]
    else:
        lines["localization.txt"] = [f"{i},{path},{ignore if k == 0 else ''}"
                                     for i in ids
                                     for k, path in enumerate(metadata.mask_paths[i][0])
                                     for ignore in [metadata.mask_paths[i][1]]]
    written = []
    for name in FILES:
        path = folder / name
        atomic_write_text("".join(line + "\n" for line in lines[name]), path)
        written.append(path)
    return written


def _coordinate(value: float) -> str:
    """A coordinate as the reference's metadata writes it: integers without a decimal point."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def metadata_from_dataset(name: str, root: str | os.PathLike, split: str, **options) -> Metadata:
    """The ground truth of a split of a wsolkit dataset root (``"cub"`` or ``"ilsvrc"``).

    Image ids are the images' paths relative to the image folder (the reference's ids: CUB's
    ``images/`` and ILSVRC's split folder), boxes the loader's (after its documented handling
    of degenerate boxes, which it counts), sizes the images' own, and masks (CUB, where the
    segmentations are present) the loader's. ``options`` go to the loader
    (:func:`wsolkit.data.get_dataset`: ``val_per_class``, ``on_bad_box``, ...).

    Raises:
        MetadataError: an unknown dataset name.
    """
    from wsolkit.data import get_dataset
    from wsolkit.data.common import image_size

    if name not in ("cub", "ilsvrc"):
        raise MetadataError(f"dataset {name!r}: expected 'cub' or 'ilsvrc' (single-label "
                            "datasets with boxes; the WSOL protocol needs one class per image).")
    dataset = get_dataset(name, root, split, **options)
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


def _mask_loader(path: str, size) -> Callable[[], np.ndarray]:
    from wsolkit.data.cub import load_mask

    return lambda: load_mask(path, tuple(size))
