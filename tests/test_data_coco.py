"""COCODetection and COCOObjectCrops on the tiny COCO 2017 fixture.

Fixture facts (tests/fixtures/build_fixtures.py): categories 1 person, 3 car, 18 dog (listed
out of order); val image 139 (64x48) has person [2, 3, 40, 30], car [44, 2, 20, 12], dog
[30.4, 5.6, 20.2, 36.0] and a crowd person [0, 0, 10, 48] (RLE: the first 10 columns); image 285
one dog; image 632 none. Train: image 9 a car and a small person, image 25 a dog.
"""

import os

import numpy as np
import pytest
import torch

from wsolkit.data import COCODetection, COCOObjectCrops, eval_transform, get_dataset

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "coco")


@pytest.fixture(scope="module")
def val():
    return COCODetection(FIXTURE, "val", with_masks=True)


def test_classes_are_sorted_category_ids(val):
    assert val.category_ids == [1, 3, 18]
    assert val.cat_id_to_index == {1: 0, 3: 1, 18: 2}
    assert val.class_names == ["person", "car", "dog"]
    assert val.num_classes == 3


def test_detection_sample(val):
    assert val.image_ids == [139, 285, 632]
    sample = val[0]
    assert sample["image_id"] == "139" and sample["orig_size"] == (48, 64)
    expected = [[2, 3, 42, 33], [44, 2, 64, 14], [30.4, 5.6, 50.6, 41.6], [0, 0, 10, 48]]
    np.testing.assert_allclose(sample["boxes"].numpy(), expected, atol=1e-5)
    assert sample["boxes"].dtype == torch.float32
    assert sample["labels"].tolist() == [0, 1, 2, 0]
    assert sample["category_ids"].tolist() == [1, 3, 18, 1]
    assert sample["iscrowd"].tolist() == [False, False, False, True]
    empty = val[2]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert empty["masks"].shape == (0, 32, 40)


def test_masks(val):
    masks = val[0]["masks"].numpy()
    assert masks.shape == (4, 48, 64) and masks.dtype == np.uint8
    # The crowd RLE [0, 480, 2592] in column-major order: exactly the first 10 columns.
    expected = np.zeros((48, 64), dtype=np.uint8)
    expected[:, :10] = 1
    np.testing.assert_array_equal(masks[3], expected)
    # The person polygon is the rectangle [2, 3] - [42, 33]: 40 x 30 pixels.
    ys, xs = np.nonzero(masks[0])
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [2, 3, 42, 33]
    assert masks[0].sum() == 40 * 30
    assert "masks" not in COCODetection(FIXTURE, "val")[0]


def test_detection_transform_moves_masks_with_boxes():
    transform = eval_transform(32, normalize=False)
    dataset = COCODetection(FIXTURE, "val", with_masks=True, transform=transform)
    sample = dataset[0]
    assert sample["image"].shape == (3, 32, 32) and sample["masks"].shape == (4, 32, 32)
    # 64x48 -> 32x32: x halves, y scales by 2/3.
    np.testing.assert_allclose(sample["boxes"][0].numpy(), [1, 2, 21, 22], atol=1e-5)
    ys, xs = np.nonzero(sample["masks"][3].numpy())
    assert xs.max() + 1 == 5 and ys.min() == 0 and ys.max() == 31


def test_object_crops_val():
    crops = COCOObjectCrops(FIXTURE, "val")
    # Person kept (w = 40), car skipped (20 x 12 < 32 x 32), dog kept (h = 36), crowd unused.
    assert len(crops) == 3
    assert [c.tolist() for c in crops.crops] == [[2, 3, 42, 33], [30, 6, 51, 42], [4, 4, 44, 36]]
    assert crops.labels.tolist() == [0, 2, 2]
    assert crops.source_image_ids == [139, 139, 285]
    assert crops.num_instances == 5
    assert (crops.num_crowd, crops.num_skipped_small, crops.num_skipped_empty) == (1, 1, 0)
    summary = crops.summary()
    assert "3 crops" in summary and "1 crowd" in summary
    assert "1 smaller than 32 px in both dimensions" in summary
    sample = crops[1]
    assert sample["image"].size == (21, 36)
    assert sample["orig_size"] == (36, 21)
    assert sample["boxes"].tolist() == [[0.0, 0.0, 21.0, 36.0]]
    assert sample["crop_box"].tolist() == [30, 6, 51, 42]
    assert sample["label"] == 2 and sample["image_id"] == "139"
    # The dog is painted green over the crop: its centre pixel is green.
    r, g, b = sample["image"].getpixel((10, 18))
    assert g > 150 and r < 80 and b < 80


def test_object_crops_min_size():
    assert len(COCOObjectCrops(FIXTURE, "val", min_size=0)) == 4
    # 41 skips every instance: person 40 x 30, car 20 x 12, dogs 20.2 x 36 and 40 x 32.
    strict = COCOObjectCrops(FIXTURE, "val", min_size=41)
    assert len(strict) == 0 and strict.num_skipped_small == 4
    train = COCOObjectCrops(FIXTURE, "train")
    assert len(train) == 2 and train.num_skipped_small == 1 and train.num_crowd == 0


def test_registry():
    assert isinstance(get_dataset("coco", FIXTURE, "train"), COCODetection)
    assert isinstance(get_dataset("coco_crops", FIXTURE, "train"), COCOObjectCrops)


def test_annotation_fingerprints_name_the_split_and_its_options():
    crops = COCOObjectCrops(FIXTURE, "train")
    assert crops.annotation_fingerprint() == COCOObjectCrops(FIXTURE, "train").annotation_fingerprint()
    assert crops.annotation_fingerprint() != COCOObjectCrops(FIXTURE, "val").annotation_fingerprint()
    scenes = COCODetection(FIXTURE, "val")
    assert len(scenes.annotation_fingerprint()) == 12
    assert scenes.annotation_fingerprint() != crops.annotation_fingerprint()
