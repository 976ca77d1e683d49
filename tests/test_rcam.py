"""Tests of wsolkit.methods.rcam: eq. 21 in both printed forms, border points, the two-stage
search on a hand-made feature map whose lowest-variance box is known, and its evaluator rule."""

import numpy as np
import pytest
import torch

from wsolkit.evaluation import LocalizationSet, evaluate_image_thresholds
from wsolkit.methods.improving_cam import PAPER_THRESHOLDS, recombined_cams
from wsolkit.methods.rcam import (
    border_points,
    printed_recombined_cams,
    recombined_equals_printed,
    seed_similarity,
    two_stage_chooser,
    two_stage_search,
)
from wsolkit.models import build_model


def test_the_thesis_and_the_conference_paper_write_the_same_recombined_cam():
    g = torch.Generator().manual_seed(0)
    features = torch.rand(3, 6, 4, 4, generator=g)  # non-negative, as after a ReLU
    weight = torch.randn(5, 6, generator=g)
    classes = torch.tensor([0, 2, 4])
    assert recombined_equals_printed(features, weight, classes)
    for form in ("thesis", "conference"):
        assert torch.allclose(printed_recombined_cams(features, weight, classes, form),
                              recombined_cams(features, weight, classes), atol=1e-6)
    # With negative features the conference paper's form parts from the other two.
    shifted = features - 0.5
    assert torch.allclose(printed_recombined_cams(shifted, weight, classes, "thesis"),
                          recombined_cams(shifted, weight, classes), atol=1e-6)
    assert not recombined_equals_printed(shifted, weight, classes)


def test_border_points_are_the_foreground_pixels_on_the_box_edges():
    fg = np.zeros((6, 6), bool)
    fg[1:4, 2:5] = True
    fg[2, 2] = False
    points = {tuple(p) for p in border_points(fg, [2, 1, 4, 3])}
    ring = {(1, 2), (1, 3), (1, 4), (3, 2), (3, 3), (3, 4), (2, 4)}
    assert points == ring
    assert border_points(np.zeros((4, 4), bool), [0, 0, 0, 0]).shape == (0, 2)


def test_seed_similarity_is_the_mean_cosine_similarity():
    f = torch.zeros(2, 1, 3)
    f[:, 0, 0] = torch.tensor([1.0, 0.0])
    f[:, 0, 1] = torch.tensor([0.0, 2.0])
    f[:, 0, 2] = torch.tensor([1.0, 1.0])
    sim = seed_similarity(f, np.array([[0, 0], [0, 1]]))
    assert sim[0].tolist() == pytest.approx([0.5, 0.5, 2 ** -0.5])


def _object_with_core(size=32, cells=8):
    """A 16 x 16 object at 0.5 with an 8 x 8 core at 1.0; features: the object's ring of cells
    half object, half background; its inside object; the rest background."""
    score = np.zeros((size, size))
    score[8:24, 8:24] = 0.5
    score[12:20, 12:20] = 1.0
    features = torch.zeros(2, cells, cells)
    features[1] = 1.0                      # background
    features[:, 2:6, 2:6] = torch.tensor([1.0, 1.0])[:, None, None]  # the object's ring
    features[:, 3:5, 3:5] = torch.tensor([1.0, 0.0])[:, None, None]  # the inside
    return score, features


def test_the_two_stage_search_picks_the_box_whose_seeds_lie_on_the_object_boundary():
    score, features = _object_with_core()
    found = two_stage_search(score, features)
    # Thresholds below 0.5 give the whole object, from 0.5 the core, 1.0 nothing.
    # (Reference boxes: [x, y, x + w, y + h] as cv2.boundingRect gives them.)
    assert found.boxes[0].tolist() == [8, 8, 24, 24]
    assert found.boxes[10].tolist() == [12, 12, 20, 20]
    assert np.isnan(found.variances[-1]) and found.points[-1] == 0
    # Seeds on the object's ring of cells: similarity 1 there, 0.71 everywhere else.
    ring = found.variances[0]
    core = found.variances[10]
    assert ring < core
    assert found.threshold < 0.5
    assert found.boxes[found.index].tolist() == [8, 8, 24, 24]
    # The variance, by hand, for the object's box: 12 ring cells at 1, 52 cells at 0.71.
    mean = (12 * 1 + 52 * 2 ** -0.5) / 64
    expected = (12 * (1 - mean) ** 2 + 52 * (2 ** -0.5 - mean) ** 2) / 64
    assert ring == pytest.approx(expected, rel=1e-5)


def test_the_per_seed_contrast_does_not_shrink_with_the_number_of_seeds():
    # Two seed sets with the same mix of object and background vectors, one repeated: the
    # mean map is identical, so both contrasts agree; with one more, different seed the mean
    # map smooths while the per-seed contrast is the mean of the seeds' own variances.
    f = torch.zeros(2, 1, 4)
    f[:, 0, :2] = torch.tensor([1.0, 0.0])[:, None]
    f[:, 0, 2:] = torch.tensor([0.0, 1.0])[:, None]
    one = np.array([[0, 0]])
    both = np.array([[0, 0], [0, 3]])
    own = seed_similarity(f, one, per_seed=True)
    assert own.shape == (1, 1, 4) and own[0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert float(seed_similarity(f, both).var(unbiased=False)) == 0.0
    per_seed = seed_similarity(f, both, per_seed=True).flatten(1).var(1, unbiased=False)
    assert per_seed.mean().item() == pytest.approx(0.25)
    score, features = _object_with_core()
    found = two_stage_search(score, features, contrast="per_seed")
    assert found.boxes[found.index].tolist() == [8, 8, 24, 24]
    with pytest.raises(ValueError, match="contrast"):
        two_stage_chooser(contrast="median")


def test_a_threshold_with_fewer_than_four_border_points_is_skipped():
    score = np.zeros((16, 16))
    score[4:12, 4:12] = 0.4
    score[8, 8] = 1.0  # one pixel above 0.4 of the maximum
    found = two_stage_search(score, torch.rand(3, 4, 4))
    assert found.points[10] == 1 and np.isnan(found.variances[10])
    assert np.isfinite(found.variances[:8]).all()
    none = two_stage_search(np.zeros((8, 8)), torch.rand(3, 2, 2))
    assert none.index == -1 and np.isnan(none.threshold)


def test_the_evaluator_gives_the_chooser_the_feature_maps_of_each_batch():
    torch.manual_seed(0)
    model = build_model("simple_gap", 3, widths=(4, 4, 4, 8)).eval()
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(6, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    boxes = [np.array([[4, 4, 20, 20]], np.float32)] * 6
    data = LocalizationSet(images, torch.tensor([0, 1, 2, 0, 1, 2]), boxes, None, None,
                           [str(i) for i in range(6)])
    seen = []

    def spy(maps, features):
        seen.append(tuple(features.shape))
        return np.full(maps.shape[0], 0.3)

    spy.needs_features = True
    out = evaluate_image_thresholds(model, data, {"spy": spy, "two_stage": two_stage_chooser()},
                                    mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=4,
                                    device="cpu")
    assert seen == [(4, 8, 4, 4), (2, 8, 4, 4)]
    chosen = out["choosers"]["two_stage"]["thresholds"]
    assert chosen.shape == (6,)
    assert np.all(np.isin(np.round(chosen, 2), PAPER_THRESHOLDS))
