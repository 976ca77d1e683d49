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
