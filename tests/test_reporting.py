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
