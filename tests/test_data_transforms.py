"""Whole-sample transforms move boxes and masks with the image; collate batches samples."""

import numpy as np
import pytest
import torch
from PIL import Image

from wsolkit.data import IMAGENET_MEAN, IMAGENET_STD, collate, eval_transform, train_transform
from wsolkit.data.common import apply_transform

RED = (255, 0, 0)


def make_sample(width=40, height=20, box=(4, 2, 20, 10)):
    """A grey W x H image with a red object exactly on ``box`` (and its mask)."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = RED
    mask[y1:y2, x1:x2] = 1
    return {
        "image": Image.fromarray(pixels),
        "label": 3,
        "boxes": torch.tensor([box], dtype=torch.float32),
        "mask": torch.from_numpy(mask),
        "image_id": "x",
        "path": "x.jpg",
        "orig_size": (height, width),
    }


def test_resize_scales_boxes_and_masks_per_axis():
    # 40x20 -> 10x10 scales x by 1/4 and y by 1/2: [4, 2, 20, 10] -> [1, 1, 5, 5].
    out = apply_transform(make_sample(), eval_transform(10, normalize=False))
    assert out["image"].shape == (3, 10, 10) and out["image"].dtype == torch.float32
    assert out["boxes"].tolist() == [[1.0, 1.0, 5.0, 5.0]]
    assert out["boxes"].dtype == torch.float32
    expected = np.zeros((10, 10), dtype=np.uint8)
    expected[1:5, 1:5] = 1
    assert out["mask"].dtype == torch.uint8
    np.testing.assert_array_equal(out["mask"].numpy(), expected)
    # Outputs are plain tensors, not tv_tensors, and the other keys pass through unchanged.
    assert type(out["boxes"]) is torch.Tensor and type(out["mask"]) is torch.Tensor
    assert type(out["image"]) is torch.Tensor
    assert (out["label"], out["image_id"], out["orig_size"]) == (3, "x", (20, 40))


def test_flip_mirrors_boxes_masks_and_pixels():
    # resize == size makes the random crop the identity, so only the (certain) flip acts:
    # in a 10x10 image x1' = 10 - x2, x2' = 10 - x1: [1, 1, 5, 5] -> [5, 1, 9, 5].
    transform = train_transform(10, resize=10, hflip=1.0, normalize=False)
    sample = make_sample(width=10, height=10, box=(1, 1, 5, 5))
    out = apply_transform(sample, transform)
    assert out["boxes"].tolist() == [[5.0, 1.0, 9.0, 5.0]]
    np.testing.assert_array_equal(out["mask"].numpy(), sample["mask"].numpy()[:, ::-1])
    red = out["image"][0] - out["image"][1] > 0.5
    np.testing.assert_array_equal(red.numpy(), out["mask"].numpy().astype(bool))


def test_center_crop_shifts_and_clamps_boxes():
    # Shorter side 20 -> 10 gives 20x10 (scale 1/2): box [2, 1, 10, 5]; the centre 10x10 crop
    # starts at x = 5: [-3, 1, 5, 5], clamped to [0, 1, 5, 5].
    out = apply_transform(make_sample(), eval_transform(10, resize=10, normalize=False))
    assert out["image"].shape == (3, 10, 10)
    assert out["boxes"].tolist() == [[0.0, 1.0, 5.0, 5.0]]
    expected = np.zeros((10, 10), dtype=np.uint8)
    expected[1:5, 0:5] = 1
    np.testing.assert_array_equal(out["mask"].numpy(), expected)


@pytest.mark.parametrize("seed", range(5))
def test_random_resized_crop_keeps_box_mask_and_pixels_together(seed):
    torch.manual_seed(seed)
    transform = train_transform(32, scale=(0.3, 1.0), normalize=False)
    out = apply_transform(make_sample(width=64, height=48, box=(10, 8, 50, 40)), transform)
    mask = out["mask"].numpy().astype(bool)
    red = (out["image"][0] - out["image"][1] > 0.5).numpy()
    assert mask.any()
    # Nearest-neighbour mask and bilinear image disagree at most on the object's border.
    assert (mask != red).mean() < 0.15
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = out["boxes"][0].tolist()
    assert abs(xs.min() - x1) <= 1.5 and abs(xs.max() + 1 - x2) <= 1.5
    assert abs(ys.min() - y1) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5


def test_normalize_uses_imagenet_statistics_only_when_asked():
    sample = make_sample(box=(0, 0, 1, 1))
    plain = apply_transform(sample, eval_transform(8, normalize=False))["image"]
    normed = apply_transform(sample, eval_transform(8))["image"]
    grey = 128 / 255
    assert plain[:, 7, 7].tolist() == pytest.approx([grey] * 3, abs=1e-6)
    expected = [(grey - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert normed[:, 7, 7].tolist() == pytest.approx(expected, abs=1e-5)


def test_builders_reject_inconsistent_sizes():
    with pytest.raises(ValueError, match="smaller than the crop"):
        train_transform(224, resize=200)
    with pytest.raises(ValueError, match="smaller than the crop"):
        eval_transform(224, resize=200)
    with pytest.raises(ValueError, match="resize applies"):
        train_transform(224, resize=256, scale=(0.5, 1.0))


def test_default_train_recipe_is_resize_256_then_crop_224():
    names = [type(t).__name__ for t in train_transform(224).transforms]
    assert names[:4] == ["ToImage", "Resize", "RandomCrop", "RandomHorizontalFlip"]
    assert train_transform(224).transforms[1].size == [256, 256]


def test_collate_stacks_images_and_labels_and_lists_the_rest():
    transform = eval_transform(8, normalize=False)
    batch = [apply_transform(make_sample(), transform) for _ in range(3)]
    batch[1]["label"] = 7
    out = collate(batch)
    assert out["image"].shape == (3, 3, 8, 8)
    assert out["label"].tolist() == [3, 7, 3] and out["label"].dtype == torch.int64
    assert isinstance(out["boxes"], list) and len(out["boxes"]) == 3
    assert out["boxes"][0].shape == (1, 4)
    assert out["image_id"] == ["x", "x", "x"]


def test_collate_errors():
    with pytest.raises(TypeError, match="give the dataset a transform"):
        collate([make_sample()])
    small = apply_transform(make_sample(), eval_transform(8))
    large = apply_transform(make_sample(), eval_transform(9))
    with pytest.raises(ValueError, match="different shapes"):
        collate([small, large])
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
