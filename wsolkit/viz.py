"""Figures shared by the chapters: images with boxes and score-map overlays, threshold sweeps.

Colours follow one convention in every chapter: ground truth red, prediction green, the
discriminative part (embedded benchmark) yellow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

GT_COLOUR = "#d62728"
PRED_COLOUR = "#2ca02c"
PART_COLOUR = "#ffdd00"


def to_display(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(3, H, W)`` uint8 or float tensor -> ``(H, W, 3)`` float array in ``[0, 1]``."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 3:
        array = array.transpose(1, 2, 0)
    array = array.astype(np.float32)
    return array / 255 if array.max() > 1 else array


def draw_box(ax, box: Sequence[float], colour: str, *, linewidth: float = 1.5,
             linestyle: str = "-", inclusive: bool = True) -> None:
    """Draws ``[x1, y1, x2, y2]``; inclusive boxes cover pixel ``x2`` (the evaluation convention)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    extra = 1.0 if inclusive else 0.0
    ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1 + extra, y2 - y1 + extra, fill=False,
                           edgecolor=colour, linewidth=linewidth, linestyle=linestyle))


def show_localization(ax, image, *, score_map=None, gt_boxes=(), pred_boxes=(), part_boxes=(),
                      title: str | None = None, alpha: float = 0.5) -> None:
    """One panel: the image, optionally the score map over it, and the boxes."""
    ax.imshow(to_display(image), interpolation="nearest")
    if score_map is not None:
        sm = score_map.float().numpy() if isinstance(score_map, torch.Tensor) else score_map
        ax.imshow(sm, cmap="jet", alpha=alpha, vmin=0, vmax=1, interpolation="bilinear")
    for box in part_boxes:
        draw_box(ax, box, PART_COLOUR, linestyle="--", linewidth=1.2)
    for box in gt_boxes:
        draw_box(ax, box, GT_COLOUR)
    for box in pred_boxes:
        draw_box(ax, box, PRED_COLOUR)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def plot_threshold_curves(ax, thresholds: np.ndarray, curves: Mapping[str, np.ndarray], *,
                          marker_at: float | None = None, ylabel: str = "GT-known loc (%)") -> None:
    """Accuracy against the score-map threshold, one line per method; marks the best point."""
    for label, curve in curves.items():
        curve = np.asarray(curve)
        (line,) = ax.plot(thresholds, curve, label=label)
        best = int(np.argmax(curve))
        ax.plot(thresholds[best], curve[best], "o", color=line.get_color(), markersize=4)
    if marker_at is not None:
        ax.axvline(marker_at, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("threshold (fraction of the map maximum)")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def small_multiples(n_rows: int, n_cols: int, *, panel: float = 1.6):
    """A grid of square panels sized for the book's column."""
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel * n_cols, panel * n_rows + 0.3),
                             squeeze=False)
    return fig, axes


def plot_views(rows: Mapping[str, Sequence], *, gt_boxes: Sequence | None = None,
               pred_boxes: Mapping[str, Sequence] | None = None, panel: float = 1.6):
    """One row per view, one column per image: an entry is an image (``(3, H, W)``) or a map
    (``(H, W)``, drawn over the row ``"image"``'s image).

    Args:
        rows: ``{label: N panels}``; the first row should be ``"image"``.
        gt_boxes: ``N`` arrays of ground-truth boxes, drawn on the map rows.
        pred_boxes: ``{label: N arrays}`` predicted boxes for some map rows.

    Returns:
        The ``Figure`` (not shown).
    """
    labels = list(rows)
    images = rows[labels[0]]
    fig, axes = small_multiples(len(labels), len(images), panel=panel)
    for r, label in enumerate(labels):
        for c, value in enumerate(rows[label]):
            value = torch.as_tensor(value)
            is_map = value.ndim == 2
            show_localization(
                axes[r, c], images[c] if is_map else value,
                score_map=value if is_map else None,
                gt_boxes=gt_boxes[c] if (is_map and gt_boxes is not None) else (),
                pred_boxes=(pred_boxes or {}).get(label, [()] * len(images))[c])
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig


# Every slider group made in this process, so that a test can move them all (exercise_sliders).
_SLIDER_GROUPS: list = []


def _figure_output(fig) -> dict:
    import base64
    import io

    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"live_sliders: draw must return a matplotlib Figure, got {type(fig).__name__}.")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                     "text/plain": "<Figure>"}}


def live_sliders(draw, **sliders):
    """Sliders above a figure ``draw(**values)`` that is drawn when the cell runs and again
    whenever a slider moves.

    The figure is rendered to PNG straight into the output widget's state rather than captured
    from the cell's output: a headless executor (papermill, the book build) never waits on a
    front end that would do the capturing (jupyter/nbclient#312), and the executed notebook keeps
    the first drawing. The static figure next to each slider shows the same sweep on the website.

    Args:
        draw: called with one keyword argument per slider; returns the ``Figure`` it drew (and
            does not show it).
        **sliders: ``ipywidgets`` value widgets, by the name ``draw`` takes.

    Returns:
        The ``VBox`` of the sliders and their output (display it, or leave it last in the cell).
    """
    import ipywidgets as widgets

    output = widgets.Output()
    drawn = [0]  # how many times the figure was drawn (exercise_sliders reads it)

    def redraw(_change=None):
        output.outputs = (_figure_output(draw(**{name: s.value for name, s in sliders.items()})),)
        drawn[0] += 1

    for slider in sliders.values():
        slider.continuous_update = False
        slider.observe(redraw, names="value")
    redraw()
    _SLIDER_GROUPS.append((dict(sliders), output, drawn))
    return widgets.VBox([*sliders.values(), output])


def exercise_sliders() -> list[dict]:
    """Moves every slider made by :func:`live_sliders` in this process to its minimum, then to
    its maximum, and reports what was drawn: one entry per slider group, ``{"sliders": names,
    "moves": n, "figures": how many moves redrew the figure and left a PNG in the output}`` (a
    redraw may look like the one before it: a threshold past every score changes nothing)."""
    report = []
    for sliders, output, drawn in _SLIDER_GROUPS:
        moves = figures = 0
        for slider in sliders.values():
            for value in (slider.min, slider.max):
                if slider.value == value:
                    continue  # no move, no redraw
                before = drawn[0]
                slider.value = value
                moves += 1
                shown = output.outputs
                figures += int(drawn[0] == before + 1 and bool(shown) and "image/png" in shown[0]["data"])
        report.append({"sliders": sorted(sliders), "moves": moves, "figures": figures})
    return report


def _rasterise(fig) -> np.ndarray:
    """A figure as an RGBA array (and closes it), to place it as a panel of another figure."""
    import io

    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"static_sweep: draw must return a matplotlib Figure, got {type(fig).__name__}.")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=fig.dpi)
    plt.close(fig)
    buffer.seek(0)
    return plt.imread(buffer, format="png")


def static_sweep(draw, sweeps: Mapping[str, Sequence], defaults: Mapping[str, object], *,
                 title: str | None = None, panel_width: float = 3.0, label=None,
                 columns: int | None = None):
    """The website's stand-in for :func:`live_sliders`: the figure that ``draw`` makes for a
    live slider, drawn for a sweep of each slider with the others at their defaults.

    One row per slider in ``sweeps``, one column per value; panel ``(name, value)`` is
    ``draw(**{**defaults, name: value})`` rasterised, so it holds everything the live figure
    holds at that setting (every model, every image the slider redraws).

    Args:
        draw: the slider's draw function (returns a ``Figure``).
        sweeps: ``{slider name: values}``, in row order.
        defaults: a value for every argument of ``draw`` (the sliders' starting values).
        title: the figure's title.
        panel_width: inches per panel.
        label: ``(name, value) -> str``, the panel's title; default ``"name = value"``.
        columns: at most this many panels per row (a long sweep wraps onto further rows).

    Returns:
        The ``Figure`` (not shown).

    Raises:
        ValueError: a swept name without a default, or an empty sweep.
    """
    unknown = [name for name in sweeps if name not in defaults]
    if unknown or not sweeps or any(len(v) == 0 for v in sweeps.values()):
        raise ValueError(f"static_sweep: sweeps {dict(sweeps)} over the defaults {dict(defaults)}; "
                         "expected at least one value for each swept name, each with a default.")
    label = label or (lambda name, value: f"{name} = {value:g}" if isinstance(value, float)
                      else f"{name} = {value}")
    panels = {(name, value): _rasterise(draw(**{**defaults, name: value}))
              for name, values in sweeps.items() for value in values}
    width = columns or max(len(v) for v in sweeps.values())
    rows = [(name, list(values)[start:start + width]) for name, values in sweeps.items()
            for start in range(0, len(values), width)]
    n_cols = max(len(chunk) for _, chunk in rows)
    height_px, width_px = next(iter(panels.values())).shape[:2]
    panel_height = panel_width * height_px / width_px
    fig, axes = plt.subplots(len(rows), n_cols, squeeze=False,
                             figsize=(panel_width * n_cols, (panel_height + 0.3) * len(rows)))
    for row, (name, chunk) in enumerate(rows):
        for col in range(n_cols):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(chunk):
                ax.imshow(panels[name, chunk[col]])
                ax.set_title(label(name, chunk[col]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def boxes_at_thresholds(images, maps: Sequence, gt_boxes: Sequence, thresholds, *,
                        row_labels: Sequence[str], titles=None, panel: float = 1.8):
    """Score maps over their images with the box each threshold gives: one row per map stack,
    one column per image.

    Args:
        images: ``N`` images (``(3, H, W)``).
        maps: one ``(N, H, W)`` stack of normalised maps per row (different methods, or the same
            maps at different thresholds).
        gt_boxes: ``N`` arrays of ground-truth boxes.
        thresholds: a float for every panel, or an array ``(rows, N)``.
        row_labels: the label left of each row.
        titles: ``(rows, N)`` panel titles, or ``None`` for the threshold and the box's IoU
            with the closest ground-truth box.
        panel: inches per panel.

    Returns:
        The ``Figure`` (not shown). Boxes are the reference protocol's largest component
        (:func:`wsolkit.boxes.boxes_at_threshold`).
    """
    from wsolkit.boxes import box_iou, boxes_at_threshold

    n_rows, n_images = len(maps), len(images)
    grid = np.broadcast_to(np.asarray(thresholds, dtype=float), (n_rows, n_images))
    if len(row_labels) != n_rows or len(gt_boxes) != n_images:
        raise ValueError(f"boxes_at_thresholds: {n_rows} map stacks, {len(row_labels)} row labels, "
                         f"{n_images} images and {len(gt_boxes)} box lists; expected one label per "
                         "stack and one box list per image.")
    fig, axes = small_multiples(n_rows, n_images, panel=panel)
    for row in range(n_rows):
        if len(maps[row]) != n_images:
            raise ValueError(f"boxes_at_thresholds: row {row} has {len(maps[row])} maps for "
                             f"{n_images} images.")
        for col in range(n_images):
            score_map = maps[row][col]
            values = score_map.float().numpy() if isinstance(score_map, torch.Tensor) else score_map
            box = boxes_at_threshold(np.asarray(values), float(grid[row, col]))[0]
            if titles is not None:
                title = titles[row][col]
            else:
                iou = float(box_iou(box[None], np.asarray(gt_boxes[col])).max())
                title = f"t={grid[row, col]:.2f}  IoU {iou:.2f}"
            show_localization(axes[row, col], images[col], score_map=values,
                              gt_boxes=gt_boxes[col], pred_boxes=[box], title=title)
        axes[row, 0].set_ylabel(row_labels[row], fontsize=8)
    fig.tight_layout()
    return fig


def interval_dots(ax, labels: Sequence[str], estimates, lows, highs, *,
                  colours: Sequence[str] | None = None, xlabel: str = "") -> None:
    """One row per label: a dot at the estimate and a bar over its interval, the first label
    on top (a leaderboard at a glance)."""
    y = np.arange(len(labels))[::-1]
    estimates, lows, highs = (np.asarray(v, dtype=float) for v in (estimates, lows, highs))
    colours = list(colours) if colours is not None else ["tab:blue"] * len(labels)
    for yi, est, low, high, colour in zip(y, estimates, lows, highs, colours):
        ax.plot([low, high], [yi, yi], color=colour, linewidth=2.5, alpha=0.6)
        ax.plot(est, yi, "o", color=colour, markersize=5)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel(xlabel)


def bar_figure(labels: Sequence[str], values, *, xlabel: str = "",
               colours: Sequence[str] | None = None, width: float = 6.0,
               limits: tuple[float, float] = (0.0, 100.0)):
    """A horizontal bar per label (the first on top), returned without being shown: the draw
    function of a slider over a score."""
    fig, ax = plt.subplots(figsize=(width, 0.2 * len(labels) + 1.0))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, np.asarray(values, dtype=float), color=list(colours) if colours else "tab:blue")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlim(*limits)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig
