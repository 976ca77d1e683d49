"""The leaderboard: finding the chapters' runs, the protocol's choices, the reference rows and
the comparison with Choe et al.'s table."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsolkit.chapter import data_extra
from wsolkit.evaluation import LocalizationSet
from wsolkit.evaluation.tables import MapEvaluations, TableError, max_box_acc_v2, per_image
from wsolkit.leaderboard import board, entries, published, references
from wsolkit.leaderboard.protocol import fullsup_rows, on_protocol, split_part
from wsolkit.reporting import ReportError, sortable_html


def _run(runs, name, extra, finished="2026-01-01T00:00:00", complete=True):
    run_dir = runs / name
    run_dir.mkdir(parents=True)
    if complete:
        record = {"config": {"extra": extra}, "provenance": {"finished": finished}}
        (run_dir / "results.json").write_text(json.dumps(record))
    return run_dir


# --------------------------------------------------------------------------------------------
# Finding the runs
# --------------------------------------------------------------------------------------------


def test_find_runs_keeps_complete_runs_of_the_current_data_newest_first(cub_root, tmp_path):
    runs = tmp_path / "runs"
    extra = data_extra("cub", cub_root)
    stem = "02_improving_cam-cub-wgap"
    _run(runs, f"{stem}-s0-{'a' * 10}", extra, "2026-01-01T00:00:00")
    newest = _run(runs, f"{stem}-s0-{'b' * 10}", extra, "2026-02-01T00:00:00")
    one = _run(runs, f"{stem}-s1-{'c' * 10}", extra)
    _run(runs, f"{stem}-s2-{'d' * 10}", extra, complete=False)
    _run(runs, f"{stem}-printed-s0-{'e' * 10}", extra)  # another stem that starts alike
    _run(runs, f"{stem}-s3-{'f' * 10}", {**extra, "split_fingerprint": "an older version"})
    _run(runs, f"{stem}-s4-{'0' * 10}", {**extra, "data_root": str(tmp_path / "elsewhere")})
    found = entries.find_runs(stem, "cub", cub_root, runs)
    assert found.runs == {0: newest, 1: one}
    assert (found.superseded, found.incomplete, found.other_data) == (1, 1, 2)


def test_find_runs_names_a_broken_results_file(cub_root, tmp_path):
    run_dir = tmp_path / "runs" / f"00_cam_baseline-cam-s0-{'a' * 10}"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text("{not json")
    with pytest.raises(entries.LeaderboardError, match="results.json is not valid JSON"):
        entries.find_runs("00_cam_baseline-cam", "cub", cub_root, tmp_path / "runs")
    with pytest.raises(entries.LeaderboardError, match="layout 'coco'"):
        entries.find_runs("x", "coco", cub_root, tmp_path / "runs")


def test_every_entry_names_registered_maps_and_known_layouts():
    from wsolkit.methods import score_map

    assert len({e.method for e in entries.ENTRIES}) == len(entries.ENTRIES)
    for entry in entries.ENTRIES:
        assert set(entry.stems) <= set(entries.LAYOUTS)
        # A row on no layout must say why in its own words.
        assert entry.stems or entry.absent != entries.Entry.absent
        for name in entry.maps:
            score_map(name)  # raises on an unknown map
    with pytest.raises(entries.LeaderboardError, match="no leaderboard entry 'SPG'"):
        entries.entry("SPG")


def test_the_runs_the_leaderboard_trains_are_the_runs_its_cutmix_row_reads(cub_root, tmp_path,
                                                                            monkeypatch):
    from wsolkit.baselines import recipe

    monkeypatch.setenv("WSOL_RUNS_DIR", str(tmp_path / "runs"))
    settings = recipe("smoke")
    settings["epochs"] = {"cub": 1, "ilsvrc": 1}
    settings["batch_size"] = 4
    trained = entries.train_added_runs("cub", cub_root, settings, [0, 1], progress=False)
    assert set(trained) == {("CutMix", 0), ("CutMix", 1)}
    config = json.loads((trained["CutMix", 0].run_dir / "config.json").read_text())
    assert config["method"] == {"cutmix": {"beta": 1.0, "p": 1.0}}
    found = entries.find_runs(entries.entry("CutMix").stems["cub"], "cub", cub_root)
    assert found.runs == {seed: trained["CutMix", seed].run_dir for seed in (0, 1)}
    # A second call reads them from the run cache: nothing is trained again.
    finished = (trained["CutMix", 0].run_dir / "results.json").stat().st_mtime_ns
    again = entries.train_added_runs("cub", cub_root, settings, [0], progress=False)
    assert again["CutMix", 0].run_dir == trained["CutMix", 0].run_dir
    assert (again["CutMix", 0].run_dir / "results.json").stat().st_mtime_ns == finished
    with pytest.raises(entries.LeaderboardError, match="layout 'coco'"):
        entries.train_added_runs("coco", cub_root, settings, [0])


def test_method_row_reports_what_is_missing(cub_root, tmp_path):
    splits = _splits(_set(6, offset=0), _set(6, offset=0), layout="cub", root=cub_root)
    missing = board.method_row(entries.entry("ADL"), splits, min_seeds=3,
                               runs_root=tmp_path / "empty")
    assert isinstance(missing, board.Missing)
    assert "0 of 3 seeds" in missing.reason and "02_improving_cam" in missing.reason
    cosine = board.method_row(entries.entry("DCM, one-hot cosine loss"), splits)
    assert isinstance(cosine, board.Missing) and "not trained on this layout" in cosine.reason
    # Chapter 01 trains the hierarchy embeddings on COCO scenes only: no chapter fills its
    # rows, and the reason says so instead of sending the reader to execute chapter 01.
    ilsvrc = _splits(_set(6, offset=0), _set(6, offset=0), layout="ilsvrc", root=cub_root)
    hierarchy = board.method_row(entries.entry("DCM, hierarchy cosine loss"), ilsvrc)
    assert isinstance(hierarchy, board.Missing)
    assert "COCO layout only" in hierarchy.reason and "execute" not in hierarchy.reason


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


def test_fullsup_rows_take_a_fixed_share_per_class_whatever_the_order():
    ids = [f"img{i:03d}" for i in range(60)]
    labels = [i % 3 for i in range(60)]
    rows = fullsup_rows(ids, labels, 5)
    assert len(rows) == 15 and np.all(np.diff(rows) > 0)
    assert np.bincount(np.asarray(labels)[rows]).tolist() == [5, 5, 5]
    order = np.random.default_rng(0).permutation(60)
    again = fullsup_rows([ids[i] for i in order], [labels[i] for i in order], 5)
    assert {ids[order[i]] for i in again} == {ids[i] for i in rows}
    with pytest.raises(ValueError, match="class 0 has 20 images"):
        fullsup_rows(ids, labels, 20)


def _evaluation(iou, correct=None, top1=None):
    iou = np.asarray(iou, dtype=np.float32)
    correct = iou >= 0.5 if correct is None else np.asarray(correct)
    result = {"thresholds": np.linspace(0, 1, iou.shape[1]), "cam_threshold": 0.2,
              "per_image_iou_all": iou, "per_image_correct": correct,
              "loc_curve": correct.mean(0) * 100, "max_box_acc_v2": max_box_acc_v2(iou),
              "pxap": 50.0}
    if top1 is not None:
        result["per_image_top1"] = np.asarray(top1, dtype=bool)
    return result


def test_a_part_of_a_split_is_scored_on_its_own_images():
    rng = np.random.default_rng(1)
    whole = _evaluation(rng.random((40, 5)), top1=rng.random(40) < 0.8)
    rows = np.arange(0, 40, 3)
    part = split_part(whole, rows)
    assert part["max_box_acc_v2"] == pytest.approx(
        max_box_acc_v2(whole["per_image_iou_all"][rows]))
    np.testing.assert_allclose(part["loc_curve"],
                               whole["per_image_correct"][rows].mean(0) * 100)
    assert np.isnan(part["pxap"]) and split_part(whole, None)["pxap"] == 50.0


def test_the_threshold_is_chosen_on_full_supervision_first_of_equals():
    fullsup = {"thresholds": np.array([0.1, 0.2, 0.3, 0.4]),
               "loc_curve": np.array([10.0, 40.0, 40.0, 5.0])}
    test = _evaluation(np.zeros((3, 4)), top1=[1, 1, 0])
    chosen = on_protocol(fullsup, test)
    assert chosen.val_threshold == 0.2 and chosen.fixed is not test
    with pytest.raises(ValueError, match="non-finite"):
        on_protocol({**fullsup, "loc_curve": np.array([np.nan, 1, 2, 3])}, test)


def test_the_map_is_chosen_by_full_supervision_not_by_test(monkeypatch, tmp_path):
    # "cam" is better on test, "recombined" on full supervision: the protocol takes the latter.
    test_scores = {"cam": 0.9, "recombined": 0.6, "softmax_weighted": 0.7}
    fullsup_v2 = {"cam": 40.0, "recombined": 55.0, "softmax_weighted": 30.0}

    def fake_evaluations(run_dir, splits, map_name):
        test = _evaluation(np.full((4, 3), test_scores[map_name]), top1=[1, 1, 1, 0])
        return MapEvaluations(test, None, 0.5), fullsup_v2[map_name]

    found = entries.FoundRuns(runs={0: tmp_path / "a", 1: tmp_path / "b"})
    monkeypatch.setattr(board, "find_runs", lambda *a, **k: found)
    monkeypatch.setattr(board, "run_evaluations", fake_evaluations)
    row = board.method_row(entries.entry("WGAP"), _splits(_set(4), _set(4)), min_seeds=2)
    assert row.map_name == "recombined" and row.seeds == [0, 1]
    assert row.fullsup_v2["recombined"] == 55.0


# --------------------------------------------------------------------------------------------
# Reference rows
# --------------------------------------------------------------------------------------------


def _set(n, size=32, box=(8, 8, 23, 23), offset=0, masks=False):
    boxes = [np.asarray([box], dtype=np.float32) + offset for _ in range(n)]
    mask = torch.zeros(n, size, size, dtype=torch.uint8)
    x0, y0, x1, y1 = (int(v) + offset for v in box)
    mask[:, y0:y1 + 1, x0:x1 + 1] = 1
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    images[:, 0] = mask * 200  # the object is red: a localizer can learn it
    return LocalizationSet(images=images, labels=torch.arange(n) % 2, boxes=boxes,
                           masks=mask if masks else None, part_boxes=None,
                           ids=[f"i{k}" for k in range(n)])


def _splits(fullsup, test, layout="cub", root="."):
    from wsolkit.leaderboard.protocol import ProtocolSplits

    return ProtocolSplits(layout, Path(root), {"val": fullsup, "test": test},
                          {"fullsup": ("val", None), "test": ("test", None)}, fullsup, test)


def test_the_centre_gaussian_is_one_normalised_centred_map():
    maps = references.center_gaussian_maps(3, 32, 0.2)
    assert maps.shape == (3, 32, 32) and torch.equal(maps[0], maps[2])
    assert float(maps.min()) == 0.0 and float(maps.max()) == 1.0
    assert maps[0, 15:17, 15:17].min() == maps.max()
    with pytest.raises(ValueError, match="sigma"):
        references.center_gaussian_maps(1, 32, 0.0)


def test_the_centre_baseline_finds_centred_objects_and_not_others():
    centred = board.center_row(_splits(_set(6), _set(6)))
    corner = board.center_row(_splits(_set(6, box=(0, 0, 9, 9)), _set(6, box=(0, 0, 9, 9))))
    assert centred.kind == "reference" and not centred.classifies and centred.deterministic
    assert board.scores(centred, replicates=50)["GT-known loc"][0] == 100.0
    assert board.scores(corner, replicates=50)["MaxBoxAccV2"][0] < 50.0
    assert np.isnan(board.scores(centred, replicates=50)["top-1 cls"][0])


def test_the_mask_upper_bound_uses_boxes_where_there_are_no_masks():
    data = _set(4)
    maps, source = references.mask_upper_bound_maps(data, 8)
    assert source == "box masks" and maps.shape == (4, 32, 32)
    assert references.box_masks(data)[0].sum() == 16 * 16
    with_masks = _set(4, masks=True)
    assert references.mask_upper_bound_maps(with_masks, 8)[1] == "object masks"
    row = board.upper_bound_row(_splits(data, data), 8)
    assert board.scores(row, replicates=50)["GT-known loc"][0] == 100.0


def test_the_few_shot_baseline_trains_once_resumes_and_loads_weights_only(tmp_path):
    data = _set(16)
    settings = dict(backbone="simple_gap", model_kwargs={}, epochs=2, batch_size=8)
    first = references.train_few_shot("cub", data, 0, grid=4, runs_root=tmp_path, **settings)
    assert not first.cached and first.metrics["images"] == 16
    again = references.train_few_shot("cub", data, 0, grid=4, runs_root=tmp_path, **settings)
    assert again.cached and again.run_dir == first.run_dir
    # Interrupted after the last epoch, before results.json: the run resumes, trains nothing.
    (first.run_dir / "results.json").unlink()
    resumed = references.train_few_shot("cub", data, 0, grid=4, runs_root=tmp_path, **settings)
    assert not resumed.cached and resumed.metrics["losses"] == first.metrics["losses"]
    maps = references.few_shot_maps(first.run_dir, data)
    assert maps.shape == (16, 32, 32) and 0.0 <= float(maps.min()) <= float(maps.max()) <= 1.0
    other = references.train_few_shot("cub", data, 1, grid=4, runs_root=tmp_path, **settings)
    assert other.run_dir != first.run_dir
    (first.run_dir / "checkpoint.pt").write_bytes(b"truncated")
    with pytest.raises(RuntimeError, match="checkpoint.pt: cannot be read"):
        references.load_few_shot(first.run_dir)


def test_a_deterministic_row_is_paired_with_every_seed_of_the_other():
    data = _set(6)
    centre = board.center_row(_splits(data, data))
    ious = np.full((6, 101), 0.2, dtype=np.float32)
    wsol = board.Row("cub", "weak", "", "WSOL", "cam",
                     {s: MapEvaluations(_evaluation(ious, top1=[1] * 6), None, 0.5)
                      for s in (0, 1, 2)})
    estimate, low, high = board.difference(centre, wsol, replicates=50)
    assert estimate > 0 and low > 0
    other = board.Row("ilsvrc", "x", "", "WSOL", "cam", wsol.evaluations)
    with pytest.raises(ValueError, match="different layouts|is on"):
        board.difference(centre, other)


def test_classification_metrics_are_refused_for_maps_without_a_classifier():
    evaluation = MapEvaluations(_evaluation(np.ones((3, 5))), None, 0.5)
    assert per_image(evaluation, "at:0.5", "GT-known loc").tolist() == [100.0] * 3
    with pytest.raises(TableError, match="no per-image classification"):
        per_image(evaluation, "val", "top-1 cls")


# --------------------------------------------------------------------------------------------
# Choe et al.'s table, and the sortable table
# --------------------------------------------------------------------------------------------


def test_choe_table_means_are_those_they_print():
    printed = {("ImageNet", "CAM"): 62.4, ("ImageNet", "HaS"): 62.6, ("ImageNet", "ADL"): 61.7,
               ("CUB", "CAM"): 61.1, ("CUB", "HaS"): 60.6, ("CUB", "ADL"): 61.1,
               ("CUB", "SPG"): 57.5, ("ImageNet", "CutMix"): 62.2,
               ("OpenImages", "CAM"): 60.0, ("OpenImages", "CutMix"): 59.5}
    # Their means are of unrounded numbers: the mean of the rounded ones can be 0.05 + 0.05
    # away from the printed one.
    for (dataset, method), mean in printed.items():
        assert published.published_mean(dataset, method) == pytest.approx(mean, abs=0.1)
    table = published.choe_table()
    assert table.shape == (6, 12)


def test_rankings_agree_differ_or_disagree_by_the_stated_rule():
    assert published.direction(0.6) == "tie" and published.direction(-1.5) == "<"
    assert published.direction(2.0, -0.5, 4.0) == "tie"
    assert published.direction(2.0, 0.5, 4.0) == ">"
    assert published.agreement(">", ">") == "agrees"
    assert published.agreement(">", "<") == "disagrees"
    assert published.agreement("tie", "<") == "differs"
    assert ("CutMix", "CAM") in published.SHARED_PAIRS and len(published.SHARED_PAIRS) == 6
    table = published.ranking_agreement("cub", {("Hide-and-Seek", "CAM"): (5.0, 3.0, 7.0)})
    # Theirs on CUB: HaS 60.6 against CAM 61.1, a tie; ours a clear gain: they differ.
    assert table.loc["Hide-and-Seek vs CAM", "agreement"] == "differs"


def test_sortable_html_sorts_text_cells_by_their_numbers():
    import pandas as pd

    shown = pd.DataFrame({"method": ["a", "b"], "score": ["46.1 [45, 47]", "-"]})
    html = sortable_html(shown, numeric={"score": [46.1, float("nan")]}, caption="c")
    assert 'class="wsol-sortable"' in html and "<caption>c</caption>" in html
    assert 'data-sort="46.1"' in html and 'data-sort=""' in html
    with pytest.raises(ReportError, match="numeric column 'other'"):
        sortable_html(shown, numeric={"other": [1, 2]})


def test_choosing_the_threshold_on_test_is_never_worse_on_test():
    correct = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 1, 0]], dtype=bool)
    result = _evaluation(np.zeros((4, 3)), correct=correct, top1=[1] * 4)
    row = board.Row("cub", "m", "", "WSOL", "cam", {0: MapEvaluations(result, None, 0.0)})
    assert board.chosen_on_test(row) == (50.0, 75.0)
