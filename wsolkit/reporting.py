"""What a chapter shows beside its numbers: the papers' tables and recipes, and verdicts.

* :func:`paper_beside_ours`: a paper's table quoted whole, ours beside the rows we run, so that
  nothing of the paper's comparison is hidden and nothing of ours is mistaken for the paper's.
* :func:`recipe_table`: the paper's training recipe beside the one that ran, generated from the
  configurations.
* :func:`paired_bootstrap`, :func:`bootstrap_statistic`, :func:`verdict`, :func:`claim_row`,
  :func:`claims_table`, :func:`outcome`: a claim is *holds*, *fails* or *inconclusive* by a
  stated rule, from an interval that covers both seeds and test images, and the prose that
  reports it is generated from the verdict.
* :func:`seed_summary`: per-run numbers as "mean (min-max)" over seeds.
* :func:`training_curves`: loss and training accuracy per epoch, one line per run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["DIRECTIONS", "RECIPE_ROWS", "VERDICTS", "ReportError", "bootstrap_statistic",
           "claim_row", "claims_table", "outcome", "paired_bootstrap", "paper_beside_ours",
           "per_run_table", "recipe_table", "seed_summary", "sortable_html", "training_curves",
           "training_log", "value_range", "verdict", "verdict_counts"]


class ReportError(ValueError):
    """A table given to a report helper does not fit its description."""


def _paper_cell(value) -> str:
    if value is None or value == "-":
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.2f}"


def paper_beside_ours(paper: Mapping[str, Sequence], columns: Sequence[str], ours, *,
                      source: str, matches: Mapping[str, str]):
    """Every row of a paper's table, in its order, with our measurement beside the rows we run.

    Args:
        paper: ``{row label as printed: values}``, one value per column (``None`` or ``"-"``
            where the paper prints none).
        columns: the paper's column names.
        ours: a ``pandas.DataFrame`` indexed by our row labels (numbers or formatted cells).
        source: where the paper's numbers come from ("Zhang, Chang & Bui, Table 1").
        matches: ``{paper row label: our row label}`` for the rows we run.

    Returns:
        A ``pandas.DataFrame`` indexed by the paper's row labels, with two column groups: the
        paper's, ``(source, column)``, every value as printed (``"-"`` where it has none), and
        ours, ``("ours", "row")`` naming our row and ``("ours", column)`` for each of our
        columns, empty where we do not run the row.

    Raises:
        ReportError: a row with the wrong number of values, or a match naming a row that is not
            in ``paper`` or not in ``ours``.
    """
    import pandas as pd

    columns = list(columns)
    for label, values in paper.items():
        if len(values) != len(columns):
            raise ReportError(f"{source}: row {label!r} has {len(values)} values for the "
                              f"{len(columns)} columns {columns}.")
    unknown_paper = sorted(set(matches) - set(paper))
    unknown_ours = sorted(set(matches.values()) - set(ours.index))
    if unknown_paper or unknown_ours:
        raise ReportError(f"{source}: matches name paper rows {unknown_paper} not in the paper's "
                          f"table and our rows {unknown_ours} not in ours (we have {list(ours.index)}).")
    rows = {}
    for label, values in paper.items():
        row = {(source, column): _paper_cell(value) for column, value in zip(columns, values)}
        ours_label = matches.get(label)
        row[("ours", "row")] = ours_label or ""
        for column in ours.columns:
            row[("ours", column)] = "" if ours_label is None else ours.loc[ours_label, column]
        rows[label] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


#: The rows of a recipe table, in order.
RECIPE_ROWS = ("backbone", "initialisation", "input size", "optimiser", "learning rate", "batch",
               "epochs and schedule", "augmentation", "methods")


def _short(value) -> str:
    """An option value as a table cell: long lists (a taxonomy's lines) by their length."""
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _describe(config) -> dict[str, str]:
    kwargs = {k: v for k, v in config.model_kwargs.items() if k != "pretrained"}
    options = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    pretrained = config.model_kwargs.get("pretrained")
    head = config.resolved_head_lr_mult()
    if config.schedule == "sgdr":
        schedule = f"SGDR, cycles of {config.cycle_epochs} x {config.cycle_mult}^i epochs"
    elif config.schedule == "step":
        schedule = f"step x{config.lr_gamma:g} every {config.step_size} epochs"
    else:
        schedule = config.schedule
    if config.warmup_epochs:
        schedule += f", {config.warmup_epochs:g} warm-up epochs"
    augmentation = ["horizontal flips"] if config.hflip else []
    if config.crop_scale is not None:
        augmentation.append(f"random crops of {config.crop_scale:g}-1 of the area")
    optimiser = config.optimizer.upper() if config.optimizer == "sgd" else config.optimizer
    if config.optimizer == "sgd":
        optimiser += f" (momentum {config.momentum:g}{', Nesterov' if config.nesterov else ''})"
    return {
        "backbone": config.model + (f" ({options})" if options else ""),
        "initialisation": ("ImageNet weights" if pretrained else "from scratch (He)"),
        "input size": f"{config.image_size} px",
        "optimiser": f"{optimiser}, weight decay {config.weight_decay:g}",
        "learning rate": f"{config.lr:g}" + (f" (new layers x{head:g})" if head != 1 else ""),
        "batch": f"{config.batch_size}",
        "epochs and schedule": f"{config.epochs}, {schedule}",
        "augmentation": ", ".join(augmentation) or "none",
        "methods": ", ".join(f"{name} {_short(opts)}" if opts else name
                             for name, opts in sorted(config.method.items())) or "CAM (none)",
    }


def recipe_table(paper: Mapping[str, str], configs: Mapping[str, object], *, source: str,
                 extra: Mapping[str, tuple[str, str]] | None = None):
    """The paper's training recipe beside the one this profile ran, row by row.

    Args:
        paper: ``{row: the paper's setting}`` for rows of :data:`RECIPE_ROWS` (missing rows
            show "not stated").
        configs: ``{run name: TrainConfig}`` of the runs the chapter trained; where runs differ
            in a row, every distinct value is listed with the runs that use it.
        source: where the paper's recipe comes from ("Barz & Denzler, Sec. 4.2").
        extra: ``{row: (paper's, ours)}`` rows that are no training option (thresholds, say).

    Returns:
        A ``pandas.DataFrame`` with the columns ``source`` and ``this profile``, one row per
        setting, generated from the configurations (so it cannot drift from what ran).
    """
    import pandas as pd

    if not configs:
        raise ReportError("recipe_table: no configuration given.")
    described = {name: _describe(config) for name, config in configs.items()}
    rows = {}
    for row in RECIPE_ROWS:
        values: dict[str, list[str]] = {}
        for name, d in described.items():
            values.setdefault(d[row], []).append(name)
        ours = (next(iter(values)) if len(values) == 1 else
                "; ".join(f"{value} [{', '.join(names)}]" for value, names in values.items()))
        rows[row] = {source: paper.get(row, "not stated"), "this profile": ours}
    for row, (theirs, ours) in (extra or {}).items():
        rows[row] = {source: theirs, "this profile": ours}
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------------------------
# Verdicts that survive noise
# --------------------------------------------------------------------------------------------

#: The three verdicts a claim can get.
VERDICTS = ("holds", "fails", "inconclusive")
#: How a claim's rule compares its measured value with its threshold (:func:`verdict`).
DIRECTIONS = (">=", "<=", "within")


def paired_bootstrap(first, second=None, *, replicates: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """A difference of means over seeds, with an interval over the test images of every seed.

    Each replicate draws, within every seed, the test images with replacement (the same images
    for both arms: the comparison is paired by image) and averages ``mean(first) - mean(second)``
    over all seeds. So the interval covers the sampling of the test images in each seed's model,
    and the seeds enter through their mean. (Drawing the seeds too, with two or three of them,
    counts the image noise twice and gives intervals several times too wide.)

    Args:
        first: one array per seed of per-image values (``0/1`` correctness, IoUs, ...).
        second: the same shape, the arm compared against; ``None`` for the mean of ``first``
            alone (an interval for one arm).
        replicates: bootstrap replicates.
        confidence: the interval's coverage (percentile interval).
        seed: the resampling's random seed (so a rebuilt book shows the same interval).

    Returns:
        ``(estimate, low, high)``: the mean over seeds of the per-seed differences, and the
        interval.

    Raises:
        ReportError: no seed, seeds of different lengths between the arms, or an empty seed.
    """
    import numpy as np

    a = [np.asarray(x, dtype=np.float64).reshape(-1) for x in first]
    b = [np.asarray(x, dtype=np.float64).reshape(-1) for x in second] if second is not None else None
    if not a or (b is not None and len(b) != len(a)):
        raise ReportError(f"paired_bootstrap: {len(a)} seeds in the first arm and "
                          f"{None if b is None else len(b)} in the second; expected the same, >= 1.")
    for s, x in enumerate(a):
        if x.size == 0 or (b is not None and b[s].shape != x.shape):
            raise ReportError(f"paired_bootstrap: seed {s} has {x.size} images in the first arm and "
                              f"{None if b is None else b[s].size} in the second; expected the same "
                              "test images in both, at least one.")
    diffs = [x - (b[s] if b is not None else 0.0) for s, x in enumerate(a)]
    estimate = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    per_seed = np.stack([d[rng.integers(0, d.size, size=(replicates, d.size))].mean(axis=1)
                         for d in diffs])
    values = per_seed.mean(axis=0)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return estimate, float(low), float(high)


def verdict(low: float, high: float, threshold: float, direction: str = ">=") -> str:
    """``holds`` when the whole interval meets the claim, ``fails`` when none of it does,
    ``inconclusive`` when it straddles the threshold.

    Args:
        low, high: the interval.
        threshold: the claim's quantitative form ("at least +3 points": 3; "within 2 points": 2).
        direction: ``">="`` (at least), ``"<="`` (at most) or ``"within"`` (a difference of at
            most ``threshold`` either way: holds when the interval lies inside
            ``[-threshold, threshold]``, fails when it lies wholly outside).
    """
    if direction not in DIRECTIONS:
        raise ReportError(f"verdict: direction = {direction!r}; expected one of {DIRECTIONS}.")
    if low > high:
        raise ReportError(f"verdict: interval [{low}, {high}] has low > high.")
    if direction == ">=":
        return "holds" if low >= threshold else "fails" if high < threshold else "inconclusive"
    if direction == "<=":
        return "holds" if high <= threshold else "fails" if low > threshold else "inconclusive"
    if threshold < 0:
        raise ReportError(f"verdict: 'within' needs a bound >= 0, got {threshold}.")
    if -threshold <= low and high <= threshold:
        return "holds"
    return "fails" if high < -threshold or low > threshold else "inconclusive"


def claim_row(claim: str, rule: str, estimate: float, low: float, high: float, threshold: float,
              direction: str = ">=", *, signed: bool = False, unit: str = "", digits: int = 1,
              **extra) -> dict:
    """One row of a claims table: the claim, its stated rule, the estimate with its interval and
    the verdict (:func:`verdict`); ``signed`` writes a difference with its sign; ``extra``
    columns (the dataset, the paper's number) are kept as given."""
    fmt = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    measured = f"{fmt.format(estimate)}{unit} [{fmt.format(low)}, {fmt.format(high)}]"
    return {**extra, "claim": claim, "rule": rule, "measured": measured,
            "verdict": verdict(low, high, threshold, direction)}


def claims_table(rows: Sequence[Mapping], index: str | Sequence[str] = "claim"):
    """The claims of a chapter as a table indexed by ``index`` (rows from :func:`claim_row`).

    Raises:
        ReportError: no row, or a row without a ``verdict`` or without an ``index`` column.
    """
    import pandas as pd

    index = [index] if isinstance(index, str) else list(index)
    if not rows:
        raise ReportError("claims_table: no claim given.")
    for row in rows:
        missing = [k for k in (*index, "rule", "verdict") if k not in row]
        if missing:
            raise ReportError(f"claims_table: the row {dict(row)} lacks {missing}; build rows "
                              "with claim_row(...).")
        if row["verdict"] not in VERDICTS:
            raise ReportError(f"claims_table: verdict {row['verdict']!r}; expected one of {VERDICTS}.")
    return pd.DataFrame(list(rows)).set_index(index)


def verdict_counts(table) -> dict[str, int]:
    """``{"holds": n, "fails": n, "inconclusive": n, "total": n}`` of a :func:`claims_table`."""
    counts = {v: int((table["verdict"] == v).sum()) for v in VERDICTS}
    counts["total"] = int(len(table))
    return counts


def outcome(verdict: str, holds: str, fails: str, inconclusive: str) -> str:
    """The phrase that reports a verdict, so that a sentence stating an outcome follows the
    numbers it describes: ``outcome(v, "raises it", "does not raise it", "may raise it")``."""
    phrases = {"holds": holds, "fails": fails, "inconclusive": inconclusive}
    if verdict not in phrases:
        raise ReportError(f"outcome: verdict {verdict!r}; expected one of {VERDICTS}.")
    return phrases[verdict]


def bootstrap_statistic(samples: Sequence[Sequence], statistic, *, replicates: int = 1000,
                        confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """A statistic that is not a mean of per-image values (an mAP over scenes, an AUC over
    cells, a max over thresholds of a mean over images), with an interval over the test units of
    every seed: the general form of :func:`paired_bootstrap`.

    Each replicate draws, within every seed ``s``, ``n_s = len(samples[s])`` indices with
    replacement and evaluates ``statistic(s, indices)``; the replicate's value is the mean over
    the seeds. A paired comparison computes both arms inside ``statistic`` from the same
    indices.

    Args:
        samples: one sequence per seed of its test units (only their number is used; the
            statistic indexes its own data).
        statistic: ``(seed index, int array of unit indices) -> float``.
        replicates, confidence, seed: as in :func:`paired_bootstrap`.

    Returns:
        ``(estimate, low, high)``: the mean over seeds of the statistic on every unit once, and
        the percentile interval.

    Raises:
        ReportError: no seed, a seed without units, or a statistic that is not finite on the
            full sample.
    """
    import numpy as np

    sizes = [len(s) for s in samples]
    if not sizes or min(sizes) == 0:
        raise ReportError(f"bootstrap_statistic: seeds with {sizes} units; expected at least one "
                          "seed and one unit per seed.")
    full = [float(statistic(s, np.arange(n))) for s, n in enumerate(sizes)]
    if not np.all(np.isfinite(full)):
        raise ReportError(f"bootstrap_statistic: the statistic is {full} on the full samples; "
                          "expected finite numbers.")
    rng = np.random.default_rng(seed)
    values = np.empty(replicates)
    for r in range(replicates):
        values[r] = np.mean([statistic(s, rng.integers(0, n, size=n)) for s, n in enumerate(sizes)])
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(np.mean(full)), float(low), float(high)


# --------------------------------------------------------------------------------------------
# Seeds and training runs
# --------------------------------------------------------------------------------------------

def _mean_and_range(values, digits: int) -> str:
    import numpy as np

    values = np.asarray(values, dtype=float)
    if values.size == 0 or np.all(np.isnan(values)):
        return "-"
    mean, low, high = np.nanmean(values), np.nanmin(values), np.nanmax(values)
    if values.size == 1 or low == high:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def value_range(values, digits: int = 2) -> str:
    """A seed-summary cell for a setting rather than a score (a chosen threshold): the value, or
    "low-high" where the seeds differ."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    low, high = float(np.min(values)), float(np.max(values))
    return f"{low:.{digits}f}" if low == high else f"{low:.{digits}f}-{high:.{digits}f}"


def per_run_table(rows: Mapping[tuple, Mapping], names: Sequence[str] = ("method", "seed")):
    """The per-run table :func:`seed_summary` reads: one row per run, indexed by ``names``.

    Args:
        rows: ``{(method, seed): {column: value}}``, a key per run in the order to show.
        names: the index levels the keys' parts are.

    Raises:
        ReportError: a key is not a tuple of ``len(names)`` parts.
    """
    import pandas as pd

    names = list(names)
    wrong = [key for key in rows if not isinstance(key, tuple) or len(key) != len(names)]
    if wrong:
        raise ReportError(f"per_run_table: the key {wrong[0]!r} is not a tuple of {len(names)} "
                          f"parts ({', '.join(names)}).")
    table = pd.DataFrame.from_dict(dict(rows), orient="index")
    table.index = pd.MultiIndex.from_tuples(list(rows), names=names)
    return table


def seed_summary(per_run, *, by: str | Sequence[str] = "method", digits: int = 1,
                 formats: Mapping | None = None):
    """Per-run numbers summarised over seeds: each cell "mean (min-max)", the mean alone where
    there is one seed (or all agree), "-" where there is no number.

    Args:
        per_run: a ``pandas.DataFrame`` with one row per run, indexed by the levels ``by`` and
            ``"seed"``, numeric columns.
        by: the index levels that name a group (the method, or the dataset and the method).
        digits: decimals of the cells.
        formats: ``{column: callable(values of the group) -> str}`` for columns summarised
            otherwise (a count summed, a threshold with two decimals).

    Returns:
        A ``DataFrame`` of strings, one row per group in the order of first appearance.

    Raises:
        ReportError: ``per_run`` is not indexed by ``by`` and ``"seed"``.
    """
    import pandas as pd

    by = [by] if isinstance(by, str) else list(by)
    names = list(per_run.index.names)
    if "seed" not in names or any(level not in names for level in by):
        raise ReportError(f"seed_summary: the table is indexed by {names}; expected the levels "
                          f"{by} and 'seed'.")
    formats = dict(formats or {})
    rows = {}
    for group, values in per_run.groupby(level=by if len(by) > 1 else by[0], sort=False):
        rows[group] = {column: (formats[column](values[column]) if column in formats
                                else _mean_and_range(values[column], digits))
                       for column in per_run.columns}
    table = pd.DataFrame.from_dict(rows, orient="index")
    if len(by) > 1:
        table.index = pd.MultiIndex.from_tuples(table.index, names=by)
    else:
        table.index.name = by[0]
    return table


def training_log(runs: Mapping[tuple, object], names: Sequence[str]):
    """One row per epoch of every run: the labels (``names``), ``epoch``, ``loss`` and
    ``train accuracy (%)`` (the cosine loss logs its own ``embedding_acc``, the accuracy of the
    closest class embedding, which is used where present)."""
    import pandas as pd

    names = list(names)
    rows = []
    for labels, record in runs.items():
        labels = labels if isinstance(labels, tuple) else (labels,)
        if len(labels) != len(names):
            raise ReportError(f"training_log: labels {labels} for the names {names}.")
        for entry in record.log():
            rows.append({**dict(zip(names, labels)), "epoch": entry["epoch"],
                         "loss": entry["loss"],
                         "train accuracy (%)": 100 * entry.get("embedding_acc", entry["train_acc"])})
    if not rows:
        raise ReportError("training_log: the runs have no logged epoch.")
    return pd.DataFrame(rows)


def training_curves(runs: Mapping[tuple, object], names: Sequence[str], *, hue: str,
                    style: str | None = None, col: str | None = None,
                    loss_label: str = "loss"):
    """Loss and training accuracy per epoch, one line per run (seeds are not averaged, so
    their spread shows); ``col`` draws one pair of panels per value of that label.

    Returns:
        The ``Figure`` (not shown).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    log = training_log(runs, names)
    unit = "seed" if "seed" in log.columns else None
    groups = list(dict.fromkeys(log[col])) if col else [None]
    fig, axes = plt.subplots(1, 2 * len(groups), figsize=(4.6 * 2 * len(groups), 3.0),
                             squeeze=False)
    for g, group in enumerate(groups):
        part = log if group is None else log[log[col] == group]
        for k, (y, label) in enumerate((("loss", loss_label),
                                        ("train accuracy (%)", "train accuracy (%)"))):
            ax = axes[0, 2 * g + k]
            sns.lineplot(part, x="epoch", y=y, hue=hue, style=style, units=unit,
                         estimator=None if unit else "mean", ax=ax, linewidth=1)
            ax.set_ylabel(label)
            if group is not None:
                ax.set_title(str(group), fontsize=9)
            legend = ax.get_legend()
            if legend is not None and (g or k):
                legend.remove()
            elif legend is not None:
                legend.set_title(None)
                for text in legend.get_texts():
                    text.set_fontsize(7)
    fig.tight_layout()
    return fig


def sortable_html(table, *, numeric: Mapping[str, Sequence[float]] | None = None,
                  caption: str = "") -> str:
    """A ``DataFrame`` as an HTML table the site sorts by any column on a click of its header
    (``_static/sortable.js``).

    Args:
        table: the cells as shown (strings or numbers), one column per header.
        numeric: ``{column: values}``, the numbers a column sorts by where its cells are text
            ("46.1 [45.7, 47.2]" sorts by 46.1); NaN sorts last.
        caption: shown above the table.

    Raises:
        ReportError: a ``numeric`` column the table lacks, or of another length.
    """
    import html
    import math
    import numbers

    numeric = dict(numeric or {})
    for column, values in numeric.items():
        if column not in table.columns or len(values) != len(table):
            raise ReportError(f"sortable_html: numeric column {column!r} is not a column of "
                              f"the table or has {len(values)} values for {len(table)} rows.")
    head = "".join(f'<th scope="col" title="click to sort">{html.escape(str(c))}</th>'
                   for c in table.columns)
    body = []
    for i, (_, row) in enumerate(table.iterrows()):
        cells = []
        for column in table.columns:
            value = row[column]
            key = numeric[column][i] if column in numeric else value
            sort = (f' data-sort="{float(key)!r}"' if isinstance(key, numbers.Real) and not
                    math.isnan(float(key)) else
                    ' data-sort=""' if column in numeric else "")
            cells.append(f"<td{sort}>{html.escape(str(value))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<table class="wsol-sortable">{title}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")
