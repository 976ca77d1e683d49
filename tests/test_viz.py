"""Sliders draw their figure when the cell runs and again whenever a slider moves."""

import base64

import ipywidgets as widgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from wsolkit import viz  # noqa: E402


def _draw(a=1.0, b=0.0):
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [b, a])
    return fig


def test_live_sliders_draw_at_once_and_on_every_move():
    plt.close("all")  # figures other tests left open are not this test's
    before = len(viz._SLIDER_GROUPS)
    box = viz.live_sliders(_draw, a=widgets.FloatSlider(value=1.0, min=0.0, max=2.0),
                           b=widgets.FloatSlider(value=0.0, min=-1.0, max=1.0))
    output = box.children[-1]
    first = output.outputs
    assert len(first) == 1 and base64.b64decode(first[0]["data"]["image/png"])[:4] == b"\x89PNG"
    box.children[0].value = 2.0
    assert output.outputs != first  # redrawn
    assert plt.get_fignums() == []  # every figure drawn was closed
    report = viz.exercise_sliders()[before:]
    assert report == [{"sliders": ["a", "b"], "moves": 4, "figures": 4}]


def test_a_draw_function_that_returns_no_figure_is_named():
    with pytest.raises(TypeError, match="must return a matplotlib Figure"):
        viz.live_sliders(lambda a=1: None, a=widgets.IntSlider(value=1, min=0, max=2))


def test_a_redraw_that_looks_the_same_still_counts_as_drawn():
    before = len(viz._SLIDER_GROUPS)
    viz.live_sliders(lambda t=0.5: _draw(), t=widgets.FloatSlider(value=0.5, min=0.0, max=1.0))
    assert viz.exercise_sliders()[before:] == [{"sliders": ["t"], "moves": 2, "figures": 2}]


def test_static_sweep_draws_every_value_of_every_slider_with_the_others_at_their_defaults():
    import matplotlib.pyplot as plt

    calls = []

    def draw(a=1, b=2):
        calls.append((a, b))
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.plot([a, b])
        return fig

    fig = viz.static_sweep(draw, {"a": [0, 5], "b": [7, 8, 9]}, {"a": 1, "b": 2})
    assert calls == [(0, 2), (5, 2), (1, 7), (1, 8), (1, 9)]
    assert fig.axes[0].get_title() == "a = 0" and fig.axes[3].get_title() == "b = 7"
    assert len(fig.axes) == 6 and not fig.axes[2].images  # a row of two leaves a blank panel
    plt.close(fig)
    wrapped = viz.static_sweep(draw, {"b": [7, 8, 9]}, {"a": 1, "b": 2}, columns=2)
    assert len(wrapped.axes) == 4 and wrapped.axes[2].get_title() == "b = 9"
    plt.close(wrapped)
    with pytest.raises(ValueError, match="default"):
        viz.static_sweep(draw, {"c": [1]}, {"a": 1, "b": 2})


def test_boxes_at_thresholds_draws_the_box_of_each_panels_threshold():
    import numpy as np
    import torch

    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    maps = torch.zeros(2, 8, 8)
    maps[:, 2:6, 2:6] = 0.5
    maps[:, 3:5, 3:5] = 1.0
    fig = viz.boxes_at_thresholds(images, [maps, maps], [np.array([[2, 2, 5, 5]])] * 2,
                                  np.array([[0.2, 0.2], [0.9, 0.9]]), row_labels=["low", "high"])
    widths = [[p.get_width() for p in ax.patches] for ax in fig.axes]
    # Ground truth first, then the prediction: the reference protocol's box of the 4-pixel
    # square is x2 = x + w (one past, as OpenCV's boundingRect gives it), so 5 wide at 0.2.
    assert widths[0] == [4.0, 5.0] and widths[2] == [4.0, 3.0]
    plt.close(fig)
    assert fig.axes[2].get_ylabel() == "high"
    assert fig.axes[0].get_title() == "t=0.20  IoU 0.64"  # 4x4 truth inside the 5x5 box
    with pytest.raises(ValueError, match="row labels"):
        viz.boxes_at_thresholds(images, [maps], [None, None], 0.2, row_labels=[])
