"""ILSVRC 2012 localization (ImageNet-1k with boxes) in its two common download layouts.

Kaggle ("imagenet-object-localization-challenge")::

    LOC_synset_mapping.txt                    "n01440764 tench, Tinca tinca"; class = line order
    LOC_val_solution.csv                      "ImageId,PredictionString" then
                                              "<ImageId>,<wnid> xmin ymin xmax ymax [<wnid> ...]"
    ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG
    ILSVRC/Data/CLS-LOC/val/<ImageId>.JPEG
    ILSVRC/Annotations/CLS-LOC/val/<ImageId>.xml            PASCAL VOC XML
    ILSVRC/Annotations/CLS-LOC/train/<wnid>/<wnid>_<n>.xml  (for the train images that have boxes)

Classic (the ILSVRC2012 tar files)::

    train/<wnid>/*.JPEG
    val/*.JPEG  or  val/<wnid>/*.JPEG
    val_boxes/<ImageId>.xml      (ILSVRC2012_bbox_val_v3.tgz; or ``annotation_dir=``)
    train_boxes/<wnid>/*.xml     optional (ILSVRC2012_bbox_train_v2.tar.gz; or ``annotation_dir=``)
    LOC_synset_mapping.txt       optional; without it classes are the sorted train folders
    LOC_val_solution.csv         optional, as above

Splits. ``"val"`` is the 50,000-image localization set: every image must have boxes, all of one
wnid, which gives its label. ``"train"`` takes its label from the folder; only about 40% of the
train images were annotated with boxes, so the others get empty ``(0, 4)`` boxes (boxes are read
from the train XML folder when it exists and ``train_boxes=True``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from typing import Any

import numpy as np
from wsolkit.data.common import (
    AnnotatedImages,
    BoxChecker,
    DatasetFormatError,
    boxes_array,
    check_split,
    image_size,
    parse_number,
    require_dir,
    require_file,
)

MAPPING = "LOC_synset_mapping.txt"
VAL_CSV = "LOC_val_solution.csv"
CSV_HEADER = "ImageId,PredictionString"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

EXPECTED = {
    MAPPING: '"<wnid> <class name>" per line, e.g. "n01440764 tench, Tinca tinca"',
    VAL_CSV: f'a header "{CSV_HEADER}" then "<ImageId>,<wnid> xmin ymin xmax ymax '
    '[<wnid> xmin ymin xmax ymax ...]" per line',
    "xml": "PASCAL VOC XML: <annotation><size><width>W</width><height>H</height></size> and one "
    "or more <object><name>wnid</name><bndbox><xmin/><ymin/><xmax/><ymax/></bndbox></object>",
}

_EMPTY = np.zeros((0, 4), dtype=np.float32)
_EMPTY.flags.writeable = False


def detect_layout(root: str) -> str:
    """Return ``"kaggle"`` or ``"classic"`` for an ILSVRC root, or raise naming both layouts."""
    if os.path.isdir(os.path.join(root, "ILSVRC", "Data", "CLS-LOC")):
        return "kaggle"
    if os.path.isdir(os.path.join(root, "train")) or os.path.isdir(os.path.join(root, "val")):
        return "classic"
    raise DatasetFormatError(
        f"{root}: neither ILSVRC layout found; expected ILSVRC/Data/CLS-LOC/{{train,val}} "
        "(Kaggle imagenet-object-localization-challenge) or train/<wnid>/*.JPEG and val/*.JPEG "
        "(the ILSVRC2012 tar files)"
    )


def read_synset_mapping(path: str) -> tuple[list[str], list[str]]:
    """Read ``LOC_synset_mapping.txt``.

    Returns:
        ``(wnids, names)``, both in line order (the class index is the line order).

    Raises:
        DatasetFormatError: a line without a name or a repeated wnid.
    """
    wnids: list[str] = []
    names: list[str] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                raise DatasetFormatError(
                    f"{path}:{number}: found {line.strip()!r}; expected {EXPECTED[MAPPING]}"
                )
            if fields[0] in seen:
                raise DatasetFormatError(
                    f"{path}:{number}: wnid {fields[0]} already appeared on line "
                    f"{seen[fields[0]]}; expected each wnid once"
                )
            seen[fields[0]] = number
            wnids.append(fields[0])
            names.append(fields[1].strip())
    return wnids, names


def parse_voc_xml(path: str) -> tuple[tuple[int, int], list[str], np.ndarray, list[str]]:
    """Parse one PASCAL VOC annotation of ILSVRC.

    Args:
        path: the XML file.

    Returns:
        ``(size, wnids, boxes, sources)``: ``size`` is ``(H, W)`` from ``<size>``, ``wnids`` the
        ``K`` object names, ``boxes`` ``(K, 4)`` float32 ``[xmin, ymin, xmax, ymax]`` as given,
        ``sources`` ``K`` strings ``"<path> (object k)"``.

    Raises:
        DatasetFormatError: not XML, a missing element or a non-numeric value.
    """
    try:
        tree = ElementTree.parse(path)
    except ElementTree.ParseError as error:
        raise DatasetFormatError(
            f"{path}:{error.position[0]}: not well-formed XML ({error}); expected {EXPECTED['xml']}"
        ) from None

    def text(node: ElementTree.Element, tag: str, where: str) -> str:
        child = node.find(tag)
        if child is None or child.text is None or not child.text.strip():
            raise DatasetFormatError(f"{where}: missing <{tag}>; expected {EXPECTED['xml']}")
        return child.text.strip()

    root = tree.getroot()
    size = root.find("size")
    if size is None:
        raise DatasetFormatError(f"{path}: missing <size>; expected {EXPECTED['xml']}")
    width = parse_number(text(size, "width", path), int, path, EXPECTED["xml"])
    height = parse_number(text(size, "height", path), int, path, EXPECTED["xml"])
    wnids, rows, sources = [], [], []
    for k, obj in enumerate(root.iter("object"), start=1):
        where = f"{path} (object {k})"
        wnids.append(text(obj, "name", where))
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetFormatError(f"{where}: missing <bndbox>; expected {EXPECTED['xml']}")
        rows.append(
            [
                parse_number(text(bndbox, tag, where), float, where, EXPECTED["xml"])
                for tag in ("xmin", "ymin", "xmax", "ymax")
            ]
        )
        sources.append(where)
    return (height, width), wnids, boxes_array(rows), sources


def read_val_csv(path: str) -> dict[str, tuple[list[str], np.ndarray, list[str]]]:
    """Read ``LOC_val_solution.csv`` into ``{ImageId: (wnids, (K, 4) float32 boxes, sources)}``.

    Raises:
        DatasetFormatError: a wrong header, a wrong number of fields, a repeated ImageId or a
            non-numeric coordinate, naming the line.
    """
    table: dict[str, tuple[list[str], np.ndarray, list[str]]] = {}
    lines: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().strip()
        if header != CSV_HEADER:
            raise DatasetFormatError(
                f"{path}:1: header {header!r}; expected {EXPECTED[VAL_CSV]}"
            )
        for number, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            fields = line.strip().split(",")
            tokens = fields[1].split() if len(fields) == 2 else []
            if len(fields) != 2 or not tokens or len(tokens) % 5:
                raise DatasetFormatError(
                    f"{where}: found {line.strip()!r}; expected {EXPECTED[VAL_CSV]}"
                )
            image_id = fields[0]
            if image_id in lines:
                raise DatasetFormatError(
                    f"{where}: ImageId {image_id} already appeared on line {lines[image_id]}; "
                    "expected each image once"
                )
            lines[image_id] = number
            groups = [tokens[i : i + 5] for i in range(0, len(tokens), 5)]
            rows = [
                [parse_number(v, float, where, EXPECTED[VAL_CSV]) for v in group[1:]]
                for group in groups
            ]
            table[image_id] = ([g[0] for g in groups], boxes_array(rows), [where] * len(groups))
    return table


def _scan(folder: str) -> tuple[list[str], list[str]]:
    """Sorted image file names and sorted sub-folder names of a folder.

    Hidden entries are ignored; any other file is an error, so that nothing is silently left out.
    """
    images, folders = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                folders.append(entry.name)
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(entry.name)
            else:
                raise DatasetFormatError(
                    f"{entry.path}: unexpected file; expected only images "
                    f"({', '.join(IMAGE_EXTENSIONS)}) in {folder}; move it elsewhere"
                )
    return sorted(images), sorted(folders)


class ILSVRCDataset(AnnotatedImages):
    """ILSVRC 2012 localization: image labels and all ground-truth boxes.

    Annotations are parsed and checked when the dataset is built (folder listings, the CSV or the
    XML files, box validation against the image size); images are decoded per item.

    Args:
        root: the dataset root in either layout (module docstring).
        split: ``"train"`` or ``"val"``.
        transform: callable on the whole sample dict (e.g. :func:`wsolkit.data.eval_transform`);
            ``None`` returns PIL images.
        layout: ``"auto"``, ``"kaggle"`` or ``"classic"``.
        val_source: where val boxes come from: ``"xml"``, ``"csv"`` (``LOC_val_solution.csv``,
            image sizes then come from the image headers) or ``"auto"`` (XML when the folder
            exists, else the CSV).
        annotation_dir: the XML folder of this split, replacing the layout's default
            (``ILSVRC/Annotations/CLS-LOC/<split>`` for Kaggle, ``val_boxes`` or ``train_boxes``
            for the classic layout).
        train_boxes: read the train XML files where they exist (about 544k files: this takes
            minutes on the full set); ``False`` gives every train image empty boxes.
        on_bad_box: ``"error"``, ``"clip"`` or ``"skip"`` (see :class:`wsolkit.data.BoxChecker`).

    Attributes:
        layout: the layout found.
        wnids, class_names: the ``C = num_classes`` wnids and names; labels index them.
        image_ids, paths: per image, the file stem and the full path.
        labels: ``(N,)`` int64.
        boxes: ``N`` arrays ``(K_i, 4)`` float32 (``K_i = 0`` for unannotated train images).
        sizes: ``N`` tuples ``(H, W)``, or ``None`` for train images without annotation.
        box_source: ``"xml"``, ``"csv"`` or ``None`` (train without XML).
        num_boxes_clipped, num_boxes_skipped, num_images_without_boxes: what ``on_bad_box`` did.

    A sample is ``{"image", "label", "boxes", "image_id", "path", "orig_size"}``.
    """

    SPLITS = ("train", "val")

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        layout: str = "auto",
        val_source: str = "auto",
        annotation_dir: str | os.PathLike | None = None,
        train_boxes: bool = True,
        on_bad_box: str = "error",
    ):
        check_split(split, self.SPLITS, "ILSVRCDataset")
        if layout not in ("auto", "kaggle", "classic"):
            raise ValueError(f"layout={layout!r}; expected 'auto', 'kaggle' or 'classic'")
        if val_source not in ("auto", "xml", "csv"):
            raise ValueError(f"val_source={val_source!r}; expected 'auto', 'xml' or 'csv'")
        self.root = root = os.fspath(root)
        self.split = split
        self.transform = transform
        require_dir(root, "the ILSVRC 2012 root (Kaggle or classic layout)")
        self.layout = detect_layout(root) if layout == "auto" else layout
        if self.layout == "kaggle":
            data = os.path.join(root, "ILSVRC", "Data", "CLS-LOC")
            default_xml = os.path.join(root, "ILSVRC", "Annotations", "CLS-LOC", split)
        else:
            data = root
            default_xml = os.path.join(root, f"{split}_boxes")
        self.image_dir = os.path.join(data, split)
        self.annotation_dir = os.fspath(annotation_dir or default_xml)

        mapping = os.path.join(root, MAPPING)
        train_dir = os.path.join(data, "train")
        if os.path.isfile(mapping):
            self.wnids, self.class_names = read_synset_mapping(mapping)
        elif self.layout == "kaggle":
            raise DatasetFormatError(f"{mapping}: missing file; expected {EXPECTED[MAPPING]}")
        elif os.path.isdir(train_dir):
            self.wnids = _scan(train_dir)[1]
            self.class_names = list(self.wnids)
        else:
            raise DatasetFormatError(
                f"{root}: cannot tell the class order; expected {MAPPING} ({EXPECTED[MAPPING]}) "
                "or a train/<wnid>/ folder per class"
            )
        self.num_classes = len(self.wnids)
        self._index = {wnid: i for i, wnid in enumerate(self.wnids)}

        self.image_ids: list[str] = []
        self.paths: list[str] = []
        labels: list[int] = []
        self.boxes: list[np.ndarray] = []
        self.sizes: list[tuple[int, int] | None] = []
        checker = BoxChecker(on_bad_box, f"ILSVRC {split}")
        if split == "train":
            self._build_train(train_dir, train_boxes, labels, checker)
        else:
            self._build_val(root, val_source, labels, checker)
        checker.finish()
        self.labels = np.array(labels, dtype=np.int64)
        self.num_boxes_clipped = checker.num_clipped
        self.num_boxes_skipped = checker.num_skipped
        self.num_images_without_boxes = checker.num_images_without_boxes

    def _label(self, wnid: str, where: str) -> int:
        if wnid not in self._index:
            source = MAPPING if os.path.isfile(os.path.join(self.root, MAPPING)) else "train/"
            raise DatasetFormatError(
                f"{where}: wnid {wnid} is not one of the {self.num_classes} classes of {source}; "
                "expected a known wnid"
            )
        return self._index[wnid]

    def _single_wnid(self, wnids: list[str], sources: list[str], image: str, source: str) -> str:
        if not wnids:
            raise DatasetFormatError(
                f"{source}: no <object> box for val image {image}; expected {EXPECTED['xml']}"
            )
        for wnid, where in zip(wnids, sources):
            if wnid != wnids[0]:
                raise DatasetFormatError(
                    f"{where}: box of class {wnid} but the first box of {image} is of class "
                    f"{wnids[0]}; expected all boxes of an ILSVRC image to share one wnid"
                )
        return wnids[0]

    def _build_train(
        self, train_dir: str, train_boxes: bool, labels: list[int], checker: BoxChecker
    ) -> None:
        require_dir(train_dir, "one folder <wnid>/ of JPEG images per class")
        self.box_source = "xml" if train_boxes and os.path.isdir(self.annotation_dir) else None
        loose, wnids = _scan(train_dir)
        if loose:
            raise DatasetFormatError(
                f"{os.path.join(train_dir, loose[0])}: image directly in {train_dir} "
                f"({len(loose)} such files); expected train/<wnid>/<image>.JPEG"
            )
        for wnid in wnids:
            folder = os.path.join(train_dir, wnid)
            label = self._label(wnid, folder)
            xml_folder = os.path.join(self.annotation_dir, wnid)
            xmls = set()
            if self.box_source and os.path.isdir(xml_folder):
                xmls = {n for n in os.listdir(xml_folder) if n.endswith(".xml")}
            for name in _scan(folder)[0]:
                image_id = os.path.splitext(name)[0]
                path = os.path.join(folder, name)
                boxes, size = _EMPTY, None
                if image_id + ".xml" in xmls:
                    xmls.discard(image_id + ".xml")
                    size, box_wnids, rows, sources = parse_voc_xml(
                        os.path.join(xml_folder, image_id + ".xml")
                    )
                    for box_wnid, where in zip(box_wnids, sources):
                        if box_wnid != wnid:
                            raise DatasetFormatError(
                                f"{where}: box of class {box_wnid} for an image in folder "
                                f"{wnid}; expected the folder's wnid"
                            )
                    boxes = checker(rows, sources, size, path, required=False)[0]
                self.image_ids.append(image_id)
                self.paths.append(path)
                labels.append(label)
                self.boxes.append(boxes)
                self.sizes.append(size)
            if xmls:
                orphan = os.path.join(xml_folder, sorted(xmls)[0])
                raise DatasetFormatError(
                    f"{orphan}: annotation without an image ({len(xmls)} such files in "
                    f"{xml_folder}); expected {folder}/<image id>.JPEG for each; restore the "
                    "images or remove the annotations"
                )

    def _build_val(
        self, root: str, val_source: str, labels: list[int], checker: BoxChecker
    ) -> None:
        require_dir(self.image_dir, "val images, <ImageId>.JPEG or <wnid>/<ImageId>.JPEG")
        csv_path = os.path.join(root, VAL_CSV)
        if val_source == "auto":
            if os.path.isdir(self.annotation_dir):
                val_source = "xml"
            elif os.path.isfile(csv_path):
                val_source = "csv"
            else:
                raise DatasetFormatError(
                    f"{root}: no validation boxes; expected the XML folder {self.annotation_dir} "
                    f"({EXPECTED['xml']}) or {csv_path} ({EXPECTED[VAL_CSV]})"
                )
        self.box_source = val_source
        if val_source == "csv":
            table = read_val_csv(require_file(csv_path, EXPECTED[VAL_CSV]))
        else:
            require_dir(self.annotation_dir, f"one <ImageId>.xml per val image, {EXPECTED['xml']}")
            xmls = {n for n in os.listdir(self.annotation_dir) if n.endswith(".xml")}

        # (image id, path, wnid of its folder or None): val/<ImageId>.JPEG or val/<wnid>/...
        entries: list[tuple[str, str, str | None]] = []
        names, folders = _scan(self.image_dir)
        for name in names:
            entries.append((os.path.splitext(name)[0], os.path.join(self.image_dir, name), None))
        for wnid in folders:
            folder = os.path.join(self.image_dir, wnid)
            for name in _scan(folder)[0]:
                entries.append((os.path.splitext(name)[0], os.path.join(folder, name), wnid))
        entries.sort()

        for image_id, path, folder_wnid in entries:
            if val_source == "csv":
                if image_id not in table:
                    raise DatasetFormatError(
                        f"{csv_path}: no line for val image {path}; expected "
                        f"{EXPECTED[VAL_CSV]} for every val image"
                    )
                wnids, rows, sources = table.pop(image_id)
                size = image_size(path)
            else:
                xml_path = os.path.join(self.annotation_dir, image_id + ".xml")
                if image_id + ".xml" not in xmls:
                    raise DatasetFormatError(
                        f"{xml_path}: missing annotation of val image {path}; expected "
                        f"{EXPECTED['xml']}"
                    )
                xmls.discard(image_id + ".xml")
                size, wnids, rows, sources = parse_voc_xml(xml_path)
            source = xml_path if val_source == "xml" else csv_path
            wnid = self._single_wnid(wnids, sources, path, source)
            label = self._label(wnid, sources[0])
            if folder_wnid is not None and folder_wnid != wnid:
                raise DatasetFormatError(
                    f"{sources[0]}: boxes of class {wnid} for {path} in folder {folder_wnid}; "
                    "expected the folder's wnid"
                )
            self.image_ids.append(image_id)
            self.paths.append(path)
            labels.append(label)
            self.boxes.append(checker(rows, sources, size, path)[0])
            self.sizes.append(size)
        leftover = sorted(table) if val_source == "csv" else sorted(xmls)
        if leftover:
            source = csv_path if val_source == "csv" else self.annotation_dir
            raise DatasetFormatError(
                f"{source}: {len(leftover)} annotations have no image in {self.image_dir}, "
                f"e.g. {leftover[0]}; expected every annotated image to be present: restore the "
                "images"
            )

    def __repr__(self) -> str:
        return (
            f"ILSVRCDataset(root={self.root!r}, split={self.split!r}, layout={self.layout!r}: "
            f"{len(self)} images, {self.num_classes} classes, "
            f"{sum(map(len, self.boxes))} boxes from {self.box_source or 'no annotation'})"
        )
