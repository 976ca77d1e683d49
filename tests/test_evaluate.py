"""The evaluator of anyone's score maps (wsolkit.evaluation.folder, python -m wsolkit.evaluate)
and wsolevaluation's metadata form (wsolkit.data.metadata): hand-made maps with known
answers, the straightforward per-threshold OpenCV loop on random maps in both ground-truth forms,
and every kind of bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from wsolkit.boxes import box_iou, opencv_reference_boxes
from wsolkit.evaluate import main
from wsolkit.evaluation.folder import ScoreMapError, ScoreMaps, evaluate_score_maps
from wsolkit.data.metadata import (
    ImageSize,
    Metadata,
    MetadataError,
    metadata_from_dataset,
    read_metadata,
    write_metadata,
)

CUB = os.path.join(os.path.dirname(__file__), "fixtures", "cub")


def write_folder(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in lines.items():
        (folder / name).write_text("".join(row + "\n" for row in rows))
    return folder


def hand_made(tmp_path):
    """Three images: a (w, h) = (112, 56) image with one box, a 224 x 224 one with two, and a
    448 x 112 one; their boxes at 224 x 224 are [0, 0, 112, 112] (x and y scale 2 and 4),
    [10, 10, 50, 50] and [100, 20, 150, 60], and [100, 0, 224, 200]."""
    return write_folder(tmp_path / "meta", {
        "image_ids.txt": ["a/1.jpg", "b/2.jpg", "c/3.jpg"],
        "class_labels.txt": ["a/1.jpg,0", "b/2.jpg,1", "c/3.jpg,2"],
        "image_sizes.txt": ["a/1.jpg,112,56", "b/2.jpg,224,224", "c/3.jpg,448,112"],
        "localization.txt": ["a/1.jpg,0,0,56,28", "b/2.jpg,10,10,50,50",
                             "b/2.jpg,100,20,150,60", "c/3.jpg,200,0,448,100"],
    })


def box_map(box, size=224):
    m = np.zeros((size, size))
    x0, y0, x1, y1 = box
    m[y0:y1 + 1, x0:x1 + 1] = 1.0  # inclusive, as the reference's boxes
    return m


def save_maps(folder, maps):
    for image_id, value in maps.items():
        path = folder / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, value)
    return folder


# ------------------------------------------------------------------------ known answers


def test_hand_made_maps_give_the_answers_worked_out_by_hand(tmp_path):
    truth = read_metadata(hand_made(tmp_path))
    assert truth.sizes["a/1.jpg"] == ImageSize(width=112, height=56)
    # The first image's map is its box exactly, the second covers its second box, the third
    # is empty (its box is [0, 0, 0, 0]: IoU 1 / (57 * 225)).
    maps = save_maps(tmp_path / "maps", {"a/1.jpg": box_map((0, 0, 112, 112)),
                                         "b/2.jpg": box_map((100, 20, 150, 60)),
                                         "c/3.jpg": np.zeros((224, 224))})
    results = evaluate_score_maps(ScoreMaps(maps), truth, interval=0.01, progress=False,
                                  predictions={"a/1.jpg": [0], "b/2.jpg": [0], "c/3.jpg": [2]},
                                  cam_threshold=0.2)
    for mode in ("largest", "all"):
        assert results[mode]["max_box_acc"] == {"30": 200 / 3, "50": 200 / 3, "70": 200 / 3}
    assert results["max_box_acc"] == 200 / 3 and results["max_box_acc_v2"] == 200 / 3
    assert results["gt_known_loc"]["best"] == 200 / 3
    assert results["gt_known_loc"]["at_threshold"] == 200 / 3
    # Only the first image is classified right: top-1 loc 1 of 3; top-1 cls 2 of 3.
    assert results["top1_loc"]["best"] == 100 / 3 and results["top1_cls"] == 200 / 3
    assert "top5_loc" not in results  # one class per image: no top-5
    assert len(results["thresholds"]) == 100 and len(results["gt_known_loc"]["curve"]) == 100


def test_a_map_at_another_resolution_is_resized_bicubic_and_normalised_as_the_reference(
        tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    small = rng.random((14, 14))
    save_maps(tmp_path / "maps", {"x": small})
    got = ScoreMaps(tmp_path / "maps").load("x")
    want = cv2.resize(small, (224, 224), interpolation=cv2.INTER_CUBIC)
    want = (want - want.min()) / (want - want.min()).max()
    np.testing.assert_array_equal(got, want)
    assert got.shape == (224, 224) and got.min() == 0 and got.max() == 1


def test_masks_by_path_give_pxap_and_the_ignore_region_is_left_out(tmp_path):
    cv2 = pytest.importorskip("cv2")
    masks = tmp_path / "masks"
    masks.mkdir()
    fg = np.zeros((50, 50), np.uint8)
    fg[10:20, 10:20] = 255
    ignore = np.zeros((50, 50), np.uint8)
    ignore[:, 25:] = 255  # the right half is ignored
    cv2.imwrite(str(masks / "one.png"), fg)
    cv2.imwrite(str(masks / "ignore.png"), ignore)
    meta = write_folder(tmp_path / "meta", {
        "image_ids.txt": ["x.jpg"], "class_labels.txt": ["x.jpg,0"],
        "image_sizes.txt": ["x.jpg,50,50"], "localization.txt": ["x.jpg,one.png,ignore.png"]})
    truth = read_metadata(meta)
    assert truth.boxes is None and truth.mask_paths == {"x.jpg": (["one.png"], "ignore.png")}
    perfect = cv2.resize(np.float32(fg > 0), (224, 224), interpolation=cv2.INTER_NEAREST)
    save_maps(tmp_path / "maps", {"x.jpg": perfect.astype(np.float64)})
    results = evaluate_score_maps(ScoreMaps(tmp_path / "maps"), truth, interval=0.01,
                                  mask_root=masks, progress=False)
    assert results["pxap"] == pytest.approx(100.0) and "max_box_acc" not in results
    # A constant map: precision is the foreground share of the pixels counted. The ignored
    # half is not counted, as background nor as foreground.
    save_maps(tmp_path / "flat", {"x.jpg": np.full((224, 224), 0.5)})
    flat = evaluate_score_maps(ScoreMaps(tmp_path / "flat"), truth, interval=0.01,
                               mask_root=masks, progress=False)
    ignored = cv2.resize(np.float32(ignore > 0), (224, 224), interpolation=cv2.INTER_NEAREST)
    foreground, ignored = perfect > 0, ignored > 0
    counted = foreground.sum() + (~foreground & ~ignored).sum()
    assert 0 < ignored.sum() < 224 * 224 and counted < 224 * 224
    assert flat["pxap"] == pytest.approx(100 * foreground.sum() / counted)
    with pytest.raises(ScoreMapError, match="pass the mask root"):
        evaluate_score_maps(ScoreMaps(tmp_path / "flat"), truth, progress=False)


# -------------------------------------------------- the straightforward loop, both forms


def straightforward(maps: dict, truth: Metadata, thresholds, ious=(0.3, 0.5, 0.7)):
    """MaxBoxAcc per IoU and contour mode the slow way: OpenCV contours at every threshold,
    ground truth rescaled coordinate by coordinate as int(v * 224 / size)."""
    out = {}
    for mode in ("largest", "all"):
        counts = np.zeros((len(ious), len(thresholds)))
        for image_id in truth.image_ids:
            size = truth.sizes[image_id]
            gt = np.array([[int(x0 * 224 / size.width), int(y0 * 224 / size.height),
                            int(x1 * 224 / size.width), int(y1 * 224 / size.height)]
                           for x0, y0, x1, y1 in truth.boxes[image_id]])
            boxes = opencv_reference_boxes(maps[image_id], thresholds, mode=mode)
            best = np.array([box_iou(b, gt).max() for b in boxes])
            for k, delta in enumerate(ious):
                counts[k] += best >= delta
        curves = counts * 100.0 / float(len(truth.image_ids))
        out[mode] = [float(c.max()) for c in curves]
    return out


def smooth_maps(image_ids, seed):
    import cv2

    rng = np.random.default_rng(seed)
    maps = {}
    for image_id in image_ids:
        blob = cv2.GaussianBlur(rng.random((224, 224)), (0, 0), sigmaX=rng.uniform(4, 20))
        maps[image_id] = (blob - blob.min()) / (blob.max() - blob.min())
    return maps


@pytest.mark.parametrize("form", ["dataset root", "metadata folder", "npz"])
def test_random_maps_agree_with_the_straightforward_loop_in_every_form(tmp_path, form):
    pytest.importorskip("cv2")
    truth = metadata_from_dataset("cub", CUB, "train", val_per_class=0)
    assert len(truth) >= 6 and sum(len(b) for b in truth.boxes.values()) > len(truth)
    maps = smooth_maps(truth.image_ids, seed=len(form))
    if form == "metadata folder":
        write_metadata(truth, tmp_path / "meta")
        truth = read_metadata(tmp_path / "meta")
    if form == "npz":
        np.savez(tmp_path / "maps.npz", **maps)
        source = ScoreMaps(tmp_path / "maps.npz")
    else:
        source = ScoreMaps(save_maps(tmp_path / "maps", maps))
    results = evaluate_score_maps(source, truth, interval=0.01, progress=False)
    reference = straightforward(maps, truth, np.arange(0, 1, 0.01))
    for mode in ("largest", "all"):
        assert list(results[mode]["max_box_acc"].values()) == reference[mode]
    assert results["max_box_acc_v2"] == np.average(reference["all"])


def test_the_metadata_of_a_root_round_trips_through_the_reference_files(tmp_path):
    truth = metadata_from_dataset("cub", CUB, "test")
    assert truth.image_ids[0].startswith("001.Black_footed_Albatross/")
    assert truth.has_masks and truth.mask_paths is None
    write_metadata(truth, tmp_path / "meta")
    again = read_metadata(tmp_path / "meta")
    assert again.image_ids == truth.image_ids and again.labels == truth.labels
    assert again.sizes == truth.sizes
    for image_id in truth.image_ids:
        np.testing.assert_array_equal(again.boxes[image_id], truth.boxes[image_id])
    text = (tmp_path / "meta" / "image_sizes.txt").read_text().splitlines()[0]
    size = truth.sizes[truth.image_ids[0]]
    assert text == f"{truth.image_ids[0]},{size.width},{size.height}"  # width first


def test_export_metadata_from_the_command_line(tmp_path, capsys):
    from wsolkit.data.__main__ import main as data_main

    assert data_main(["export-metadata", "cub", CUB, "--split", "test",
                      "--out", str(tmp_path / "meta")]) == 0
    assert "localization.txt" in capsys.readouterr().out
    assert len(read_metadata(tmp_path / "meta")) == 3


# ----------------------------------------------------------------------- the command line


def test_the_command_line_writes_the_json_and_prints_the_table(tmp_path, capsys):
    truth = metadata_from_dataset("cub", CUB, "test")
    maps = save_maps(tmp_path / "maps", smooth_maps(truth.image_ids, seed=3))
    assert main([str(maps), "--dataset", "cub", CUB, "--split", "test", "--interval", "0.01",
                 "--no-progress", "--cam-threshold", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "MaxBoxAccV2" in printed and "PxAP" in printed
    results = json.loads((tmp_path / "maps.results.json").read_text())
    assert results["num_images"] == 3 and 0 <= results["pxap"] <= 100
    assert results["gt_known_loc"]["threshold"] == 0.2


@pytest.mark.parametrize("damage, message", [
    (lambda maps: maps.pop("b/2.jpg"), r"b/2.jpg.npy: no score map for image 'b/2.jpg'"),
    (lambda maps: maps.update({"b/2.jpg": np.zeros((3, 224, 224))}), r"shape \(3, 224, 224\)"),
    (lambda maps: maps["b/2.jpg"].__setitem__((0, 0), np.nan), "1 NaN or inf values"),
    (lambda maps: maps["b/2.jpg"].__setitem__((0, 0), 1.5), r"values in \[0, 1.5\]"),
    (lambda maps: maps.update({"d/4.jpg": np.zeros((224, 224))}),
     r"a map for 1 image id\(s\) that .* does not list, e.g. 'd/4.jpg'"),
])
def test_bad_maps_are_errors_that_name_the_file(tmp_path, capsys, damage, message):
    hand_made(tmp_path)
    maps = {i: np.zeros((224, 224)) for i in ("a/1.jpg", "b/2.jpg", "c/3.jpg")}
    damage(maps)
    save_maps(tmp_path / "maps", maps)
    assert main([str(tmp_path / "maps"), "--metadata", str(tmp_path / "meta"),
                 "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(ScoreMapError, match=message):
        evaluate_score_maps(ScoreMaps(tmp_path / "maps"), read_metadata(tmp_path / "meta"),
                            interval=0.01, progress=False)


@pytest.mark.parametrize("edit, message", [
    (("localization.txt", "c/3.jpg,200,0,448,100", "c/3.jpg,200,0,448,113"),
     r"localization.txt:4: box \[200.0, 0.0, 448.0, 113.0\] is not \[x0, y0, x1, y1\] inside "
     r"its 448 x 112 image"),
    # Width and height swapped in image_sizes.txt: the box no longer fits.
    (("image_sizes.txt", "c/3.jpg,448,112", "c/3.jpg,112,448"), r"inside its 112 x 448 image"),
    (("class_labels.txt", "b/2.jpg,1", "b/2.jpg,one"), r"class_labels.txt:2: 'one' is not"),
    (("class_labels.txt", "b/2.jpg,1", "e/5.jpg,1"), r"image id 'e/5.jpg' is not in"),
    (("image_sizes.txt", "a/1.jpg,112,56", "a/1.jpg,112"), r"image_sizes.txt:1: 'a/1.jpg,112'"),
    (("localization.txt", "b/2.jpg,10,10,50,50", "b/2.jpg,m.png,"), "mixes box lines and mask"),
    (("image_sizes.txt", "c/3.jpg,448,112", ""), r"'c/3.jpg' has no line in .*image_sizes.txt"),
    (("class_labels.txt", "c/3.jpg,2", ""), r"class_labels.txt: no line for 1 image"),
])
def test_bad_metadata_is_an_error_naming_the_file_and_line(tmp_path, edit, message):
    meta = hand_made(tmp_path)
    name, old, new = edit
    path = meta / name
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(MetadataError, match=message):
        read_metadata(meta)


def test_a_missing_metadata_file_and_an_unknown_dataset_are_clear_errors(tmp_path):
    meta = hand_made(tmp_path)
    (meta / "image_sizes.txt").unlink()
    # Only boxes need sizes (the reference's OpenImages folders have none).
    with pytest.raises(MetadataError, match=r"'a/1.jpg' has no line in .*image_sizes.txt"):
        read_metadata(meta)
    (meta / "class_labels.txt").unlink()
    with pytest.raises(MetadataError, match="class_labels.txt: missing"):
        read_metadata(meta)
    with pytest.raises(MetadataError, match="'voc': expected 'cub', 'ilsvrc', 'openimages' or"):
        metadata_from_dataset("voc", CUB, "test")
    with pytest.raises(ScoreMapError, match="neither a folder"):
        ScoreMaps(tmp_path / "nothing")


def test_an_ilsvrc_root_gives_the_references_image_ids_and_boxes_inside_their_images(tmp_path):
    root = os.path.join(os.path.dirname(__file__), "fixtures", "ilsvrc_kaggle")
    truth = metadata_from_dataset("ilsvrc", root, "val")
    assert len(truth) > 0 and all(i.startswith("val/ILSVRC2012_val_") for i in truth.image_ids)
    for image_id in truth.image_ids:
        size, boxes = truth.sizes[image_id], truth.boxes[image_id]
        assert (boxes[:, 2] <= size.width).all() and (boxes[:, 3] <= size.height).all()
    write_metadata(truth, tmp_path / "meta")
    assert read_metadata(tmp_path / "meta").labels == truth.labels


def test_maps_saved_by_a_model_score_what_the_books_evaluation_scores(tmp_path):
    """The evaluator from files, at the evaluation size of the book's pipeline, gives the same
    numbers as evaluate_localization on the same model and split."""
    import torch

    from wsolkit.data import CUBDataset
    from wsolkit.evaluation import load_localization_set
    from wsolkit.evaluation.inference import predict_maps
    from wsolkit.evaluation.localization import evaluate_localization
    from wsolkit.models import build_model

    torch.manual_seed(0)
    model = build_model("simple_gap", 3).eval()
    norm = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    data = load_localization_set(CUBDataset(CUB, "test"), 32)
    truth = metadata_from_dataset("cub", CUB, "test")
    predictions = {}
    for rows, logits, maps in predict_maps(model, data.images, classes=data.labels,
                                           device="cpu", **norm):
        for k, score_map in zip(range(rows.start, rows.stop), maps):
            save_maps(tmp_path / "maps", {truth.image_ids[k]: score_map.double().numpy()})
            predictions[truth.image_ids[k]] = logits[k - rows.start].argsort(descending=True)
    book = evaluate_localization(model, data, device="cpu", **norm)
    ours = evaluate_score_maps(ScoreMaps(tmp_path / "maps", size=32), truth, interval=0.01,
                               cam_threshold=0.2, progress=False,
                               predictions={k: v.tolist() for k, v in predictions.items()})
    assert 0 < book["max_box_acc_v2"] < 100 and 0 < book["pxap"] < 100  # not degenerate
    assert ours["max_box_acc_v2"] == book["max_box_acc_v2"]
    assert ours["max_box_acc"] == book["max_box_acc"]
    assert ours["gt_known_loc"]["at_threshold"] == book["gt_known_loc"]
    assert ours["top1_loc"]["at_threshold"] == book["top1_loc"]
    assert ours["top1_cls"] == book["top1_cls"] and ours["pxap"] == pytest.approx(book["pxap"])


COCO = os.path.join(os.path.dirname(__file__), "fixtures", "coco")


def test_a_coco_root_gives_one_item_per_image_and_category_with_crowds_left_out(tmp_path,
                                                                                  capsys):
    """The fixture's val2017: image 139 (64 x 48) has a person [2, 3, 42, 33], a crowd region of
    persons (the first 10 columns), a car and a dog; image 285 a dog; image 632 nothing."""
    import cv2

    truth = metadata_from_dataset("coco", COCO, "val")
    assert truth.image_ids == ["000000000139.jpg/1", "000000000139.jpg/3",
                               "000000000139.jpg/18", "000000000285.jpg/18"]
    assert [truth.labels[i] for i in truth.image_ids] == [0, 1, 2, 2]
    person = "000000000139.jpg/1"
    assert truth.sizes[person] == ImageSize(width=64, height=48)
    assert truth.boxes[person].tolist() == [[2.0, 3.0, 42.0, 33.0]]  # the crowd box is not one
    foreground, ignore = truth.masks[person]()
    assert foreground[3:33, 2:42].all() and foreground.sum() == 40 * 30
    assert ignore[:, :2].all() and not ignore[:, 10:].any() and not (ignore & foreground).any()
    # The person's own mask as its map scores PxAP 100; a flat map scores the foreground share
    # of the pixels outside the crowd region, for every item.
    maps = {}
    for item in truth.image_ids:
        fg, _ = truth.masks[item]()
        maps[item] = cv2.resize(np.float32(fg), (224, 224), interpolation=cv2.INTER_NEAREST)
    save_maps(tmp_path / "maps", {i: m.astype(np.float64) for i, m in maps.items()})
    results = evaluate_score_maps(ScoreMaps(tmp_path / "maps"), truth, interval=0.01,
                                  progress=False)
    assert results["pxap"] == pytest.approx(100.0)
    assert main([str(tmp_path / "maps"), "--dataset", "coco", COCO, "--interval", "0.01",
                 "--no-progress"]) == 0
    assert "100.00" in capsys.readouterr().out
    # A pair with crowd regions only is left out, and counted.
    root = tmp_path / "coco"
    import shutil

    shutil.copytree(COCO, root)
    path = root / "annotations" / "instances_val2017.json"
    document = json.loads(path.read_text())
    for annotation in document["annotations"]:
        if annotation["image_id"] == 139 and annotation["category_id"] == 1:
            annotation["iscrowd"] = 1
            if isinstance(annotation["segmentation"], list):
                annotation["segmentation"] = {"counts": [0, 48 * 4, 48 * 60], "size": [48, 64]}
    path.write_text(json.dumps(document))
    from wsolkit.data import DatasetWarning

    with pytest.warns(DatasetWarning, match="left out 1 .image, category. pairs"):
        assert person not in metadata_from_dataset("coco", root, "val").image_ids
