"""Report helpers on hand-made tables."""

import pandas as pd
import pytest

from wsolkit.reporting import ReportError, paper_beside_ours

PAPER = {"VGG-CAM[6]": (76.14, 33.95, 55.1), "VGG-ACoL[8]": (71.9, 45.92, None),
         "Ours": (75.82, 61.85, 82.32)}
COLUMNS = ["top-1 cls", "top-1 loc", "GT-known loc"]


def test_every_paper_row_is_quoted_and_ours_stands_beside_the_rows_we_run():
    ours = pd.DataFrame({"GT-known loc": ["26.1 (25.4-26.9)", "27.4"]}, index=["CAM", "WGAP + ..."])
    table = paper_beside_ours(PAPER, COLUMNS, ours, source="Table 1",
                              matches={"VGG-CAM[6]": "CAM", "Ours": "WGAP + ..."})
    assert list(table.index) == list(PAPER)  # all rows, the paper's order
    assert table.loc["VGG-ACoL[8]", ("Table 1", "GT-known loc")] == "-"  # printed as missing
    assert table.loc["VGG-ACoL[8]", ("Table 1", "top-1 loc")] == "45.92"
    assert table.loc["VGG-ACoL[8]", ("ours", "GT-known loc")] == ""  # not run here
    assert table.loc["Ours", ("ours", "GT-known loc")] == "27.4"
    assert table.loc["VGG-CAM[6]", ("ours", "row")] == "CAM"


def test_a_match_that_names_a_missing_row_or_a_short_row_is_refused():
    ours = pd.DataFrame({"x": [1.0]}, index=["CAM"])
    with pytest.raises(ReportError, match="VGG-SPG"):
        paper_beside_ours(PAPER, COLUMNS, ours, source="T", matches={"VGG-SPG": "CAM"})
    with pytest.raises(ReportError, match="'ADL'"):
        paper_beside_ours(PAPER, COLUMNS, ours, source="T", matches={"Ours": "ADL"})
    with pytest.raises(ReportError, match="2 values for the 3 columns"):
        paper_beside_ours({"A": (1, 2)}, COLUMNS, ours, source="T", matches={})


def test_the_recipe_table_is_generated_from_the_configurations_run():
    from wsolkit.reporting import recipe_table
    from wsolkit.train import TrainConfig

    cam = TrainConfig(model="simple_gap", image_size=64, epochs=30, batch_size=64, lr=0.05,
                      warmup_epochs=1)
    has = TrainConfig(model="simple_gap", image_size=64, epochs=30, batch_size=64, lr=0.05,
                      warmup_epochs=1, method={"hide_and_seek": {"patch": 16}})
    table = recipe_table({"backbone": "VGG16-GAP", "input size": "224 px"}, {"cam": cam, "has": has},
                         source="paper, Sec. 5", extra={"CAM threshold": ("0.2", "0.2 and tuned")})
    assert table.loc["backbone", "paper, Sec. 5"] == "VGG16-GAP"
    assert table.loc["batch", "paper, Sec. 5"] == "not stated"
    assert table.loc["input size", "this profile"] == "64 px"
    assert table.loc["initialisation", "this profile"] == "from scratch (He)"
    assert table.loc["epochs and schedule", "this profile"] == "30, cosine, 1 warm-up epochs"
    # Runs that differ are listed with their names.
    assert table.loc["methods", "this profile"] == ("CAM (none) [cam]; "
                                                   "hide_and_seek {patch: 16} [has]")
    long = TrainConfig(method={"cosine": {"embedding": "hierarchy", "taxonomy": ["a b"] * 40}})
    described = recipe_table({}, {"hier": long}, source="s").loc["methods", "this profile"]
    assert described == "cosine {embedding: 'hierarchy', taxonomy: [40 items]}"
    assert table.loc["CAM threshold", "this profile"] == "0.2 and tuned"


def test_the_paired_bootstrap_covers_seeds_and_images_and_gives_three_verdicts():
    import numpy as np

    from wsolkit.reporting import claim_row, paired_bootstrap, verdict

    rng = np.random.default_rng(0)
    # Three seeds, 2000 images: the first arm is right on 60% of the images, the second on 50%.
    first = [(rng.random(2000) < 0.6).astype(float) for _ in range(3)]
    second = [(rng.random(2000) < 0.5).astype(float) for _ in range(3)]
    estimate, low, high = paired_bootstrap(first, second, replicates=500)
    assert estimate == pytest.approx(np.mean([f.mean() - s.mean() for f, s in zip(first, second)]))
    assert low < estimate < high and low < 0.1 < high  # covers the truth
    # The width of a 95% interval of a mean over 3 x 2000 independent pairs: 2 * 1.96 * 0.0093.
    assert (high - low) == pytest.approx(2 * 1.96 * np.sqrt((0.24 + 0.25) / 2000 / 3), rel=0.2)
    again = paired_bootstrap(first, second, replicates=500)
    assert again == (estimate, low, high)  # seeded: the same interval on a rebuilt book
    # Identical arms: the interval is exactly zero; a claim "at least +0.05" then fails.
    assert paired_bootstrap(first, first, replicates=50) == (0.0, 0.0, 0.0)
    assert verdict(low, high, 0.05) == "holds" and verdict(low, high, 0.1) == "inconclusive"
    assert verdict(-0.02, 0.03, 0.0) == "inconclusive"
    assert verdict(-0.05, -0.01, 0.0) == "fails"
    assert verdict(0.01, 0.04, 0.05, "<=") == "holds"
    row = claim_row("A beats B", "Δ >= +3 points", 4.2, 3.5, 5.0, 3.0, signed=True, unit=" pts")
    assert row == {"claim": "A beats B", "rule": "Δ >= +3 points",
                   "measured": "+4.2 pts [+3.5, +5.0]", "verdict": "holds"}
    with pytest.raises(ReportError, match="same test images"):
        paired_bootstrap([np.zeros(3)], [np.zeros(4)])


def test_within_means_a_difference_of_at_most_the_bound_either_way():
    from wsolkit.reporting import verdict

    assert verdict(-1.5, 1.9, 2, "within") == "holds"
    assert verdict(-2.5, 1.0, 2, "within") == "inconclusive"
    assert verdict(2.1, 4.0, 2, "within") == "fails"
    assert verdict(-5.0, -2.01, 2, "within") == "fails"
    with pytest.raises(ReportError, match="direction"):
        verdict(0, 1, 2, "about")


def test_bootstrap_statistic_reproduces_a_mean_and_widens_with_noise():
    import numpy as np

    from wsolkit.reporting import bootstrap_statistic, paired_bootstrap

    rng = np.random.default_rng(1)
    seeds = [rng.normal(1.0, 1.0, 200), rng.normal(1.2, 1.0, 200)]
    est, low, high = bootstrap_statistic(seeds, lambda s, i: seeds[s][i].mean(), replicates=500)
    ref = paired_bootstrap(seeds, replicates=500)
    assert est == pytest.approx(ref[0])
    assert low < est < high
    assert high - low == pytest.approx(ref[2] - ref[1], rel=0.25)
    # A statistic that is no mean: the max over two "thresholds" of a mean over images.
    curves = [rng.random((100, 2)) < [0.3, 0.6]]
    est, low, high = bootstrap_statistic(curves, lambda s, i: curves[s][i].mean(0).max(),
                                         replicates=300)
    assert est == pytest.approx(curves[0].mean(0).max())
    assert low <= est <= high and high - low > 0.05
    with pytest.raises(ReportError, match="units"):
        bootstrap_statistic([[]], lambda s, i: 0.0)


def test_seed_summary_writes_mean_and_range_and_keeps_group_order():
    from wsolkit.reporting import seed_summary

    per_run = pd.DataFrame({"method": ["WGAP", "WGAP", "CAM"], "seed": [0, 1, 0],
                            "loc": [20.0, 30.0, 12.34], "pxap": [float("nan")] * 3,
                            "fallbacks": [1, 2, 0]}).set_index(["method", "seed"])
    table = seed_summary(per_run, formats={"fallbacks": lambda v: str(int(v.sum()))})
    assert list(table.index) == ["WGAP", "CAM"]
    assert table.loc["WGAP", "loc"] == "25.0 (20.0-30.0)"
    assert table.loc["CAM", "loc"] == "12.3"
    assert table.loc["CAM", "pxap"] == "-"
    assert table.loc["WGAP", "fallbacks"] == "3"
    with pytest.raises(ReportError, match="seed"):
        seed_summary(per_run.reset_index("seed"))
    from wsolkit.reporting import value_range

    assert value_range([0.25, 0.25]) == "0.25" and value_range([0.3, 0.2, 0.25]) == "0.20-0.30"


def test_per_run_table_indexes_each_run_by_its_key_in_order():
    from wsolkit.reporting import per_run_table, seed_summary

    table = per_run_table({("DCM", 1): {"mAP": 30.0, "theta": 0.3},
                           ("DCM", 0): {"mAP": 20.0, "theta": 0.2},
                           ("CAM", 0): {"mAP": 10.0, "theta": 0.1}})
    assert table.index.names == ["method", "seed"]
    assert list(table.index) == [("DCM", 1), ("DCM", 0), ("CAM", 0)]
    assert list(table.columns) == ["mAP", "theta"]
    assert table.loc[("DCM", 0), "mAP"] == 20.0
    assert seed_summary(table).loc["DCM", "mAP"] == "25.0 (20.0-30.0)"
    assert per_run_table({("a", "CAM", 0): {"x": 1}}, names=("layout", "method", "seed")
                         ).index.names == ["layout", "method", "seed"]
    with pytest.raises(ReportError, match="'CAM'.*method, seed"):
        per_run_table({"CAM": {"x": 1}})


def test_claims_table_counts_verdicts_and_refuses_a_row_without_one():
    from wsolkit.reporting import claim_row, claims_table, outcome, verdict_counts

    rows = [claim_row("a", "Δ >= 3", 4.0, 3.5, 4.5, 3, signed=True, data="CUB"),
            claim_row("b", "Δ >= 3", 2.0, 1.0, 4.5, 3),
            claim_row("c", "|Δ| <= 2", 0.1, -0.5, 0.6, 2, "within")]
    table = claims_table(rows)
    assert table.loc["a", "measured"] == "+4.0 [+3.5, +4.5]" and table.loc["a", "data"] == "CUB"
    assert verdict_counts(table) == {"holds": 2, "fails": 0, "inconclusive": 1, "total": 3}
    assert outcome(table.loc["b", "verdict"], "rises", "falls", "may rise") == "may rise"
    with pytest.raises(ReportError, match="verdict"):
        claims_table([{"claim": "x", "rule": "y"}])
    with pytest.raises(ReportError, match="maybe"):
        outcome("maybe", "a", "b", "c")


class _Record:
    def __init__(self, entries):
        self.entries = entries

    def log(self):
        return self.entries


def test_training_log_prefers_the_embedding_accuracy_and_curves_draw_one_line_per_run():
    import matplotlib

    matplotlib.use("Agg")
    from wsolkit.reporting import training_curves, training_log

    runs = {("CAM", 0): _Record([{"epoch": 1, "loss": 2.0, "train_acc": 0.5},
                                 {"epoch": 2, "loss": 1.0, "train_acc": 0.7}]),
            ("DCM", 0): _Record([{"epoch": 1, "loss": 0.5, "train_acc": 0.1,
                                  "embedding_acc": 0.6}])}
    log = training_log(runs, ("method", "seed"))
    assert len(log) == 3
    assert log[log.method == "DCM"]["train accuracy (%)"].item() == pytest.approx(60.0)
    fig = training_curves(runs, ("method", "seed"), hue="method")
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) >= 2
    matplotlib.pyplot.close(fig)
    with pytest.raises(ReportError, match="labels"):
        training_log(runs, ("method",))
