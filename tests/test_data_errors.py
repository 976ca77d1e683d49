"""Every kind of bad input gets a clear error (or, when opted into, a counted warning).

Each test copies a fixture into tmp_path and breaks it there.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from wsolkit.data import (
    BadBoxError,
    BoxChecker,
    COCODetection,
    COCOObjectCrops,
    CUBDataset,
    DatasetFormatError,
    DatasetWarning,
    EmptySplitError,
    ILSVRCDataset,
    get_dataset,
    load_image,
    verify,
)
from wsolkit.data.__main__ import main

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
CUB_IMAGE_1 = "images/001.Black_footed_Albatross/Black_footed_Albatross_0000_1.jpg"  # 40x30
CUB_IMAGE_4 = "images/001.Black_footed_Albatross/Black_footed_Albatross_0003_4.jpg"  # test
VAL_3 = "ILSVRC2012_val_00000003"


def copy(tmp_path, name):
    root = tmp_path / name
    shutil.copytree(os.path.join(FIXTURES, name), root)
    return root


def set_line(path, number, text):
    """Replace 1-based line ``number`` of a text file."""
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def append(path, line):
    with open(path, "a") as handle:
        handle.write(line + "\n")


def truncate(path):
    """Cut a JPEG in the middle of its scan data: the header stays readable."""
    data = path.read_bytes()
    start_of_scan = data.index(b"\xff\xda")
    path.write_bytes(data[: (start_of_scan + len(data)) // 2])


@pytest.fixture
def cub(tmp_path):
    return copy(tmp_path, "cub")


@pytest.fixture
def kaggle(tmp_path):
    return copy(tmp_path, "ilsvrc_kaggle")


@pytest.fixture
def coco(tmp_path):
    return copy(tmp_path, "coco")


# ---------------------------------------------------------------- images


def test_load_image_unreadable_and_truncated(cub):
    assert load_image(cub / CUB_IMAGE_1).size == (40, 30)
    (cub / CUB_IMAGE_1).write_bytes(b"not an image at all")
    with pytest.raises(DatasetFormatError, match=re.escape(str(cub / CUB_IMAGE_1))):
        load_image(cub / CUB_IMAGE_1)
    truncate(cub / CUB_IMAGE_4)
    with pytest.raises(DatasetFormatError, match="truncated or corrupt"):
        load_image(cub / CUB_IMAGE_4)
    with pytest.raises(DatasetFormatError, match="image file not found"):
        load_image(cub / "missing.jpg")


def test_unreadable_image_fails_when_built(cub):
    (cub / CUB_IMAGE_1).write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(
        DatasetFormatError, match=r"Albatross_0000_1\.jpg: cannot read the image header"
    ):
        CUBDataset(cub, "train", val_per_class=0)


def test_truncated_image_fails_when_read(cub):
    truncate(cub / CUB_IMAGE_4)
    test = CUBDataset(cub, "test")  # the header is intact, so building works
    with pytest.raises(DatasetFormatError, match=r"Albatross_0003_4\.jpg: cannot decode"):
        test[0]


# ---------------------------------------------------------------- CUB text files


def test_cub_missing_file_and_image(cub):
    (cub / "images.txt").unlink()
    with pytest.raises(
        DatasetFormatError,
        match=r"images\.txt: missing file; expected \"<image id> <class folder>/<file>\.jpg\"",
    ):
        CUBDataset(cub, "test")


def test_cub_missing_image(cub):
    (cub / CUB_IMAGE_4).unlink()
    with pytest.raises(DatasetFormatError, match=r"Albatross_0003_4\.jpg: image file not found"):
        CUBDataset(cub, "test")


def test_cub_wrong_field_count(cub):
    set_line(cub / "images.txt", 3, "3 001.Black_footed_Albatross/a.jpg extra")
    with pytest.raises(
        DatasetFormatError, match=r"images\.txt:3: found 3 fields .*expected \"<image id>"
    ):
        CUBDataset(cub, "test")
    shutil.copy(os.path.join(FIXTURES, "cub", "images.txt"), cub)
    set_line(cub / "bounding_boxes.txt", 2, "2 4.0 4.0 23.0")
    with pytest.raises(DatasetFormatError, match=r"bounding_boxes\.txt:2: found 4 fields"):
        CUBDataset(cub, "test")


def test_cub_not_a_number(cub):
    set_line(cub / "bounding_boxes.txt", 1, "1 3.0 four 32.0 21.0")
    with pytest.raises(DatasetFormatError, match=r"bounding_boxes\.txt:1: 'four' is not a number"):
        CUBDataset(cub, "test")


@pytest.mark.parametrize("label", ["4", "0"])
def test_cub_label_out_of_range(cub, label):
    set_line(cub / "image_class_labels.txt", 1, f"1 {label}")
    with pytest.raises(
        DatasetFormatError,
        match=rf"image_class_labels\.txt:1: class id {label} is out of range; expected 1\.\.3",
    ):
        CUBDataset(cub, "test")


def test_cub_label_disagrees_with_folder(cub):
    set_line(cub / "image_class_labels.txt", 1, "1 2")
    with pytest.raises(
        DatasetFormatError,
        match=r"image_class_labels\.txt:1: .*in folder '001\.Black_footed_Albatross'",
    ):
        CUBDataset(cub, "test")


def test_cub_ids_must_match_across_files(cub):
    duplicate = "1 001.Black_footed_Albatross/Black_footed_Albatross_0001_2.jpg"
    set_line(cub / "images.txt", 2, duplicate)
    with pytest.raises(
        DatasetFormatError, match=r"images\.txt:2: image id 1 already appeared on line 1"
    ):
        CUBDataset(cub, "test")
    shutil.copy(os.path.join(FIXTURES, "cub", "images.txt"), cub)
    set_line(cub / "train_test_split.txt", 12, "")
    with pytest.raises(DatasetFormatError, match=r"train_test_split\.txt: no line for image id 12"):
        CUBDataset(cub, "test")
    shutil.copy(os.path.join(FIXTURES, "cub", "train_test_split.txt"), cub)
    set_line(cub / "train_test_split.txt", 12, "12 2")
    with pytest.raises(DatasetFormatError, match=r"train_test_split\.txt:12: split flag '2'"):
        CUBDataset(cub, "test")
    shutil.copy(os.path.join(FIXTURES, "cub", "train_test_split.txt"), cub)
    with open(cub / "part_boxes.txt", "a") as handle:
        handle.write("13 1.0 1.0 2.0 2.0\n")
    with pytest.raises(
        DatasetFormatError, match=r"part_boxes\.txt:\d+: image id 13 is not in images\.txt"
    ):
        CUBDataset(cub, "test")


def test_cub_classes_in_order(cub):
    set_line(cub / "classes.txt", 2, "3 002.Laysan_Albatross")
    with pytest.raises(DatasetFormatError, match=r"classes\.txt:2: class id 3; expected 2"):
        CUBDataset(cub, "test")


def test_cub_val_images_must_be_train_images(cub):
    (cub / "val_images.txt").write_text("3\n4\n")
    with pytest.raises(DatasetFormatError, match=r"val_images\.txt:2: image id 4 is a test image"):
        CUBDataset(cub, "val")


def test_cub_segmentation_missing_or_wrong_size(cub):
    mask = cub / "segmentations" / CUB_IMAGE_4[len("images/"):].replace(".jpg", ".png")
    mask.unlink()
    with pytest.raises(DatasetFormatError, match=r"Albatross_0003_4\.png: missing file"):
        CUBDataset(cub, "test")
    from PIL import Image

    Image.new("L", (5, 5)).save(mask)
    with pytest.raises(DatasetFormatError, match=r"segmentation is 5x5 .* image is 36x28"):
        CUBDataset(cub, "test")[0]


# ---------------------------------------------------------------- boxes


def test_box_outside_image(cub):
    # Image 1 is 40x30: x2 = 3 + 39 = 42 is more than 1 px beyond the right edge.
    set_line(cub / "bounding_boxes.txt", 1, "1 3.0 4.0 39.0 21.0")
    with pytest.raises(BadBoxError, match=r"bounding_boxes\.txt:1: box .* outside the 40x30 image"):
        CUBDataset(cub, "train", val_per_class=0)
    with pytest.warns(DatasetWarning, match=r"clipped 1 and skipped 0 ground-truth boxes"):
        clipped = CUBDataset(cub, "train", val_per_class=0, on_bad_box="clip")
    assert clipped.num_boxes_clipped == 1 and clipped.num_boxes_skipped == 0
    np.testing.assert_array_equal(clipped.boxes[0], [[3, 4, 40, 25]])
    with pytest.warns(
        DatasetWarning, match=r"clipped 0 and skipped 1 .*; 1 images were left without any box"
    ):
        skipped = CUBDataset(cub, "train", val_per_class=0, on_bad_box="skip")
    assert skipped.num_boxes_skipped == 1 and skipped.num_images_without_boxes == 1
    assert skipped.boxes[0].shape == (0, 4)
    assert skipped[0]["boxes"].shape == (0, 4)


def test_box_tolerance_is_one_pixel(cub):
    set_line(cub / "bounding_boxes.txt", 1, "1 -1.0 4.0 42.0 26.0")  # [-1, 4, 41, 30]
    dataset = CUBDataset(cub, "train", val_per_class=0)
    np.testing.assert_array_equal(dataset.boxes[0], [[-1, 4, 41, 30]])


@pytest.mark.parametrize(
    "line, what",
    [("1 3.0 4.0 0.0 21.0", "has no area"), ("1 3.0 4.0 10.0 -2.0", "has a negative width")],
)
def test_degenerate_box(cub, line, what):
    set_line(cub / "bounding_boxes.txt", 1, line)
    with pytest.raises(
        BadBoxError, match=rf"bounding_boxes\.txt:1: box x y w h = {line[2:]} of .* {what}"
    ):
        CUBDataset(cub, "train", val_per_class=0)
    # Clipping cannot give a degenerate box an area: it is dropped and counted.
    with pytest.warns(DatasetWarning, match="clipped 0 and skipped 1"):
        dataset = CUBDataset(cub, "train", val_per_class=0, on_bad_box="clip")
    assert dataset.num_boxes_skipped == 1


def test_box_checker_policies_by_hand():
    # In a 10x10 image: within the tolerance, outside (clippable), entirely outside, degenerate.
    boxes = np.array(
        [[-0.5, 0, 5, 5], [-3, 1, 4, 4], [20, 1, 30, 4], [2, 2, 2, 5]], dtype=np.float32
    )
    sources = ["a:1", "a:2", "a:3", "a:4"]
    clip = BoxChecker("clip", "test")
    kept_boxes, kept = clip(boxes, sources, (10, 10), "x.jpg")
    np.testing.assert_array_equal(kept_boxes, [[-0.5, 0, 5, 5], [0, 1, 4, 4]])
    assert kept.tolist() == [0, 1] and (clip.num_clipped, clip.num_skipped) == (1, 2)
    skip = BoxChecker("skip", "test")
    kept_boxes, kept = skip(boxes, sources, (10, 10), "x.jpg")
    assert kept.tolist() == [0] and (skip.num_clipped, skip.num_skipped) == (0, 3)
    with pytest.warns(DatasetWarning, match=r"^test: on_bad_box='skip' clipped 0 and skipped 3 "):
        skip.finish()
    message = r"^a:2: box \[x1, y1, x2, y2\] = \[-3\.0, 1\.0, 4\.0, 4\.0\] of x\.jpg lies outside"
    with pytest.raises(BadBoxError, match=message):
        BoxChecker("error", "test")(boxes, sources, (10, 10), "x.jpg")


def test_bad_policy_and_split():
    with pytest.raises(ValueError, match="on_bad_box='drop'"):
        CUBDataset(os.path.join(FIXTURES, "cub"), "test", on_bad_box="drop")
    with pytest.raises(
        ValueError, match=r"split='valid'; expected one of \('train', 'val', 'test'\)"
    ):
        CUBDataset(os.path.join(FIXTURES, "cub"), "valid")


# ---------------------------------------------------------------- ILSVRC


def test_ilsvrc_wrong_layout(tmp_path):
    with pytest.raises(
        DatasetFormatError, match="neither ILSVRC layout found; expected ILSVRC/Data/CLS-LOC"
    ):
        ILSVRCDataset(tmp_path, "val")


def test_ilsvrc_kaggle_needs_mapping(kaggle):
    (kaggle / "LOC_synset_mapping.txt").unlink()
    with pytest.raises(
        DatasetFormatError,
        match=r"LOC_synset_mapping\.txt: missing file; expected \"<wnid> <class name>\"",
    ):
        ILSVRCDataset(kaggle, "train")


def test_ilsvrc_val_image_without_boxes(kaggle):
    set_line(kaggle / "LOC_val_solution.csv", 4, "")
    with pytest.raises(DatasetFormatError, match=rf"no line for val image .*{VAL_3}\.JPEG"):
        ILSVRCDataset(kaggle, "val", val_source="csv")
    (kaggle / "ILSVRC" / "Annotations" / "CLS-LOC" / "val" / f"{VAL_3}.xml").unlink()
    with pytest.raises(DatasetFormatError, match=rf"{VAL_3}\.xml: missing annotation of val image"):
        ILSVRCDataset(kaggle, "val", val_source="xml")


def test_ilsvrc_annotation_without_image(kaggle):
    (kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "val" / f"{VAL_3}.JPEG").unlink()
    with pytest.raises(DatasetFormatError, match=rf"1 annotations have no image .*e\.g\. {VAL_3}"):
        ILSVRCDataset(kaggle, "val", val_source="csv")


def test_ilsvrc_csv_format(kaggle):
    csv = kaggle / "LOC_val_solution.csv"
    set_line(csv, 3, "ILSVRC2012_val_00000002,n01440764 2 3 14")
    with pytest.raises(
        DatasetFormatError, match=r"LOC_val_solution\.csv:3: found .*expected a header"
    ):
        ILSVRCDataset(kaggle, "val", val_source="csv")
    set_line(csv, 3, "ILSVRC2012_val_00000002,n99999999 2 3 14 20")
    with pytest.raises(
        DatasetFormatError,
        match=r"LOC_val_solution\.csv:3: wnid n99999999 is not one of the 3 classes",
    ):
        ILSVRCDataset(kaggle, "val", val_source="csv")
    set_line(csv, 1, "ImageId PredictionString")
    with pytest.raises(DatasetFormatError, match=r"LOC_val_solution\.csv:1: header"):
        ILSVRCDataset(kaggle, "val", val_source="csv")


def test_ilsvrc_xml_problems(kaggle):
    xml = kaggle / "ILSVRC" / "Annotations" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000002.xml"
    text = xml.read_text()
    xml.write_text(text.replace("<name>n01440764</name>", "<name>n01443537</name>", 1))
    with pytest.raises(
        DatasetFormatError,
        match=r"val_00000002\.xml \(object 2\): box of class n01440764 but the first box",
    ):
        ILSVRCDataset(kaggle, "val")
    xml.write_text(text.replace("<xmax>31</xmax>", "<xmax>40</xmax>"))  # the image is 32 wide
    with pytest.raises(
        BadBoxError, match=r"val_00000002\.xml \(object 2\): box .* outside the 32x32 image"
    ):
        ILSVRCDataset(kaggle, "val")
    xml.write_text(text.replace("<ymin>3</ymin>", ""))
    with pytest.raises(
        DatasetFormatError, match=r"\(object 1\): missing <ymin>; expected PASCAL VOC XML"
    ):
        ILSVRCDataset(kaggle, "val")
    xml.write_text(text[:200])
    with pytest.raises(DatasetFormatError, match="not well-formed XML"):
        ILSVRCDataset(kaggle, "val")


def test_ilsvrc_train_problems(kaggle):
    train = kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "train"
    (train / "n01440764" / "notes.txt").write_text("x")
    with pytest.raises(
        DatasetFormatError, match=r"notes\.txt: unexpected file; expected only images"
    ):
        ILSVRCDataset(kaggle, "train")
    (train / "n01440764" / "notes.txt").unlink()
    shutil.copytree(train / "n01440764", train / "n09999999")
    with pytest.raises(DatasetFormatError, match="wnid n09999999 is not one of the 3 classes"):
        ILSVRCDataset(kaggle, "train")


# ---------------------------------------------------------------- COCO


def edit_json(path, change):
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_coco_missing_files(coco):
    (coco / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(
        DatasetFormatError,
        match=r"instances_val2017\.json: missing file; expected COCO instances JSON",
    ):
        COCODetection(coco, "val")
    (coco / "train2017" / "000000000009.jpg").unlink()
    with pytest.raises(
        DatasetFormatError, match=r"000000000009\.jpg: image file not found \(image id 9"
    ):
        COCODetection(coco, "train")


def test_coco_invalid_json(coco):
    path = coco / "annotations" / "instances_val2017.json"
    path.write_text(path.read_text()[:300])
    with pytest.raises(DatasetFormatError, match=r"instances_val2017\.json:\d+: not valid JSON"):
        COCODetection(coco, "val")


def test_coco_category_out_of_range(coco):
    path = coco / "annotations" / "instances_val2017.json"
    edit_json(path, lambda d: d["annotations"][1].update(category_id=99))
    with pytest.raises(
        DatasetFormatError,
        match=r"annotation 1002 \(annotations\[1\]\) has category_id 99, which is not in "
        r"'categories' \(3 ids\)",
    ):
        COCOObjectCrops(coco, "val")


def test_coco_malformed_bbox(coco):
    path = coco / "annotations" / "instances_val2017.json"
    edit_json(path, lambda d: d["annotations"][0].update(bbox=[1, 2, 3]))
    with pytest.raises(
        DatasetFormatError, match=r"annotation 1001 \(annotations\[0\]\) has bbox \[1, 2, 3\]; "
    ):
        COCODetection(coco, "val")


def test_coco_bad_box_policies(coco):
    path = coco / "annotations" / "instances_val2017.json"
    edit_json(path, lambda d: d["annotations"][1].update(bbox=[44, 2, 30, 12]))  # x2 = 74 > 64
    with pytest.raises(BadBoxError, match=r"\(annotation 1002\): box .* outside the 64x48 image"):
        COCODetection(coco, "val")
    with pytest.warns(DatasetWarning, match="skipped 1"):
        skipped = COCODetection(coco, "val", on_bad_box="skip")
    sample = skipped[0]
    # The instance goes with its box: labels and ids stay aligned.
    assert sample["category_ids"].tolist() == [1, 18, 1]
    assert sample["annotation_ids"].tolist() == [1001, 1003, 1004]
    with pytest.warns(DatasetWarning, match="clipped 1"):
        clipped = COCODetection(coco, "val", on_bad_box="clip")
    assert clipped[0]["boxes"][1].tolist() == [44, 2, 64, 14]


# ---------------------------------------------------------------- registry, verify and CLI


def test_unknown_dataset_name():
    with pytest.raises(
        ValueError,
        match=r"unknown dataset 'imagenet'; "
        r"expected one of \['coco', 'coco_crops', 'cub', 'ilsvrc', 'openimages'\]",
    ):
        get_dataset("imagenet", "/nowhere", "val")


def test_verify_good_roots(cub):
    lines = []
    assert verify("cub", cub, full=True, splits=["test"], log=lines.append) == []
    assert lines[0].startswith("CUBDataset(") and "3 images, 3 classes, 3 boxes" in lines[0]
    assert verify("ilsvrc", os.path.join(FIXTURES, "ilsvrc_kaggle"), full=True) == []
    assert verify("coco", os.path.join(FIXTURES, "coco"), full=True) == []
    # The default 5 images per class would hold out every train image of this tiny fixture.
    problems = verify("cub", cub)
    assert len(problems) == 1
    assert problems[0].startswith("CUB train at ") and "pass val_per_class=2" in problems[0]


def test_verify_lists_missing_files(cub):
    (cub / "classes.txt").unlink()
    shutil.rmtree(cub / "images")
    problems = verify("cub", cub)
    assert len(problems) == 2
    expected = f"missing {cub / 'classes.txt'}: expected \"<class id> <class folder>\""
    assert problems[0].startswith(expected)
    assert problems[1].startswith(f"missing {cub / 'images'}: expected a folder images/")


def test_verify_counts_bad_boxes_and_decodes_with_full(cub):
    (cub / "val_images.txt").write_text("3\n")
    set_line(cub / "bounding_boxes.txt", 1, "1 3.0 4.0 39.0 21.0")
    set_line(cub / "bounding_boxes.txt", 2, "2 4.0 4.0 0.0 14.0")
    truncate(cub / CUB_IMAGE_4)
    problems = verify("cub", cub)
    assert len(problems) == 2
    assert re.match(r".*bounding_boxes\.txt:1: box .* outside the 40x30 image", problems[0])
    assert problems[1] == "cub train: 2 bad boxes in all (outside the image or without area)"
    full = verify("cub", cub, full=True)
    assert len(full) == 3 and "Albatross_0003_4.jpg: cannot decode" in full[2]


def test_cli_exit_codes(cub, capsys):
    (cub / "val_images.txt").write_text("3\n")
    assert main(["verify", "cub", str(cub), "--full"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"cub at {cub}: OK")
    assert "CUBDataset(" in out
    (cub / "train_test_split.txt").unlink()
    assert main(["verify", "cub", str(cub)]) == 1
    out = capsys.readouterr().out
    assert "1 problems in" in out and "train_test_split.txt: expected" in out
    assert main(["verify", "ilsvrc", os.path.join(FIXTURES, "ilsvrc_kaggle")]) == 0
    assert capsys.readouterr().out.rstrip().endswith(": OK")


def test_cli_as_module(tmp_path):
    # One real process (imports of torch dominate its time); main() covers the rest in-process.
    command = [sys.executable, "-m", "wsolkit.data", "verify", "ilsvrc", str(tmp_path)]
    bad = subprocess.run(command, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stderr
    assert "1 problems in" in bad.stdout and "neither ILSVRC layout found" in bad.stdout


def test_generate_is_dispatched_lazily(monkeypatch):
    calls = []
    fake = types.ModuleType("wsolkit.data.synthetic")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "wsolkit.data.synthetic", fake)
    import wsolkit.data

    monkeypatch.setattr(wsolkit.data, "synthetic", fake, raising=False)
    assert main(["generate", "--out", "x", "--n", "3"]) == 0
    assert calls == [["--out", "x", "--n", "3"]]


# ---------------------------------------------------------------- the official releases as they are


def add_official_degenerate_box(coco):
    """Add a 640x427 train image holding the official release's zero-height annotation 918."""
    from PIL import Image

    Image.new("RGB", (640, 427), (128, 128, 128)).save(coco / "train2017" / "000000000030.jpg")

    def change(document):
        document["images"].append(
            {"license": 1, "file_name": "000000000030.jpg", "height": 427, "width": 640, "id": 30}
        )
        document["annotations"].append(
            {
                "segmentation": [[296.65, 388.33, 297.68, 388.33, 297.68, 388.33, 296.65, 388.33]],
                "area": 0.0,
                "iscrowd": 0,
                "image_id": 30,
                "bbox": [296.65, 388.33, 1.03, 0.0],
                "category_id": 1,
                "id": 918,
            }
        )

    edit_json(coco / "annotations" / "instances_train2017.json", change)


OFFICIAL_918 = re.escape(r"(annotation 918): box bbox [296.65, 388.33, 1.03, 0.0]")


def test_coco_zero_height_box_of_the_official_release_is_left_out_and_counted(coco):
    add_official_degenerate_box(coco)
    warning = r"COCO train2017 crops: left out 1 ground-truth boxes of zero width or height .*"
    with pytest.warns(DatasetWarning, match=warning + OFFICIAL_918):
        crops = COCOObjectCrops(coco, "train")
    assert crops.num_degenerate_boxes == 1 and len(crops) == 2  # the two crops of the fixture
    assert "4 instances; not used: 0 crowd instances, 1 with a box of zero width or height" in (
        crops.summary()
    )
    with pytest.warns(DatasetWarning, match="left out 1 ground-truth boxes"):
        scenes = COCODetection(coco, "train")
    assert scenes.num_degenerate_boxes == 1 and scenes.image_ids == [9, 25, 30]
    assert scenes.boxes[2].shape == (0, 4) and scenes[2]["annotation_ids"].tolist() == []
    assert "1 degenerate boxes left out" in repr(scenes)
    lines = []
    assert verify("coco", coco, full=True, log=lines.append) == []
    assert any(line.startswith("warning: COCO train2017: left out 1 ") for line in lines)
    with pytest.raises(
        BadBoxError,
        match=OFFICIAL_918 + r" of .*000000000030\.jpg has no area: zero width or height .*"
        r"pass on_degenerate_box='skip'",
    ):
        COCODetection(coco, "train", on_degenerate_box="error")


@pytest.mark.parametrize(
    "bbox, error, message",
    [
        (
            [296.65, 388.33, "1.03", 0.0],
            DatasetFormatError,
            r'annotation 918 \(annotations\[3\]\) has bbox \[296\.65, 388\.33, "1\.03", 0\.0\]; '
            r"expected \[x, y, w, h\], four finite numbers",
        ),
        (
            [296.65, 388.33, 1.03, -0.5],
            BadBoxError,
            r"box bbox \[296\.65, 388\.33, 1\.03, -0\.5\] of .* has a negative width or height",
        ),
        (
            [636.5, 388.33, 10.0, 0.0],
            BadBoxError,
            r"box bbox \[636\.5, 388\.33, 10\.0, 0\.0\] of .* lies outside the 640x427 image",
        ),
    ],
)
def test_coco_malformed_boxes_stay_errors(coco, bbox, error, message):
    add_official_degenerate_box(coco)
    path = coco / "annotations" / "instances_train2017.json"
    edit_json(path, lambda d: d["annotations"][3].update(bbox=bbox))
    with pytest.raises(error, match=message):
        COCOObjectCrops(coco, "train")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["annotations"][1].update(category_id="3"),
            r'annotation 1002 \(annotations\[1\]\) has category_id "3", not an integer; expected '
            r"the integer id of an entry of 'categories'",
        ),
        (
            lambda d: d["annotations"][0].update(image_id="139"),
            r'annotation 1001 \(annotations\[0\]\) has image_id "139", not an integer',
        ),
        (
            lambda d: d["images"][0].update(id="139"),
            r'images\[0\] has id "139"; expected an integer id',
        ),
        (
            lambda d: d["images"][2].update(height=0),
            r"images\[2\] \(id 632\) has height 0; expected a positive integer",
        ),
    ],
)
def test_coco_ids_and_values_are_quoted_as_written(coco, change, message):
    edit_json(coco / "annotations" / "instances_val2017.json", change)
    with pytest.raises(DatasetFormatError, match=message):
        COCODetection(coco, "val")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["images"][1].update(id=139),
            r'images\[1\] \(file_name "000000000285\.jpg"\) has id 139, as images\[0\] '
            r'\(file_name "000000000139\.jpg"\) does; expected each image id once',
        ),
        (
            lambda d: d["annotations"][1].update(id=1001),
            r"annotation 1001 \(annotations\[1\]\): id 1001 also belongs to annotations\[0\]; "
            r"expected each annotation id once",
        ),
        (
            lambda d: d["categories"][2].update(id=18),
            r"categories\[2\] has id 18, as categories\[0\] does; expected each category id once",
        ),
        (
            lambda d: d["images"][1].update(file_name="000000000139.jpg"),
            r'images\[1\] \(id 285\) has file_name "000000000139\.jpg", as images\[0\] \(id 139\) '
            r"does; expected one entry per image file",
        ),
    ],
)
def test_coco_duplicate_ids_are_errors(coco, change, message):
    edit_json(coco / "annotations" / "instances_val2017.json", change)
    with pytest.raises(DatasetFormatError, match=message):
        COCODetection(coco, "val")
    problems = verify("coco", coco, full=True)
    assert len(problems) == 1 and re.search(message, problems[0])


@pytest.mark.parametrize(
    "index, segmentation, message",
    [
        (0, None, r"annotation 1001 has no 'segmentation'; expected polygons"),
        (0, "abc", r'annotation 1001 has segmentation "abc"; expected polygons'),
        (
            0,
            [[2, 3, "42", 3, 42, 33]],
            r'annotation 1001: polygon 0 of its segmentation is \[2, 3, "42", 3, 42, 33\]',
        ),
        (
            3,
            {"counts": [0, 480, 2592], "size": [10, 10]},
            r"annotation 1004: its RLE segmentation has size \[10, 10\] but image 139 is "
            r"\[48, 64\]",
        ),
        (
            3,
            {"counts": [0, 480, 100], "size": [48, 64]},
            r"annotation 1004: its RLE counts \[0, 480, 100\] are not run lengths .*"
            r"summing to 48 x 64 = 3072",
        ),
        (
            3,
            {"counts": "zzzz", "size": [48, 64]},
            r'annotation 1004: its RLE counts "zzzz" are not run lengths',
        ),
    ],
)
def test_coco_malformed_masks_name_the_annotation(coco, index, segmentation, message):
    path = coco / "annotations" / "instances_val2017.json"

    def change(document):
        if segmentation is None:
            del document["annotations"][index]["segmentation"]
        else:
            document["annotations"][index]["segmentation"] = segmentation

    edit_json(path, change)
    assert len(COCODetection(coco, "val")) == 3  # masks not asked for: not read
    with pytest.raises(DatasetFormatError, match=r"instances_val2017\.json: " + message):
        COCODetection(coco, "val", with_masks=True)
    problems = verify("coco", coco)  # checked without --full
    assert len(problems) == 1 and re.search(message, problems[0])


def test_coco_polygons_of_fewer_than_3_points_are_left_out_and_counted(coco):
    path = coco / "annotations" / "instances_val2017.json"
    edit_json(path, lambda d: d["annotations"][0].update(segmentation=[[2, 3, 42, 3]]))
    with pytest.warns(
        DatasetWarning,
        match=r"COCO val2017: left 1 polygons of fewer than 3 points out of the masks \(the first "
        r"in .*annotation 1001\); 1 instances have no usable polygon, so their mask is empty",
    ):
        dataset = COCODetection(coco, "val", with_masks=True)
    assert (dataset.num_unusable_polygons, dataset.num_instances_without_mask) == (1, 1)
    masks = dataset[0]["masks"]
    assert masks[0].sum() == 0 and masks[3].sum() == 48 * 10  # the crowd RLE is untouched


def test_undecodable_rle_names_the_annotation():
    from wsolkit.data.coco import decode_segmentation

    with pytest.raises(
        DatasetFormatError, match=r"^x\.json: annotation 7: cannot decode its segmentation"
    ):
        decode_segmentation({"size": [4, 5], "counts": "PPYo0"}, 4, 5, "x.json: annotation 7")


def xml_of(kaggle, split, name):
    return kaggle / "ILSVRC" / "Annotations" / "CLS-LOC" / split / name


def test_ilsvrc_boxes_are_checked_against_the_image_not_the_xml_size(kaggle):
    xml = xml_of(kaggle, "val", "ILSVRC2012_val_00000002.xml")
    text = xml.read_text()
    claims_1000 = text.replace("<width>32</width>", "<width>1000</width>").replace(
        "<height>32</height>", "<height>1000</height>"
    )
    xml.write_text(claims_1000.replace("<xmax>31</xmax>", "<xmax>900</xmax>"))
    message = (
        r"val_00000002\.xml \(object 2\): box xmin ymin xmax ymax = 18 10 900 30 of "
        r".*val_00000002\.JPEG \(its XML's <size> says 1000x1000\) lies outside the 32x32 image"
    )
    with pytest.raises(BadBoxError, match=message):
        ILSVRCDataset(kaggle, "val")
    assert any(re.search(message, p) for p in verify("ilsvrc", kaggle, full=True))
    # A wrong <size> alone: the boxes fit the image, so the size is only counted.
    xml.write_text(claims_1000)
    with pytest.warns(
        DatasetWarning,
        match=r"ILSVRC val: 1 XML files give a <size> that differs from their image, the first "
        r".*val_00000002\.xml says 1000x1000 \(W x H\), the image is 32x32",
    ):
        val = ILSVRCDataset(kaggle, "val")
    assert val.num_size_mismatches == 1 and val.sizes[1] == (32, 32)
    train_xml = xml_of(kaggle, "train", "n01443537/n01443537_10026.xml")
    text = train_xml.read_text().replace("<width>36</width>", "<width>360</width>")
    train_xml.write_text(text.replace("<xmax>31</xmax>", "<xmax>300</xmax>"))
    with pytest.raises(BadBoxError, match=r"n01443537_10026\.JPEG \(its XML's <size> says 360x28"):
        ILSVRCDataset(kaggle, "train")


def test_ilsvrc_train_xml_without_object_is_counted(kaggle):
    xml = xml_of(kaggle, "train", "n01440764/n01440764_10026.xml")
    text = xml.read_text()
    xml.write_text(text[: text.index("\t<object>")] + "</annotation>\n")
    with pytest.warns(
        DatasetWarning,
        match=r"ILSVRC train: 1 XML files have no <object>, the first .*n01440764_10026\.xml; "
        r"their images count as unannotated",
    ):
        train = ILSVRCDataset(kaggle, "train")
    assert train.num_empty_annotations == 1
    assert train.boxes[0].shape == (0, 4) and train.sizes[0] is None
    lines = []
    assert verify("ilsvrc", kaggle, splits=["train"], log=lines.append) == []
    assert any(line.startswith("warning: ILSVRC train: 1 XML files have no") for line in lines)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda csv: set_line(csv, 3, "ILSVRC2012_val_00000002,n01440764 2 3 14"),
            r"LOC_val_solution\.csv:3: found .*expected a header",
        ),
        (
            lambda csv: append(csv, "ILSVRC2012_val_00000002,n01440764 2 3 14 20 "),
            r"LOC_val_solution\.csv:6: ImageId ILSVRC2012_val_00000002 already appeared on line 3",
        ),
        (
            lambda csv: append(csv, "ILSVRC2012_val_00000009,n01440764 1 1 5 5 "),
            r"LOC_val_solution\.csv: 1 annotations have no image .*e\.g\. ILSVRC2012_val_00000009",
        ),
        (
            lambda csv: set_line(
                csv, 3, "ILSVRC2012_val_00000002,n01440764 2 3 14 21 n01440764 18 10 31 30 "
            ),
            r"LOC_val_solution\.csv and .*CLS-LOC/val disagree on 1 val images, the first "
            r"ILSVRC2012_val_00000002: n01440764 2 3 14 21; 18 10 31 30 in the CSV, n01440764 "
            r"2 3 14 20; 18 10 31 30 in the XML",
        ),
    ],
)
def test_verify_reads_the_csv_beside_the_xml_folder(kaggle, edit, message):
    edit(kaggle / "LOC_val_solution.csv")
    assert ILSVRCDataset(kaggle, "val").box_source == "xml"  # the loader reads the XML
    problems = verify("ilsvrc", kaggle, splits=["val"])
    assert len(problems) == 1 and re.search(message, problems[0]), problems


def test_full_verify_finds_empty_and_truncated_images_with_a_progress_bar(kaggle, capsys):
    # An unannotated train image (no XML, so no header read) and an annotated val image.
    train = kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "train"
    (train / "n01440764" / "n01440764_10027.JPEG").write_bytes(b"")
    truncate(kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "val" / f"{VAL_3}.JPEG")
    assert main(["verify", "ilsvrc", str(kaggle)]) == 0
    assert "add --full to decode every image" in capsys.readouterr().out
    assert main(["verify", "ilsvrc", str(kaggle), "--full", "--workers", "2"]) == 1
    captured = capsys.readouterr()
    assert "2 problems in" in captured.out
    assert re.search(r"n01440764_10027\.JPEG: cannot decode the image", captured.out)
    assert re.search(rf"{VAL_3}\.JPEG: cannot decode the image", captured.out)
    assert re.search(r"ilsvrc train: 100%.* 6/6", captured.err)  # tqdm's bar, on stderr


def test_the_verify_commands_a_user_copies_decode_every_image():
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commands = []
    for name in ("README.md", os.path.join("data", "README.md")):
        with open(os.path.join(repository, name), encoding="utf-8") as handle:
            commands += re.findall(r"-m wsolkit\.data verify [^`\n]*", handle.read())
    assert len(commands) >= 4
    assert all("--full" in command for command in commands), commands


def test_cub_repeated_box_line_is_an_error(cub):
    append(cub / "bounding_boxes.txt", "1 3 4 32 21.0")
    with pytest.raises(
        DatasetFormatError,
        match=r"bounding_boxes\.txt:14: box x y w h = 3 4 32 21\.0 of image id 1 repeats line 1; "
        r"expected each box once",
    ):
        CUBDataset(cub, "test")


def test_cub_two_image_ids_for_one_file_is_an_error(cub):
    set_line(cub / "images.txt", 2, "2 " + CUB_IMAGE_1[len("images/"):])
    with pytest.raises(
        DatasetFormatError,
        match=r"images\.txt:2: image id 2 names the file 001\.Black_footed_Albatross/"
        r"Black_footed_Albatross_0000_1\.jpg, which image id 1 names on line 1; expected one id "
        r"per file",
    ):
        CUBDataset(cub, "test")


def test_cub_empty_files_are_errors(cub):
    (cub / "images.txt").write_text("")
    with pytest.raises(DatasetFormatError, match=r"images\.txt: no images \(the file is empty\)"):
        CUBDataset(cub, "test")
    for name in os.listdir(cub):
        if name.endswith(".txt"):
            (cub / name).write_text("")
    with pytest.raises(DatasetFormatError, match=r"classes\.txt: no classes \(the file is empty\)"):
        CUBDataset(cub, "test")
    problems = verify("cub", cub)
    assert len(problems) == 1 and "classes.txt: no classes" in problems[0]


def test_byte_order_mark_is_dropped_with_a_warning(cub, kaggle, coco):
    images = cub / "images.txt"
    images.write_bytes(b"\xef\xbb\xbf" + images.read_bytes())
    with pytest.warns(DatasetWarning, match=r"images\.txt: starts with a UTF-8 byte-order mark"):
        test = CUBDataset(cub, "test")
    assert test.image_ids == ["4", "8", "12"]
    csv = kaggle / "LOC_val_solution.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    with pytest.warns(DatasetWarning, match=r"LOC_val_solution\.csv: starts with a UTF-8"):
        assert len(ILSVRCDataset(kaggle, "val", val_source="csv")) == 4
    annotations = coco / "annotations" / "instances_val2017.json"
    annotations.write_bytes(b"\xef\xbb\xbf" + annotations.read_bytes())
    with pytest.warns(DatasetWarning, match=r"instances_val2017\.json: starts with a UTF-8"):
        assert len(COCODetection(coco, "val")) == 3


def test_text_that_is_not_utf8_names_the_line(cub):
    set_line(cub / "classes.txt", 2, "2 002.Laysan_Albatross")
    with open(cub / "classes.txt", "ab") as handle:
        handle.write(b"4 004.Caf\xe9\n")
    with pytest.raises(DatasetFormatError, match=r"classes\.txt:4: not UTF-8 text"):
        CUBDataset(cub, "test")


def test_holdout_that_empties_the_train_split_is_refused(cub):
    # Four train images per class (the small dataset a user tries first) and 5 held out.
    split = cub / "train_test_split.txt"
    split.write_text(split.read_text().replace(" 0\n", " 1\n"))
    with pytest.raises(
        EmptySplitError,
        match=r"the validation hold-out \(val_per_class=5 images per class, no val_images\.txt\) "
        r"takes all 4 train images of class 1 \(001\.Black_footed_Albatross\) and 2 other "
        r"classes.*pass val_per_class=3 \(the most that leaves every class a train image\)",
    ):
        CUBDataset(cub, "train")
    assert len(CUBDataset(cub, "train", val_per_class=3)) == 3
    (cub / "val_images.txt").write_text("1\n2\n3\n4\n")
    with pytest.raises(
        EmptySplitError,
        match=r"val_images\.txt: lists every train image of class 1 "
        r"\(001\.Black_footed_Albatross\) \(4 images\)",
    ):
        CUBDataset(cub, "train")


def test_the_boxes_left_out_of_training_enter_the_runs_provenance(coco, monkeypatch):
    from wsolkit.chapter import data_extra

    monkeypatch.setenv("WSOL_DATA_DIR", str(coco.parent))
    clean = data_extra("coco_crops", coco)
    assert "degenerate_boxes_left_out" not in clean  # clean data keep their run hashes
    add_official_degenerate_box(coco)
    with pytest.warns(DatasetWarning, match="left out 1 ground-truth boxes"):
        extra = data_extra("coco_crops", coco)
    assert extra["degenerate_boxes_left_out"] == 1
