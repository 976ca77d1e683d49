"""The embedded benchmark: a seeded generator of images in the CUB, ILSVRC and COCO layouts.

A CNN trained with image labels only tends to localise the small, most discriminative part of an
object instead of the whole object; the papers in this book fight exactly that. The generator builds
a dataset that shows the effect in minutes on a CPU. Every object has

* a large **body** carrying weak class cues: an ellipse in a muted colour shared by two classes
  (class ``c`` uses palette colour ``c // 2``) with a linear shading gradient, and a dot-lattice
  ("spotted") texture for odd classes; in 10% of the images the colour is drawn from the whole
  palette instead, and independently in 10% the texture is flipped;
* a small attached **part** carrying the strong cue: a disc with 10-20% of the body's area, in a
  saturated hue unique to the class (hue ``c / C``) and one of four patterns (solid, stripes,
  checker, rings by ``c mod 4``), oriented with the body.

Backgrounds are a random colour plus a smooth low-frequency field, with 2-5 distractors drawn
before the objects: 40% part-like discs in a class hue with a pattern that is never that class's
own (so hue alone does not name the class), the rest body-like ellipses or rectangles in body
colours, half of them spotted. Edges are anti-aliased, pixels get Gaussian noise (sigma 0.03) and
are quantised to uint8.

Three layouts are written, each readable by the loaders of :mod:`wsolkit.data` unchanged:

* ``cub/``: 64 px single-object images in the CUB-200-2011 layout with soft segmentation PNGs,
  ``part_boxes.txt`` (the part's tight box) and ``val_images.txt`` (validation ids, marked
  ``train=1`` in ``train_test_split.txt`` as CUB would have them);
* ``ilsvrc/``: an independent draw of the same kind of images in the Kaggle ImageNet
  localization layout (synthetic wnids ``n90000000`` to ``n90000009``);
* ``coco/``: 128 px scenes with 1-4 objects of different classes at varied scales, some of them
  overlapping, in the COCO 2017 layout; each instance's mask (an RLE) is its visible part.

Ground truth per object: the object mask (body or part, alpha >= 0.5), the whole-object box tight
around it (``[x1, y1, x2, y2]`` with ``x2 = last column + 1``, the package convention), and the
part box from the part mask. The same integer box is written in every layout (CUB ``x y w h``,
ImageNet corners, COCO ``[x, y, w, h]``).

The output depends only on ``(profile, seed, GENERATOR_VERSION)`` (and, for the JPEG and PNG
bytes, on the Pillow build): images are rendered in fixed chunks, each from its own ``numpy``
random stream, with numpy vectorised over the chunk.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

__all__ = [
    "BODY_COLOUR_NAMES",
    "CLASS_ATTRIBUTES",
    "CLASS_NAMES",
    "CLASS_TAXONOMY",
    "COCO_CATEGORY_IDS",
    "GENERATOR_VERSION",
    "LAYOUTS",
    "NUM_CLASSES",
    "PART_HUE_NAMES",
    "PATTERN_NAMES",
    "PROFILES",
    "STAMP_NAME",
    "SUPERCLASS_NAMES",
    "SyntheticDataError",
    "TAXONOMY_ROOT",
    "TEXTURE_NAMES",
    "generate",
    "main",
    "render_scenes",
    "render_single",
    "taxonomy_lines",
]

# Bump whenever a change alters a single output byte: the stamp then no longer matches and
# `generate` rewrites the data instead of reusing a stale copy.
GENERATOR_VERSION = "2"
STAMP_NAME = "SYNTHETIC_STAMP.json"
LAYOUTS = ("cub", "coco", "ilsvrc")

NUM_CLASSES = 10
PATTERN_NAMES = ("solid", "striped", "checkered", "ringed")
PART_HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "cyan", "azure", "blue", "violet", "magenta")
BODY_COLOUR_NAMES = ("ochre", "moss", "teal", "slate", "mauve")
TEXTURE_NAMES = ("plain", "spotted")

CLASS_NAMES: tuple[str, ...] = tuple(
    f"{PART_HUE_NAMES[c]}_{PATTERN_NAMES[c % 4]}_{BODY_COLOUR_NAMES[c // 2]}_{TEXTURE_NAMES[c % 2]}"
    for c in range(NUM_CLASSES)
)
"""Class names, index = label: part hue, part pattern, body colour, body texture."""

SUPERCLASS_NAMES: tuple[str, ...] = tuple(f"{b}_bodied" for b in BODY_COLOUR_NAMES)
TAXONOMY_ROOT = "object"

CLASS_TAXONOMY: dict[str, str] = {
    **{CLASS_NAMES[c]: SUPERCLASS_NAMES[c // 2] for c in range(NUM_CLASSES)},
    **{s: TAXONOMY_ROOT for s in SUPERCLASS_NAMES},
}
"""Parent of every class and superclass; the root is ``"object"``.

Level 1 groups the classes by body colour: each superclass (``"ochre_bodied"``, ...) holds a pair
of classes. Level 2, inside a pair, is the body texture: the even class is plain, the odd one
spotted (and their parts differ). Texture cuts across the pairs, so it is not a node of the tree;
``CLASS_ATTRIBUTES`` gives it (and the other cues) per class for groupings other than the tree.
"""

CLASS_ATTRIBUTES: dict[str, dict[str, object]] = {
    CLASS_NAMES[c]: {
        "label": c,
        "part_hue": c / NUM_CLASSES,
        "part_hue_name": PART_HUE_NAMES[c],
        "part_pattern": PATTERN_NAMES[c % 4],
        "body_colour": BODY_COLOUR_NAMES[c // 2],
        "body_texture": TEXTURE_NAMES[c % 2],
        "superclass": SUPERCLASS_NAMES[c // 2],
    }
    for c in range(NUM_CLASSES)
}

PROFILES: dict[str, dict[str, dict[str, int]]] = {
    "default": {
        "cub": {"train": 4000, "val": 500, "test": 1000},
        "ilsvrc": {"train": 4000, "val": 1000},
        "coco": {"train": 1500, "val": 500},
    },
    "smoke": {
        "cub": {"train": 200, "val": 50, "test": 100},
        "ilsvrc": {"train": 200, "val": 100},
        "coco": {"train": 60, "val": 30},
    },
}
"""Images (COCO: scenes) per split for each profile."""

# Image model (side lengths in pixels; fractions are of the image side).
SINGLE_SIZE = 64
SCENE_SIZE = 128
PATTERN_HALF_PERIOD = 2.0  # P / 2 with the pattern unit P = 64 / 16, kept in pixels at every size
SPOT_PERIOD = 4.0  # dot lattice period (P)
SPOT_RADIUS = 1.0
SPOT_DARKNESS = 0.62  # spots are the body colour times this
SINGLE_BODY_MAJOR = (0.30, 0.70)
SINGLE_DISTRACTOR_MAJOR = (0.20, 0.50)
SCENE_BODY_MAJOR = (0.15, 0.50)
SCENE_DISTRACTOR_MAJOR = (0.10, 0.35)
MAX_SCENE_OBJECTS = 4
MIN_VISIBLE_SHARE = 0.5  # each scene instance keeps at least half of its unoccluded mask
# Before rendering, a later object's disc (area-equivalent radius R) must not come within
# R + 0.25 r of an earlier object's centre (radius r); this cut full redraws from 15% of the
# scenes to 0.4% while a third of the scenes still show an occlusion.
SCENE_OCCLUSION_MARGIN = 0.25
SCENE_PLACEMENT_TRIES = 20
NOISE_SIGMA = 0.03
JPEG_QUALITY = 95
# Images rendered together from one random stream; part of the output's definition.
SINGLE_CHUNK = 256
SCENE_CHUNK = 64
_DRAW_GROUPS = 4

_BODY_PALETTE_HUES = (np.arange(len(BODY_COLOUR_NAMES)) + 0.5) / len(BODY_COLOUR_NAMES)


class SyntheticDataError(RuntimeError):
    """The output directory cannot be used, or a generated annotation is inconsistent."""


# ----------------------------------------------------------------------------------------------
# Colours and parameters


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB.

    Args:
        h, s, v: ``(N,)`` float arrays in ``[0, 1]`` (``h`` wraps around).

    Returns:
        ``(N, 3)`` float32 RGB in ``[0, 1]``.
    """
    k = (np.array([5.0, 3.0, 1.0]) + (np.asarray(h)[:, None] % 1.0) * 6.0) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return (v[:, None] - v[:, None] * s[:, None] * ramp).astype(np.float32)


def _body_colours(rng: np.random.Generator, index: np.ndarray) -> np.ndarray:
    """Muted palette colours (saturation 0.45, value 0.60) with a per-image jitter; ``(N, 3)``."""
    n = len(index)
    h = _BODY_PALETTE_HUES[index] + rng.uniform(-0.02, 0.02, n)
    s = 0.45 + rng.uniform(-0.05, 0.05, n)
    v = 0.60 + rng.uniform(-0.06, 0.06, n)
    return _hsv_to_rgb(h, s, v)


def _part_colours(rng: np.random.Generator, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Saturated class hue and the factor giving its dark shade for the pattern.

    Returns:
        ``(N, 3)`` float32 RGB of value about 0.95, and ``(N,)`` float32 factors that take it
        to value 0.35 with the same hue and saturation (RGB is linear in the HSV value).
    """
    n = len(cls)
    h = cls / NUM_CLASSES + rng.uniform(-0.01, 0.01, n)
    s = 0.9 + rng.uniform(-0.05, 0.05, n)
    v = 0.95 + rng.uniform(-0.04, 0.04, n)
    return _hsv_to_rgb(h, s, v), (0.35 / v).astype(np.float32)


class _Shapes:
    """Parameters of one drawing slot for a chunk of ``N`` images; every field is ``(N, ...)``.

    ``kind``: 0 ellipse (a disc when ``a == b``), 1 rectangle with half sides ``a, b``.
    ``pattern``: 0 none, 1 stripes, 2 checker, 3 rings, 4 spots; mixes ``colour`` towards
    ``colour * dark`` (the same hue, darker). ``shade``: amplitude of a linear gradient along
    ``shade_dir`` (body frame).
    """

    def __init__(self, n: int) -> None:
        self.active = np.ones(n, bool)
        self.cx = np.zeros(n, np.float32)
        self.cy = np.zeros(n, np.float32)
        self.a = np.ones(n, np.float32)
        self.b = np.ones(n, np.float32)
        self.theta = np.zeros(n, np.float32)
        self.kind = np.zeros(n, np.int8)
        self.pattern = np.zeros(n, np.int8)
        self.colour = np.zeros((n, 3), np.float32)
        self.dark = np.ones(n, np.float32)
        self.shade = np.zeros(n, np.float32)
        self.shade_dir = np.zeros(n, np.float32)

    def extents(self) -> tuple[np.ndarray, np.ndarray]:
        """Half extents of the axis-aligned bounding box, ``(N,)`` each."""
        c, s = np.abs(np.cos(self.theta)), np.abs(np.sin(self.theta))
        ell = self.kind == 0
        ex = np.where(ell, np.hypot(self.a * c, self.b * s), self.a * c + self.b * s)
        ey = np.where(ell, np.hypot(self.a * s, self.b * c), self.a * s + self.b * c)
        return ex, ey


def _sample_bodies(
    rng: np.random.Generator, labels: np.ndarray, size: int, major: tuple[float, float]
) -> tuple[_Shapes, _Shapes]:
    """Body and attached part of one object per image.

    Args:
        rng: the chunk's random stream.
        labels: ``(N,)`` int class indices.
        size: image side in pixels.
        major: range of the body's major axis as a fraction of ``size``.

    Returns:
        ``(body, part)`` slots, placed by ``_place``.
    """
    n = len(labels)
    body, part = _Shapes(n), _Shapes(n)
    a = rng.uniform(*major, n) * size / 2
    b = a * rng.uniform(0.45, 0.80, n)
    body.a, body.b = a.astype(np.float32), b.astype(np.float32)
    body.theta = rng.uniform(0, np.pi, n).astype(np.float32)
    palette = labels // 2
    swap = rng.random(n) < 0.1
    palette = np.where(swap, rng.integers(0, len(BODY_COLOUR_NAMES), n), palette)
    body.colour = _body_colours(rng, palette)
    spotted = (labels % 2 == 1) ^ (rng.random(n) < 0.1)
    body.pattern = np.where(spotted, 4, 0).astype(np.int8)
    body.dark[:] = SPOT_DARKNESS
    body.shade = rng.uniform(0.10, 0.25, n).astype(np.float32)
    body.shade_dir = rng.uniform(0, 2 * np.pi, n).astype(np.float32)

    part.a = part.b = np.sqrt(rng.uniform(0.10, 0.20, n) * a * b).astype(np.float32)
    part.theta = body.theta
    part.pattern = (labels % 4).astype(np.int8)
    part.colour, part.dark = _part_colours(rng, labels)
    _place(rng, body, part, np.arange(n), size)
    return body, part


def _place(rng: np.random.Generator, body: _Shapes, part: _Shapes, idx: np.ndarray, size: int) -> None:
    """Draw new positions for the objects ``idx`` (``(k,)`` int) of a slot, in place.

    The body is at most about 10% outside the image; the part disc (10-20% of the body's area)
    has its centre half a radius outside the body's boundary, at a random angle that keeps it
    inside the image.
    """
    k = len(idx)
    a, b, theta, r = body.a[idx], body.b[idx], body.theta[idx], part.a[idx]
    ex, ey = (e[idx] for e in body.extents())
    # A centre 0.8 half-extents from an edge leaves about 5% of the ellipse outside per edge.
    lo_x, lo_y = np.minimum(0.8 * ex, size / 2), np.minimum(0.8 * ey, size / 2)
    cx = rng.uniform(lo_x, size - lo_x)
    cy = rng.uniform(lo_y, size - lo_y)
    body.cx[idx], body.cy[idx] = cx, cy

    candidates = 24
    t = rng.uniform(0, 2 * np.pi, (k, candidates))
    nu, nv = np.cos(t) / a[:, None], np.sin(t) / b[:, None]
    push = 0.5 * r[:, None] / np.hypot(nu, nv)
    pu = a[:, None] * np.cos(t) + push * nu
    pv = b[:, None] * np.sin(t) + push * nv
    ct, st = np.cos(theta)[:, None], np.sin(theta)[:, None]
    px = cx[:, None] + pu * ct - pv * st
    py = cy[:, None] + pu * st + pv * ct
    rr = r[:, None]
    outside = np.maximum(np.maximum(rr - px, px + rr - size), np.maximum(rr - py, py + rr - size))
    # The first candidate fully inside; if none is, the one least outside (the part is then cut).
    pick = np.argmin(np.maximum(outside, 0) + np.arange(candidates) * 1e-6, axis=1)
    rows = np.arange(k)
    part.cx[idx], part.cy[idx] = px[rows, pick], py[rows, pick]


def _sample_distractors(
    rng: np.random.Generator, n: int, size: int, major: tuple[float, float], object_major: tuple[float, float]
) -> list[_Shapes]:
    """Five distractor slots for ``n`` images, 2-5 of them active per image.

    Args:
        rng: the chunk's random stream.
        n: number of images.
        size: image side in pixels.
        major: range of a body-like distractor's major axis, as a fraction of ``size``.
        object_major: the objects' body range; part-like discs get the area of a part of such a body.
    """
    count = rng.integers(2, 6, n)
    slots = []
    for j in range(5):
        s = _Shapes(n)
        s.active = j < count
        disc = rng.random(n) < 0.4
        a = rng.uniform(*major, n) * size / 2
        b = a * rng.uniform(0.45, 0.80, n)
        body_a = rng.uniform(*object_major, n) * size / 2
        body_b = body_a * rng.uniform(0.45, 0.80, n)
        r = np.sqrt(rng.uniform(0.10, 0.20, n) * body_a * body_b)
        s.a = np.where(disc, r, a).astype(np.float32)
        s.b = np.where(disc, r, b).astype(np.float32)
        s.theta = rng.uniform(0, np.pi, n).astype(np.float32)
        s.kind = np.where(disc, 0, rng.integers(0, 2, n)).astype(np.int8)
        s.cx = rng.uniform(0, size, n).astype(np.float32)
        s.cy = rng.uniform(0, size, n).astype(np.float32)
        hue_class = rng.integers(0, NUM_CLASSES, n)
        # Any pattern but the one of the class owning the hue: its own + 1..3 (mod 4).
        disc_pattern = (hue_class % 4 + rng.integers(1, 4, n)) % 4
        light, dark = _part_colours(rng, hue_class)
        body_colour = _body_colours(rng, rng.integers(0, len(BODY_COLOUR_NAMES), n))
        spotted = rng.random(n) < 0.5
        s.pattern = np.where(disc, disc_pattern, np.where(spotted, 4, 0)).astype(np.int8)
        s.colour = np.where(disc[:, None], light, body_colour)
        s.dark = np.where(disc, dark, SPOT_DARKNESS).astype(np.float32)
        s.shade = np.where(disc, 0.0, rng.uniform(0.10, 0.25, n)).astype(np.float32)
        s.shade_dir = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        slots.append(s)
    return slots


# ----------------------------------------------------------------------------------------------
# Rendering


def _soft_stripes(t: np.ndarray, half: float) -> np.ndarray:
    """Anti-aliased square wave of coordinate ``t`` (pixels): 1 on ``[0, half)``, 0 on the next ``half``."""
    q = t * np.float32(0.5 / half)
    q += np.float32(0.25)
    q -= np.floor(q)
    q -= np.float32(0.5)  # phase in [-0.5, 0.5): on for [-0.25, 0.25)
    signed = np.abs(q, out=q)
    signed *= np.float32(-2 * half)
    signed += np.float32(half / 2 + 0.5)
    return np.clip(signed, 0, 1, out=signed)


def _pattern_mix(u: np.ndarray, v: np.ndarray, pattern: np.ndarray) -> np.ndarray | None:
    """Per-pixel weight of the dark shade; ``(N, h, w)`` float32, or None when no image has a pattern."""
    present = set(np.unique(pattern).tolist()) - {0}
    if not present:
        return None
    mix = np.zeros(u.shape, np.float32)
    sel = pattern[:, None, None]
    if present & {1, 2}:
        su = _soft_stripes(u, PATTERN_HALF_PERIOD)
        np.copyto(mix, su, where=sel == 1)
        if 2 in present:
            sv = _soft_stripes(v, PATTERN_HALF_PERIOD)
            np.copyto(mix, su + sv - 2 * su * sv, where=sel == 2)
    if 3 in present:
        np.copyto(mix, _soft_stripes(np.sqrt(u * u + v * v), PATTERN_HALF_PERIOD), where=sel == 3)
    if 4 in present:
        period = np.float32(SPOT_PERIOD)
        qu = u / period
        qu -= np.floor(qu) + np.float32(0.5)
        qv = v / period
        qv -= np.floor(qv) + np.float32(0.5)
        dist = period * np.sqrt(qu * qu + qv * qv)
        np.copyto(mix, np.clip(np.float32(SPOT_RADIUS + 0.5) - dist, 0, 1), where=sel == 4)
    return mix


def _draw(canvas: np.ndarray, shapes: _Shapes, alpha_out: np.ndarray | None = None) -> None:
    """Composite one slot of shapes into ``canvas`` in place.

    Args:
        canvas: ``(N, H, W, 3)`` float32 images, modified in place.
        shapes: the slot's parameters; inactive images are left untouched.
        alpha_out: optional ``(N, H, W)`` float32 array receiving the shape's coverage in
            ``[0, 1]`` (``max`` with what it already holds).
    """
    idx = np.flatnonzero(shapes.active)
    if idx.size == 0:
        return
    ex, ey = shapes.extents()
    # Shapes are evaluated in a window around them, not on the whole image; windows are shared
    # by groups of similar size so that one large shape does not inflate every other window.
    order = idx[np.argsort(np.maximum(ex[idx], ey[idx]), kind="stable")]
    for group in np.array_split(order, min(_DRAW_GROUPS, order.size)):
        _draw_group(canvas, shapes, group, ex[group], ey[group], alpha_out)


def _draw_group(
    canvas: np.ndarray,
    shapes: _Shapes,
    idx: np.ndarray,
    ex: np.ndarray,
    ey: np.ndarray,
    alpha_out: np.ndarray | None,
) -> None:
    """``_draw`` for the images ``idx`` (``(k,)`` int) in one shared window size."""
    height, width = canvas.shape[1:3]
    wx = int(min(width, np.ceil(2 * ex.max()) + 3))
    wy = int(min(height, np.ceil(2 * ey.max()) + 3))
    cx, cy = shapes.cx[idx], shapes.cy[idx]
    # Shifting a window that sticks out back into the image keeps all of the shape's pixels
    # that lie inside the image.
    ox = np.clip(np.floor(cx - wx / 2).astype(np.int64), 0, width - wx)
    oy = np.clip(np.floor(cy - wy / 2).astype(np.int64), 0, height - wy)
    dx = (ox[:, None] + np.arange(wx, dtype=np.float32) + np.float32(0.5) - cx[:, None])[:, None, :]
    dy = (oy[:, None] + np.arange(wy, dtype=np.float32) + np.float32(0.5) - cy[:, None])[:, :, None]
    ct = np.cos(shapes.theta[idx])[:, None, None]
    st = np.sin(shapes.theta[idx])[:, None, None]
    u = dx * ct + dy * st
    v = dy * ct - dx * st
    inv_a = (1 / shapes.a[idx])[:, None, None]
    inv_b = (1 / shapes.b[idx])[:, None, None]

    # Signed distance to the boundary (pixels, negative inside): for ellipses the first-order
    # estimate (f - 1) / |grad f| with f = (u/a)^2 + (v/b)^2, exact at the edge of a disc.
    pa, pb = u * inv_a, v * inv_b
    f = pa * pa + pb * pb
    pa *= inv_a
    pb *= inv_b
    grad = np.sqrt(pa * pa + pb * pb)
    grad *= 2
    grad += np.float32(1e-12)
    f -= 1
    dist = np.divide(f, grad, out=f)
    rect = shapes.kind[idx] == 1
    if rect.any():
        half_w, half_h = shapes.a[idx][:, None, None], shapes.b[idx][:, None, None]
        dist_rect = np.maximum(np.abs(u) - half_w, np.abs(v) - half_h)
        np.copyto(dist, dist_rect, where=rect[:, None, None])
    alpha = np.clip(np.float32(0.5) - dist, 0, 1)

    # Every pattern darkens the colour along its own RGB direction, so the painted colour is one
    # scalar field times the shape's colour: gain = shade * (1 - (1 - dark) * mix).
    gain = None
    shade = shapes.shade[idx]
    if shade.any():
        sd = shapes.shade_dir[idx]
        gain = u * (np.cos(sd) * shade)[:, None, None] + v * (np.sin(sd) * shade)[:, None, None]
        gain *= inv_a
        gain += 1
    mix = _pattern_mix(u, v, shapes.pattern[idx])
    if mix is not None:
        mix *= (shapes.dark[idx] - 1)[:, None, None]
        mix += 1
        gain = mix if gain is None else np.multiply(gain, mix, out=gain)
    weight = alpha if gain is None else np.multiply(gain, alpha, out=gain)
    paint = weight[..., None] * shapes.colour[idx][:, None, None, :]
    keep = (1 - alpha)[..., None]
    for j, (i, y, x) in enumerate(zip(idx.tolist(), oy.tolist(), ox.tolist())):
        view = canvas[i, y : y + wy, x : x + wx]
        view *= keep[j]
        view += paint[j]
        if alpha_out is not None:
            cover = alpha_out[i, y : y + wy, x : x + wx]
            np.maximum(cover, alpha[j], out=cover)


def _interpolation_matrix(size: int, grid: int) -> np.ndarray:
    """``(size, grid)`` float32 matrix of bilinear (align-corners) weights from grid to pixel centres."""
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, grid - 2)
    frac = pos - lo
    m = np.zeros((size, grid), np.float32)
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Random base colour plus a bilinearly upsampled 5x5 field; ``(n, size, size, 3)`` float32."""
    base = rng.uniform(0.15, 0.85, (n, 1, 1, 3)).astype(np.float32)
    field = rng.uniform(-0.25, 0.25, (n, 3, 5, 5)).astype(np.float32)
    m = _interpolation_matrix(size, 5)
    smooth = m @ field @ m.T  # (n, 3, size, size)
    img = base + smooth.transpose(0, 2, 3, 1)
    return np.clip(img, 0, 1, out=img)


_NOISE_LEVELS = 1 << 16


@functools.lru_cache(maxsize=1)
def _noise_table() -> np.ndarray:
    """``255 * sigma * Phi^-1((i + 0.5) / 65536) + 0.5`` (noise in uint8 steps plus the rounding
    offset); ``(65536,)`` float32."""
    from scipy.special import ndtri

    quantiles = ndtri((np.arange(_NOISE_LEVELS) + 0.5) / _NOISE_LEVELS)
    return (quantiles * (255 * NOISE_SIGMA) + 0.5).astype(np.float32)


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Add Gaussian noise and quantise: ``(N, H, W, 3)`` float32 -> uint8.

    The noise is a Gaussian discretised to 65,536 equiprobable quantiles (tails to 4.3 sigma),
    drawn by table lookup: three times faster than ``standard_normal``, and far finer than the
    uint8 quantisation that follows.
    """
    canvas *= np.float32(255)
    canvas += _noise_table()[rng.integers(0, _NOISE_LEVELS, canvas.shape, dtype=np.uint16)]
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8)


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of non-empty masks.

    Args:
        masks: ``(N, H, W)`` bool, each with at least one pixel set.

    Returns:
        ``(N, 4)`` float32 ``[x1, y1, x2, y2]`` with ``x2 = last column + 1``.
    """
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    if not (rows.any(axis=1).all()):
        raise SyntheticDataError("an object mask is empty; this is a bug in the generator's placement")
    h, w = masks.shape[1:]
    y1 = rows.argmax(axis=1)
    y2 = h - rows[:, ::-1].argmax(axis=1)
    x1 = cols.argmax(axis=1)
    x2 = w - cols[:, ::-1].argmax(axis=1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


def _soft_mask(alpha: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Soft 0-255 segmentation whose ``> 127`` threshold reproduces ``mask`` exactly."""
    soft = np.round(alpha * 255).astype(np.uint8)
    return np.where(mask, np.maximum(soft, 128), np.minimum(soft, 127)).astype(np.uint8)


def render_single(
    rng: np.random.Generator, labels: np.ndarray, size: int = SINGLE_SIZE
) -> dict[str, np.ndarray]:
    """Render one single-object image per label.

    Args:
        rng: random stream; the result is a pure function of its state and ``labels``.
        labels: ``(N,)`` int class indices in ``[0, NUM_CLASSES)``.
        size: image side in pixels.

    Returns:
        Dict with ``"images"`` ``(N, size, size, 3)`` uint8, ``"segmentations"`` ``(N, size, size)``
        uint8 soft masks in 0..255 (object = ``> 127``), ``"masks"`` ``(N, size, size)`` uint8 0/1
        object masks, ``"part_masks"`` likewise for the part, ``"boxes"`` and ``"part_boxes"``
        ``(N, 4)`` float32 ``[x1, y1, x2, y2]``.
    """
    labels = np.asarray(labels, np.int64)
    if labels.ndim != 1 or ((labels < 0) | (labels >= NUM_CLASSES)).any():
        raise ValueError(f"labels must be a 1-D array of class indices in [0, {NUM_CLASSES}), got {labels!r}")
    n = len(labels)
    canvas = _background(rng, n, size)
    for slot in _sample_distractors(rng, n, size, SINGLE_DISTRACTOR_MAJOR, SINGLE_BODY_MAJOR):
        _draw(canvas, slot)
    body, part = _sample_bodies(rng, labels, size, SINGLE_BODY_MAJOR)
    alpha = np.zeros((n, size, size), np.float32)
    part_alpha = np.zeros((n, size, size), np.float32)
    _draw(canvas, body, alpha)
    _draw(canvas, part, part_alpha)
    np.maximum(alpha, part_alpha, out=alpha)
    mask = alpha >= 0.5
    part_mask = part_alpha >= 0.5
    return {
        "images": _finish(rng, canvas),
        "segmentations": _soft_mask(alpha, mask),
        "masks": mask.astype(np.uint8),
        "part_masks": part_mask.astype(np.uint8),
        "boxes": _tight_boxes(mask),
        "part_boxes": _tight_boxes(part_mask),
    }


def _render_scene_chunk(
    rng: np.random.Generator, n: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scenes with per-object masks.

    Returns:
        Images ``(n, size, size, 3)`` uint8, labels ``(n, J)`` int64 (-1 = absent), and the
        visible and the full (unoccluded) object masks, ``(n, J, size, size)`` bool each.
    """
    count = rng.integers(1, MAX_SCENE_OBJECTS + 1, n)
    labels = np.argsort(rng.random((n, NUM_CLASSES)), axis=1)[:, :MAX_SCENE_OBJECTS]
    labels = np.where(np.arange(MAX_SCENE_OBJECTS) < count[:, None], labels, -1)
    canvas = _background(rng, n, size)
    for slot in _sample_distractors(rng, n, size, SCENE_DISTRACTOR_MAJOR, SCENE_BODY_MAJOR):
        _draw(canvas, slot)
    objects = [
        _sample_bodies(rng, np.maximum(labels[:, j], 0), size, SCENE_BODY_MAJOR)
        for j in range(MAX_SCENE_OBJECTS)
    ]
    present = labels >= 0
    # Cheap screening before rendering: move the objects of scenes where a later object covers
    # the centre of an earlier one (as area-equivalent discs), which would hide much of it.
    for _ in range(SCENE_PLACEMENT_TRIES):
        x = np.stack([body.cx for body, _ in objects], axis=1)
        y = np.stack([body.cy for body, _ in objects], axis=1)
        radius = np.stack([np.sqrt(body.a * body.b) for body, _ in objects], axis=1)
        dist = np.hypot(x[:, :, None] - x[:, None, :], y[:, :, None] - y[:, None, :])
        later = np.triu(np.ones((MAX_SCENE_OBJECTS, MAX_SCENE_OBJECTS), bool), 1)  # [j, k]: k after j
        covered = later & (dist < radius[:, None, :] + SCENE_OCCLUSION_MARGIN * radius[:, :, None])
        covered &= present[:, :, None] & present[:, None, :]
        bad = np.flatnonzero(covered.any(axis=(1, 2)))
        if bad.size == 0:
            break
        for body, part in objects:
            _place(rng, body, part, bad, size)
    alphas = np.zeros((MAX_SCENE_OBJECTS, n, size, size), np.float32)
    for j, (body, part) in enumerate(objects):
        body.active = part.active = present[:, j]
        _draw(canvas, body, alphas[j])
        _draw(canvas, part, alphas[j])
    full = alphas >= 0.5
    visible = full.copy()
    for j in range(MAX_SCENE_OBJECTS - 2, -1, -1):
        visible[j] &= ~full[j + 1 :].any(axis=0)
    return _finish(rng, canvas), labels, visible.transpose(1, 0, 2, 3), full.transpose(1, 0, 2, 3)


def render_scenes(rng: np.random.Generator, n: int, size: int = SCENE_SIZE) -> dict[str, object]:
    """Render ``n`` multi-object scenes.

    Scenes in which an object keeps less than ``MIN_VISIBLE_SHARE`` of its own mask after the
    objects drawn over it are drawn again (from the same stream), so every instance stays
    recognisable.

    Args:
        rng: random stream.
        n: number of scenes.
        size: scene side in pixels.

    Returns:
        Dict with ``"images"`` ``(n, size, size, 3)`` uint8, ``"labels"`` ``(n, J)`` int64 with
        ``J = MAX_SCENE_OBJECTS`` and -1 for absent objects (objects in drawing order), and
        ``"masks"`` ``(n, J, size, size)`` bool visible instance masks, ``"occluded"`` ``(n, J)``
        bool (part of the object is hidden by a later one) and ``"redrawn"``, the number of scenes
        drawn again.
    """
    images, labels, visible, full = _render_scene_chunk(rng, n, size)
    redrawn = 0
    for _ in range(100):
        shown = visible.sum(axis=(2, 3))
        whole = np.maximum(full.sum(axis=(2, 3)), 1)
        bad = np.flatnonzero(((labels >= 0) & (shown < MIN_VISIBLE_SHARE * whole)).any(axis=1))
        if bad.size == 0:
            occluded = (labels >= 0) & (shown < full.sum(axis=(2, 3)))
            return {
                "images": images,
                "labels": labels,
                "masks": visible,
                "occluded": occluded,
                "redrawn": redrawn,
            }
        redrawn += bad.size
        images[bad], labels[bad], visible[bad], full[bad] = _render_scene_chunk(rng, bad.size, size)
    raise SyntheticDataError(f"{bad.size} scenes still had a hidden object after 100 redraws; placement bug")


# ----------------------------------------------------------------------------------------------
# Writing the layouts


def _chunks(n: int, step: int) -> Iterator[tuple[int, int, int]]:
    """``(chunk index, start, stop)`` over ``n`` images in chunks of ``step``."""
    for i, start in enumerate(range(0, n, step)):
        yield i, start, min(n, start + step)


def _stream(seed: int, layout: str, split: str, chunk: int | None = None) -> np.random.Generator:
    """Independent random stream per (seed, layout, split[, chunk])."""
    key = [LAYOUTS.index(layout), ("train", "val", "test").index(split)]
    if chunk is not None:
        key.append(chunk)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=tuple(key))))


def _balanced_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` labels with every class ``n // C`` or ``n // C + 1`` times, in random order."""
    return rng.permutation(np.arange(n) % NUM_CLASSES)


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    # 4:4:4 chroma keeps the 2-pixel part patterns in their hue; 4:2:0 would smear them.
    Image.fromarray(image).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def taxonomy_lines() -> list[str]:
    """``"child parent"`` lines of ``CLASS_TAXONOMY``, classes first, as written to ``taxonomy.txt``."""
    return [f"{child} {parent}" for child, parent in CLASS_TAXONOMY.items()]


class _Stats:
    """Running statistics of the generated objects, written to the README and the stamp."""

    def __init__(self) -> None:
        self.n = 0
        self.mask_share = 0.0
        self.box_share = 0.0
        self.part_ratio = 0.0
        self.part_area_share = 0.0

    def add(self, out: dict[str, np.ndarray], size: int) -> None:
        area = _box_area(out["boxes"])
        self.n += len(area)
        self.mask_share += float(out["masks"].sum() / size**2)
        self.box_share += float((area / size**2).sum())
        self.part_ratio += float((_box_area(out["part_boxes"]) / area).sum())
        body = out["masks"].sum(axis=(1, 2)) - out["part_masks"].sum(axis=(1, 2))
        self.part_area_share += float((out["part_masks"].sum(axis=(1, 2)) / np.maximum(body, 1)).sum())

    def as_dict(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {
            "images": self.n,
            "mean_object_mask_share_of_image": round(self.mask_share / n, 4),
            "mean_object_box_share_of_image": round(self.box_share / n, 4),
            "mean_part_box_share_of_object_box": round(self.part_ratio / n, 4),
            "mean_part_area_over_rest_of_object": round(self.part_area_share / n, 4),
        }


def _box_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _write_cub(root: Path, sizes: dict[str, int], seed: int) -> dict[str, object]:
    """CUB-200-2011 layout; returns statistics."""
    class_dirs = [f"{c + 1:03d}.{name}" for c, name in enumerate(CLASS_NAMES)]
    for d in class_dirs:
        (root / "images" / d).mkdir(parents=True)
        (root / "segmentations" / d).mkdir(parents=True)
    counter = np.zeros(NUM_CLASSES, np.int64)
    records = []  # (label, file number, split, box, part box)
    stats = _Stats()
    for split in ("train", "val", "test"):
        labels = _balanced_labels(_stream(seed, "cub", split), sizes[split])
        for chunk, start, stop in _chunks(len(labels), SINGLE_CHUNK):
            out = render_single(_stream(seed, "cub", split, chunk), labels[start:stop])
            stats.add(out, SINGLE_SIZE)
            for i, label in enumerate(labels[start:stop]):
                counter[label] += 1
                stem = f"{CLASS_NAMES[label]}_{counter[label]:04d}"
                _save_jpeg(out["images"][i], root / "images" / class_dirs[label] / f"{stem}.jpg")
                Image.fromarray(out["segmentations"][i]).save(
                    root / "segmentations" / class_dirs[label] / f"{stem}.png"
                )
                records.append(
                    (int(label), int(counter[label]), split, out["boxes"][i], out["part_boxes"][i])
                )
    # Ids follow CUB: ordered by class directory, then file name.
    records.sort(key=lambda r: (r[0], r[1]))
    images, labels_txt, split_txt, boxes_txt, parts_txt, val_txt = [], [], [], [], [], []
    for image_id, (label, number, split, box, part) in enumerate(records, start=1):
        images.append(f"{image_id} {class_dirs[label]}/{CLASS_NAMES[label]}_{number:04d}.jpg")
        labels_txt.append(f"{image_id} {label + 1}")
        split_txt.append(f"{image_id} {0 if split == 'test' else 1}")
        x1, y1, x2, y2 = box.tolist()
        boxes_txt.append(f"{image_id} {_fmt(x1)} {_fmt(y1)} {_fmt(x2 - x1)} {_fmt(y2 - y1)}")
        px1, py1, px2, py2 = part.tolist()
        parts_txt.append(f"{image_id} {_fmt(px1)} {_fmt(py1)} {_fmt(px2 - px1)} {_fmt(py2 - py1)}")
        if split == "val":
            val_txt.append(str(image_id))
    _write_lines(root / "images.txt", images)
    _write_lines(root / "image_class_labels.txt", labels_txt)
    _write_lines(root / "train_test_split.txt", split_txt)
    _write_lines(root / "bounding_boxes.txt", boxes_txt)
    _write_lines(root / "part_boxes.txt", parts_txt)
    _write_lines(root / "val_images.txt", val_txt)
    _write_lines(root / "classes.txt", [f"{c + 1} {d}" for c, d in enumerate(class_dirs)])
    return stats.as_dict()


def _wnid(label: int) -> str:
    return f"n{90000000 + label:08d}"


def _voc_xml(image_id: str, size: int, wnid: str, box: np.ndarray) -> str:
    x1, y1, x2, y2 = (int(v) for v in box)
    truncated = int(x1 == 0 or y1 == 0 or x2 == size or y2 == size)
    return (
        "<annotation>\n\t<folder>val</folder>\n"
        f"\t<filename>{escape(image_id)}</filename>\n"
        "\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{size}</width>\n\t\t<height>{size}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        "\t<segmented>0</segmented>\n"
        f"\t<object>\n\t\t<name>{wnid}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>{truncated}</truncated>\n\t\t<difficult>0</difficult>\n"
        f"\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
        f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n"
        "\t</object>\n</annotation>\n"
    )


def _write_ilsvrc(root: Path, sizes: dict[str, int], seed: int) -> dict[str, object]:
    """Kaggle ImageNet localization layout; returns statistics."""
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    annotations = root / "ILSVRC" / "Annotations" / "CLS-LOC" / "val"
    for c in range(NUM_CLASSES):
        (data / "train" / _wnid(c)).mkdir(parents=True)
    (data / "val").mkdir(parents=True)
    annotations.mkdir(parents=True)
    _write_lines(
        root / "LOC_synset_mapping.txt", [f"{_wnid(c)} {CLASS_NAMES[c]}" for c in range(NUM_CLASSES)]
    )
    stats = _Stats()
    counter = np.zeros(NUM_CLASSES, np.int64)
    solution = ["ImageId,PredictionString"]
    number = 0
    for split in ("train", "val"):
        labels = _balanced_labels(_stream(seed, "ilsvrc", split), sizes[split])
        for chunk, start, stop in _chunks(len(labels), SINGLE_CHUNK):
            out = render_single(_stream(seed, "ilsvrc", split, chunk), labels[start:stop])
            stats.add(out, SINGLE_SIZE)
            for i, label in enumerate(labels[start:stop]):
                wnid = _wnid(int(label))
                if split == "train":
                    counter[label] += 1
                    _save_jpeg(out["images"][i], data / "train" / wnid / f"{wnid}_{counter[label]}.JPEG")
                    continue
                number += 1
                image_id = f"ILSVRC2012_val_{number:08d}"
                _save_jpeg(out["images"][i], data / "val" / f"{image_id}.JPEG")
                box = out["boxes"][i]
                (annotations / f"{image_id}.xml").write_text(_voc_xml(image_id, SINGLE_SIZE, wnid, box))
                # The Kaggle CSV ends every "wnid x1 y1 x2 y2" group with a space.
                solution.append(f"{image_id},{wnid} " + " ".join(str(int(v)) for v in box) + " ")
    _write_lines(root / "LOC_val_solution.csv", solution)
    return stats.as_dict()


COCO_CATEGORY_IDS = tuple(c + 1 + c // 3 for c in range(NUM_CLASSES))
"""COCO category id per class: 1-based with gaps, as COCO's own ids have."""

COCO_VAL_ID_OFFSET = 1_000_000


def _write_coco(root: Path, sizes: dict[str, int], seed: int) -> dict[str, object]:
    """COCO 2017 instances layout; returns statistics."""
    from pycocotools import mask as mask_utils

    (root / "annotations").mkdir(parents=True)
    categories = [
        {"id": COCO_CATEGORY_IDS[c], "name": CLASS_NAMES[c], "supercategory": CLASS_TAXONOMY[CLASS_NAMES[c]]}
        for c in range(NUM_CLASSES)
    ]
    ann_id = 0
    kept = total = overlapping = scenes = redrawn = 0
    box_share = 0.0
    for split in ("train", "val"):
        folder = root / f"{split}2017"
        folder.mkdir()
        images, annotations = [], []
        offset = 0 if split == "train" else COCO_VAL_ID_OFFSET
        n = sizes[split]
        for chunk, start, stop in _chunks(n, SCENE_CHUNK):
            out = render_scenes(_stream(seed, "coco", split, chunk), stop - start)
            redrawn += out["redrawn"]
            for i in range(stop - start):
                image_id = offset + start + i + 1
                file_name = f"{image_id:012d}.jpg"
                _save_jpeg(out["images"][i], folder / file_name)
                images.append({
                    "id": image_id, "file_name": file_name, "width": SCENE_SIZE, "height": SCENE_SIZE,
                    "license": 1, "date_captured": "",
                })
                present = np.flatnonzero(out["labels"][i] >= 0)
                masks = out["masks"][i, present]
                scenes += 1
                overlapping += int(out["occluded"][i].any())
                boxes = _tight_boxes(masks)
                rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
                for j, rle, box in zip(present, rles, boxes):
                    ann_id += 1
                    x1, y1, x2, y2 = box.tolist()
                    w, h = x2 - x1, y2 - y1
                    total += 1
                    kept += int(w >= 32 or h >= 32)
                    box_share += w * h / SCENE_SIZE**2
                    annotations.append({
                        "id": ann_id, "image_id": image_id,
                        "category_id": COCO_CATEGORY_IDS[out["labels"][i, j]],
                        "bbox": [x1, y1, w, h], "area": float(mask_utils.area(rle)), "iscrowd": 0,
                        "segmentation": {
                            "size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii"),
                        },
                    })
        document = {
            "info": {
                "description": (
                    f"wsolkit synthetic scenes, seed {seed}, {sizes['train']} train / {sizes['val']} val"
                ),
                "version": GENERATOR_VERSION, "year": 2017, "contributor": "wsolkit.data.synthetic",
                "url": "", "date_created": "",
            },
            "licenses": [{"id": 1, "name": "generated data, no restrictions", "url": ""}],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(document))
    return {
        "scenes": scenes,
        "instances": total,
        "mean_instances_per_scene": round(total / max(scenes, 1), 3),
        "instances_kept_by_32px_crop_rule": round(kept / max(total, 1), 4),
        "scenes_with_occlusion": round(overlapping / max(scenes, 1), 4),
        "scenes_redrawn_for_hidden_objects": redrawn,
        "mean_object_box_share_of_image": round(box_share / max(total, 1), 4),
    }


_WRITERS = {"cub": _write_cub, "ilsvrc": _write_ilsvrc, "coco": _write_coco}


def _stamp(profile: str, seed: int) -> dict[str, object]:
    return {
        "generator": "wsolkit.data.synthetic", "version": GENERATOR_VERSION, "profile": profile, "seed": seed,
    }


def _read_stamp(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _readme(
    out: Path, layout: str, profile: str, seed: int, sizes: dict[str, int], stats: dict[str, object]
) -> str:
    lines = [
        f"Synthetic data written by wsolkit.data.synthetic (version {GENERATOR_VERSION}) "
        f"in the {layout} layout.",
        "It is NOT the real dataset: every image is generated. Regenerate it byte for byte with",
        f"    python -m wsolkit.data generate --out {out} --profile {profile} --seed {seed} "
        f"--layouts {layout}",
        "",
        f"profile: {profile}",
        f"seed: {seed}",
        "images per split: " + ", ".join(f"{k} {v}" for k, v in sizes.items()),
        f"classes: {NUM_CLASSES} (taxonomy.txt: 'child parent' lines, root '{TAXONOMY_ROOT}')",
        "",
        "statistics:",
        *(f"    {k}: {v}" for k, v in stats.items()),
    ]
    return "\n".join(lines) + "\n"


def generate(
    out_dir: str | os.PathLike,
    profile: str = "default",
    seed: int = 0,
    layouts: Sequence[str] = ("cub", "coco", "ilsvrc"),
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write the embedded benchmark, skipping layouts that are already there.

    A layout directory ``out_dir/<layout>`` whose stamp file (``SYNTHETIC_STAMP.json``) names the
    same profile, seed and generator version is reused as is. Otherwise the layout is written to a
    temporary sibling directory and renamed into place, so an interrupted run never leaves a
    half-written layout behind; an older generated copy is replaced.

    Args:
        out_dir: directory receiving ``cub/``, ``ilsvrc/`` and ``coco/``.
        profile: a key of ``PROFILES`` (``"default"`` or ``"smoke"``).
        seed: non-negative integer; the output bytes are a function of ``(profile, seed)`` and
            ``GENERATOR_VERSION``.
        layouts: any of ``"cub"``, ``"coco"``, ``"ilsvrc"``.
        log: called with one line per layout (reused, or written with its statistics).

    Returns:
        ``{layout: path}`` for every requested layout.

    Raises:
        ValueError: unknown profile or layout, or a negative seed.
        SyntheticDataError: ``out_dir/<layout>`` exists and was not written by this generator.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    unknown = [layout for layout in layouts if layout not in LAYOUTS]
    if unknown:
        raise ValueError(f"unknown layout(s) {unknown}; expected any of {list(LAYOUTS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = _stamp(profile, seed)
    written = {}
    for layout in layouts:
        target = out / layout
        if target.exists():
            old = _read_stamp(target / STAMP_NAME)
            if old is None:
                raise SyntheticDataError(
                    f"{target} exists but has no readable {STAMP_NAME}, so it was not written by this "
                    "generator (it may be a real dataset); move it away or choose another output directory"
                )
            if {k: old.get(k) for k in stamp} == stamp:
                written[layout] = target
                if log:
                    log(f"{layout}: {target} is up to date (profile {profile}, seed {seed})")
                continue
        tmp = out / f".{layout}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        start = time.perf_counter()
        try:
            tmp.mkdir()
            sizes = PROFILES[profile][layout]
            stats = _WRITERS[layout](tmp, sizes, seed)
            _write_lines(tmp / "taxonomy.txt", taxonomy_lines())
            (tmp / "README.txt").write_text(_readme(out, layout, profile, seed, sizes, stats))
            record = {**stamp, "sizes": sizes, "statistics": stats}
            (tmp / STAMP_NAME).write_text(json.dumps(record, indent=1) + "\n")
            if target.exists():
                stale = out / f".{layout}.stale-{os.getpid()}"
                os.rename(target, stale)
                os.rename(tmp, target)
                shutil.rmtree(stale)
            else:
                try:
                    os.rename(tmp, target)
                except OSError:
                    # Another process wrote the same layout meanwhile; keep its copy if it matches.
                    theirs = _read_stamp(target / STAMP_NAME) or {}
                    if {k: theirs.get(k) for k in stamp} != stamp:
                        raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        written[layout] = target
        if log:
            log(f"{layout}: wrote {target} in {time.perf_counter() - start:.1f} s: {json.dumps(stats)}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m wsolkit.data generate [--out DIR] [--profile P] [--seed S] [--layouts ...]``.

    Args:
        argv: the arguments after ``generate``; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status, 0 on success.
    """
    parser = argparse.ArgumentParser(
        prog="python -m wsolkit.data generate",
        description="Write the embedded synthetic benchmark in the CUB, COCO and ILSVRC layouts.",
    )
    parser.add_argument("--out", default="data/synthetic", help="output directory (default: data/synthetic)")
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    args = parser.parse_args(argv)
    try:
        generate(args.out, profile=args.profile, seed=args.seed, layouts=args.layouts, log=print)
    except (SyntheticDataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
