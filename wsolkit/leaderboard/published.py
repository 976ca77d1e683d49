"""Choe et al.'s own re-evaluation (CVPR 2020), and whether this book ranks their methods alike.

:data:`CHOE_2020` holds their test-split numbers for six methods on three backbones under
their protocol (hyper-parameters and threshold chosen on train-fullsup): MaxBoxAccV2 on
ImageNet and CUB-200-2011, PxAP on OpenImages30k. They are the numbers of the re-evaluation
table of the paper (also in the README of ``clovaai/wsolevaluation``); the few-shot and
centre-baseline rows are not reproduced here.

:func:`ranking_agreement` compares the direction of each pairwise difference of the methods
both benchmarks have: in their table a difference of the three-backbone means smaller than
:data:`PUBLISHED_TIE` points counts as a tie (a rule of this book: their table comes without
intervals); in ours, a difference whose 95% interval contains 0.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["BACKBONES", "CHOE_2020", "CHOE_SOURCE", "PUBLISHED_TIE", "SHARED_METHODS", "SHARED_PAIRS",
           "agreement", "choe_table", "direction", "published_mean", "ranking_agreement"]

CHOE_SOURCE = ("Choe, Oh, Lee, Chun, Akata & Shim, Evaluating Weakly Supervised Object "
               "Localization Methods Right, CVPR 2020: re-evaluation table (test split)")
BACKBONES = ("VGG16", "InceptionV3", "ResNet50")
#: ``{(dataset, metric): {method: (VGG16, InceptionV3, ResNet50)}}``, in percent.
CHOE_2020 = {
    ("ImageNet", "MaxBoxAccV2"): {
        "CAM": (60.0, 63.4, 63.7), "HaS": (60.6, 63.7, 63.4), "ACoL": (57.4, 63.7, 62.3),
        "SPG": (59.9, 63.3, 63.3), "ADL": (59.9, 61.4, 63.7), "CutMix": (59.5, 63.9, 63.3)},
    ("CUB", "MaxBoxAccV2"): {
        "CAM": (63.7, 56.7, 63.0), "HaS": (63.7, 53.4, 64.7), "ACoL": (57.4, 56.2, 66.5),
        "SPG": (56.3, 55.9, 60.4), "ADL": (66.3, 58.8, 58.4), "CutMix": (62.3, 57.5, 62.8)},
    ("OpenImages", "PxAP"): {
        "CAM": (58.3, 63.2, 58.5), "HaS": (58.1, 58.1, 55.9), "ACoL": (54.3, 57.2, 57.3),
        "SPG": (55.9, 62.4, 56.7), "ADL": (58.3, 62.1, 55.2), "CutMix": (58.1, 62.6, 57.7)},
}
#: Their names of the methods the book implements too, by the book's names.
SHARED_METHODS = {"CAM": "CAM", "Hide-and-Seek": "HaS", "ADL": "ADL", "CutMix": "CutMix"}
#: Every pair of them, the later method of the table first (``a - b``).
SHARED_PAIRS = tuple((b, a) for i, a in enumerate(SHARED_METHODS)
                     for b in list(SHARED_METHODS)[i + 1:])
#: The book's layouts and the dataset of theirs each stands in for.
LAYOUT_DATASETS = {"cub": "CUB", "ilsvrc": "ImageNet"}
PUBLISHED_TIE = 1.0


def published_mean(dataset: str, method: str) -> float:
    """The mean over the three backbones of one of their numbers."""
    metric = "PxAP" if dataset == "OpenImages" else "MaxBoxAccV2"
    values = CHOE_2020[dataset, metric][method]
    return sum(values) / len(values)


def choe_table():
    """Their table as a ``DataFrame``: one row per method, a column per dataset and backbone
    and the mean over backbones (of the rounded numbers: within 0.1 of the mean they print)."""
    import pandas as pd

    columns = {}
    for (dataset, metric), methods in CHOE_2020.items():
        for i, backbone in enumerate(BACKBONES):
            columns[(f"{dataset} {metric}", backbone)] = {m: v[i] for m, v in methods.items()}
        columns[(f"{dataset} {metric}", "mean of 3")] = {m: published_mean(dataset, m)
                                                    for m in methods}
    table = pd.DataFrame(columns)
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.round(1)


def direction(estimate: float, low: float | None = None, high: float | None = None, *,
              tie: float = PUBLISHED_TIE) -> str:
    """``">"``, ``"<"`` or ``"tie"``: from an interval when one is given (a tie when it holds
    0), else from a single number (a tie within ``tie`` points)."""
    if low is not None and high is not None:
        return "tie" if low <= 0 <= high else (">" if estimate > 0 else "<")
    return "tie" if abs(estimate) < tie else (">" if estimate > 0 else "<")


def agreement(published: str, ours: str) -> str:
    """``"agrees"`` (the same direction, or both ties), ``"disagrees"`` (opposite strict
    directions) or ``"differs"`` (one a tie, the other not)."""
    if published == ours:
        return "agrees"
    return "differs" if "tie" in (published, ours) else "disagrees"


def ranking_agreement(layout: str, ours: Mapping[tuple[str, str], tuple[float, float, float]]):
    """The pairwise comparisons of the shared methods on one layout, theirs beside ours.

    Args:
        layout: ``"cub"`` or ``"ilsvrc"`` (compared with their CUB and ImageNet).
        ours: ``{(method a, method b): (a - b, low, high)}`` in MaxBoxAccV2 points, book names
            (:data:`SHARED_METHODS`).

    Returns:
        A ``DataFrame``: one row per pair with both differences, both directions and the
        agreement.
    """
    import pandas as pd

    dataset = LAYOUT_DATASETS[layout]
    rows = []
    for (a, b), (estimate, low, high) in ours.items():
        theirs = published_mean(dataset, SHARED_METHODS[a]) - published_mean(
            dataset, SHARED_METHODS[b])
        rows.append({"pair": f"{a} vs {b}", f"Choe et al. {dataset} (mean Δ)": round(theirs, 2),
                     "theirs": direction(theirs), "ours (Δ, 95% interval)":
                     f"{estimate:+.1f} [{low:+.1f}, {high:+.1f}]",
                     "ours": direction(estimate, low, high),
                     "agreement": agreement(direction(theirs), direction(estimate, low, high))})
    return pd.DataFrame(rows).set_index("pair")
