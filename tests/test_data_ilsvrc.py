"""ILSVRCDataset on the Kaggle-layout fixture and on the classic layout built from it.

Fixture facts (tests/fixtures/build_fixtures.py): classes n01440764, n01443537, n01484850 in
that order; train images <wnid>_10026 (annotated) and <wnid>_10027 (not); val images 1..4 of
classes 2, 0, 1, 0, image 2 with two boxes.
"""

import os
import shutil

import numpy as np
import pytest

from wsolkit.data import DatasetFormatError, ILSVRCDataset, get_dataset

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ilsvrc_kaggle")
WNIDS = ["n01440764", "n01443537", "n01484850"]
VAL_BOXES = [
    [[5, 4, 30, 25]],
    [[2, 3, 14, 20], [18, 10, 31, 30]],
    [[0, 0, 30, 40]],
    [[10, 2, 26, 22]],
]


def make_classic(tmp_path, val_subfolders=False, with_xml=True, with_csv=False):
    """Rearrange the Kaggle fixture into the classic tar layout under tmp_path/classic."""
    root = tmp_path / "classic"
    data = os.path.join(FIXTURE, "ILSVRC", "Data", "CLS-LOC")
    shutil.copytree(os.path.join(data, "train"), root / "train")
    labels = {f"ILSVRC2012_val_{n:08d}": WNIDS[c] for n, c in zip(range(1, 5), (2, 0, 1, 0))}
    for name in sorted(os.listdir(os.path.join(data, "val"))):
        folder = root / "val" / (labels[name[:-5]] if val_subfolders else "")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(data, "val", name), folder / name)
    if with_xml:
        shutil.copytree(
            os.path.join(FIXTURE, "ILSVRC", "Annotations", "CLS-LOC", "val"), root / "val_boxes"
        )
    if with_csv:
        shutil.copy(os.path.join(FIXTURE, "LOC_val_solution.csv"), root)
    return root


def test_kaggle_train_labels_and_boxes():
    train = ILSVRCDataset(FIXTURE, "train")
    assert train.layout == "kaggle"
    assert train.wnids == WNIDS
    assert train.class_names[0] == "tench, Tinca tinca"
    assert train.class_names[2].startswith("great white shark, white shark")
    assert train.image_ids == [f"{w}_{n}" for w in WNIDS for n in (10026, 10027)]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # Annotated: the painted box [3 + c, 4, 31, 22 + c] of a 36x28 image; the others: (0, 4).
    np.testing.assert_array_equal(train.boxes[2], [[4, 4, 31, 23]])
    assert train.boxes[3].shape == (0, 4)
    assert train.sizes[2] == (28, 36) and train.sizes[3] is None
    sample = train[3]
    assert sample["boxes"].shape == (0, 4) and sample["label"] == 1
    assert sample["orig_size"] == (36, 28)
    assert all(len(b) == 0 for b in ILSVRCDataset(FIXTURE, "train", train_boxes=False).boxes)


@pytest.mark.parametrize("source", ["xml", "csv", "auto"])
def test_kaggle_val_from_xml_or_csv(source):
    val = ILSVRCDataset(FIXTURE, "val", val_source=source)
    assert val.box_source == ("xml" if source == "auto" else source)
    assert val.image_ids == [f"ILSVRC2012_val_{n:08d}" for n in range(1, 5)]
    assert val.labels.tolist() == [2, 0, 1, 0]
    for boxes, expected in zip(val.boxes, VAL_BOXES):
        np.testing.assert_array_equal(boxes, expected)
    assert val.sizes == [(30, 40), (32, 32), (40, 30), (24, 36)]
    sample = val[1]
    assert sample["boxes"].tolist() == [[2, 3, 14, 20], [18, 10, 31, 30]]
    assert sample["image"].size == (32, 32) and sample["label"] == 0


@pytest.mark.parametrize("subfolders", [False, True])
def test_classic_layout(tmp_path, subfolders):
    root = make_classic(tmp_path, val_subfolders=subfolders)
    val = ILSVRCDataset(root, "val")
    assert val.layout == "classic" and val.box_source == "xml"
    assert val.wnids == WNIDS and val.class_names == WNIDS  # sorted train folders
    assert val.labels.tolist() == [2, 0, 1, 0]
    for boxes, expected in zip(val.boxes, VAL_BOXES):
        np.testing.assert_array_equal(boxes, expected)
    assert ILSVRCDataset(root, "train").box_source is None
    assert len(ILSVRCDataset(root, "train")) == 6


def test_classic_layout_with_csv_mapping_and_annotation_dir(tmp_path):
    root = make_classic(tmp_path, with_xml=False, with_csv=True)
    val = ILSVRCDataset(root, "val")
    assert val.box_source == "csv" and val.labels.tolist() == [2, 0, 1, 0]
    # A synset mapping fixes the class order, whatever the folder order.
    (root / "LOC_synset_mapping.txt").write_text(
        "n01484850 great white shark\nn01440764 tench\nn01443537 goldfish\n"
    )
    remapped = ILSVRCDataset(root, "val")
    assert remapped.labels.tolist() == [0, 1, 2, 1]
    assert remapped.class_names == ["great white shark", "tench", "goldfish"]
    assert ILSVRCDataset(root, "train").labels.tolist() == [1, 1, 2, 2, 0, 0]
    xml = os.path.join(FIXTURE, "ILSVRC", "Annotations", "CLS-LOC", "val")
    from_xml = ILSVRCDataset(root, "val", val_source="xml", annotation_dir=xml)
    assert from_xml.box_source == "xml" and from_xml.labels.tolist() == [0, 1, 2, 1]


def test_val_subfolder_must_match_boxes(tmp_path):
    root = make_classic(tmp_path, val_subfolders=True)
    name = "ILSVRC2012_val_00000003.JPEG"
    shutil.move(root / "val" / WNIDS[1] / name, root / "val" / WNIDS[0] / name)
    with pytest.raises(DatasetFormatError, match=f"in folder {WNIDS[0]}"):
        ILSVRCDataset(root, "val")


def test_registry():
    assert len(get_dataset("ilsvrc", FIXTURE, "val", val_source="csv")) == 4
