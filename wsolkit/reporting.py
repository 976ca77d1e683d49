"""What a chapter shows beside its numbers: the papers' tables, quoted whole.

A paper compares its method with many others; a chapter runs a few of them. A reader should see
the whole printed table and, beside the rows the chapter runs, what the chapter measured, so that
nothing of the paper's comparison is hidden and nothing of ours is mistaken for the paper's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["ReportError", "paper_beside_ours"]


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
