"""Shared pieces of the dataset loaders: errors, image decoding, annotation parsing, box checks.

Every loader in :mod:`wsolkit.data` parses its annotation files once, when it is built, and
checks them there, so that a broken download fails at the first line of a notebook with the
file, the line and the expected form, rather than in the middle of an epoch. Images are decoded
lazily, one per ``__getitem__``.
"""

from __future__ import annotations

import codecs
import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors

#: Values accepted by the ``on_bad_box`` argument of every loader.
BAD_BOX_POLICIES = ("error", "clip", "skip")

#: Values accepted by the ``on_degenerate_box`` argument of every loader.
DEGENERATE_BOX_POLICIES = ("error", "skip")

#: A box may stick out of its image by this many pixels before it counts as outside.
BOX_TOLERANCE = 1.0


class DatasetFormatError(ValueError):
    """A dataset on disk does not have the expected layout or content.

    The message names the file (and line, where there is one), what was found, the expected
    form and what to do about it.
    """


class BadBoxError(DatasetFormatError):
    """A ground-truth box lies outside its image or has no area."""


class EmptySplitError(DatasetFormatError):
    """A split would hold no image of some class (e.g. the validation hold-out took them all)."""


class DatasetWarning(UserWarning):
    """Annotations were left out, repaired or read leniently; the message gives the exact count.

    Emitted once per dataset (or file) for what a loader does by default with the official
    releases (COCO boxes of zero width or height, unusable COCO polygons, ILSVRC XML files whose
    ``<size>`` differs from the image, a UTF-8 byte-order mark) and for what the user opted into
    (``on_bad_box="clip"`` or ``"skip"``).
    """


@contextlib.contextmanager
def _open_image(path: str | os.PathLike, action: str, diagnosis: str):
    """``Image.open`` whose failures become a :class:`DatasetFormatError` naming the file."""
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError:
        raise DatasetFormatError(
            f"{path}: image file not found; check that the dataset was extracted completely"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetFormatError(
            f"{path}: cannot {action} ({error}); {diagnosis}, download or extract it again"
        ) from error


def load_image(path: str | os.PathLike) -> Image.Image:
    """Fully decode an image file and return it in RGB.

    The whole file is decoded here (``Image.load()``), so that a truncated or corrupt file fails
    with its path instead of yielding a partly grey image. ``ImageFile.LOAD_TRUNCATED_IMAGES`` is
    left untouched. EXIF orientation is not applied: the annotations of CUB, ILSVRC and COCO refer
    to the stored pixel grid.

    Args:
        path: image file (JPEG, PNG, ...; grayscale and CMYK are converted).

    Returns:
        ``PIL.Image.Image`` in mode ``"RGB"``, of the stored size ``(W, H)``.

    Raises:
        DatasetFormatError: the file is missing, unreadable, not an image or truncated.
    """
    with _open_image(path, "decode the image", "the file is truncated or corrupt") as image:
        image.load()
        return image.convert("RGB")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Read the size of an image from its header, without decoding the pixels.

    Args:
        path: image file.

    Returns:
        ``(H, W)`` as ints.

    Raises:
        DatasetFormatError: the file is missing or not a readable image.
    """
    with _open_image(path, "read the image header", "the file is corrupt") as image:
        width, height = image.size
    return height, width


def require_file(path: str | os.PathLike, expected: str) -> str:
    """Return ``path`` as a string if it is a file, else raise naming the expected layout.

    Args:
        path: the file that must exist.
        expected: one line describing what the file holds, e.g. ``'"<id> <relpath>" per line'``.

    Raises:
        DatasetFormatError: the file does not exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetFormatError(f"{path}: missing file; expected {expected}")
    return path


def require_dir(path: str | os.PathLike, expected: str) -> str:
    """Return ``path`` as a string if it is a directory, else raise naming the expected layout."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DatasetFormatError(f"{path}: missing directory; expected {expected}")
    return path


def read_lines(path: str, expected: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file, 1-based.

    A leading UTF-8 byte-order mark (which some editors add on saving) is dropped with a
    :class:`DatasetWarning` naming the file, instead of becoming part of the first field.

    Raises:
        DatasetFormatError: the file is not UTF-8 text, naming the line.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                warnings.warn(
                    f"{path}: starts with a UTF-8 byte-order mark (U+FEFF, added by some "
                    "editors); it was ignored. Save the file as plain UTF-8 to silence this "
                    "warning",
                    DatasetWarning,
                    stacklevel=3,
                )
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DatasetFormatError(
                    f"{path}:{number}: not UTF-8 text ({error.reason} at byte {error.start + 1} "
                    f"of the line {raw[:60]!r}); expected {expected}"
                ) from None


def read_fields(
    path: str, num_fields: int | tuple[int, int | None], expected: str
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` of a whitespace-separated text file, skipping blank lines.

    Args:
        path: the text file.
        num_fields: the exact number of fields, or ``(minimum, maximum)`` with ``maximum=None``
            for no upper bound.
        expected: the expected form of a line, quoted in errors, e.g. ``'"<id> x y w h"'``.

    Yields:
        ``(line_number, fields)`` with 1-based line numbers.

    Raises:
        DatasetFormatError: a line has the wrong number of fields, or the file is not UTF-8.
    """
    low, high = (num_fields, num_fields) if isinstance(num_fields, int) else num_fields
    for number, line in read_lines(path, expected):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < low or (high is not None and len(fields) > high):
            raise DatasetFormatError(
                f"{path}:{number}: found {len(fields)} fields in {line.strip()!r}; "
                f"expected {expected}"
            )
        yield number, fields


def parse_number(text: str, kind: Callable[[str], Any], where: str, expected: str) -> Any:
    """Convert one field with ``int`` or ``float``, raising with its place in the file.

    Args:
        text: the field.
        kind: ``int`` or ``float``.
        where: ``"file:line"``.
        expected: the expected form of the line.

    Raises:
        DatasetFormatError: the field is not a number of that kind (or is NaN/inf).
    """
    try:
        value = kind(text)
    except ValueError:
        raise DatasetFormatError(
            f"{where}: {text!r} is not {'an integer' if kind is int else 'a number'}; "
            f"expected {expected}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise DatasetFormatError(f"{where}: {text!r} is not a finite number; expected {expected}")
    return value


def short_float(value: float) -> str:
    """A float32 coordinate as its shortest text: ``296.65``, not ``296.6499938964844``."""
    return str(np.float32(value))


class BoxChecker:
    """Checks ground-truth boxes against their image and applies the loader's box policies.

    Three kinds of box are not usable as they stand:

    * malformed: a negative width or height (``x2 < x1`` or ``y2 < y1``), or outside the image by
      more than :data:`BOX_TOLERANCE` pixels (``x1 < -1``, ``y1 < -1``, ``x2 > W + 1`` or
      ``y2 > H + 1``);
    * degenerate: inside the image but of zero width or height (``x2 == x1`` or ``y2 == y1``).
      The official COCO 2017 release has a few (e.g. annotation 918 of ``instances_train2017.json``,
      ``bbox [296.65, 388.33, 1.03, 0.0]``).

    ``on_degenerate_box`` decides about degenerate boxes:

    * ``"skip"`` (default of the COCO loaders): leave them out; :meth:`finish` warns once with the
      count and the first one, and the count stays on the checker (``num_degenerate``; the loaders
      copy it to ``num_degenerate_boxes``).
    * ``"error"`` (default of CUB and ILSVRC, whose official releases have none): they are bad
      boxes, handled by ``on_bad_box``.

    ``on_bad_box`` decides about bad boxes:

    * ``"error"`` (default of every loader): raise :class:`BadBoxError` naming the annotation
      file and line and the box as written there.
    * ``"clip"``: clip out-of-image boxes to ``[0, W] x [0, H]``; boxes with no area, before or
      after clipping, are dropped (they cannot be repaired) and counted as skipped.
    * ``"skip"``: drop every bad box.

    With ``"clip"`` or ``"skip"``, :meth:`finish` emits one :class:`DatasetWarning` with the exact
    counts; the counts stay on the checker (and the loaders copy them to the dataset as
    ``num_boxes_clipped``, ``num_boxes_skipped`` and ``num_images_without_boxes``).

    Args:
        on_bad_box: ``"error"``, ``"clip"`` or ``"skip"``.
        dataset: a short name used in the warning, e.g. ``"CUB test"``.
        on_degenerate_box: ``"error"`` or ``"skip"``.
    """

    def __init__(self, on_bad_box: str, dataset: str, on_degenerate_box: str = "error"):
        if on_bad_box not in BAD_BOX_POLICIES:
            raise ValueError(f"on_bad_box={on_bad_box!r}; expected one of {BAD_BOX_POLICIES}")
        if on_degenerate_box not in DEGENERATE_BOX_POLICIES:
            raise ValueError(
                f"on_degenerate_box={on_degenerate_box!r}; expected one of "
                f"{DEGENERATE_BOX_POLICIES}"
            )
        self.on_bad_box = on_bad_box
        self.on_degenerate_box = on_degenerate_box
        self.dataset = dataset
        self.num_clipped = 0
        self.num_skipped = 0
        self.num_degenerate = 0
        self.num_images_without_boxes = 0
        self.first_degenerate: str | None = None

    def __call__(
        self,
        boxes: np.ndarray,
        sources: Sequence[str],
        size: tuple[int, int],
        image: str,
        required: bool = True,
        written: Sequence[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Check the boxes of one image.

        Args:
            boxes: ``(K, 4)`` float32 ``[x1, y1, x2, y2]``.
            sources: ``K`` strings naming where each box came from (``"file:line"``).
            size: ``(H, W)`` of the image.
            image: the image path, quoted in errors.
            required: whether the image must keep at least one box (counted in
                ``num_images_without_boxes`` when a policy removes all of them; an error when
                only degenerate boxes were left out and ``on_bad_box="error"``).
            written: ``K`` strings showing each box as the file writes it, e.g.
                ``"x y w h = 296.65 388.33 1.03 0.0"``; by default the float32 ``[x1, y1, x2,
                y2]`` in their shortest form.

        Returns:
            ``(boxes, kept)``: ``(K', 4)`` float32, the boxes kept (clipped where the policy says
            so), and ``(K',)`` int64 indices of those boxes in the input.

        Raises:
            BadBoxError: a bad box with ``on_bad_box="error"``.
        """
        if len(boxes) == 0:
            return boxes.reshape(0, 4).astype(np.float32), np.zeros(0, dtype=np.int64)
        if written is None:
            written = [
                f"[x1, y1, x2, y2] = [{', '.join(short_float(v) for v in box)}]" for box in boxes
            ]
        height, width = size
        x1, y1, x2, y2 = boxes.T
        inverted = (x2 < x1) | (y2 < y1)
        zero = ((x2 == x1) | (y2 == y1)) & ~inverted
        outside = (
            (x1 < -BOX_TOLERANCE)
            | (y1 < -BOX_TOLERANCE)
            | (x2 > width + BOX_TOLERANCE)
            | (y2 > height + BOX_TOLERANCE)
        )
        left_out = zero & ~outside if self.on_degenerate_box == "skip" else np.zeros_like(zero)
        bad = (inverted | zero | outside) & ~left_out
        if left_out.any():
            self.num_degenerate += int(left_out.sum())
            if self.first_degenerate is None:
                k = int(np.flatnonzero(left_out)[0])
                self.first_degenerate = f"{sources[k]}: box {written[k]}"
        if not bad.any():
            keep = ~left_out
            if required and not keep.any():
                if self.on_bad_box == "error":
                    k = int(np.flatnonzero(left_out)[0])
                    raise BadBoxError(
                        f"{sources[k]}: box {written[k]} of {image} has no area (zero width or "
                        "height) and the image has no other box; expected at least one box with "
                        "x2 > x1 and y2 > y1 per image: fix the annotation, or pass "
                        "on_bad_box='skip' to keep the image without boxes"
                    )
                self.num_images_without_boxes += 1
            if keep.all():
                return boxes, np.arange(len(boxes))
            return np.ascontiguousarray(boxes[keep], dtype=np.float32), np.flatnonzero(keep)
        if self.on_bad_box == "error":
            k = int(np.flatnonzero(bad)[0])
            if inverted[k]:
                what = "has a negative width or height (expected x2 > x1 and y2 > y1)"
                remedy = "fix the annotation"
            elif zero[k] and not outside[k]:
                what = "has no area: zero width or height (expected x2 > x1 and y2 > y1)"
                remedy = (
                    "fix the annotation, or pass on_degenerate_box='skip' to leave such boxes "
                    "out with a counted warning"
                )
            else:
                what = (
                    f"lies outside the {width}x{height} image by more than {BOX_TOLERANCE:g} px "
                    f"(expected -1 <= x1, y1 and x2 <= {width + 1:g}, y2 <= {height + 1:g})"
                )
                remedy = "fix the annotation"
            raise BadBoxError(
                f"{sources[k]}: box {written[k]} of {image} {what}; {remedy}, or pass "
                "on_bad_box='clip' or 'skip' to repair or drop such boxes with a warning"
            )
        keep = ~(bad | left_out)
        if self.on_bad_box == "clip":
            # Only the boxes found outside are clipped: boxes within the tolerance stay as given.
            repair = bad & outside & ~zero & ~inverted
            clipped = boxes.copy()
            clipped[repair, 0::2] = clipped[repair, 0::2].clip(0, width)
            clipped[repair, 1::2] = clipped[repair, 1::2].clip(0, height)
            # A box entirely outside the image has no area once clipped: it is skipped.
            repaired = repair & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
            self.num_clipped += int(repaired.sum())
            keep = keep | repaired
            boxes = clipped
        self.num_skipped += int((bad & ~keep).sum())
        if required and not keep.any():
            self.num_images_without_boxes += 1
        return np.ascontiguousarray(boxes[keep], dtype=np.float32), np.flatnonzero(keep)

    def finish(self) -> None:
        """Warn once per kind, with the exact counts: boxes clipped or skipped, degenerate ones."""
        images = (
            f"; {self.num_images_without_boxes} images were left without any box"
            if self.num_images_without_boxes
            else ""
        )
        if self.num_clipped or self.num_skipped:
            warnings.warn(
                f"{self.dataset}: on_bad_box={self.on_bad_box!r} clipped {self.num_clipped} and "
                f"skipped {self.num_skipped} ground-truth boxes that were outside the image or "
                f"had no area{images}",
                DatasetWarning,
                stacklevel=3,
            )
            images = ""
        if self.num_degenerate:
            warnings.warn(
                f"{self.dataset}: left out {self.num_degenerate} ground-truth boxes of zero width "
                f"or height (on_degenerate_box='skip'), the first at {self.first_degenerate}"
                f"{images}",
                DatasetWarning,
                stacklevel=3,
            )


def left_out_note(dataset: Any) -> str:
    """``", 3 degenerate boxes left out"`` for a dataset's repr when there are any, else ``""``."""
    count = getattr(dataset, "num_degenerate_boxes", 0)
    return f", {count} degenerate boxes left out" if count else ""


def boxes_array(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """Stack box rows into a ``(K, 4)`` float32 array (``(0, 4)`` when empty)."""
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def xywh_to_xyxy(x: float, y: float, w: float, h: float) -> list[float]:
    """Convert a CUB/COCO ``x, y, w, h`` box to ``[x1, y1, x2, y2]`` with ``x2 = x + w``."""
    return [x, y, x + w, y + h]


def apply_transform(
    sample: dict[str, Any],
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None,
    box_keys: Sequence[str] = ("boxes",),
    mask_keys: Sequence[str] = ("mask",),
) -> dict[str, Any]:
    """Run a whole-sample transform so that boxes and masks move with the image.

    Boxes and masks are wrapped as :class:`torchvision.tv_tensors.BoundingBoxes` (``XYXY``) and
    :class:`torchvision.tv_tensors.Mask` before the transform, so every
    ``torchvision.transforms.v2`` geometric transform (resize, crops, flips) moves them with the
    image; afterwards they are plain tensors again. Without a transform the sample is returned as
    built (PIL image, plain tensors).

    Args:
        sample: a dataset sample with a PIL ``"image"``; boxes ``(K, 4)`` float32 and masks
            ``(H, W)`` or ``(K, H, W)`` uint8 tensors under the given keys.
        transform: a callable on the whole sample dict, such as
            :func:`wsolkit.data.train_transform`, or ``None``.
        box_keys: keys holding boxes.
        mask_keys: keys holding masks.

    Returns:
        The transformed sample; tensors are plain ``torch.Tensor``.
    """
    if transform is None:
        return sample
    height, width = sample["image"].height, sample["image"].width
    wrapped = dict(sample)
    for key in box_keys:
        if key in wrapped:
            wrapped[key] = tv_tensors.BoundingBoxes(
                wrapped[key], format="XYXY", canvas_size=(height, width)
            )
    for key in mask_keys:
        if key in wrapped:
            wrapped[key] = tv_tensors.Mask(wrapped[key])
    out = transform(wrapped)
    return {
        key: value.as_subclass(torch.Tensor) if isinstance(value, tv_tensors.TVTensor) else value
        for key, value in out.items()
    }


def check_split(split: str, known: Sequence[str], dataset: str) -> None:
    """Raise ``ValueError`` if ``split`` is not one of ``known``."""
    if split not in known:
        raise ValueError(f"{dataset}: split={split!r}; expected one of {tuple(known)}")


def annotation_fingerprint(root: str, paths: Sequence[str], *arrays: Any) -> str:
    """A short hash of what defines a split: its image files (relative to ``root``, so a moved
    dataset keeps its fingerprint) and its annotations (labels, boxes, ...), not the pixels."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.relpath(path, root).replace(os.sep, "/").encode())
        digest.update(b"\n")
    for array in arrays:
        if isinstance(array, np.ndarray):
            digest.update(repr((array.dtype.str, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        else:
            for item in array:
                item = np.asarray(item)
                digest.update(repr((item.dtype.str, item.shape)).encode())
                digest.update(np.ascontiguousarray(item).tobytes())
    return digest.hexdigest()[:12]


class AnnotatedImages(torch.utils.data.Dataset):
    """The sample of a single-label dataset with boxes (CUB, ILSVRC): one ``__getitem__`` for both.

    A subclass sets ``image_ids``, ``paths``, ``labels``, ``boxes`` and ``transform``, and may
    override :meth:`_orig_size` and :meth:`_extra_fields`; ``box_keys`` names the fields that
    hold boxes and ``mask_keys`` the fields that hold masks (both moved with the image by the
    transform).
    """

    box_keys: tuple[str, ...] = ("boxes",)
    mask_keys: tuple[str, ...] = ("mask",)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _orig_size(self, index: int, image: Image.Image) -> tuple[int, int]:
        """``(H, W)`` of the image as the annotation describes it (default: the decoded image)."""
        return (image.height, image.width)

    def _extra_fields(self, index: int) -> dict[str, Any]:
        """Fields beyond the shared ones (part boxes, masks)."""
        return {}

    def annotation_fingerprint(self) -> str:
        """What defines this split, hashed: image files, labels and boxes
        (:func:`annotation_fingerprint`). Edit ``train_test_split.txt`` and it changes."""
        return annotation_fingerprint(self.root, self.paths, self.labels, self.boxes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = load_image(self.paths[index])
        sample: dict[str, Any] = {
            "image": image,
            "label": int(self.labels[index]),
            "boxes": torch.tensor(self.boxes[index]),
            "image_id": self.image_ids[index],
            "path": self.paths[index],
            "orig_size": self._orig_size(index, image),
        }
        sample.update(self._extra_fields(index))
        return apply_transform(sample, self.transform, box_keys=self.box_keys,
                               mask_keys=self.mask_keys)
