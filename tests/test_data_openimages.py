"""OpenImagesDataset on a tiny wsolevaluation checkout (tests/fixtures/openimages): the
reference's layout, its metadata without image_sizes.txt, masks with ignore regions, and the
evaluator reading the same ground truth from the root and from the metadata folder.

Fixture facts (tests/fixtures/build_fixtures.py): classes 01226z (0) and 0138tl (1); val holds
``1b<label><k>5f3c9e1b7d2a`` for k = 0, 1; image k of class c is 40x30 (k = 0) or 32x24 (k = 1)
with the object [3 + k + c, 2 + c, w - 5 - k, h - 4); val/test image 0 of class 1 has a second
instance [1, 20, 9, 28) stored at half size, and an ignore region [0, 18, 12, 30) beside the
[0, 0, 6, 6) every image ignores.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from wsolkit.data import DatasetFormatError, DatasetWarning, OpenImagesDataset, get_dataset
from wsolkit.data.metadata import metadata_from_dataset, read_metadata
from wsolkit.data.registry import verify
from wsolkit.evaluate import main
from wsolkit.evaluation.folder import ScoreMaps, evaluate_score_maps

CHECKOUT = os.path.join(os.path.dirname(__file__), "fixtures", "openimages")
ROOT = os.path.join(CHECKOUT, "dataset", "OpenImages")
METADATA = os.path.join(CHECKOUT, "metadata", "OpenImages")
TWO_INSTANCES = "val/0138tl/1b105f3c9e1b7d2a.jpg"


@pytest.fixture
def checkout(tmp_path):
    shutil.copytree(CHECKOUT, tmp_path / "wsolevaluation")
    return tmp_path / "wsolevaluation"


def rectangle(size, *boxes):
    mask = np.zeros(size, dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = 1
    return mask


def test_the_val_split_reads_the_references_metadata_and_masks():
    with pytest.warns(DatasetWarning, match="1 mask file.* resized"):
        dataset = OpenImagesDataset(ROOT, "val")
        samples = [dataset[i] for i in range(len(dataset))]
    assert dataset.image_ids[2] == TWO_INSTANCES and len(dataset) == 4
    assert dataset.class_names == ["01226z", "0138tl"] and dataset.labels.tolist() == [0, 0, 1, 1]
    assert dataset.sizes == [(30, 40), (24, 32), (30, 40), (24, 32)]
    assert dataset.metadata_dir == os.path.join(METADATA, "val")
    first = samples[0]
    assert first["orig_size"] == (30, 40) and first["boxes"].shape == (0, 4)
    foreground = rectangle((30, 40), (3, 2, 35, 26))
    assert np.array_equal(first["mask"].numpy(), foreground)
    # The ignore region is [0, 0, 6, 6) less the object's pixels in it.
    assert np.array_equal(first["ignore"].numpy(),
                          rectangle((30, 40), (0, 0, 6, 6)) & (1 - foreground))
    assert first["ignore"][:2, :6].all() and not first["ignore"][2:6, 3:6].any()
    # Two instances, the second stored at 20 x 15: nearest-neighbour doubling of [0, 10, 4, 14)
    # covers [0, 20, 8, 28). The ignore region leaves out the objects' pixels.
    two = samples[2]
    foreground = rectangle((30, 40), (4, 3, 35, 26), (0, 20, 8, 28))
    assert np.array_equal(two["mask"].numpy(), foreground)
    ignore = rectangle((30, 40), (0, 0, 6, 6), (0, 18, 12, 30)) & (1 - foreground)
    assert np.array_equal(two["ignore"].numpy(), ignore)
    assert dataset.num_masks_resized == 1
    assert "4 images, 2 classes, 5 instance masks" in repr(dataset)


def test_the_train_split_has_labels_only_and_masks_move_with_a_flip():
    train = get_dataset("openimages", ROOT, "train")
    assert len(train) == 4 and not train.has_masks and "mask" not in train[0]
    with pytest.raises(ValueError, match="train has no masks"):
        OpenImagesDataset(ROOT, "train", with_masks=True)
    flip = OpenImagesDataset(ROOT, "test", transform=v2.RandomHorizontalFlip(p=1.0))
    plain = OpenImagesDataset(ROOT, "test")
    for index in range(len(plain)):
        with pytest.warns(DatasetWarning) if index == 1 else contextlib.nullcontext():
            a, b = plain[index], flip[index]
        for key in ("mask", "ignore"):
            assert torch.equal(b[key], torch.flip(a[key], dims=[1]))


def test_the_metadata_is_found_beside_the_root_or_where_it_is_named(checkout, tmp_path):
    root = checkout / "dataset" / "OpenImages"
    moved = tmp_path / "elsewhere"
    shutil.move(str(checkout / "metadata" / "OpenImages"), moved)
    with pytest.raises(DatasetFormatError, match=r"no metadata folder at .*metadata/val or "
                       r".*metadata/OpenImages/val.*metadata_root="):
        OpenImagesDataset(root, "val")
    assert len(OpenImagesDataset(root, "train", metadata_root=moved)) == 4
    shutil.copytree(moved, root / "metadata")
    assert OpenImagesDataset(root, "train").metadata_dir == str(root / "metadata" / "train")


@pytest.mark.parametrize("damage, message", [
    (lambda c: os.remove(c / "dataset/OpenImages/val/01226z/1b015f3c9e1b7d2a.jpg"),
     r"1b015f3c9e1b7d2a.jpg: image file not found \(1 of the 4 images"),
    (lambda c: os.remove(c / "dataset/OpenImages/val/0138tl/1b105f3c9e1b7d2a_ignore.png"),
     r"_ignore.png: mask file not found \(1 of the 9 mask files"),
    (lambda c: (c / "metadata/OpenImages/val/class_labels.txt").write_text(
        (c / "metadata/OpenImages/val/class_labels.txt").read_text().replace(
            "1b015f3c9e1b7d2a.jpg,0", "1b015f3c9e1b7d2a.jpg,1")),
     r"class_labels.txt: val/01226z/1b015f3c9e1b7d2a.jpg has class 1 but .* has class 0"),
    (lambda c: (c / "metadata/OpenImages/val/localization.txt").unlink(),
     r"localization.txt: missing"),
    (lambda c: (c / "metadata/OpenImages/val/localization.txt").write_text(
        "val/0138tl/unknown.jpg,a.png,b.png\n"),
     r"localization.txt:1: image id 'val/0138tl/unknown.jpg' is not in"),
])
def test_a_broken_download_is_an_error_naming_the_file(checkout, damage, message):
    damage(checkout)
    with pytest.raises(DatasetFormatError, match=message):
        OpenImagesDataset(checkout / "dataset" / "OpenImages", "val")
    problems = verify("openimages", checkout / "dataset" / "OpenImages", splits=["val"])
    assert len(problems) == 1 and re.search(message, problems[0])


def test_verify_decodes_every_image_and_mask_of_the_fixture():
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        assert verify("openimages", ROOT, full=True, log=lines.append, workers=1) == []
    assert "openimages val: decoded 4 images" in lines
    assert "warning: openimages val: 1 mask file(s) at another size than their image, resized " \
        "to it (nearest)" in lines
    assert verify("openimages", os.path.join(CHECKOUT, "dataset")) != []


def test_a_mask_that_cannot_be_decoded_is_named(checkout):
    bad = checkout / "dataset/OpenImages/val/01226z/1b005f3c9e1b7d2a_m01226z_0000beef.png"
    bad.write_bytes(b"not a png")
    dataset = OpenImagesDataset(checkout / "dataset" / "OpenImages", "val")
    with pytest.raises(DatasetFormatError, match=f"{bad}: cannot decode the mask"):
        dataset[0]


def reference_pxap(maps, truth_dir, mask_root, thresholds):
    """PxAP the slow way, as wsolevaluation defines it: every mask file resized straight to
    224 (nearest) and binarised at 0.5, the ignore region minus the objects left out; true and
    false positives (score >= t) summed over images at each threshold, from 1 down to 0; AP as
    the sum of precision times the step in recall, over thresholds with a positive."""
    import cv2

    truth = read_metadata(truth_dir)
    descending = np.append(thresholds, 1.0)[::-1]
    tp = np.zeros(len(descending))
    fp = np.zeros(len(descending))
    positives = 0
    for image_id in truth.image_ids:
        def read(relative):
            values = cv2.imread(os.path.join(mask_root, relative), cv2.IMREAD_GRAYSCALE)
            return cv2.resize(np.float32(values), (224, 224),
                              interpolation=cv2.INTER_NEAREST) > 0.5
        paths, ignore_path = truth.mask_paths[image_id]
        fg = np.stack([read(p) for p in paths]).any(axis=0)
        counted = ~(read(ignore_path) & ~fg)
        score = maps[image_id]
        positives += (fg & counted).sum()
        for k, t in enumerate(descending):
            above = (score >= t) & counted
            tp[k] += (above & fg).sum()
            fp[k] += (above & ~fg).sum()
    some = tp + fp > 0
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=some)
    recall = tp / positives
    return 100 * float(np.sum((precision[1:] * np.diff(recall))[some[1:]]))


def test_the_evaluator_scores_openimages_from_the_root_and_from_the_metadata(tmp_path, capsys):
    rng = np.random.default_rng(3)
    truth = read_metadata(os.path.join(METADATA, "val"))
    assert truth.sizes == {} and truth.mask_root == os.path.realpath(ROOT)
    maps = {}
    for image_id in truth.image_ids:
        noise = rng.random((56, 56))
        maps[image_id] = np.kron(noise, np.ones((4, 4)))  # 224 x 224, in [0, 1)
        path = tmp_path / "maps" / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, maps[image_id])
    thresholds = np.arange(0, 1, 0.01)
    expected = reference_pxap(maps, os.path.join(METADATA, "val"), ROOT, thresholds)
    from_metadata = evaluate_score_maps(ScoreMaps(tmp_path / "maps"), truth, interval=0.01,
                                        progress=False)
    from_root = metadata_from_dataset("openimages", ROOT, "val")
    assert from_root.mask_paths == truth.mask_paths and from_root.labels == truth.labels
    again = evaluate_score_maps(ScoreMaps(tmp_path / "maps"), from_root, interval=0.01,
                                progress=False)
    assert from_metadata["pxap"] == pytest.approx(expected, abs=1e-9)
    assert again["pxap"] == from_metadata["pxap"] and "max_box_acc" not in again
    code = main([str(tmp_path / "maps"), "--dataset", "openimages", ROOT, "--split", "val",
                 "--interval", "0.01", "--no-progress", "--out", str(tmp_path / "r.json")])
    assert code == 0 and f"{from_metadata['pxap']:.2f}" in capsys.readouterr().out


def test_export_metadata_writes_the_references_files_for_openimages(tmp_path):
    from wsolkit.data.__main__ import main as data_main
    from wsolkit.data.metadata import write_metadata

    truth = metadata_from_dataset("openimages", ROOT, "test")
    written = write_metadata(truth, tmp_path / "test")
    assert sorted(p.name for p in written) == ["class_labels.txt", "image_ids.txt",
                                               "image_sizes.txt", "localization.txt"]
    reference = os.path.join(METADATA, "test", "localization.txt")
    assert (tmp_path / "test" / "localization.txt").read_text() == open(reference).read()
    assert data_main(["export-metadata", "openimages", ROOT, "--split", "test",
                      "--out", str(tmp_path / "cli")]) == 0


def test_the_evaluator_names_a_mask_file_it_cannot_read(checkout, tmp_path):
    meta = checkout / "metadata" / "OpenImages" / "test"
    truth = read_metadata(meta)
    for image_id in truth.image_ids:
        path = tmp_path / "maps" / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full((224, 224), 0.5))
    gone = checkout / "dataset" / "OpenImages" / "test" / "0138tl" / "2c105f3c9e1b7d2a_ignore.png"
    gone.unlink()
    with pytest.raises(DatasetFormatError, match=f"{gone}: mask file not found"):
        evaluate_score_maps(ScoreMaps(tmp_path / "maps"), truth, interval=0.01, progress=False)
