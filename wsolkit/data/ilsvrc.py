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
from the train XML folder when it exists and ``train_boxes=True``). A train XML file without any
``<object>`` leaves its image unannotated too, counted in a warning.

Boxes are checked against the image itself (its header, read when the dataset is built), not
against the XML's ``<size>``: an XML file whose ``<size>`` differs from its image is counted in a
warning, and a box outside the real image is an error.
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from typing import Any

import numpy as np
from wsolkit.data.common import (
    AnnotatedImages,
    BoxChecker,
    DatasetFormatError,
    DatasetWarning,
    boxes_array,
    check_split,
    image_size,
    left_out_note,
    parse_number,
    read_lines,
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


def default_annotation_dir(root: str, layout: str, split: str) -> str:
    """The XML folder of a split: ``ILSVRC/Annotations/CLS-LOC/<split>`` (Kaggle) or
    ``<split>_boxes`` (classic)."""
    if layout == "kaggle":
        return os.path.join(root, "ILSVRC", "Annotations", "CLS-LOC", split)
    return os.path.join(root, f"{split}_boxes")


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
    for number, line in read_lines(path, EXPECTED[MAPPING]):
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
    if not wnids:
        raise DatasetFormatError(
            f"{path}: no classes (the file is empty); expected {EXPECTED[MAPPING]}"
        )
    return wnids, names


#: What :func:`parse_voc_xml` and :func:`read_val_csv` give per image: the ``K`` wnids, the
#: ``(K, 4)`` float32 boxes, ``K`` places (``"file (object k)"`` or ``"file:line"``) and ``K``
#: boxes as written (``"xmin ymin xmax ymax = 5 4 30 25"``).
Objects = tuple[list[str], np.ndarray, list[str], list[str]]


def parse_voc_xml(path: str) -> tuple[tuple[int, int], list[str], np.ndarray, list[str], list[str]]:
    """Parse one PASCAL VOC annotation of ILSVRC.

    Args:
        path: the XML file.

    Returns:
        ``(size, wnids, boxes, sources, written)``: ``size`` is ``(H, W)`` from ``<size>``,
        ``wnids`` the ``K`` object names, ``boxes`` ``(K, 4)`` float32 ``[xmin, ymin, xmax,
        ymax]`` as given, ``sources`` ``K`` strings ``"<path> (object k)"``, ``written`` ``K``
        strings with the coordinates as the file writes them.

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
    wnids, rows, sources, written = [], [], [], []
    for k, obj in enumerate(root.iter("object"), start=1):
        where = f"{path} (object {k})"
        wnids.append(text(obj, "name", where))
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetFormatError(f"{where}: missing <bndbox>; expected {EXPECTED['xml']}")
        values = [text(bndbox, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax")]
        rows.append([parse_number(v, float, where, EXPECTED["xml"]) for v in values])
        sources.append(where)
        written.append(f"xmin ymin xmax ymax = {' '.join(values)}")
    return (height, width), wnids, boxes_array(rows), sources, written


def read_val_csv(path: str) -> dict[str, Objects]:
    """Read ``LOC_val_solution.csv`` into ``{ImageId: (wnids, boxes, sources, written)}``
    (see :data:`Objects`).

    Raises:
        DatasetFormatError: a wrong header, a wrong number of fields, a repeated ImageId or a
            non-numeric coordinate, naming the line.
    """
    table: dict[str, Objects] = {}
    lines: dict[str, int] = {}
    for number, line in read_lines(path, EXPECTED[VAL_CSV]):
        if number == 1:
            if line.strip() != CSV_HEADER:
                raise DatasetFormatError(
                    f"{path}:1: header {line.strip()!r}; expected {EXPECTED[VAL_CSV]}"
                )
            continue
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
        written = [f"xmin ymin xmax ymax = {' '.join(group[1:])}" for group in groups]
        wnids = [g[0] for g in groups]
        table[image_id] = (wnids, boxes_array(rows), [where] * len(groups), written)
    if not lines:
        raise DatasetFormatError(f"{path}: no image lines; expected {EXPECTED[VAL_CSV]}")
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
        train_boxes: read the train XML files where they exist (about 544k files, and the
            header of each annotated image: this takes minutes on the full set); ``False`` gives
            every train image empty boxes.
        on_bad_box: ``"error"``, ``"clip"`` or ``"skip"`` (see :class:`wsolkit.data.BoxChecker`).
        on_degenerate_box: ``"error"`` or ``"skip"`` (leave boxes of zero width or height out,
            with a counted warning).

    Attributes:
        layout: the layout found.
        wnids, class_names: the ``C = num_classes`` wnids and names; labels index them.
        image_ids, paths: per image, the file stem and the full path.
        labels: ``(N,)`` int64.
        boxes: ``N`` arrays ``(K_i, 4)`` float32 (``K_i = 0`` for unannotated train images).
        sizes: ``N`` tuples ``(H, W)`` read from the image headers, or ``None`` for train images
            without annotation.
        box_source: ``"xml"``, ``"csv"`` or ``None`` (train without XML).
        num_boxes_clipped, num_boxes_skipped, num_images_without_boxes: what ``on_bad_box`` did.
        num_degenerate_boxes: boxes of zero width or height left out (``on_degenerate_box``).
        num_size_mismatches: XML files whose ``<size>`` differs from their image (warned).
        num_empty_annotations: train XML files without any ``<object>`` (warned; their images
            count as unannotated).

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
        on_degenerate_box: str = "error",
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
        data = os.path.join(root, "ILSVRC", "Data", "CLS-LOC") if self.layout == "kaggle" else root
        default_xml = default_annotation_dir(root, self.layout, split)
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
        checker = BoxChecker(on_bad_box, f"ILSVRC {split}", on_degenerate_box)
        self._mismatches: list[str] = []
        self._empty: list[str] = []
        if split == "train":
            self._build_train(train_dir, train_boxes, labels, checker)
        else:
            self._build_val(root, val_source, labels, checker)
        checker.finish()
        self.labels = np.array(labels, dtype=np.int64)
        self.num_boxes_clipped = checker.num_clipped
        self.num_boxes_skipped = checker.num_skipped
        self.num_images_without_boxes = checker.num_images_without_boxes
        self.num_degenerate_boxes = checker.num_degenerate
        self.num_size_mismatches = len(self._mismatches)
        self.num_empty_annotations = len(self._empty)
        if self._mismatches:
            warnings.warn(
                f"ILSVRC {split}: {len(self._mismatches)} XML files give a <size> that differs "
                f"from their image, the first {self._mismatches[0]}; their boxes were checked "
                "against the image",
                DatasetWarning,
                stacklevel=2,
            )
        if self._empty:
            warnings.warn(
                f"ILSVRC train: {len(self._empty)} XML files have no <object>, the first "
                f"{self._empty[0]}; their images count as unannotated (boxes (0, 4)), like the "
                "train images without an XML file",
                DatasetWarning,
                stacklevel=2,
            )

    def _check_xml_boxes(
        self,
        parsed: tuple[tuple[int, int], list[str], np.ndarray, list[str], list[str]],
        xml_path: str,
        image: str,
        checker: BoxChecker,
        required: bool,
    ) -> tuple[tuple[int, int], np.ndarray]:
        """Check the boxes of one parsed XML file against the image's own size (its header).

        Returns:
            ``(size, boxes kept)``, ``size`` ``(H, W)`` of the image.
        """
        claimed, _, rows, sources, written = parsed
        size = image_size(image)
        label = image
        if claimed != size:
            self._mismatches.append(
                f"{xml_path} says {claimed[1]}x{claimed[0]} (W x H), the image is "
                f"{size[1]}x{size[0]}"
            )
            label = f"{image} (its XML's <size> says {claimed[1]}x{claimed[0]})"
        boxes, _ = checker(rows, sources, size, label, required=required, written=written)
        return size, boxes

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
                    xml_path = os.path.join(xml_folder, image_id + ".xml")
                    parsed = parse_voc_xml(xml_path)
                    for box_wnid, where in zip(parsed[1], parsed[3]):
                        if box_wnid != wnid:
                            raise DatasetFormatError(
                                f"{where}: box of class {box_wnid} for an image in folder "
                                f"{wnid}; expected the folder's wnid"
                            )
                    if parsed[1]:
                        size, boxes = self._check_xml_boxes(parsed, xml_path, path, checker, False)
                    else:
                        self._empty.append(xml_path)
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
                wnids, rows, sources, written = table.pop(image_id)
            else:
                xml_path = os.path.join(self.annotation_dir, image_id + ".xml")
                if image_id + ".xml" not in xmls:
                    raise DatasetFormatError(
                        f"{xml_path}: missing annotation of val image {path}; expected "
                        f"{EXPECTED['xml']}"
                    )
                xmls.discard(image_id + ".xml")
                parsed = parse_voc_xml(xml_path)
                wnids, sources = parsed[1], parsed[3]
            source = xml_path if val_source == "xml" else csv_path
            wnid = self._single_wnid(wnids, sources, path, source)
            label = self._label(wnid, sources[0])
            if folder_wnid is not None and folder_wnid != wnid:
                raise DatasetFormatError(
                    f"{sources[0]}: boxes of class {wnid} for {path} in folder {folder_wnid}; "
                    "expected the folder's wnid"
                )
            if val_source == "csv":
                size = image_size(path)
                boxes = checker(rows, sources, size, path, written=written)[0]
            else:
                size, boxes = self._check_xml_boxes(parsed, xml_path, path, checker, True)
            self.image_ids.append(image_id)
            self.paths.append(path)
            labels.append(label)
            self.boxes.append(boxes)
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
            f"{sum(map(len, self.boxes))} boxes from {self.box_source or 'no annotation'}"
            f"{left_out_note(self)})"
        )
