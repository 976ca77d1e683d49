"""CUBDataset on the tiny CUB_200_2011 fixture (3 classes x 4 images, masks, part boxes).

Fixture facts (tests/fixtures/build_fixtures.py): image ``(c - 1) * 4 + k + 1`` is image ``k`` of
class ``c``; ``k = 3`` is the test image; image 1 is 40x30 with the box [3, 4, 35, 25]; image 2
has two boxes; image 5 two part boxes, image 12 none.
"""

import hashlib
import os
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from wsolkit.data import (
    CUBDataset,
    DatasetFormatError,
    EmptySplitError,
    collate,
    eval_transform,
    get_dataset,
)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "cub")


@pytest.fixture
def cub(tmp_path):
    root = tmp_path / "CUB_200_2011"
    shutil.copytree(FIXTURE, root)
    return root


def test_splits_with_hash_holdout():
    splits = {s: CUBDataset(FIXTURE, s, val_per_class=1) for s in ("train", "val", "test")}
    assert splits["test"].image_ids == ["4", "8", "12"]
    # The documented rule, recomputed: per class, the train id whose sha256("0:<id>") sorts first.
    expected_val = []
    for c in range(3):
        train_ids = [str(c * 4 + k + 1) for k in range(3)]
        digests = {i: hashlib.sha256(f"0:{i}".encode()).hexdigest() for i in train_ids}
        expected_val.append(min(train_ids, key=digests.get))
    assert splits["val"].image_ids == expected_val == ["3", "7", "9"]
    assert splits["train"].image_ids == ["1", "2", "5", "6", "10", "11"]
    assert splits["train"].labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert splits["val"].labels.tolist() == [0, 1, 2]
    assert splits["test"].labels.dtype == np.int64
    assert splits["train"].class_names[1] == "002.Laysan_Albatross"
    assert splits["train"].num_classes == 3


def test_holdout_depends_on_seed_and_count():
    assert CUBDataset(FIXTURE, "val", val_per_class=1, val_seed=1).image_ids != ["3", "7", "9"]
    assert len(CUBDataset(FIXTURE, "val", val_per_class=2)) == 6
    assert len(CUBDataset(FIXTURE, "train", val_per_class=0)) == 9
    # The default of 5 per class would take every train image of this 3-per-class fixture.
    with pytest.raises(EmptySplitError, match=r"val_per_class=5 .*takes all 3 train images"):
        CUBDataset(FIXTURE, "train")
    assert len(CUBDataset(FIXTURE, "val")) == 9


def test_val_images_file_defines_val(cub):
    (cub / "val_images.txt").write_text("3\n6\n")
    assert CUBDataset(cub, "val").image_ids == ["3", "6"]
    assert CUBDataset(cub, "train").image_ids == ["1", "2", "5", "7", "9", "10", "11"]
    assert CUBDataset(cub, "test").image_ids == ["4", "8", "12"]


def test_all_boxes_kept_and_converted_to_xyxy():
    train = CUBDataset(FIXTURE, "train", val_per_class=1)
    # Image 2: "2 4.0 4.0 23.0 14.0" and "2 1.0 1.0 5.0 4.0".
    np.testing.assert_array_equal(train.boxes[1], [[4, 4, 27, 18], [1, 1, 6, 5]])
    sample = train[0]
    assert sample["boxes"].dtype == torch.float32
    assert sample["boxes"].tolist() == [[3.0, 4.0, 35.0, 25.0]]
    assert sample["image_id"] == "1" and sample["label"] == 0
    assert sample["orig_size"] == (30, 40) and sample["image"].size == (40, 30)
    assert sample["image"].mode == "RGB"
    assert sample["path"].endswith("001.Black_footed_Albatross/Black_footed_Albatross_0000_1.jpg")


def test_mask_is_segmentation_above_127():
    sample = CUBDataset(FIXTURE, "train", val_per_class=1)[0]
    mask = sample["mask"]
    assert mask.dtype == torch.uint8 and mask.shape == (30, 40)
    assert set(mask.unique().tolist()) == {0, 1}
    # The PNG holds 128 on the box's left column x = 3 and 127 on the column x = 35 right of it.
    assert mask[4:25, 3].eq(1).all() and mask[4:25, 35].eq(0).all()
    assert int(mask.sum()) == 32 * 21
    ys, xs = np.nonzero(mask.numpy())
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [3, 4, 35, 25]


def test_part_boxes():
    test = CUBDataset(FIXTURE, "test")
    assert test[0]["part_boxes"].shape == (1, 4)
    assert test[2]["part_boxes"].shape == (0, 4)  # image 12 has no line in part_boxes.txt
    # Image 5 is 40x30 with the box [4, 5, 34, 25]: parts at its top-left and bottom-right.
    full = CUBDataset(FIXTURE, "train", val_per_class=0)
    index = full.image_ids.index("5")
    np.testing.assert_array_equal(full.part_boxes[index], [[4, 5, 8, 8], [31, 22, 34, 25]])


def test_optional_masks_and_parts(cub, tmp_path):
    assert "mask" not in CUBDataset(cub, "test", with_masks=False)[0]
    shutil.move(cub / "segmentations", tmp_path / "segmentations")
    (cub / "part_boxes.txt").unlink()
    sample = CUBDataset(cub, "test")[0]
    assert "mask" not in sample and "part_boxes" not in sample
    with pytest.raises(DatasetFormatError, match="segmentation release"):
        CUBDataset(cub, "test", with_masks=True)
    moved = CUBDataset(cub, "test", segmentation_root=tmp_path / "segmentations")
    assert moved.has_masks and moved[0]["mask"].shape == (28, 36)


def test_transform_and_loader():
    dataset = CUBDataset(FIXTURE, "test", transform=eval_transform(16, normalize=False))
    sample = dataset[0]
    # Image 4 is 36x28 with the box [6, 4, 31, 20]; 16x16 scales x by 16/36 and y by 16/28.
    expected = [6 * 16 / 36, 4 * 16 / 28, 31 * 16 / 36, 20 * 16 / 28]
    assert sample["boxes"][0].tolist() == pytest.approx(expected, abs=1e-5)
    assert sample["mask"].shape == (16, 16) and sample["part_boxes"].shape == (1, 4)
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate)))
    assert batch["image"].shape == (3, 3, 16, 16)
    assert batch["label"].tolist() == [0, 1, 2]
    assert [m.shape for m in batch["mask"]] == [(16, 16)] * 3


def test_registry():
    dataset = get_dataset("cub", FIXTURE, "test", with_masks=False)
    assert isinstance(dataset, CUBDataset) and not dataset.has_masks
