"""Cosine loss (eq. 5) and Dense Class Maps (eq. 6-9) on hand-computed tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsolkit.cam import DegenerateMapWarning
from wsolkit.methods import cosine_dcm as dcm
from wsolkit.methods.cosine_dcm import DCMInputError
from wsolkit.models import build_model
from wsolkit.methods import available_maps, available_methods
from wsolkit.train import TrainConfig, fit, toy_images

# Two classes whose embeddings meet at 60 degrees (tree similarity 0.5).
HALF = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)]])


def test_cosine_loss_onehot_by_hand():
    outputs = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1])
    # cos([3, 4], e0) = 0.6, cos([1, 0], e1) = 0
    loss = dcm.cosine_loss(outputs, labels, np.eye(2))
    assert loss.item() == pytest.approx(((1 - 0.6) + (1 - 0.0)) / 2)


def test_cosine_loss_ignores_scale_and_uses_embedding_norm():
    outputs = torch.tensor([[1.0, 0.0]])
    assert dcm.cosine_loss(outputs, torch.tensor([1]), HALF).item() == pytest.approx(0.5)
    assert dcm.cosine_loss(7 * outputs, torch.tensor([1]), 3 * HALF).item() == pytest.approx(0.5)


def test_cosine_loss_gradient_is_orthogonal_to_output():
    outputs = torch.tensor([[3.0, 4.0]], requires_grad=True)
    dcm.cosine_loss(outputs, torch.tensor([0]), np.eye(2)).backward()
    # The loss depends on the direction only, so its gradient has no radial component.
    assert float(outputs.grad @ outputs.detach().T) == pytest.approx(0.0, abs=1e-7)


def test_registered_method_reports_cosine_accuracy():
    assert "cosine" in available_methods() and "cosine_similarity" in available_maps()
    lines = ["a r", "b r"]
    onehot = dcm.cosine_loss_factory("onehot")
    hierarchy = dcm.cosine_loss_factory("hierarchy", taxonomy=["a s", "b s", "s r", "z r"],
                                        classes=["a", "b"])
    # Under the hierarchy embeddings [1, 0] and [0.5, 0.866], the output [0.8, 0.6] is closer in
    # angle to class 1 (cos 0.92 against 0.8) although its largest entry is entry 0.
    logits, labels = torch.tensor([[0.8, 0.6]]), torch.tensor([1])
    out = hierarchy(logits, labels, {}, None)
    assert out["embedding_acc"].item() == 1.0
    assert out["loss"].item() == pytest.approx(1 - (0.4 + 0.6 * math.sqrt(0.75)), abs=1e-6)
    assert onehot(logits, labels, {}, None)["embedding_acc"].item() == 0.0
    with pytest.raises(DCMInputError, match="needs taxonomy"):
        dcm.cosine_loss_factory("hierarchy", taxonomy=lines)


def test_fit_with_cosine_loss_and_random_erasing():
    data = toy_images(32, image_size=16, num_classes=2, seed=0)
    config = TrainConfig(model="simple_gap", model_kwargs={"widths": [4, 4, 4, 4]}, num_classes=2,
                         image_size=16, epochs=1, batch_size=16,
                         method={"cosine": {"embedding": "onehot"}, "random_erasing": {"p": 0.5}})
    summary = fit(None, data, config, progress=False)
    record = summary["final"]
    assert 0 <= record["loss"] <= 2 and 0 <= record["embedding_acc"] <= 1


def test_dense_embeddings_mean_is_the_logits():
    torch.manual_seed(0)
    model = build_model("simple_gap", 5, widths=(4, 4, 4, 8)).eval()
    with torch.no_grad():
        logits, features = model(torch.randn(2, 3, 16, 16))
        dense = dcm.dense_embeddings(features["cam"], model.classifier.weight, model.classifier.bias)
    assert dense.shape == (2, 5, 2, 2)
    torch.testing.assert_close(dense.mean(dim=(2, 3)), logits, atol=1e-5, rtol=1e-5)


def test_cell_normalisation_and_similarities_by_hand():
    # Two cells: [3, 4] and [0, -2].
    dense = torch.tensor([[[[3.0, 0.0]], [[4.0, -2.0]]]])
    cells = dcm.normalize_cells(dense)
    torch.testing.assert_close(cells[0, :, 0, 0], torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(cells[0, :, 0, 1], torch.tensor([0.0, -1.0]))
    sims = dcm.cell_similarities(dense, HALF)
    torch.testing.assert_close(sims[0, :, 0, 0], torch.tensor([0.6, 0.3 + 0.8 * math.sqrt(0.75)]))
    torch.testing.assert_close(sims[0, :, 0, 1], torch.tensor([0.0, -math.sqrt(0.75)]))


def overlapping_scores():
    """(1, 3, 2, 2): classes 0 and 1 both fire on the top row, class 0 more strongly; class 2
    owns the bottom row."""
    s = torch.zeros(1, 3, 2, 2)
    s[0, 0, 0] = 0.9
    s[0, 1, 0] = 0.85
    s[0, 2, 1] = 0.6
    s[0, 0, 1] = 0.1
    return s


def test_eq8_keeps_only_the_stronger_of_two_overlapping_classes():
    scores = overlapping_scores()
    torch.testing.assert_close(dcm.cell_classes(scores), torch.tensor([[[0, 0], [2, 2]]]))
    torch.testing.assert_close(dcm.class_scores(scores), torch.tensor([[0.9, 0.0, 0.6]]))
    # Class 1 reaches 0.85 > theta_cls, but only where class 0 is better: it is not selected,
    # while a plain "global maximum > theta" rule would select it.
    assert dcm.select_classes(scores, 0.8).tolist() == [[True, False, False]]
    assert (scores.amax(dim=(2, 3)) > 0.8).tolist() == [[True, True, False]]


def test_eq9_two_thresholds():
    scores = overlapping_scores()
    assert dcm.dense_class_map(scores, 0.5, 0.7).tolist() == [[[1, 1], [0, 0]]]
    assert dcm.dense_class_map(scores, 0.5, 0.5).tolist() == [[[1, 1], [3, 3]]]
    assert dcm.dense_class_map(scores, 0.95, 0.5).tolist() == [[[0, 0], [0, 0]]]
    selected = torch.tensor([[False, True, True]])
    assert dcm.dense_class_map(scores, 0.0, 0.5, selected=selected).tolist() == [[[0, 0], [3, 3]]]


def test_cam_class_map_by_hand():
    # logits = cell means [2, 1, -3] -> probabilities 0.727, 0.268, 0.005.
    dense = torch.tensor([[[[4.0, 0.0]], [[0.0, 2.0]], [[-3.0, -3.0]]]])
    assert dcm.cam_class_map(dense, 0.15, 0.5).tolist() == [[[1, 2]]]
    assert dcm.cam_class_map(dense, 0.5, 0.5).tolist() == [[[1, 0]]]


def test_map_boxes_threshold_is_a_fraction_of_the_maximum():
    m = torch.zeros(1, 4, 6)
    m[0, 1, 1] = 2.0     # the peak
    m[0, 1, 2] = 1.0     # half the peak
    m[0, 3, 5] = -5.0    # negative values count as zero
    boxes = dcm.map_boxes(m, [0.4, 0.6], "max")
    # Reference boxes are [x, y, x + w, y + h] of the component.
    assert boxes.tolist() == [[[1, 1, 3, 2], [1, 1, 2, 2]]]
    # Min-max: the -5 becomes the zero of the scale, so at 0.4 (of the range 7) everything above
    # -2.2 is foreground and the box spans the whole map (clipped to W - 1, H - 1).
    assert dcm.map_boxes(m, [0.4], "minmax").tolist() == [[[0, 0, 5, 3]]]


def test_dcm_detections_by_hand():
    # Cells (2 x 3): class 0 left column, class 1 middle, class 2 nowhere (always second).
    dense = torch.zeros(3, 2, 3)
    dense[0, :, 0] = 1.0
    dense[2, :, 0] = 0.5
    dense[1, :, 1] = 1.0
    dense[2, :, 1] = 0.5
    dense[2, :, 2] = -1.0
    dense[0, :, 2] = -1.0
    (det,) = dcm.dcm_detections([dense], np.eye(3), [(2, 3)], [0.5])
    assert det.classes.tolist() == [0, 1]
    np.testing.assert_allclose(det.scores, [1 / math.sqrt(1.25)] * 2, rtol=1e-6)
    assert det.boxes[:, 0].tolist() == [[0, 0, 1, 1], [1, 0, 2, 1]]
    (strict,) = dcm.dcm_detections([dense], np.eye(3), [(2, 3)], [0.5], theta_cls=0.95)
    assert strict.classes.tolist() == []


def test_cam_detections_select_by_probability():
    dense = torch.zeros(3, 2, 2)
    dense[0] = 2.0
    dense[1] = 1.0
    dense[0, 0, 0] = 3.0  # mean 2.25
    with pytest.warns(DegenerateMapWarning, match="1 of 2 maps"):
        (det,) = dcm.cam_detections([dense], [(2, 2)], [0.5], min_probability=0.15)
    p = torch.softmax(torch.tensor([2.25, 1.0, 0.0]), 0)
    assert det.classes.tolist() == [0, 1] and float(p[2]) < 0.15
    np.testing.assert_allclose(det.scores, p[:2].double().numpy(), rtol=1e-6)
    # The CAM of class 1 is constant: no box (the warning above reports it).
    assert det.boxes[1, 0].tolist() == [0, 0, 0, 0]


def test_presence_f1_by_hand():
    dets = [dcm.Detections(np.array([0, 2]), np.array([0.9, 0.6]), np.zeros((2, 1, 4), int), (4, 4)),
            dcm.Detections(np.array([1]), np.array([0.7]), np.zeros((1, 1, 4), int), (4, 4))]
    labels = [np.array([0, 1]), np.array([1, 1])]  # present: (0, 0), (0, 1), (1, 1)
    # t = 0.5: TP (0, 0), (1, 1); FP (0, 2); FN (0, 1) -> F1 = 4 / 6.
    # t = 0.8: TP (0, 0); FN (0, 1), (1, 1) -> F1 = 2 / 4. t = 0.9: nothing above (strict).
    np.testing.assert_allclose(dcm.presence_f1(dets, labels, [0.5, 0.8, 0.9]),
                               [400 / 6, 50.0, 0.0])
    np.testing.assert_allclose(dcm.presence_f1(dets, labels, [0.9], inclusive=True), [50.0])


def test_detections_to_results_scales_to_the_original_image():
    det = dcm.Detections(np.array([1]), np.array([0.7]), np.array([[[2, 0, 3, 1]]]), (4, 4))
    (result,) = dcm.detections_to_results([det], [42], [(8, 12)], [5, 9], 0)
    assert result["image_id"] == 42 and result["category_id"] == 9
    assert result["bbox"] == [6.0, 0.0, 3.0, 2.0] and result["score"] == 0.7


class FixedFeatures(torch.nn.Module):
    """A stand-in network whose last feature map is given (classifier = identity, no bias)."""

    def __init__(self, cam: torch.Tensor) -> None:
        super().__init__()
        self.cam = cam
        self.classifier = torch.nn.Linear(cam.shape[1], cam.shape[1])
        with torch.no_grad():
            self.classifier.weight.copy_(torch.eye(cam.shape[1]))
            self.classifier.bias.zero_()

    def forward(self, x):
        features = self.cam[: x.shape[0]]
        return self.classifier(features.mean(dim=(2, 3))), {"cam": features}


def test_single_object_ious_by_hand():
    cam = torch.zeros(2, 3, 4, 4)
    cam[0, 0, :2, :2] = 1.0    # image 0, class 0: top-left 2 x 2 block
    cam[0, 1] = 0.5            # class 1 wins the classification (mean 0.5 > 0.25)
    cam[1, 2, 2:, 1:] = 2.0    # image 1, class 2: bottom-right 2 x 3 block
    model = FixedFeatures(cam)
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    labels = torch.tensor([0, 2])
    gt = [np.array([[0, 0, 2, 2]]), np.array([[1, 2, 4, 4]])]  # x2 = x1 + width
    for kind, embeddings in (("cam", None), ("dcm", np.eye(3))):
        out = dcm.single_object_ious(model, images, labels, gt, [0.5], kind=kind,
                                     embeddings=embeddings, mean=(0, 0, 0), std=(1, 1, 1), k=2,
                                     device="cpu")
        # Reference boxes are [x, y, x + w, y + h] clipped to W - 1 = 3 and scored inclusively:
        # image 1 gives [1, 2, 3, 3] (6 pixels) against [1, 2, 4, 4] (12 pixels).
        np.testing.assert_allclose(out["ious"][:, 0], [1.0, 0.5])
        assert out["top1"].tolist() == [False, True] and out["topk"].tolist() == [True, True]
    assert dcm.localization_accuracy(out["ious"], out["topk"]).tolist() == [100.0]
    assert dcm.localization_accuracy(out["ious"], out["top1"]).tolist() == [50.0]
    assert dcm.localization_accuracy(out["ious"], out["topk"], iou=0.6).tolist() == [50.0]


def test_localization_accuracy_and_auc_by_hand():
    ious = np.array([[0.6, 0.4], [0.5, 0.7]])
    assert dcm.localization_accuracy(ious, np.array([True, False])).tolist() == [50.0, 0.0]
    assert dcm.localization_accuracy(ious).tolist() == [100.0, 50.0]
    # Pairs (object, background): 3>1, 3>2, 2>1, 2=2 (half) -> 3.5 / 4.
    assert dcm.score_separation_auc([3, 2], [1, 2]) == pytest.approx(0.875)
    assert dcm.score_separation_auc([0, 0], [1, 1]) == 0.0


def test_random_erasing_area_and_probability():
    images = torch.ones(4, 3, 8, 8)
    torch.manual_seed(0)
    erased = dcm.RandomErasing(p=1.0, area=(0.25, 0.25), aspect=(1.0, 1.0))(images)
    assert ((erased == 0).sum(dim=(1, 2, 3)) == 3 * 16).all()
    assert torch.equal(dcm.RandomErasing(p=0.0)(images), images)
    with pytest.raises(DCMInputError):
        dcm.RandomErasing(p=2.0)


def test_object_crop_transform_on_a_coco_crop():
    from pathlib import Path

    from wsolkit.data import COCOObjectCrops

    root = Path(__file__).parent / "fixtures" / "coco"
    crops = COCOObjectCrops(root, "train", min_size=0,
                            transform=dcm.object_crop_transform(32, short_side=(40, 48)))
    torch.manual_seed(0)
    sample = crops[0]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert 0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1
    with pytest.raises(DCMInputError):
        dcm.object_crop_transform(64, short_side=(40, 48))


def test_classifier_maps_groups_sizes():
    torch.manual_seed(0)
    model = build_model("simple_gap", 3, widths=(4, 4, 4, 4)).eval()
    images = [torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8),
              torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8),
              torch.randint(0, 255, (3, 24, 16), dtype=torch.uint8)]
    maps = dcm.classifier_maps(model, images, mean=(0.5,) * 3, std=(0.25,) * 3, device="cpu")
    assert [tuple(m.shape) for m in maps] == [(3, 2, 2), (3, 2, 2), (3, 3, 2)]
    with torch.no_grad():
        logits, _ = model((images[2][None].float() / 255 - 0.5) / 0.25)
    torch.testing.assert_close(maps[2].mean(dim=(1, 2)), logits[0], atol=1e-5, rtol=1e-5)


def test_the_cosine_similarity_map_is_eq_7a_of_the_true_class():
    from wsolkit.methods import score_map
    from wsolkit.train import model_from_config

    config = TrainConfig(model="simple_gap", model_kwargs={"widths": [4, 4, 4, 8]}, num_classes=3,
                         image_size=16, method={"cosine": {"embedding": "onehot"}})
    model = model_from_config(config).eval()
    assert "class_embeddings" not in model.state_dict()  # rebuilt from the options, not stored
    with torch.no_grad():
        _, features = model(torch.randn(2, 3, 16, 16))
        maps = score_map("cosine_similarity")(model, features, torch.tensor([2, 0]))
        dense = dcm.dense_embeddings(features["cam"], model.classifier.weight, model.classifier.bias)
        sims = dcm.cell_similarities(dense, np.eye(3))
    torch.testing.assert_close(maps, torch.stack([sims[0, 2], sims[1, 0]]))


# ---------------------------------------------------------------------------------------------
# The chapter's protocols
# ---------------------------------------------------------------------------------------------


class PooledPixels(torch.nn.Module):
    """A stand-in network whose cells are the 4 x 4 means of the input's three channels
    (classifier = identity, no bias): a red square is class 0, a green one class 1."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = torch.nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.eye(3))

    def forward(self, x):
        cam = torch.nn.functional.avg_pool2d(x, 4)
        return self.classifier(cam.mean(dim=(2, 3))), {"cam": cam}


def square_scenes():
    """Two 16 x 16 scenes: an 8 x 8 red square at the top left (category 1), a green one at
    the bottom right (category 2); category 3 never occurs."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    from wsolkit.evaluation import DetectionSet

    images = [torch.zeros(3, 16, 16, dtype=torch.uint8) for _ in range(2)]
    images[0][0, :8, :8] = 255
    images[1][1, 8:, 8:] = 255
    coco = COCO()
    objects = ((7, 1, [0, 0, 8, 8]), (9, 2, [8, 8, 8, 8]))
    coco.dataset = {"images": [{"id": i, "width": 16, "height": 16} for i in (7, 9)],
                    "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)],
                    "annotations": [{"id": n, "image_id": i, "category_id": c, "bbox": box,
                                     "area": 64, "iscrowd": 0}
                                    for n, (i, c, box) in enumerate(objects, start=1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    masks = [torch.zeros(16, 16, dtype=torch.uint8) for _ in range(2)]
    masks[0][:8, :8] = 1
    masks[1][8:, 8:] = 1
    return DetectionSet(images=images, image_ids=[7, 9], orig_sizes=[(16, 16), (16, 16)],
                        boxes=[np.array([[0, 0, 8, 8]], np.float32),
                               np.array([[8, 8, 16, 16]], np.float32)],
                        labels=[np.array([0]), np.array([1])], masks=masks, coco=coco,
                        category_ids=[1, 2, 3])


def test_evaluate_scenes_on_two_squares():
    from wsolkit.evaluation.scenes import DetectionMatches, detection_metrics

    scenes = square_scenes()
    common = dict(mean=(0, 0, 0), std=(1, 1, 1), cls_thresholds=[0.35, 0.5], device="cpu")
    # DCM: background cells are zero vectors (similarity 0 to every class), so in each scene
    # only the square's class wins a cell with a positive score: one right box per scene.
    dcm_out = dcm.evaluate_scenes(PooledPixels(), scenes, [0.5], embeddings=np.eye(3),
                                  keep_matches=True, **common)
    np.testing.assert_allclose(dcm_out["map"], [[100.0, 100.0]])
    assert dcm_out["boxes"] == 2 and dcm_out["empty_boxes"] == 0
    assert dcm_out["selected"].tolist() == [[1, 1], [1, 1]]
    np.testing.assert_allclose(dcm_out["presence_f1"], [100.0, 100.0])
    matches = DetectionMatches.from_arrays(dcm_out)
    np.testing.assert_array_equal(detection_metrics(matches)["map"], dcm_out["map"])
    # CAM: every class is a candidate; the two absent colours have constant maps (empty boxes).
    # logits (0.25, 0, 0) give the square's class 0.391 and the others 0.304 each, so only the
    # threshold 0.35 selects it; each class's own scene ranks first, so the mAP is still 100.
    cam_out = dcm.evaluate_scenes(PooledPixels(), scenes, [0.5], **common)
    assert cam_out["boxes"] == 6 and cam_out["empty_boxes"] == 4
    assert cam_out["selected"].tolist() == [[1, 0], [1, 0]]
    np.testing.assert_allclose(cam_out["map"], [[100.0, 100.0]])
    np.testing.assert_allclose(cam_out["presence_f1"], [100.0, 0.0])
    # Two box thresholds give one row each; matches only for one.
    two = dcm.evaluate_scenes(PooledPixels(), scenes, [0.5, 0.9], embeddings=np.eye(3), **common)
    assert two["map"].shape == (2, 2)
    with pytest.raises(DCMInputError, match="one box threshold"):
        dcm.evaluate_scenes(PooledPixels(), scenes, [0.5, 0.9], keep_matches=True, **common)


def test_scene_class_map_labels_the_square():
    scenes = square_scenes()
    (dense,) = dcm.classifier_maps(PooledPixels(), [scenes.images[0]], mean=(0, 0, 0),
                                   std=(1, 1, 1), device="cpu")
    labels, det = dcm.scene_class_map(dense, (16, 16), 0.8, 0.5, 0.5, embeddings=np.eye(3))
    assert labels.shape == (16, 16) and labels[2, 2] == 1 and labels[13, 13] == 0
    assert det.classes.tolist() == [0] and det.boxes.shape == (1, 1, 4)
    # CAM at the paper's 15%: every colour passes (0.391, 0.304, 0.304); at 35% only red.
    _, cam_all = dcm.scene_class_map(dense, (16, 16), 0.15, 0.5, 0.5)
    labels, cam_red = dcm.scene_class_map(dense, (16, 16), 0.35, 0.5, 0.5)
    assert cam_all.classes.tolist() == [0, 1, 2] and cam_red.classes.tolist() == [0]
    assert labels[2, 2] == 1 and labels[13, 13] == 0


def test_cell_statistics_by_hand():
    # Scene 0: 1 x 2 cells, [3, 0] on the object and [0.1, 0] beside it; scene 1: one
    # background cell [0, 0.2].
    dense = [torch.tensor([[[3.0, 0.1]], [[0.0, 0.0]]]), torch.tensor([[[0.0]], [[0.2]]])]
    masks = [torch.tensor([[1, 1, 0, 0]], dtype=torch.uint8), torch.zeros(1, 1, dtype=torch.uint8)]
    ce = dcm.cell_statistics(dense, masks)
    assert ce["object_cells"].tolist() == [1, 0] and ce["background_cells"].tolist() == [1, 1]
    # Softmax: object 0.953, background 0.525 and 0.550 -> both below the object: AUC 1.
    assert ce["auc_after"] == pytest.approx(1.0) and ce["auc_before"] == pytest.approx(1.0)
    # Class 0 wins scene 0 with 0.953 > 0.8: both its cells exceed 0.5 and are kept; in scene 1
    # class 1's 0.550 is below theta_cls: nothing kept.
    assert ce["kept_object"].tolist() == [1, 0] and ce["kept_background"].tolist() == [1, 0]
    assert ce["pairs_after"].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert ce["hist_after"]["object"].sum() == 1 and ce["hist_after"]["background"].sum() == 2
    # Cosine (one-hot): every cell has similarity 1 to its best class: all tied, AUC 0.5.
    cos = dcm.cell_statistics(dense, masks, embeddings=np.eye(2))
    assert cos["auc_after"] == pytest.approx(0.5)
    assert cos["kept_background"].tolist() == [1, 1]
    with pytest.raises(DCMInputError):
        dcm.cell_statistics(dense, masks[:1])


def test_crop_accuracy_and_parents():
    from wsolkit.hierarchy import Taxonomy, parent_indices

    tree = Taxonomy.from_lines(["a p", "b p", "c q", "p r", "q r"])
    parents = parent_indices(tree, ["a", "b", "c"])
    assert parents.tolist() == [0, 0, 1]
    cam = torch.zeros(3, 3, 1, 1)
    cam[0, 0] = 1.0   # crop 0 (class 0): right
    cam[1, 0] = 1.0   # crop 1 (class 1): called class 0, its sibling
    cam[2, 1] = 1.0   # crop 2 (class 2): called class 1, another branch
    out = dcm.crop_accuracy(FixedFeatures(cam), torch.zeros(3, 3, 1, 1, dtype=torch.uint8),
                            torch.tensor([0, 1, 2]), mean=(0, 0, 0), std=(1, 1, 1),
                            parents=parents)
    assert out["accuracy"] == pytest.approx(100 / 3)
    assert out["parent_accuracy"] == pytest.approx(200 / 3)
    with pytest.raises(Exception, match="no parent"):
        parent_indices(tree, ["r"])


def test_single_object_report_and_hits_by_hand():
    out = {"ious": np.array([[0.6, 0.4], [0.7, 0.5], [0.2, 0.9]]),
           "top1": np.array([True, False, True]), "topk": np.array([True, True, False])}
    report = dcm.single_object_report(out, [0, 1])
    assert report["top5_loc"].tolist() == [100.0, 50.0]
    assert report["top1_loc"].tolist() == [50.0, 0.0]
    assert report["gt_known"].tolist() == [100.0, 50.0]
    assert report["top1_cls"] == 50.0 and report["top5_cls"] == 100.0
    assert dcm.localization_hits(out, [0, 1, 2], 1).tolist() == [0.0, 1.0, 0.0]
    assert dcm.localization_hits(out, [0, 1], 1).mean() * 100 == report["top5_loc"][1]


def test_selected_counts_and_empty_boxes():
    dets = [dcm.Detections(np.array([0, 2]), np.array([0.9, 0.6]),
                           np.array([[[0, 0, 0, 0]], [[1, 1, 2, 2]]]), (4, 4)),
            dcm.Detections(np.array([], dtype=np.int64), np.array([]), np.zeros((0, 1, 4), int), (4, 4))]
    assert dcm.selected_counts(dets, [0.5, 0.6, 0.95]).tolist() == [[2, 1, 0], [0, 0, 0]]
    assert dcm.selected_counts(dets, [0.6], inclusive=True).tolist() == [[2], [0]]
    assert dcm.count_empty_boxes(dets) == 1


def test_activated_scores_are_softmax_or_similarities():
    dense = torch.tensor([[[[3.0]], [[4.0]]]])
    torch.testing.assert_close(dcm.activated_scores(dense)[0, :, 0, 0],
                               torch.softmax(torch.tensor([3.0, 4.0]), 0))
    torch.testing.assert_close(dcm.activated_scores(dense, np.eye(2))[0, :, 0, 0],
                               torch.tensor([0.6, 0.8]))


def test_cell_score_maps_by_hand():
    # Cells [3, 0] and [0.1, 0]: softmax bests 0.953 and 0.525; class 0 wins both with 0.953 >
    # 0.8, so at theta_sim 0.6 only the first cell is kept.
    dense = torch.tensor([[[3.0, 0.1]], [[0.0, 0.0]]])
    maps = dcm.cell_score_maps(dense, theta_cls=0.8, theta_sim=0.6)
    torch.testing.assert_close(maps["before"], torch.tensor([[3.0, 0.1]]))
    p = torch.softmax(torch.tensor([[3.0, 0.0], [0.1, 0.0]]), dim=1).amax(dim=1)
    torch.testing.assert_close(maps["after"], p[None])
    torch.testing.assert_close(maps["kept"], torch.tensor([[float(p[0]), 0.0]]))
