"""Tests of the embedded benchmark generator (wsolkit.data.synthetic), on the smoke profile."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsolkit.data import synthetic as syn

SMOKE = syn.PROFILES["smoke"]

# pycocotools' compiled decoder predates NumPy 2's __array__(copy=...) protocol; its masks are right.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "smoke"
    syn.generate(out, profile="smoke", seed=0)
    return out


def _read_table(path: Path) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in path.read_text().splitlines()}


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


# ----------------------------------------------------------------------------------------------
# Hand-computed building blocks


def test_soft_stripes_hand_computed():
    # Half period 2: on over [0, 2), off over [2, 4); pixel-wide ramps centred on the edges.
    t = np.arange(0, 8, 0.5, dtype=np.float32)
    expected = [0.5, 1, 1, 1, 0.5, 0, 0, 0, 0.5, 1, 1, 1, 0.5, 0, 0, 0]
    np.testing.assert_allclose(syn._soft_stripes(t, 2.0), expected, atol=1e-6)


def test_hsv_to_rgb_primaries():
    h = np.array([0.0, 1 / 3, 2 / 3, 0.5])
    rgb = syn._hsv_to_rgb(h, np.array([1.0, 1.0, 1.0, 0.5]), np.array([1.0, 1.0, 0.5, 0.8]))
    np.testing.assert_allclose(rgb, [[1, 0, 0], [0, 1, 0], [0, 0, 0.5], [0.4, 0.8, 0.8]], atol=1e-6)


def test_tight_boxes_hand_computed():
    masks = np.zeros((2, 5, 6), bool)
    masks[0, 1:3, 2:5] = True  # rows 1-2, columns 2-4
    masks[1, 4, 0] = True
    np.testing.assert_array_equal(syn._tight_boxes(masks), [[2, 1, 5, 3], [0, 4, 1, 5]])
    with pytest.raises(syn.SyntheticDataError, match="empty"):
        syn._tight_boxes(np.zeros((1, 3, 3), bool))


def test_soft_mask_threshold_reproduces_mask():
    alpha = np.array([[0.0, 0.499, 0.5, 0.501, 1.0]], np.float32)
    soft = syn._soft_mask(alpha, alpha >= 0.5)
    np.testing.assert_array_equal(soft > 127, alpha >= 0.5)
    assert soft[0, 0] == 0 and soft[0, -1] == 255


def test_background_interpolation_reaches_grid_corners():
    m = syn._interpolation_matrix(8, 5)
    np.testing.assert_allclose(m.sum(axis=1), 1, atol=1e-6)
    # Pixel centres 0.5/8 .. 7.5/8 of the way along a 5-node grid: first pixel mostly node 0.
    np.testing.assert_allclose(m[0, :2], [1 - 0.25, 0.25], atol=1e-6)


@pytest.mark.parametrize(
    "kind,a,b,area", [(0, 6.0, 6.0, np.pi * 36), (0, 9.0, 4.0, np.pi * 36), (1, 5.0, 3.0, 60.0)]
)
def test_draw_coverage_equals_shape_area(kind, a, b, area):
    """Anti-aliased coverage sums to the shape's area, also where the window is shifted at a border."""
    n, size = 3, 40
    shapes = syn._Shapes(n)
    shapes.cx = np.array([20.3, 20.0, 33.7], np.float32)
    shapes.cy = np.array([19.6, 20.0, 30.2], np.float32)
    shapes.a[:] = a
    shapes.b[:] = b
    shapes.theta = np.array([0.3, 1.1, 2.0], np.float32)
    shapes.kind[:] = kind
    shapes.colour[:] = 1.0
    canvas = np.zeros((n, size, size, 3), np.float32)
    alpha = np.zeros((n, size, size), np.float32)
    syn._draw(canvas, shapes, alpha)
    np.testing.assert_allclose(alpha.sum(axis=(1, 2)), area, rtol=0.015)
    # A white shape on black: the canvas is the coverage itself.
    np.testing.assert_allclose(canvas[..., 0], alpha, atol=1e-6)


def test_draw_leaves_inactive_images_untouched():
    shapes = syn._Shapes(2)
    shapes.cx[:] = shapes.cy[:] = 8.0
    shapes.a[:] = shapes.b[:] = 4.0
    shapes.colour[:] = 1.0
    shapes.active = np.array([True, False])
    canvas = np.zeros((2, 16, 16, 3), np.float32)
    syn._draw(canvas, shapes)
    assert canvas[0].sum() > 0 and canvas[1].sum() == 0


# ----------------------------------------------------------------------------------------------
# The image model


@pytest.fixture(scope="module")
def rendered() -> dict[str, np.ndarray]:
    labels = np.arange(400) % syn.NUM_CLASSES
    out = syn.render_single(np.random.default_rng(5), labels)
    out["labels"] = labels
    return out


def test_render_single_shapes_and_dtypes(rendered):
    assert rendered["images"].shape == (400, 64, 64, 3) and rendered["images"].dtype == np.uint8
    assert rendered["segmentations"].dtype == np.uint8
    np.testing.assert_array_equal(rendered["segmentations"] > 127, rendered["masks"] == 1)


def test_boxes_tight_around_masks_and_part_inside_object(rendered):
    for i in range(len(rendered["labels"])):
        assert _mask_box(rendered["masks"][i]) == rendered["boxes"][i].tolist()
        assert _mask_box(rendered["part_masks"][i]) == rendered["part_boxes"][i].tolist()
    boxes, parts = rendered["boxes"], rendered["part_boxes"]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
    assert (parts[:, :2] >= boxes[:, :2]).all() and (parts[:, 2:] <= boxes[:, 2:]).all()
    # The part is part of the object mask.
    assert not (rendered["part_masks"] & (1 - rendered["masks"])).any()


def test_object_and_part_sizes_match_the_recipe(rendered):
    masks, parts = rendered["masks"].sum(axis=(1, 2)), rendered["part_masks"].sum(axis=(1, 2))
    # The part disc covers 10-20% of the body's area, the body being the object minus the part
    # (plus the part's overlap with the body, which lies between 0 and the part's own area).
    share = parts / (masks - parts)
    assert 0.10 < np.median(share) < 0.20
    assert np.mean((share > 0.05) & (share < 0.30)) > 0.95
    box_area = syn._box_area(rendered["boxes"])
    assert 0.09 < np.mean(syn._box_area(rendered["part_boxes"]) / box_area) < 0.14
    assert 0.10 < np.mean(masks) / 64**2 < 0.20  # the object covers about 15% of the image
    assert 0.15 < np.mean(box_area) / 64**2 < 0.30


def test_part_hue_identifies_the_class(rendered):
    """The mean colour inside the part mask has the class's hue (the strong cue is rendered)."""
    import colorsys

    errors = []
    for i in range(60):
        part = rendered["part_masks"][i].astype(bool)
        rgb = rendered["images"][i][part].mean(axis=0) / 255
        hue = colorsys.rgb_to_hsv(*rgb)[0]
        target = rendered["labels"][i] / syn.NUM_CLASSES
        errors.append(min(abs(hue - target), 1 - abs(hue - target)))
    assert np.median(errors) < 0.03


def test_part_like_distractors_never_wear_their_hue_own_pattern():
    import colorsys

    slots = syn._sample_distractors(
        np.random.default_rng(0), 2000, 64, syn.SINGLE_DISTRACTOR_MAJOR, syn.SINGLE_BODY_MAJOR
    )
    discs = patterns = 0
    for slot in slots:
        disc = slot.shade == 0  # part-like discs are flat, body-like distractors shaded
        assert (slot.a[disc] == slot.b[disc]).all() and (slot.pattern[disc] < 4).all()
        hues = np.array([colorsys.rgb_to_hsv(*rgb)[0] for rgb in slot.colour[disc]])
        hue_class = np.rint(hues * syn.NUM_CLASSES).astype(int) % syn.NUM_CLASSES
        assert (slot.pattern[disc] != hue_class % 4).all()
        discs += disc.sum()
        patterns |= np.bitwise_or.reduce(1 << slot.pattern[disc].astype(int))
    assert abs(discs / (5 * 2000) - 0.4) < 0.03 and patterns == 0b1111


def test_same_seed_same_pixels_different_seed_different_pixels():
    labels = np.arange(20) % syn.NUM_CLASSES
    a = syn.render_single(np.random.default_rng(1), labels)
    b = syn.render_single(np.random.default_rng(1), labels)
    c = syn.render_single(np.random.default_rng(2), labels)
    np.testing.assert_array_equal(a["images"], b["images"])
    assert (a["images"] != c["images"]).mean() > 0.5


def test_scenes_distinct_classes_and_visible_masks():
    out = syn.render_scenes(np.random.default_rng(3), 40, size=96)
    labels, masks = out["labels"], out["masks"]
    for i in range(len(labels)):
        present = labels[i][labels[i] >= 0]
        assert 1 <= len(present) <= syn.MAX_SCENE_OBJECTS
        assert len(set(present.tolist())) == len(present)
        assert (labels[i][len(present):] == -1).all()  # objects fill the first slots
        shown = masks[i][labels[i] >= 0]
        assert shown.sum(axis=(1, 2)).min() > 0
        # Visible masks of one scene never overlap: later objects hide earlier ones.
        assert shown.sum(axis=0).max() <= 1
        assert not masks[i][labels[i] < 0].any()


# ----------------------------------------------------------------------------------------------
# Taxonomy


def test_taxonomy_is_a_tree_rooted_at_object():
    parent = syn.CLASS_TAXONOMY
    assert set(syn.CLASS_NAMES) <= set(parent) and syn.TAXONOMY_ROOT not in parent
    for node in parent:
        seen = {node}
        while node != syn.TAXONOMY_ROOT:
            node = parent[node]
            assert node not in seen, "cycle in CLASS_TAXONOMY"
            seen.add(node)
    children = Counter(parent.values())
    # Classes are leaves; each body-colour superclass holds one plain and one spotted class.
    assert not set(syn.CLASS_NAMES) & set(children)
    for superclass in syn.SUPERCLASS_NAMES:
        members = [c for c in syn.CLASS_NAMES if parent[c] == superclass]
        assert len(members) == 2
        attrs = [syn.CLASS_ATTRIBUTES[c] for c in members]
        assert attrs[0]["body_colour"] == attrs[1]["body_colour"]
        assert {a["body_texture"] for a in attrs} == {"plain", "spotted"}
    assert len(set(syn.CLASS_NAMES)) == syn.NUM_CLASSES
    assert all(" " not in name for name in parent)


# ----------------------------------------------------------------------------------------------
# The written layouts


def test_cub_layout_files_and_balanced_labels(smoke):
    root = smoke / "cub"
    images = _read_table(root / "images.txt")
    labels = {k: int(v[0]) for k, v in _read_table(root / "image_class_labels.txt").items()}
    is_train = {k: v[0] for k, v in _read_table(root / "train_test_split.txt").items()}
    val = set((root / "val_images.txt").read_text().split())
    assert list(images) == [str(i) for i in range(1, len(images) + 1)]
    assert len(images) == sum(SMOKE["cub"].values())
    assert all(is_train[i] == "1" for i in val)
    splits = {
        "train": [i for i in images if is_train[i] == "1" and i not in val],
        "val": sorted(val, key=int),
        "test": [i for i in images if is_train[i] == "0"],
    }
    for split, ids in splits.items():
        counts = Counter(labels[i] for i in ids)
        assert sorted(counts) == list(range(1, syn.NUM_CLASSES + 1))
        assert set(counts.values()) == {SMOKE["cub"][split] // syn.NUM_CLASSES}
    classes = (root / "classes.txt").read_text().splitlines()
    assert classes[0] == f"1 001.{syn.CLASS_NAMES[0]}"
    assert all(images[i][0].startswith(f"{labels[i]:03d}.") for i in images)
    assert (root / "taxonomy.txt").read_text().splitlines() == syn.taxonomy_lines()
    readme = (root / "README.txt").read_text()
    assert "synthetic" in readme.lower() and "seed: 0" in readme


def test_cub_boxes_tight_around_segmentations(smoke):
    root = smoke / "cub"
    images = _read_table(root / "images.txt")
    boxes = {k: [float(x) for x in v] for k, v in _read_table(root / "bounding_boxes.txt").items()}
    parts = {k: [float(x) for x in v] for k, v in _read_table(root / "part_boxes.txt").items()}
    for image_id in list(images)[::7]:
        rel = images[image_id][0]
        jpg = Image.open(root / "images" / rel)
        assert jpg.size == (64, 64) and jpg.mode == "RGB"
        seg = np.asarray(Image.open(root / "segmentations" / rel.replace(".jpg", ".png")))
        assert seg.dtype == np.uint8 and seg.shape == (64, 64)
        x, y, w, h = boxes[image_id]
        assert _mask_box(seg > 127) == [x, y, x + w, y + h]
        px, py, pw, ph = parts[image_id]
        assert x <= px and y <= py and px + pw <= x + w and py + ph <= y + h
        assert pw > 0 and ph > 0


def test_ilsvrc_layout(smoke):
    root = smoke / "ilsvrc"
    mapping = (root / "LOC_synset_mapping.txt").read_text().splitlines()
    assert mapping[3] == f"n90000003 {syn.CLASS_NAMES[3]}"
    train = root / "ILSVRC/Data/CLS-LOC/train"
    counts = {d.name: len(list(d.iterdir())) for d in train.iterdir()}
    assert counts == {f"n9000000{c}": SMOKE["ilsvrc"]["train"] // syn.NUM_CLASSES for c in range(10)}
    assert (train / "n90000007" / "n90000007_1.JPEG").is_file()
    rows = (root / "LOC_val_solution.csv").read_text().splitlines()
    assert rows[0] == "ImageId,PredictionString" and len(rows) == 1 + SMOKE["ilsvrc"]["val"]
    image_id, prediction = rows[1].split(",")
    assert image_id == "ILSVRC2012_val_00000001"
    wnid, *corners = prediction.split()
    xml = (root / "ILSVRC/Annotations/CLS-LOC/val" / f"{image_id}.xml").read_text()
    assert f"<name>{wnid}</name>" in xml and f"<xmax>{corners[2]}</xmax>" in xml
    assert Image.open(root / "ILSVRC/Data/CLS-LOC/val" / f"{image_id}.JPEG").size == (64, 64)
    assert Counter(r.split(",")[1].split()[0] for r in rows[1:]) == Counter(
        {f"n9000000{c}": SMOKE["ilsvrc"]["val"] // syn.NUM_CLASSES for c in range(10)}
    )


def test_coco_json_loads_and_rles_decode_to_the_boxes(smoke):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    root = smoke / "coco"
    image_ids, ann_ids = set(), set()
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}2017.json"
        doc = json.loads(path.read_text())
        assert {"info", "licenses", "images", "annotations", "categories"} <= set(doc)
        coco = COCO(os.fspath(path))
        assert len(coco.imgs) == SMOKE["coco"][split]
        assert sorted(c["id"] for c in doc["categories"]) == list(syn.COCO_CATEGORY_IDS)
        assert all(syn.CLASS_TAXONOMY[c["name"]] == c["supercategory"] for c in doc["categories"])
        assert not image_ids & set(coco.imgs)
        image_ids |= set(coco.imgs)
        for image_id, image in coco.imgs.items():
            assert image["file_name"] == f"{image_id:012d}.jpg"
            assert (root / f"{split}2017" / image["file_name"]).is_file()
            anns = coco.imgToAnns[image_id]
            assert 1 <= len(anns) <= syn.MAX_SCENE_OBJECTS
            assert len({a["category_id"] for a in anns}) == len(anns)
            union = np.zeros((image["height"], image["width"]), np.int64)
            for ann in anns:
                assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str)
                assert ann["id"] not in ann_ids
                ann_ids.add(ann["id"])
                mask = mask_utils.decode(ann["segmentation"])
                assert mask.sum() == ann["area"] > 0
                x, y, w, h = ann["bbox"]
                assert _mask_box(mask) == [x, y, x + w, y + h]
                union += mask
            assert union.max() == 1  # instance masks are the visible, disjoint parts


def test_loaders_read_every_layout(smoke):
    from wsolkit.data import COCODetection, COCOObjectCrops, CUBDataset, ILSVRCDataset

    cub = {split: CUBDataset(smoke / "cub", split) for split in ("train", "val", "test")}
    assert {k: len(v) for k, v in cub.items()} == SMOKE["cub"]
    assert cub["train"].class_names[0] == f"001.{syn.CLASS_NAMES[0]}"
    sample = cub["test"][3]
    mask = sample["mask"].numpy()
    box = sample["boxes"][0].tolist()
    assert _mask_box(mask) == box
    assert sample["part_boxes"].shape == (1, 4)

    train = ILSVRCDataset(smoke / "ilsvrc", "train")
    assert len(train) == SMOKE["ilsvrc"]["train"] and train[0]["boxes"].shape == (0, 4)
    by_csv = ILSVRCDataset(smoke / "ilsvrc", "val", val_source="csv")
    by_xml = ILSVRCDataset(smoke / "ilsvrc", "val", val_source="xml")
    assert len(by_xml) == SMOKE["ilsvrc"]["val"]
    np.testing.assert_array_equal(by_csv.labels, by_xml.labels)
    for a, b in zip(by_csv.boxes, by_xml.boxes):
        np.testing.assert_array_equal(a, b)
    assert list(by_xml.class_names) == list(syn.CLASS_NAMES)

    detection = COCODetection(smoke / "coco", "val", with_masks=True)
    assert len(detection) == SMOKE["coco"]["val"]
    sample = detection[0]
    for mask, box in zip(sample["masks"].numpy(), sample["boxes"].tolist()):
        assert _mask_box(mask) == box
    crops = COCOObjectCrops(smoke / "coco", "train")
    stamp = json.loads((smoke / "coco" / syn.STAMP_NAME).read_text())
    instances = sum(len(b) for b in COCODetection(smoke / "coco", "train").boxes)
    assert crops.num_skipped_small + len(crops) == instances
    # Most instances are large enough for the object-crop set.
    assert len(crops) / instances > 0.6
    assert 0.6 < stamp["statistics"]["instances_kept_by_32px_crop_rule"] < 0.9


def test_verify_cli_accepts_generated_layouts(smoke):
    from wsolkit.data import verify

    for layout in ("cub", "ilsvrc", "coco"):
        assert verify(layout, os.fspath(smoke / layout)) == []


# ----------------------------------------------------------------------------------------------
# Determinism, idempotence and arguments


def test_generation_is_byte_for_byte_deterministic(smoke, tmp_path):
    again = syn.generate(tmp_path / "again", profile="smoke", seed=0)
    files = [
        "cub/images.txt", "cub/bounding_boxes.txt", "cub/part_boxes.txt", "cub/train_test_split.txt",
        "cub/images/004.lime_ringed_moss_spotted/lime_ringed_moss_spotted_0003.jpg",
        "cub/segmentations/010.magenta_striped_mauve_spotted/magenta_striped_mauve_spotted_0020.png",
        "ilsvrc/LOC_val_solution.csv", "ilsvrc/ILSVRC/Data/CLS-LOC/train/n90000002/n90000002_5.JPEG",
        "coco/annotations/instances_val2017.json", "coco/train2017/000000000042.jpg",
    ]
    for rel in files:
        assert (smoke / rel).read_bytes() == (again[rel.split("/")[0]].parent / rel).read_bytes(), rel
    other = syn.generate(tmp_path / "other", profile="smoke", seed=1, layouts=["cub"])
    changed = (other["cub"] / "bounding_boxes.txt").read_bytes()
    assert changed != (smoke / "cub" / "bounding_boxes.txt").read_bytes()


def test_cub_and_ilsvrc_are_independent_draws(smoke):
    cub = Image.open(smoke / "cub/images/001.red_solid_ochre_plain/red_solid_ochre_plain_0001.jpg")
    ilsvrc = Image.open(smoke / "ilsvrc/ILSVRC/Data/CLS-LOC/train/n90000000/n90000000_1.JPEG")
    assert np.abs(np.asarray(cub, np.int16) - np.asarray(ilsvrc, np.int16)).mean() > 10


def test_generate_skips_a_matching_stamp_and_replaces_a_stale_one(tmp_path):
    out = tmp_path / "data"
    syn.generate(out, profile="smoke", seed=3, layouts=["ilsvrc"])
    marker = out / "ilsvrc" / "marker"
    marker.write_text("kept")
    syn.generate(out, profile="smoke", seed=3, layouts=["ilsvrc"])
    assert marker.exists()  # reused as is
    syn.generate(out, profile="smoke", seed=4, layouts=["ilsvrc"])
    assert not marker.exists()
    assert json.loads((out / "ilsvrc" / syn.STAMP_NAME).read_text())["seed"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["ilsvrc"]  # no temporary directory left


def test_generate_refuses_a_directory_it_did_not_write(tmp_path):
    (tmp_path / "cub").mkdir()
    (tmp_path / "cub" / "images.txt").write_text("1 001.a/b.jpg\n")
    with pytest.raises(syn.SyntheticDataError, match="not written by this generator"):
        syn.generate(tmp_path, profile="smoke", layouts=["cub"])
    assert (tmp_path / "cub" / "images.txt").exists()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"profile": "huge"}, "unknown profile"),
        ({"layouts": ["voc"]}, "unknown layout"),
        ({"seed": -1}, "non-negative"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        syn.generate(tmp_path, **kwargs)


def test_main_reuses_existing_output_and_reports_errors(smoke, tmp_path, capsys):
    assert syn.main(["--out", os.fspath(smoke), "--profile", "smoke", "--layouts", "cub"]) == 0
    assert capsys.readouterr().out == f"cub: {smoke / 'cub'} is up to date (profile smoke, seed 0)\n"
    (tmp_path / "coco").mkdir()
    assert syn.main(["--out", os.fspath(tmp_path), "--profile", "smoke", "--layouts", "coco"]) == 1
    assert "not written by this generator" in capsys.readouterr().err


def test_render_single_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        syn.render_single(np.random.default_rng(0), np.array([3, 10]))
