"""wsolkit.boxes against the reference protocol (its OpenCV loop, B.opencv_reference_boxes) and by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from wsolkit import boxes as B

cv2 = pytest.importorskip("cv2")

THRESHOLDS = np.arange(0, 1, 0.01)


def sorted_rows(b):
    return b[np.lexsort(b[:, ::-1].T)]


# ---------------------------------------------------------------------------------------------
# Random maps
# ---------------------------------------------------------------------------------------------


def blobs(rng, h, w, noise):
    """Sum of Gaussian blobs plus noise, min-max normalised, float64."""
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w))
    for _ in range(rng.integers(1, 6)):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(0.02, 0.3) * max(h, w)
        m += rng.uniform(0.2, 1) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    m += noise * rng.standard_normal((h, w))
    return (m - m.min()) / (m.max() - m.min())


def cam_like(rng, size, cells):
    """Random ``cells x cells`` map upsampled bicubic to ``size x size``, normalised."""
    f = torch.from_numpy(rng.standard_normal((1, 1, cells, cells)))
    m = F.interpolate(f, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()
    return (m - m.min()) / (m.max() - m.min())


def rings(rng):
    """Concentric rings: components nested in holes nested in components."""
    h, w = rng.integers(8, 48, size=2)
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - rng.uniform(0, w), (yy - rng.uniform(0, h)) * rng.uniform(0.5, 2))
    m = 0.5 + 0.5 * np.cos(r * rng.uniform(0.3, 1.5)) * np.exp(-r / rng.uniform(5, 50))
    return np.clip(m + 0.05 * rng.standard_normal((h, w)), 0, 1)


def few_levels(rng):
    """Small maps with 2-6 distinct values: many ties, odd shapes, one-pixel components."""
    h, w = rng.integers(1, 12, size=2)
    k = rng.integers(1, 6)
    return np.round(rng.random((h, w)) * k) / k


def random_maps():
    rng = np.random.default_rng(2020)
    maps = []
    maps += [blobs(rng, 224, 224, 0.01) for _ in range(30)]
    maps += [cam_like(rng, 224, cells) for cells in (7, 14) for _ in range(20)]
    maps += [blobs(rng, *rng.integers(3, 40, size=2), rng.choice([0.0, 0.05, 0.3]))
             for _ in range(80)]
    maps += [cam_like(rng, int(rng.integers(8, 40)), int(rng.integers(3, 8))) for _ in range(40)]
    maps += [rings(rng) for _ in range(60)]
    maps += [few_levels(rng) for _ in range(120)]
    return maps


MAPS = random_maps()


def random_gt(rng, h, w):
    g = rng.integers(1, 4)
    xs = rng.integers(0, w, size=(g, 2))
    ys = rng.integers(0, h, size=(g, 2))
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)


# ---------------------------------------------------------------------------------------------
# Equivalence to the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["largest", "all"])
def test_identical_to_opencv_loop_on_random_maps(mode):
    assert len(MAPS) >= 300
    rng = np.random.default_rng(7)
    mismatches = []
    for k, m in enumerate(MAPS):
        want = B.opencv_reference_boxes(m, THRESHOLDS, mode)
        gt = random_gt(rng, *m.shape)
        if mode == "largest":
            got = B.largest_component_boxes(m, THRESHOLDS)
            same = np.array_equal(got, np.concatenate(want))
        else:
            got = B.all_component_boxes(m, THRESHOLDS)
            same = all(np.array_equal(sorted_rows(w), g) for w, g in zip(want, got))
        iou = B.best_iou_per_threshold(m, [gt], THRESHOLDS, mode=mode)
        same &= np.array_equal(iou, [B.box_iou(w, gt).max() for w in want])
        if not same:
            mismatches.append(k)
    assert mismatches == []


def test_both_modes_at_once_equal_each_mode_alone():
    rng = np.random.default_rng(11)
    maps = np.stack(MAPS[:40])
    gt = [random_gt(rng, *maps.shape[1:]) for _ in range(len(maps))]
    both = B.best_iou_per_mode(maps, gt, THRESHOLDS)
    for mode in ("largest", "all"):
        np.testing.assert_array_equal(both[mode], B.best_iou_per_threshold(maps, gt, THRESHOLDS,
                                                                            mode=mode))
    one = B.best_iou_per_mode(MAPS[0], gt[0], THRESHOLDS, modes=("all",))
    assert list(one) == ["all"] and one["all"].shape == (len(THRESHOLDS),)
    with pytest.raises(ValueError, match="mode = 'every'"):
        B.best_iou_per_mode(maps, gt, THRESHOLDS, modes=("every",))


def test_batch_equals_single_maps_and_fine_thresholds():
    """1000 thresholds (many share a level) and a batch give the per-map reference boxes."""
    rng = np.random.default_rng(3)
    maps = np.stack([cam_like(rng, 64, 7) for _ in range(3)] + [blobs(rng, 64, 64, 0.02)])
    t = B.binarize_thresholds(0.001)
    got = B.largest_component_boxes(maps, t)
    assert got.shape == (4, 1000, 4) and got.dtype == np.int64
    for k in range(4):
        assert np.array_equal(got[k], np.concatenate(B.opencv_reference_boxes(maps[k], t)))
    every = B.all_component_boxes(maps, t)
    for k in range(4):
        want = B.opencv_reference_boxes(maps[k], t, "all")
        assert all(np.array_equal(sorted_rows(w), g) for w, g in zip(want, every[k]))


def test_thresholds_outside_unit_interval_follow_the_reference():
    m = blobs(np.random.default_rng(4), 20, 30, 0.1)
    t = np.array([-0.5, 0.0, 0.999, 1.0, 1.5])
    assert np.array_equal(B.largest_component_boxes(m, t),
                          np.concatenate(B.opencv_reference_boxes(m, t)))


def test_the_opencv_reference_refuses_what_the_sweeps_refuse():
    with pytest.raises(ValueError, match="mode"):
        B.opencv_reference_boxes(np.zeros((4, 4)), [0.5], "biggest")
    with pytest.raises(B.ScoreMapError, match="one \\(H, W\\) map"):
        B.opencv_reference_boxes(np.zeros((2, 4, 4)), [0.5])
    with pytest.raises(B.ScoreMapError, match="outside \\[0, 1\\] or are NaN"):
        B.opencv_reference_boxes(np.full((4, 4), np.nan), [0.5])


def test_ties_go_to_the_component_whose_first_pixel_comes_last():
    """Claim checked on OpenCV itself: among equal contour areas it keeps the later one."""
    rng = np.random.default_rng(11)
    ties = 0
    for _ in range(3000):
        h, w = rng.integers(3, 10, size=2)
        fg = (rng.random((h, w)) < 0.45).astype(np.float64)
        lab, n = ndimage.label(fg, structure=np.ones((3, 3)))
        if n < 2:
            continue
        contours = cv2.findContours((fg * 255).astype(np.uint8), cv2.RETR_EXTERNAL,
                                    cv2.CHAIN_APPROX_SIMPLE)[0]
        areas = [cv2.contourArea(c) for c in contours]
        if sorted(areas)[-1] != sorted(areas)[-2]:
            continue
        ties += 1
        # Components in raster order of their first pixel are ndimage's labels 1..n.
        area = {}
        for c in contours:
            x, y = c[0, 0]
            area[lab[y, x]] = cv2.contourArea(c)
        winner = max(k for k in area if area[k] == max(areas))
        ys, xs = np.nonzero(lab == winner)
        want = [xs.min(), ys.min(), min(xs.max() + 1, w - 1), min(ys.max() + 1, h - 1)]
        assert B.opencv_reference_boxes(fg, [0.5])[0][0].tolist() == want
        assert B.boxes_at_threshold(fg, 0.5)[0].tolist() == want
    assert ties > 100


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_empty_map_gives_zero_box():
    m = np.zeros((5, 6))
    assert B.largest_component_boxes(m, THRESHOLDS).tolist() == [[0, 0, 0, 0]] * 100
    assert [b.tolist() for b in B.all_component_boxes(m, [0.0, 0.5])] == [[[0, 0, 0, 0]]] * 2
    # The empty box still scores: [0, 0, 0, 0] is one pixel, inside this ground truth.
    iou = B.best_iou_per_threshold(m, [np.array([[0, 0, 1, 1]])], [0.5])
    assert iou.tolist() == [0.25]


def test_single_pixel():
    m = np.zeros((4, 5))
    m[1, 2] = 1.0
    assert B.boxes_at_threshold(m, 0.0).tolist() == [[2, 1, 3, 2]]
    # u8 = 255 > int(0.99 * 255) = 252: still there at the top threshold.
    assert B.boxes_at_threshold(m, 0.99).tolist() == [[2, 1, 3, 2]]
    m = np.zeros((4, 5))
    m[3, 4] = 0.5  # bottom-right corner: x + w = 5, y + h = 4 clipped to W - 1, H - 1
    assert B.boxes_at_threshold(m, 0.5, mode="all").tolist() == [[4, 3, 4, 3]]
    assert B.boxes_at_threshold(m, 0.5, convention="pixel").tolist() == [[4, 3, 5, 4]]


def test_contour_area_not_pixel_count_decides_the_largest():
    m = np.zeros((8, 10))
    for k in range(5):  # a diagonal line: 5 pixels, contour area 0
        m[1 + k, k] = 1
    m[1:3, 6:8] = 1  # a 2x2 square: 4 pixels, contour area 1
    assert B.boxes_at_threshold(m, 0.5).tolist() == [[6, 1, 8, 3]]
    assert B.opencv_reference_boxes(m, [0.5])[0].tolist() == [[6, 1, 8, 3]]
    assert B.boxes_at_threshold(m, 0.5, convention="pixel").tolist() == [[0, 1, 5, 6]]


def test_holes_count_in_the_contour_area():
    m = np.zeros((9, 14))
    m[1:6, 1:6] = 1
    m[2:5, 2:5] = 0  # a 5x5 ring: 16 pixels, contour area 16 with the hole filled
    m[1:6, 8:12] = 1  # a solid 5x4 block: 20 pixels, contour area 12
    assert B.boxes_at_threshold(m, 0.5).tolist() == [[1, 1, 6, 6]]
    assert B.opencv_reference_boxes(m, [0.5])[0].tolist() == [[1, 1, 6, 6]]
    assert B.boxes_at_threshold(m, 0.5, convention="pixel").tolist() == [[8, 1, 12, 6]]


def test_ring_gives_outer_and_hole_boxes_in_all_mode():
    m = np.zeros((11, 11))
    m[1:8, 1:8] = 1  # outer box [1, 1, 8, 8]
    m[3:6, 3:6] = 0  # 3x3 hole at 3..5: box grown by one, [2, 2, 6 + 1, 6 + 1]
    m[4, 4] = 1  # an island inside the hole: [4, 4, 5, 5]
    want = [[1, 1, 8, 8], [2, 2, 7, 7], [4, 4, 5, 5]]
    assert B.boxes_at_threshold(m, 0.5, mode="all").tolist() == want
    assert sorted_rows(B.opencv_reference_boxes(m, [0.5], "all")[0]).tolist() == want
    assert B.boxes_at_threshold(m, 0.5, mode="all", convention="pixel").tolist() == [
        [1, 1, 8, 8], [4, 4, 5, 5]]


def test_box_iou_by_hand():
    pred = np.array([[0, 0, 9, 9], [5, 5, 5, 5]])
    gt = np.array([[5, 5, 14, 14], [5, 5, 5, 5]])
    # inclusive: 5x5 overlap of two 10x10 boxes -> 25 / 175; one pixel in a 10x10 box -> 1/100
    assert np.allclose(B.box_iou(pred, gt), [[25 / 175, 1 / 100], [1 / 100, 1.0]])
    # exclusive: 4x4 overlap of two 9x9 boxes; zero-area boxes have no union -> 0
    assert np.allclose(B.box_iou(pred, gt, inclusive=False), [[16 / 146, 0.0], [0.0, 0.0]])
    assert B.box_iou(np.zeros((2, 3, 4)), gt).shape == (2, 3, 2)
    # A malformed predicted box is an error, as a malformed ground-truth box is.
    with pytest.raises(B.BoxFormatError, match=r"pred\[1\] = \[5.0, 5.0, 4.0, 9.0\]"):
        B.box_iou([[0, 0, 9, 9], [5, 5, 4, 9]], gt)
    with pytest.raises(B.BoxFormatError, match="NaN"):
        B.box_iou([[0, 0, np.nan, 9]], gt)


def test_rescale_boxes_by_hand():
    boxes = np.array([[10, 20, 110, 220], [250, 0, 499, 399]], dtype=np.float32)
    got = B.rescale_boxes(boxes, from_size=(400, 500), to_size=(224, 224))
    # 10*224/500 = 4.48, 20*224/400 = 11.2, 110*224/500 = 49.28, 220*224/400 = 123.2;
    # 250*224/500 = 112 exactly, 499*224/500 = 223.552, 399*224/400 = 223.44
    assert got.tolist() == [[4, 11, 49, 123], [112, 0, 223, 223]]
    assert got.dtype == np.int64
    # A box at the image's edge is inside it; a size given as (W, H) puts boxes outside.
    assert B.rescale_boxes([[0, 0, 500, 400]], (400, 500), (224, 224)).tolist() == [[0, 0, 224, 224]]
    with pytest.raises(B.BoxFormatError, match=r"outside from_size = \(H, W\) = \(500, 400\)"):
        B.rescale_boxes(boxes, from_size=(500, 400), to_size=(224, 224))


def test_binarize_thresholds():
    t = B.binarize_thresholds()
    assert t.shape == (100,) and t[0] == 0 and np.isclose(t[-1], 0.99)
    assert B.binarize_thresholds(0.001).shape == (1000,)


# ---------------------------------------------------------------------------------------------
# Inputs, the pixel convention, threads
# ---------------------------------------------------------------------------------------------


def test_torch_and_float32_inputs_follow_the_reference_on_that_dtype():
    m32 = cam_like(np.random.default_rng(5), 48, 5).astype(np.float32)
    want = np.concatenate(B.opencv_reference_boxes(m32, THRESHOLDS))
    assert np.array_equal(B.largest_component_boxes(m32, THRESHOLDS), want)
    assert np.array_equal(B.largest_component_boxes(torch.from_numpy(m32), THRESHOLDS), want)


def test_pixel_convention_matches_scipy_labels():
    rng = np.random.default_rng(6)
    for _ in range(40):
        m = blobs(rng, *rng.integers(3, 30, size=2), 0.1)
        t = np.array([0.0, 0.3, 0.5, 0.8])
        got_l = B.largest_component_boxes(m, t, convention="pixel")
        got_a = B.all_component_boxes(m, t, convention="pixel")
        for k, thr in enumerate(t):
            lab, n = ndimage.label(m >= thr * m.max(), structure=np.ones((3, 3)))
            sl = ndimage.find_objects(lab)
            rows = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in sl])
            big = np.argmax(np.bincount(lab.ravel())[1:])  # ties: first label
            assert got_l[k].tolist() == rows[big].tolist()
            assert got_a[k].tolist() == sorted_rows(rows).tolist()


def test_single_thread_gives_the_same_answer():
    import numba

    rng = np.random.default_rng(8)
    maps = np.stack([cam_like(rng, 40, 6) for _ in range(4)])
    gts = [random_gt(rng, 40, 40) for _ in range(4)]
    before = numba.get_num_threads()
    parallel = B.best_iou_per_threshold(maps, gts, THRESHOLDS, mode="all")
    numba.set_num_threads(1)
    try:
        serial = B.best_iou_per_threshold(maps, gts, THRESHOLDS, mode="all")
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(parallel, serial)


@pytest.mark.parametrize("maps, match", [
    (np.full((2, 4, 4), 1.5), r"maps\[0\]\[0, 0\] = 1.5 and 32 values"),
    (np.array([[0.0, np.nan]]), "NaN"),
    (np.zeros((4, 4), dtype=np.uint8), "dtype uint8"),
    (np.zeros(4), r"shape \(4,\)"),
])
def test_bad_maps_are_refused(maps, match):
    with pytest.raises(B.ScoreMapError, match=match):
        B.largest_component_boxes(maps, THRESHOLDS)


def test_bad_ground_truth_is_refused():
    maps = np.zeros((2, 4, 4))
    with pytest.raises(B.BoxFormatError, match="1 ground-truth box sets for 2 maps"):
        B.best_iou_per_threshold(maps, [np.zeros((1, 4))], THRESHOLDS)
    with pytest.raises(B.BoxFormatError, match=r"gt_boxes\[1\] is empty"):
        B.best_iou_per_threshold(maps, [np.zeros((1, 4)), np.zeros((0, 4))], THRESHOLDS)
    with pytest.raises(B.BoxFormatError, match=r"gt_boxes\[0\]\[0\] = \[3.0, 0.0, 1.0, 2.0\]"):
        B.best_iou_per_threshold(maps, [[[3, 0, 1, 2]], [[0, 0, 1, 1]]], THRESHOLDS)
    with pytest.raises(ValueError, match="mode = 'every'"):
        B.best_iou_per_threshold(maps, [[[0, 0, 1, 1]]] * 2, THRESHOLDS, mode="every")
