"""Boxes from score maps in one sweep over the pixels, compiled with numba.

The boxes of :mod:`wsolkit.boxes.protocol` come from sweeps over the pixels instead of one
contour tracing per threshold. Pixels switch on in decreasing order of ``u8`` and a union-find (compiled with
numba) merges 8-connected components as they grow, keeping per component its bounding box,
first pixel, twice its window area and four times its share of the Euler number, which counts
its holes. Where a needed level has holes, a second sweep grows the 4-connected background in
increasing order and yields each hole with its box, first pixel and share of the windows. For
the largest component, bounds settle most levels with holes (a hole adds at least 2 to the
area around it; no area exceeds its rectangle of pixel centres); the rest get exact areas: a
hole belongs to the component holding the pixel left of the hole's first pixel, an island to
the hole holding the pixel left of its own, and window areas summed up that nesting are the
contour areas with holes filled. The foreground only changes between the 256 levels of
``u8``, so thresholds that truncate to the same level share one answer and the cost does not
grow with the number of thresholds. No OpenCV is needed;
:func:`~wsolkit.boxes.protocol.opencv_reference_boxes` is the reference's own per-threshold
OpenCV loop, kept as an independent cross-check (it needs ``opencv-python``):
``tests/test_boxes.py`` checks every box against it, and ``benchmarks/bench_boxes.py`` times
the two.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .protocol import (
    CONVENTIONS,
    MODES,
    BoxFormatError,
    ScoreMapError,
    _check_box_array,
    _check_choice,
    _check_maps,
    _check_thresholds,
    _check_values,
    _to_numpy,
)

__all__ = ["all_component_boxes", "best_iou_per_mode", "best_iou_per_threshold", "boxes_at_threshold",
           "largest_component_boxes"]


# ---------------------------------------------------------------------------------------------
# Compiled sweeps
#
# A map is processed on a grid padded by one pixel on every side: padded index
# i = (y + 1) * (W + 2) + (x + 1). Padding is never foreground and is the outside of every
# hole, which removes all bounds checks. The eight neighbours of a pixel are read into a ring
# mask, bit k for NW, N, NE, E, SE, S, SW, W (k = 0..7), and small tables turn that mask
# into the neighbour groups to merge and the change of the window counts; this keeps the
# sweep nearly free of unpredictable branches.
# ---------------------------------------------------------------------------------------------

# Twice the polygon area a 2x2 window adds to the contour of its component, by window mask
# (bit 1 top-left, 2 top-right, 4 bottom-left, 8 bottom-right): 3 pixels 1, 4 pixels 2.
_WIN_AREA2 = np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1, 2], dtype=np.int64)
# Four times its share of the Euler number (8-connected foreground, 4-connected background;
# Gray's quad counts): one pixel +1, three pixels -1, a diagonal pair -2.
_WIN_EULER4 = np.array([0, 1, 1, 0, 1, 0, -2, -1, 1, -2, 0, -1, 0, -1, -1, 0], dtype=np.int64)
# The four windows around a pixel as (ring positions of top-left, top-right, bottom-left,
# bottom-right; -1 is the pixel itself).
_WINDOWS = ((0, 1, 7, -1), (1, 2, -1, 3), (7, -1, 6, 5), (-1, 3, 5, 4))


def _neighbour_tables():
    """Per ring mask: groups of neighbours the centre joins and changes of window counts.

    Returns ``(fg_rep, bg_rep, fg_area2, fg_euler4, bg_hole2)``: ``fg_rep[m]``, ``bg_rep[m]``:
    ``(5,)`` int64, the number of groups then one ring position per group, for an
    8-connected foreground (neighbours touching each other are already one component) and a
    4-connected background (only N, E, S, W join; two of them are already joined when the
    corner between them is on). ``fg_area2[m]``, ``fg_euler4[m]``: change of twice the
    window area and of four times the Euler number when the centre turns on.
    ``bg_hole2[m]``: change of twice a hole's window share when the centre turns background
    (a window counts 1 with one hole pixel, 2 with more).
    """
    fg_rep = np.zeros((256, 5), dtype=np.int64)
    bg_rep = np.zeros((256, 5), dtype=np.int64)
    fg_area2 = np.zeros(256, dtype=np.int64)
    fg_euler4 = np.zeros(256, dtype=np.int64)
    bg_hole2 = np.zeros(256, dtype=np.int64)
    for m in range(256):
        on = [(m >> k) & 1 for k in range(8)]
        for rep, links, members in (
                (fg_rep, [(k, (k + 1) % 8) for k in range(8)]
                 + [(k, (k + 2) % 8) for k in (1, 3, 5, 7)], range(8)),
                (bg_rep, [(k, (k + 1) % 8) for k in range(8)], (1, 3, 5, 7))):
            label = list(range(8))
            for _ in range(8):  # enough passes to spread labels round the ring
                for a, b in links:
                    if on[a] and on[b]:
                        label[a] = label[b] = min(label[a], label[b])
            seen = []
            for k in members:
                if on[k] and label[k] not in [label[j] for j in seen]:
                    seen.append(k)
            rep[m, 0] = len(seen)
            rep[m, 1:1 + len(seen)] = seen
        for pos in _WINDOWS:
            before = sum((1 << b) * on[k] for b, k in enumerate(pos) if k >= 0)
            centre = 1 << pos.index(-1)
            fg_area2[m] += _WIN_AREA2[before | centre] - _WIN_AREA2[before]
            fg_euler4[m] += _WIN_EULER4[before | centre] - _WIN_EULER4[before]
            others = sum(on[k] for k in pos if k >= 0)
            bg_hole2[m] += 1 if others <= 1 else 0
    return fg_rep, bg_rep, fg_area2, fg_euler4, bg_hole2


_FG_REP, _BG_REP, _FG_AREA2, _FG_EULER4, _BG_HOLE2 = _neighbour_tables()

# Columns of the per-root attribute table.
_X0, _Y0, _X1, _Y1, _FIRST, _AREA2, _SIZE, _EULER4 = range(8)
_NATTR = 8
# Columns of a hole record.
_H_SLOT, _H_ROOT, _H_AREA2, _H_FIRST, _H_X0, _H_Y0, _H_X1, _H_Y1 = range(8)


@njit(cache=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True)
def _find_frozen(parent, i):
    while parent[i] != i:
        i = parent[i]
    return i


@njit(cache=True)
def _find_at(parent, link_slot, i, s):
    """Root of ``i`` in the background of slot ``s`` (links made at slots >= s)."""
    while parent[i] != i and link_slot[i] >= s:
        i = parent[i]
    return i


@njit(cache=True)
def _ring_mask(on, i, Wp):
    return (on[i - Wp - 1] | (on[i - Wp] << 1) | (on[i - Wp + 1] << 2) | (on[i + 1] << 3)
            | (on[i + Wp + 1] << 4) | (on[i + Wp] << 5) | (on[i + Wp - 1] << 6)
            | (on[i - 1] << 7))


@njit(cache=True)
def _iou1(x0, y0, x1, y1, gx0, gy0, gx1, gy1, e):
    iw = min(x1, gx1) - max(x0, gx0) + e
    ih = min(y1, gy1) - max(y0, gy0) + e
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (x1 - x0 + e) * (y1 - y0 + e) + (gx1 - gx0 + e) * (gy1 - gy0 + e) - inter
    if union <= 0:
        return 0.0
    return inter / union


@njit(cache=True)
def _best_iou_box(x0, y0, x1, y1, gt, g0, g1, e):
    """Best IoU of the float64 box ``[x0, y0, x1, y1]`` with ``gt[g0:g1]``."""
    best = 0.0
    for g in range(g0, g1):
        v = _iou1(x0, y0, x1, y1, gt[g, 0], gt[g, 1], gt[g, 2], gt[g, 3], e)
        if v > best:
            best = v
    return best


@njit(cache=True)
def _grow(rec, nrec):
    if nrec < rec.shape[0]:
        return rec
    grown = np.empty((2 * rec.shape[0] + 64, rec.shape[1]), dtype=rec.dtype)
    grown[:nrec] = rec[:nrec]
    return grown


@njit(cache=True)
def _live_remove(live, pos, nlive, r):
    k = pos[r]
    last = live[nlive - 1]
    live[k] = last
    pos[last] = k
    return nlive - 1


@njit(cache=True)
def _new_component(attr, live, pos, nlive, i, x, y):
    """Pixel ``i`` at ``(x, y)`` starts a component of its own; returns the new live count.

    Its size, window area and Euler share start at 0: the sweep adds the pixel's own share.
    """
    attr[i, _X0] = x
    attr[i, _Y0] = y
    attr[i, _X1] = x
    attr[i, _Y1] = y
    attr[i, _FIRST] = i
    attr[i, _AREA2] = 0
    attr[i, _SIZE] = 0
    attr[i, _EULER4] = 0
    live[nlive] = i
    pos[i] = nlive
    return nlive + 1


@njit(cache=True)
def _absorb(attr, r, b):
    """Root ``r`` takes over the box, first pixel and counts of root ``b``."""
    attr[r, _X0] = min(attr[r, _X0], attr[b, _X0])
    attr[r, _Y0] = min(attr[r, _Y0], attr[b, _Y0])
    attr[r, _X1] = max(attr[r, _X1], attr[b, _X1])
    attr[r, _Y1] = max(attr[r, _Y1], attr[b, _Y1])
    attr[r, _FIRST] = min(attr[r, _FIRST], attr[b, _FIRST])
    attr[r, _AREA2] += attr[b, _AREA2]
    attr[r, _SIZE] += attr[b, _SIZE]
    attr[r, _EULER4] += attr[b, _EULER4]


@njit(cache=True)
def _add_pixel_box(attr, r, i, x, y):
    """Root ``r``'s box and first pixel grow to pixel ``i`` at ``(x, y)``."""
    attr[r, _X0] = min(attr[r, _X0], x)
    attr[r, _Y0] = min(attr[r, _Y0], y)
    attr[r, _X1] = max(attr[r, _X1], x)
    attr[r, _Y1] = max(attr[r, _Y1], y)
    attr[r, _FIRST] = min(attr[r, _FIRST], i)


@njit(cache=True)
def _hole_sweep(order, ox, oy, cnt, need, H, W, record, gt, g0, g1, out_iou,
                parent, link_slot, hstart, hend):
    """Sweeps the background (4-connected) as it grows and reports its holes.

    The background of slot ``s`` is ``order[cnt[s]:]``; slots are visited from the last
    (empty background) down to the first needed one (``need`` must hold one). Holes are
    background components not joined to the padding. At each needed slot every hole's box
    (its pixels' box grown by one, clipped like the reference) raises ``out_iou[s]`` when
    ground truth is given.

    Args:
        order, ox, oy, cnt, need, H, W, gt, g0, g1: as for :func:`_fg_sweep`.
        record: keep a record per hole and needed slot (and freeze the union-find so that
            :func:`_find_at` can ask for the background of any slot afterwards).
        parent, link_slot: ``(npad,)`` int32 work arrays, left as the frozen union-find.
        hstart, hend: ``(S,)`` int64, filled with each slot's range of records.

    Returns:
        ``(R, 8)`` int64 hole records (columns ``_H_*``); empty unless ``record``.
    """
    Wp = W + 2
    npad = (H + 2) * Wp
    ring = np.array((-Wp - 1, -Wp, -Wp + 1, 1, Wp + 1, Wp, Wp - 1, -1))
    # The padding is background from the start: the outside, rooted at padding pixel 0.
    bg = np.ones(npad, dtype=np.uint8)
    parent[:] = 0
    link_slot[:] = cnt.shape[0]
    for y in range(1, H + 1):
        bg[y * Wp + 1:y * Wp + W + 1] = 0
    attr = np.empty((npad, _NATTR), dtype=np.int32)
    attr[0, _SIZE] = npad
    live = np.empty(H * W, dtype=np.int32)
    pos = np.empty(npad, dtype=np.int32)
    rec = np.empty((0, 8), dtype=np.int64)
    nrec = 0
    nlive = 0
    lowest = 0
    while not need[lowest]:
        lowest += 1
    j = order.shape[0]
    for s in range(cnt.shape[0] - 1, lowest - 1, -1):
        while j > cnt[s]:
            j -= 1
            i = order[j]
            x = ox[j]
            y = oy[j]
            m = _ring_mask(bg, i, Wp)
            bg[i] = 1
            nrep = _BG_REP[m, 0]
            if nrep == 0:
                r = i
                nlive = _new_component(attr, live, pos, nlive, i, x, y)
            else:
                if record:
                    r = _find_frozen(parent, i + ring[_BG_REP[m, 1]])
                else:
                    r = _find(parent, i + ring[_BG_REP[m, 1]])
                for k in range(2, nrep + 1):
                    if record:
                        b = _find_frozen(parent, i + ring[_BG_REP[m, k]])
                    else:
                        b = _find(parent, i + ring[_BG_REP[m, k]])
                    if b == r:
                        continue
                    if b == 0 or (r != 0 and attr[b, _SIZE] > attr[r, _SIZE]):
                        r, b = b, r
                    parent[b] = r
                    link_slot[b] = s
                    if r != 0:
                        _absorb(attr, r, b)
                    nlive = _live_remove(live, pos, nlive, b)
                if r != 0:
                    _add_pixel_box(attr, r, i, x, y)
            parent[i] = r
            link_slot[i] = s
            if r != 0:
                attr[r, _AREA2] += _BG_HOLE2[m]
                attr[r, _SIZE] += 1
        hstart[s] = nrec
        if need[s]:
            best = out_iou[s]
            for k in range(nlive):
                r = live[k]
                bx0 = attr[r, _X0] - 1
                by0 = attr[r, _Y0] - 1
                bx1 = min(attr[r, _X1] + 2, W - 1)
                by1 = min(attr[r, _Y1] + 2, H - 1)
                if record:
                    rec = _grow(rec, nrec)
                    rec[nrec, _H_SLOT] = s
                    rec[nrec, _H_ROOT] = r
                    rec[nrec, _H_AREA2] = attr[r, _AREA2]
                    rec[nrec, _H_FIRST] = attr[r, _FIRST]
                    rec[nrec, _H_X0] = bx0
                    rec[nrec, _H_Y0] = by0
                    rec[nrec, _H_X1] = bx1
                    rec[nrec, _H_Y1] = by1
                    nrec += 1
                if g1 > g0:
                    v = _best_iou_box(float(bx0), float(by0), float(bx1), float(by1),
                                      gt, g0, g1, 1.0)
                    if v > best:
                        best = v
            out_iou[s] = best
        hend[s] = nrec
    return rec[:nrec]


@njit(cache=True)
def _fg_sweep(order, ox, oy, cnt, need, H, W, reference, all_mode, gt, g0, g1, want_rec,
              out_box, out_iou, out_holes, holes, hstart, hend, bg_parent, bg_link):
    """Sweeps the foreground as it grows and answers every needed slot.

    Args:
        order, ox, oy: ``(H * W,)`` padded pixel indices (int64), strongest first, and their
            image coordinates (int32).
        cnt: ``(S,)`` int64, number of leading pixels of ``order`` that are foreground at
            slot ``s`` (non-decreasing).
        need: ``(S,)`` bool, slots to answer.
        reference: True for the reference rules (contour areas with holes filled, clipped
            inclusive boxes), False for pixel counts and exclusive boxes.
        all_mode: every component instead of the largest.
        gt, g0, g1: ground-truth rows ``gt[g0:g1]`` (float64 ``(G, 4)``), used if g1 > g0.
        want_rec: collect ``[slot, x0, y0, x1, y1]`` rows of all components.
        out_box: ``(S, 4)`` int64, largest box per slot (largest mode).
        out_iou: ``(S,)`` float64, best IoU per slot, raised (all mode) or set (largest).
        out_holes: ``(S,)`` int64, number of holes per needed slot (reference rules, from the
            Euler number); -1 where the largest component is left open (see below).
        holes, hstart, hend, bg_parent, bg_link: hole records and frozen background
            union-find from :func:`_hole_sweep`. In reference largest mode a slot with holes
            and no records is settled by bounds when it can be (a hole adds at least 2 to the
            area around it; no area exceeds its rectangle of pixel centres), else left open;
            a slot with records gets the exact areas.

    Returns:
        ``(R, 5)`` int64 records (empty unless ``want_rec``).
    """
    Wp = W + 2
    npad = (H + 2) * Wp
    ring = np.array((-Wp - 1, -Wp, -Wp + 1, 1, Wp + 1, Wp, Wp - 1, -1))
    on = np.zeros(npad, dtype=np.uint8)
    parent = np.empty(npad, dtype=np.int32)
    attr = np.empty((npad, _NATTR), dtype=np.int32)
    live = np.empty(H * W, dtype=np.int32)
    pos = np.empty(npad, dtype=np.int32)
    rec = np.empty((0, 5), dtype=np.int64)
    nrec = 0
    nlive = 0
    euler4 = 0
    e = 1.0 if reference else 0.0
    # Work arrays of the hole tree (reference largest mode, slots with holes).
    tot = np.empty(0, dtype=np.int64)
    up = np.empty(0, dtype=np.int32)
    hole_of = np.empty(0, dtype=np.int32)
    hole_fg = np.empty(0, dtype=np.int32)
    if reference and not all_mode and holes.shape[0] > 0:
        tot = np.empty(npad, dtype=np.int64)
        up = np.empty(npad, dtype=np.int32)
        hole_of = np.full(npad, -1, dtype=np.int32)
        hole_fg = np.empty(holes.shape[0], dtype=np.int32)
    j = 0
    for s in range(cnt.shape[0]):
        while j < cnt[s]:
            i = order[j]
            x = ox[j]
            y = oy[j]
            j += 1
            m = _ring_mask(on, i, Wp)
            on[i] = 1
            nrep = _FG_REP[m, 0]
            if nrep == 0:
                r = i
                nlive = _new_component(attr, live, pos, nlive, i, x, y)
            else:
                r = _find(parent, i + ring[_FG_REP[m, 1]])
                for k in range(2, nrep + 1):
                    b = _find(parent, i + ring[_FG_REP[m, k]])
                    if b == r:
                        continue
                    if attr[b, _SIZE] > attr[r, _SIZE]:
                        r, b = b, r
                    parent[b] = r
                    _absorb(attr, r, b)
                    nlive = _live_remove(live, pos, nlive, b)
                _add_pixel_box(attr, r, i, x, y)
            parent[i] = r
            attr[r, _SIZE] += 1
            attr[r, _AREA2] += _FG_AREA2[m]
            attr[r, _EULER4] += _FG_EULER4[m]
            euler4 += _FG_EULER4[m]
        if not need[s]:
            continue
        # Holes = components - Euler number.
        nholes = nlive - euler4 // 4 if reference else 0
        out_holes[s] = nholes
        if nlive == 0:
            for c in range(4):
                out_box[s, c] = 0
            if want_rec:
                rec = _grow(rec, nrec)
                rec[nrec, 0] = s
                for c in range(1, 5):
                    rec[nrec, c] = 0
                nrec += 1
            if g1 > g0:
                out_iou[s] = max(out_iou[s], _best_iou_box(0.0, 0.0, 0.0, 0.0, gt, g0, g1, e))
            continue
        if all_mode:
            best = out_iou[s]
            for k in range(nlive):
                r = live[k]
                bx0 = attr[r, _X0]
                by0 = attr[r, _Y0]
                if reference:
                    bx1 = min(attr[r, _X1] + 1, W - 1)
                    by1 = min(attr[r, _Y1] + 1, H - 1)
                else:
                    bx1 = attr[r, _X1] + 1
                    by1 = attr[r, _Y1] + 1
                if want_rec:
                    rec = _grow(rec, nrec)
                    rec[nrec, 0] = s
                    rec[nrec, 1] = bx0
                    rec[nrec, 2] = by0
                    rec[nrec, 3] = bx1
                    rec[nrec, 4] = by1
                    nrec += 1
                if g1 > g0:
                    v = _best_iou_box(float(bx0), float(by0), float(bx1), float(by1),
                                      gt, g0, g1, e)
                    if v > best:
                        best = v
            out_iou[s] = best
            continue
        xb = -1
        if not reference:
            # Largest pixel count; ties to the first component in raster order.
            for k in range(nlive):
                r = live[k]
                if xb < 0 or attr[r, _SIZE] > attr[xb, _SIZE] or (
                        attr[r, _SIZE] == attr[xb, _SIZE] and attr[r, _FIRST] < attr[xb, _FIRST]):
                    xb = r
            bx1 = attr[xb, _X1] + 1
            by1 = attr[xb, _Y1] + 1
        elif hend[s] == hstart[s]:
            # Key: (lower bound of twice the contour area, first pixel), ties to the later
            # first pixel. Exact without holes; a hole adds at least 4 (four windows of 1/2).
            xlb = 0
            for k in range(nlive):
                r = live[k]
                lb = attr[r, _AREA2] + (4 - attr[r, _EULER4])
                if xb < 0 or lb > xlb or (lb == xlb and attr[r, _FIRST] > attr[xb, _FIRST]):
                    xb = r
                    xlb = lb
            if nholes > 0:
                # Settled when no other component can reach it, even at its upper bound.
                for k in range(nlive):
                    r = live[k]
                    if r == xb:
                        continue
                    if attr[r, _EULER4] == 4:
                        ub = attr[r, _AREA2]
                    else:
                        ub = 2 * (attr[r, _X1] - attr[r, _X0]) * (attr[r, _Y1] - attr[r, _Y0])
                    if ub > xlb or (ub == xlb and attr[r, _FIRST] > attr[xb, _FIRST]):
                        out_holes[s] = -1
                        break
                if out_holes[s] < 0:
                    continue
            bx1 = min(attr[xb, _X1] + 1, W - 1)
            by1 = min(attr[xb, _Y1] + 1, H - 1)
        else:
            # Holes fill in: a component's contour area is its own window area plus that of
            # every hole and island nested in it. A hole's parent holds the pixel left of the
            # hole's first pixel; an island's parent hole holds the pixel left of its own.
            h0 = hstart[s]
            h1 = hend[s]
            hx0 = W
            hy0 = H
            hx1 = -1
            hy1 = -1
            for h in range(h0, h1):
                hole_of[holes[h, _H_ROOT]] = h
                hole_fg[h] = _find(parent, holes[h, _H_FIRST] - 1)
                hx0 = min(hx0, holes[h, _H_X0])
                hy0 = min(hy0, holes[h, _H_Y0])
                hx1 = max(hx1, holes[h, _H_X1])
                hy1 = max(hy1, holes[h, _H_Y1])
            for k in range(nlive):
                r = live[k]
                tot[r] = attr[r, _AREA2]
                up[r] = -1
                # Only a component inside the holes' hull can be an island.
                if (attr[r, _X0] > hx0 and attr[r, _Y0] > hy0 and attr[r, _X1] < hx1
                        and attr[r, _Y1] < hy1):
                    b = _find_at(bg_parent, bg_link, attr[r, _FIRST] - 1, s)
                    if b != 0:
                        up[r] = hole_of[b]
            for h in range(h0, h1):
                v = holes[h, _H_AREA2]
                g = h
                while g >= 0:
                    c = hole_fg[g]
                    tot[c] += v
                    g = up[c]
            for k in range(nlive):
                r = live[k]
                g = up[r]
                while g >= 0:
                    c = hole_fg[g]
                    tot[c] += attr[r, _AREA2]
                    g = up[c]
            for k in range(nlive):
                r = live[k]
                if xb < 0 or tot[r] > tot[xb] or (tot[r] == tot[xb]
                                                  and attr[r, _FIRST] > attr[xb, _FIRST]):
                    xb = r
            for h in range(h0, h1):
                hole_of[holes[h, _H_ROOT]] = -1
            bx1 = min(attr[xb, _X1] + 1, W - 1)
            by1 = min(attr[xb, _Y1] + 1, H - 1)
        out_box[s, 0] = attr[xb, _X0]
        out_box[s, 1] = attr[xb, _Y0]
        out_box[s, 2] = bx1
        out_box[s, 3] = by1
        if g1 > g0:
            out_iou[s] = _best_iou_box(float(out_box[s, 0]), float(out_box[s, 1]), float(bx1),
                                       float(by1), gt, g0, g1, e)
    return rec[:nrec]


@njit(cache=True)
def _level_order(u8, H, W):
    """Pixels sorted by decreasing ``u8`` (counting sort): padded indices ``order`` and
    coordinates ``ox``, ``oy`` (int32), and, for every level ``L = 255 - s``, the number
    ``cnt[s]`` of pixels with ``u8 > L``."""
    Wp = W + 2
    hist = np.zeros(256, dtype=np.int64)
    for y in range(H):
        for x in range(W):
            hist[u8[y, x]] += 1
    cnt = np.zeros(257, dtype=np.int64)
    start = np.empty(256, dtype=np.int64)
    acc = 0
    for v in range(255, -1, -1):
        start[v] = acc
        acc += hist[v]
        cnt[256 - v] = acc
    order = np.empty(H * W, dtype=np.int64)
    ox = np.empty(H * W, dtype=np.int32)
    oy = np.empty(H * W, dtype=np.int32)
    for y in range(H):
        for x in range(W):
            v = u8[y, x]
            k = start[v]
            order[k] = (y + 1) * Wp + x + 1
            ox[k] = x
            oy[k] = y
            start[v] = k + 1
    return order, ox, oy, cnt


@njit(cache=True)
def _reference_one(u8, need, gt, g0, g1, all_mode, want_rec, out_box, out_iou):
    """Reference rules for one ``(H, W)`` uint8 map; slot ``s`` is level ``255 - s``.

    The foreground sweep answers every slot without holes. Hole boxes (all mode) or exact
    areas where bounds cannot pick the largest component come from the background sweep,
    run only when some needed slot has holes; the exact areas take a second foreground sweep
    up to the last slot left open.

    Returns ``(R, 5)`` records ``[slot, x0, y0, x1, y1]`` of every contour (``want_rec``).
    """
    H, W = u8.shape
    npad = (H + 2) * (W + 2)
    order, ox, oy, cnt = _level_order(u8, H, W)
    S = cnt.shape[0]
    hstart = np.zeros(S, dtype=np.int64)
    hend = np.zeros(S, dtype=np.int64)
    bg_parent = np.empty(npad, dtype=np.int32)
    bg_link = np.empty(npad, dtype=np.int32)
    nholes = np.zeros(S, dtype=np.int64)
    # Flags go in as np.bool_ values, not literals, so that every caller shares one
    # compiled version of each sweep.
    yes = np.bool_(True)
    no = np.bool_(False)
    rec = _fg_sweep(order, ox, oy, cnt, need, H, W, yes, all_mode, gt, g0, g1, want_rec,
                    out_box, out_iou, nholes, np.empty((0, 8), dtype=np.int64), hstart, hend,
                    bg_parent, bg_link)
    if all_mode:
        todo = need & (nholes > 0)
        if not todo.any():
            return rec
        holes = _hole_sweep(order, ox, oy, cnt, todo, H, W, want_rec, gt, g0, g1, out_iou,
                            bg_parent, bg_link, hstart, hend)
        if not want_rec or holes.shape[0] == 0:
            return rec
        both = np.empty((rec.shape[0] + holes.shape[0], 5), dtype=np.int64)
        both[:rec.shape[0]] = rec
        both[rec.shape[0]:, 0] = holes[:, _H_SLOT]
        both[rec.shape[0]:, 1:] = holes[:, _H_X0:_H_Y1 + 1]
        return both
    todo = nholes < 0
    if not todo.any():
        return rec
    last = np.nonzero(todo)[0][-1]
    holes = _hole_sweep(order, ox, oy, cnt, todo, H, W, yes, gt, g0, g0, out_iou,
                        bg_parent, bg_link, hstart, hend)
    _fg_sweep(order, ox, oy, cnt[:last + 1], todo[:last + 1], H, W, yes, no, gt, g0, g1,
              no, out_box, out_iou, nholes, holes, hstart, hend, bg_parent, bg_link)
    return rec


@njit(cache=True, parallel=True)
def _reference_batch(u8, need, gt, goff, all_mode, out_box, out_iou):
    for k in prange(u8.shape[0]):
        _reference_one(u8[k], need[k], gt, goff[k], goff[k + 1], all_mode, np.bool_(False),
                       out_box[k], out_iou[k])


@njit(cache=True)
def _pixel_one(vals, tdesc, gt, g0, g1, all_mode, want_rec, out_box, out_iou):
    """Pixel convention for one map: ``tdesc`` are thresholds sorted in decreasing order."""
    H, W = vals.shape
    Wp = W + 2
    flat = vals.ravel()
    srt = np.argsort(flat)[::-1]
    order = np.empty(H * W, dtype=np.int64)
    ox = np.empty(H * W, dtype=np.int32)
    oy = np.empty(H * W, dtype=np.int32)
    for j in range(H * W):
        y = srt[j] // W
        x = srt[j] - y * W
        order[j] = (y + 1) * Wp + x + 1
        ox[j] = x
        oy[j] = y
    mx = flat[srt[0]]
    S = tdesc.shape[0]
    cnt = np.empty(S, dtype=np.int64)
    j = 0
    for s in range(S):
        thr = tdesc[s] * mx
        while j < H * W and flat[srt[j]] >= thr:
            j += 1
        cnt[s] = j
    need = np.ones(S, dtype=np.bool_)
    none = np.zeros(S, dtype=np.int64)
    return _fg_sweep(order, ox, oy, cnt, need, H, W, np.bool_(False), all_mode, gt, g0, g1,
                     want_rec, out_box, out_iou, none, np.empty((0, 8), dtype=np.int64), none, none,
                     np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int32))


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _levels(top: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Slot ``255 - L`` of every (map, threshold), ``L = int(t * u8.max())`` clipped to
    ``[-1, 255]`` (below 0 every pixel is foreground, from 255 none is); ``(N, T)`` int64."""
    lev = np.trunc(thresholds[None, :] * top.astype(np.float64)[:, None])
    return (255 - np.clip(lev, -1, 255)).astype(np.int64)


def _gt_table(gt_boxes, n: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(gt_boxes) != n:
        raise BoxFormatError(
            f"{where}: {len(gt_boxes)} ground-truth box sets for {n} maps; give one (G_i, 4) "
            "array per map.")
    rows = []
    for k, b in enumerate(gt_boxes):
        arr = _check_box_array(b, f"{where}: gt_boxes[{k}]")
        if arr.shape[0] == 0:
            raise BoxFormatError(
                f"{where}: gt_boxes[{k}] is empty; every map needs at least one ground-truth "
                "box (drop images without boxes before scoring).")
        rows.append(arr)
    off = np.zeros(n + 1, dtype=np.int64)
    off[1:] = np.cumsum([r.shape[0] for r in rows])
    gt = np.concatenate(rows) if rows else np.zeros((0, 4))
    return np.ascontiguousarray(gt, dtype=np.float64), off


@njit(cache=True)
def _quantise_batch(maps, scale, u8, top):
    """``u8 = (maps * scale).astype(uint8)`` and its maxima; returns the number of maps
    holding a value outside ``[0, 1]`` or NaN."""
    bad = np.zeros(maps.shape[0], dtype=np.int64)
    for k in range(maps.shape[0]):
        best = 0
        for y in range(maps.shape[1]):
            for x in range(maps.shape[2]):
                v = maps[k, y, x]
                if not (v >= 0 and v <= 1):
                    bad[k] = 1
                    continue
                q = np.uint8(v * scale)
                u8[k, y, x] = q
                best = max(best, q)
        top[k] = best
    return bad.sum()


def _quantise(maps: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Checks the values and quantises like the reference, multiplying in the maps' own
    dtype and truncating. Returns ``u8`` ``(N, H, W)`` and its per-map maxima ``(N,)``."""
    if maps.dtype in (np.float32, np.float64):
        u8 = np.empty(maps.shape, dtype=np.uint8)
        top = np.empty(maps.shape[0], dtype=np.uint8)
        if maps.shape[0] and _quantise_batch(maps, maps.dtype.type(255), u8, top):
            _check_values(maps, where)
        return u8, top
    _check_values(maps, where)
    u8 = np.ascontiguousarray((maps * maps.dtype.type(255)).astype(np.uint8))
    return u8, u8.reshape(u8.shape[0], -1).max(axis=1, initial=0)


def _run(maps, thresholds, gt_boxes, mode, convention, where):
    _check_choice(mode, MODES, "mode", where)
    _check_choice(convention, CONVENTIONS, "convention", where)
    arr, single = _check_maps(maps, where, values=convention != "reference")
    t = _check_thresholds(thresholds, where)
    n = arr.shape[0]
    if gt_boxes is None:
        gt, goff = np.zeros((0, 4)), np.zeros(n + 1, dtype=np.int64)
    else:
        gt, goff = _gt_table(gt_boxes, n, where)
    all_mode = mode == "all"
    if convention == "reference":
        u8, top = _quantise(arr, where)
        slots = _levels(top, t)
        need = np.zeros((n, 257), dtype=np.bool_)
        np.put_along_axis(need, slots, True, axis=1)
        out_box = np.zeros((n, 257, 4), dtype=np.int64)
        out_iou = np.zeros((n, 257), dtype=np.float64)
        if n:
            _reference_batch(u8, need, gt, goff, all_mode, out_box, out_iou)
    else:
        # One slot per distinct threshold, strongest first.
        tdesc, inv = np.unique(-t, return_inverse=True)
        tdesc = -tdesc
        slots = np.broadcast_to(inv.reshape(1, -1), (n, t.size))
        out_box = np.zeros((n, tdesc.size, 4), dtype=np.int64)
        out_iou = np.zeros((n, tdesc.size), dtype=np.float64)
        vals = np.ascontiguousarray(arr, dtype=np.float64)
        for k in range(n):  # the alternative convention is not a hot path: one map at a time
            _pixel_one(vals[k], tdesc, gt, goff[k], goff[k + 1], all_mode, False, out_box[k],
                       out_iou[k])
    return slots, out_box, out_iou, single


def largest_component_boxes(maps, thresholds, convention: str = "reference") -> np.ndarray:
    """Box of the largest component of every map at every threshold (MaxBoxAcc).

    Args:
        maps: ``(N, H, W)`` or ``(H, W)`` floating score maps in ``[0, 1]`` (numpy or torch;
            quantised in their own dtype, like the reference, which uses float64).
        thresholds: ``(T,)`` float, e.g. :func:`binarize_thresholds`.
        convention: ``"reference"`` (the protocol of the module docstring) or ``"pixel"``.

    Returns:
        ``(N, T, 4)`` int64 ``[x1, y1, x2, y2]`` (``(T, 4)`` for one map); ``[0, 0, 0, 0]`` where
        nothing lies above the threshold.
    """
    slots, out_box, _, single = _run(maps, thresholds, None, "largest", convention,
                                     "largest_component_boxes")
    res = np.take_along_axis(out_box, slots[:, :, None], axis=1)
    return res[0] if single else res


def _all_records(maps, thresholds, convention, where):
    """Per map, ``(R, 5)`` rows ``[slot, x1, y1, x2, y2]`` of every box, plus the slots."""
    _check_choice(convention, CONVENTIONS, "convention", where)
    arr, single = _check_maps(maps, where, values=convention != "reference")
    t = _check_thresholds(thresholds, where)
    n = arr.shape[0]
    gt = np.zeros((0, 4))
    recs = []
    if convention == "reference":
        u8, top = _quantise(arr, where)
        slots = _levels(top, t)
        for k in range(n):
            need = np.zeros(257, dtype=np.bool_)
            need[slots[k]] = True
            recs.append(_reference_one(u8[k], need, gt, 0, 0, True, True,
                                       np.zeros((257, 4), np.int64), np.zeros(257)))
    else:
        tdesc, inv = np.unique(-t, return_inverse=True)
        tdesc = -tdesc
        slots = np.broadcast_to(inv.reshape(1, -1), (n, t.size))
        vals = np.ascontiguousarray(arr, dtype=np.float64)
        for k in range(n):
            recs.append(_pixel_one(vals[k], tdesc, gt, 0, 0, True, True,
                                   np.zeros((tdesc.size, 4), np.int64), np.zeros(tdesc.size)))
    return recs, slots, single


def all_component_boxes(maps, thresholds, convention: str = "reference"):
    """Boxes of every contour of every map at every threshold (MaxBoxAccV2).

    Args:
        maps: ``(N, H, W)`` or ``(H, W)`` floating score maps in ``[0, 1]``.
        thresholds: ``(T,)`` float.
        convention: ``"reference"`` (outer and hole contours) or ``"pixel"`` (components).

    Returns:
        ``N`` lists (one list for one ``(H, W)`` map) of ``T`` int64 arrays ``(K, 4)``,
        ``K >= 1``, rows sorted lexicographically (the reference keeps OpenCV's order, which no
        score depends on); a single ``[0, 0, 0, 0]`` row where nothing lies above the threshold.
    """
    recs, slots, single = _all_records(maps, thresholds, convention, "all_component_boxes")
    out = []
    for rec, sl in zip(recs, slots):
        rec = rec[np.lexsort(rec[:, ::-1].T)]
        bounds = np.searchsorted(rec[:, 0], np.arange(rec[:, 0].max(initial=0) + 2))
        out.append([rec[bounds[s]:bounds[s + 1], 1:] for s in sl])
    return out[0] if single else out


def best_iou_per_threshold(maps, gt_boxes, thresholds, mode: str = "largest",
                           convention: str = "reference") -> np.ndarray:
    """Best IoU between the predicted boxes and the ground truth, per map and threshold.

    This is the whole box step of MaxBoxAcc (``mode="largest"``) and MaxBoxAccV2
    (``mode="all"``): a (map, threshold) pair is correct at IoU ``delta`` when its value is
    ``>= delta``.

    Args:
        maps: ``(N, H, W)`` floating score maps in ``[0, 1]`` (or one ``(H, W)`` map).
        gt_boxes: ``N`` arrays ``(G_i, 4)``, ``G_i >= 1``, ``[x1, y1, x2, y2]`` in score-map
            pixels; for the reference convention rescaled with :func:`rescale_boxes`.
        thresholds: ``(T,)`` float, e.g. :func:`binarize_thresholds`.
        mode: ``"largest"`` or ``"all"``.
        convention: ``"reference"`` (inclusive IoU) or ``"pixel"`` (exclusive IoU).

    Returns:
        ``(N, T)`` float64 (``(T,)`` for one map), the maximum IoU over predicted x
        ground-truth boxes.
    """
    where = "best_iou_per_threshold"
    maps = _to_numpy(maps, f"{where}: maps", ScoreMapError)
    if maps.ndim == 2 and len(gt_boxes) and np.ndim(gt_boxes[0]) <= 1:
        gt_boxes = [gt_boxes]  # one map, one (G, 4) box array
    slots, _, out_iou, single = _run(maps, thresholds, gt_boxes, mode, convention, where)
    res = np.take_along_axis(out_iou, slots, axis=1)
    return res[0] if single else res


def best_iou_per_mode(maps, gt_boxes, thresholds, modes=MODES) -> dict[str, np.ndarray]:
    """:func:`best_iou_per_threshold` of the reference convention for several contour modes at
    once: the maps are checked and quantised, and the ground truth tabled, once for all modes
    (an evaluator that reports MaxBoxAcc and MaxBoxAccV2 needs both).

    Returns:
        ``{mode: (N, T) float64}`` (``(T,)`` for one map), each equal to
        ``best_iou_per_threshold(maps, gt_boxes, thresholds, mode=mode)``.
    """
    where = "best_iou_per_mode"
    for mode in modes:
        _check_choice(mode, MODES, "mode", where)
    maps = _to_numpy(maps, f"{where}: maps", ScoreMapError)
    if maps.ndim == 2 and len(gt_boxes) and np.ndim(gt_boxes[0]) <= 1:
        gt_boxes = [gt_boxes]  # one map, one (G, 4) box array
    arr, single = _check_maps(maps, where, values=False)
    t = _check_thresholds(thresholds, where)
    n = arr.shape[0]
    gt, goff = _gt_table(gt_boxes, n, where)
    u8, top = _quantise(arr, where)
    slots = _levels(top, t)
    need = np.zeros((n, 257), dtype=np.bool_)
    np.put_along_axis(need, slots, True, axis=1)
    out = {}
    for mode in modes:
        out_box = np.zeros((n, 257, 4), dtype=np.int64)
        out_iou = np.zeros((n, 257), dtype=np.float64)
        if n:
            _reference_batch(u8, need, gt, goff, mode == "all", out_box, out_iou)
        res = np.take_along_axis(out_iou, slots, axis=1)
        out[mode] = res[0] if single else res
    return out


def boxes_at_threshold(score_map, threshold: float, mode: str = "largest",
                       convention: str = "reference") -> np.ndarray:
    """Boxes of one map at one threshold, e.g. for figures.

    Args:
        score_map: ``(H, W)`` floating score map in ``[0, 1]``.
        threshold: float.
        mode: ``"largest"`` (one box) or ``"all"`` (every contour).
        convention: ``"reference"`` or ``"pixel"``.

    Returns:
        ``(K, 4)`` int64 ``[x1, y1, x2, y2]``; ``K = 1`` in largest mode.
    """
    _check_choice(mode, MODES, "mode", "boxes_at_threshold")
    arr = _to_numpy(score_map, "boxes_at_threshold: score_map", ScoreMapError)
    if arr.ndim != 2:
        raise ScoreMapError(
            f"boxes_at_threshold: score_map has shape {arr.shape}; expected one (H, W) map.")
    t = np.array([threshold], dtype=np.float64)
    if mode == "largest":
        return largest_component_boxes(arr, t, convention)
    return all_component_boxes(arr, t, convention)[0]
