"""The wsoleval threshold sweep: boxes at every threshold of the grid, computed fast.

What is computed (the definition; :mod:`wsolbench.evaluation.reference` does it literally)
------------------------------------------------------------------------------------------

The map is min-max normalized (:func:`normalize_minmax`), turned into ``u = (map * 255)``
as ``uint8`` (truncation), and for every threshold ``t`` of the grid
``numpy.arange(0, 1, cam_curve_interval)`` the binary map ``u > int(t * max(u))`` is traced
with ``cv2.findContours`` (RETR_TREE, CHAIN_APPROX_SIMPLE). At each threshold we keep the
box of the largest contour and the boxes of all contours (conventions in
:mod:`wsolbench.evaluation.boxes`; no contour -> the single box ``[0, 0, 0, 0]``).

How it is made fast (same boxes, bit for bit)
---------------------------------------------

1. *Distinct binary maps.* ``u > th`` only changes when ``th`` passes a value that occurs in
   ``u``: all grid thresholds are mapped to the smallest occurring value ``v > th`` and
   ``u > th`` equals ``u >= v``. The 1000 thresholds of the default grid collapse to at most
   256 "levels" (one per occurring value).
2. *Tracing a crop.* A level that must be traced is traced on the bounding rectangle of its
   foreground with ``offset=``; OpenCV pads the image with zeros internally, so contours
   (points and order) are the same as on the full map.
3. *Levels that need no tracing.* When the foreground of a level is a single 8-connected
   component without holes, OpenCV returns exactly one contour, its outer border, whose
   bounding rectangle is the bounding rectangle of the foreground (its extreme pixels are
   border pixels). That rectangle is known for every level at once from running row/column
   maxima. Two cheap certificates decide it without tracing:

   * components: every component of ``{u >= v}`` contains a regional maximum of ``u``
     (8-connected flat zone whose outside neighbours are all lower) of value ``>= v``. If a
     traced (or certified) level ``w >= v`` had one component, all maxima ``>= w`` lie in
     one component at ``v`` too, so ``#components(v) <= 1 + #{maxima with value in [v, w)}``.
     When that bound is 1, the level has one component.
   * holes: a hole (4-connected background component not touching the image border) at
     level ``v`` contains an interior regional minimum (4-connected flat zone, outside
     neighbours higher, not touching the border) of value ``< v``. If a level ``w <= v`` had
     no hole, ``#holes(v) <= #{interior minima with value in [w, v)}``; 0 -> no hole.

   A level is traced unless both certificates hold; every traced level feeds the exact
   count of its components/holes back into the bounds. Smooth maps (a few blobs) need only
   a handful of traced levels; very noisy maps fall back to tracing most levels.

The fast path is checked against the literal reference on random, noisy, quantized and
plateau-heavy maps in ``tests/evaluation/test_eval_sweep.py`` and by ``benchmarks/bench_eval.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_K8 = np.ones((3, 3), np.uint8)
_K4 = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_SPREAD_STEPS = 2
EMPTY_LEVEL = 256  # level key of an empty binary map (threshold >= max)


def threshold_grid(cam_curve_interval: float = 0.001) -> np.ndarray:
    """The threshold grid ``numpy.arange(0, 1, cam_curve_interval)`` (float64)."""
    return np.arange(0, 1, cam_curve_interval, dtype=np.float64)


def normalize_minmax(score_map: np.ndarray) -> np.ndarray:
    """Per-image min-max normalization to [0, 1]; a constant map becomes all zeros.

    float32 (and narrower) maps are normalized in float32, float64 maps in float64. The map
    must be finite (the evaluator rejects NaN/Inf before calling this).
    """
    m = np.asarray(score_map)
    dtype = np.result_type(m.dtype, np.float32)
    m = m.astype(dtype, copy=True)
    m -= m.min()
    peak = m.max()
    if peak > 0:
        m /= peak
    else:
        m[...] = 0
    return m


def to_uint8(normalized_map: np.ndarray) -> np.ndarray:
    """``(map * 255).astype(uint8)`` (truncation), C-contiguous."""
    return np.ascontiguousarray((normalized_map * 255).astype(np.uint8))


def grid_to_uint8_thresholds(grid: np.ndarray, max_value: int) -> np.ndarray:
    """``int(t * max_value)`` for every grid threshold ``t`` (int64)."""
    return (grid * float(max_value)).astype(np.int64)


@dataclass
class SweepBoxes:
    """Boxes of every level; ``level_of_threshold[k]`` is the level of grid threshold ``k``.

    ``largest[l]`` is the largest contour's box at level ``l`` (``[0,0,0,0]`` when empty).
    ``all_boxes[l]`` lists the boxes of all contours of each traced level ``l``; every other
    level has exactly one contour, so its only box is ``largest[l]``. ``traced`` counts the
    levels that needed ``cv2.findContours``.
    """

    level_of_threshold: np.ndarray  # (n_grid,) int
    largest: np.ndarray  # (n_levels, 4) int64
    all_boxes: dict  # level -> list of (x0, y0, x1, y1), traced levels only
    traced: int
    n_levels: int

    def boxes_of_level(self, level: int) -> list:
        got = self.all_boxes.get(level)
        return list(got) if got is not None else [tuple(int(v) for v in self.largest[level])]

    def per_threshold(self):
        """(largest box per grid threshold, list of all boxes per grid threshold) - for tests."""
        levels = self.level_of_threshold.tolist()
        largest = [tuple(int(v) for v in self.largest[i]) for i in levels]
        return largest, [self.boxes_of_level(i) for i in levels]


def _as_bool(mask255: np.ndarray) -> np.ndarray:
    """0/255 OpenCV mask -> numpy bool array (via a 0/1 uint8 view)."""
    return cv2.threshold(mask255, 0, 1, cv2.THRESH_BINARY)[1].view(np.bool_)


def _good_cluster_values(mask: np.ndarray, bad: np.ndarray, u: np.ndarray,
                         kernel: np.ndarray, connectivity: int) -> np.ndarray:
    """Values of the connected components ("clusters") of ``mask`` that contain no ``bad``
    pixel, sorted ascending (all pixels of a cluster share one value; masks are 0/255).

    To keep the labelling small, badness is first spread through ``mask`` for a few steps
    with ``kernel`` (the clusters' connectivity); what is left of a bad cluster is then
    adjacent to a spread pixel, which marks it, and the components are labelled only inside
    the bounding rectangle of what is left.
    """
    removed = bad
    n_removed = cv2.countNonZero(removed)
    converged = n_removed == 0
    for _ in range(_SPREAD_STEPS):
        if converged:
            break
        grown = cv2.bitwise_and(cv2.dilate(removed, kernel), mask)
        n_grown = cv2.countNonZero(grown)
        converged = n_grown == n_removed
        removed, n_removed = grown, n_grown
    rest = cv2.bitwise_and(mask, cv2.bitwise_not(removed))
    if cv2.countNonZero(rest) == 0:
        return np.zeros(0, np.int64)
    x, y, w, h = cv2.boundingRect(rest)
    rest = rest[y:y + h, x:x + w]
    ltype = cv2.CV_16U if w * h < 2 ** 16 else cv2.CV_32S  # more labels than pixels: never
    n, labels = cv2.connectedComponents(np.ascontiguousarray(rest), connectivity=connectivity,
                                        ltype=ltype)
    rb = _as_bool(rest)
    value = np.zeros(n, np.int64)
    value[labels[rb]] = u[y:y + h, x:x + w][rb]
    keep = np.ones(n, bool)
    keep[0] = False
    if not converged:
        frontier = cv2.bitwise_and(cv2.dilate(removed, kernel)[y:y + h, x:x + w], rest)
        keep[labels[_as_bool(frontier)]] = False
    return np.sort(value[keep])


def _regional_max_values(u: np.ndarray) -> np.ndarray:
    """Values (>= 1) of the regional maxima of ``u`` (8-connected flat zones whose outside
    8-neighbours are all lower), sorted ascending."""
    # pixels >= all their 8-neighbours, value >= 1 (value 0 never matters: levels are >= 1)
    mask = cv2.bitwise_and(cv2.compare(u, cv2.dilate(u, _K8), cv2.CMP_EQ),
                           cv2.threshold(u, 0, 255, cv2.THRESH_BINARY)[1])
    # 8-adjacent local-max pixels have equal values, so the components of ``mask`` are flat;
    # a component is a regional maximum unless one of its pixels has an equal-valued
    # neighbour outside ``mask`` (which has a higher neighbour). Non-mask pixels keep their
    # value, mask pixels become 0; a neighbourhood maximum equal to the pixel flags it.
    others = cv2.bitwise_and(u, cv2.bitwise_not(mask))
    bad = cv2.bitwise_and(cv2.compare(cv2.dilate(others, _K8), u, cv2.CMP_EQ), mask)
    return _good_cluster_values(mask, bad, u, _K8, 8)


def _interior_regional_min_values(u: np.ndarray) -> np.ndarray:
    """Values (<= 254) of the regional minima of ``u`` for 4-connectivity (flat zones whose
    outside 4-neighbours are all higher) that do not touch the image border, sorted."""
    # value 255 never bounds a hole (a hole at level v needs u < v <= 255), so 255 can mark
    # mask pixels in ``others`` below
    mask = cv2.bitwise_and(cv2.compare(u, cv2.erode(u, _K4), cv2.CMP_EQ),
                           cv2.threshold(u, 254, 255, cv2.THRESH_BINARY_INV)[1])
    others = cv2.bitwise_or(u, mask)
    bad = cv2.bitwise_and(cv2.compare(cv2.erode(others, _K4), u, cv2.CMP_EQ), mask)
    # clusters touching the image border cannot lie in a hole: their border pixels are bad
    bad[0, :] = mask[0, :]
    bad[-1, :] = mask[-1, :]
    bad[:, 0] = mask[:, 0]
    bad[:, -1] = mask[:, -1]
    return _good_cluster_values(mask, bad, u, _K4, 4)


def _outer_count(hierarchy, n: int) -> int:
    """Number of outer borders (even depth in the RETR_TREE hierarchy)."""
    parent = hierarchy[0][:, 3].tolist()
    outer = [False] * n
    count = 0
    for i, p in enumerate(parent):
        if p >= i:  # OpenCV lists parents first; if not, walk up the chain
            d, k = 0, i
            while parent[k] >= 0:
                k, d = parent[k], d + 1
            o = d % 2 == 0
        else:
            o = p < 0 or not outer[p]
        outer[i] = o
        count += o
    return count


def sweep_boxes(u: np.ndarray, grid: np.ndarray, *, certify: bool = True) -> SweepBoxes:
    """Boxes at every grid threshold of a ``uint8`` map (see the module docstring).

    ``certify=False`` traces every distinct level (still deduplicated and cropped).
    """
    u = np.ascontiguousarray(u, dtype=np.uint8)
    if u.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 map, got shape {u.shape}")
    H, W = u.shape
    th = grid_to_uint8_thresholds(grid, int(u.max()))
    hist = cv2.calcHist([u], [0], None, [256], [0, 256]).ravel()
    present = np.flatnonzero(hist)
    pos = np.searchsorted(present, th, side="right")
    key = np.where(pos < len(present), present[np.minimum(pos, len(present) - 1)], EMPTY_LEVEL)
    # keys are non-decreasing along the grid: unique by run starts
    new_level = np.empty(len(key), bool)
    new_level[:1] = True
    np.not_equal(key[1:], key[:-1], out=new_level[1:])
    levels = key[new_level]
    inv = np.cumsum(new_level) - 1
    n_levels = len(levels)
    m = int(np.count_nonzero(levels < EMPTY_LEVEL))  # non-empty levels come first
    vals = levels[:m]

    # bounding rectangle of the foreground {u >= v} of every level
    rowmax = u.max(axis=1)
    colmax = u.max(axis=0)
    fy0 = np.searchsorted(np.maximum.accumulate(rowmax), vals, "left")
    fy1 = H - 1 - np.searchsorted(np.maximum.accumulate(rowmax[::-1]), vals, "left")
    fx0 = np.searchsorted(np.maximum.accumulate(colmax), vals, "left")
    fx1 = W - 1 - np.searchsorted(np.maximum.accumulate(colmax[::-1]), vals, "left")
    fg_box = np.stack([fx0, fy0, np.minimum(fx1 + 1, W - 1), np.minimum(fy1 + 1, H - 1)],
                      axis=1).astype(np.int64)

    traced: dict[int, tuple] = {}
    ext = np.stack([fx0, fy0, fx1, fy1, vals], axis=1).tolist()  # python ints, per level
    W1, H1 = W - 1, H - 1
    retr, approx, threshold, find = (cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE, cv2.threshold,
                                     cv2.findContours)
    bounding_rect, contour_area = cv2.boundingRect, cv2.contourArea

    def trace(j: int):
        got = traced.get(j)
        if got is not None:
            return got
        x0, y0, x1, y1, v = ext[j]
        binary = threshold(u[y0:y1 + 1, x0:x1 + 1], v - 1, 1, cv2.THRESH_BINARY)[1]
        res = find(binary, retr, approx, offset=(x0, y0))
        contours, hierarchy = res[-2], res[-1]
        boxes = []
        best, best_area = 0, -1.0
        for i, c in enumerate(contours):
            bx, by, bw, bh = bounding_rect(c)
            boxes.append((bx, by, min(bx + bw, W1), min(by + bh, H1)))
            a = contour_area(c)
            if a > best_area:
                best, best_area = i, a
        n = len(contours)
        if n == 0:  # cannot happen for a non-empty level; keep the protocol's rule anyway
            got = ((0, 0, 0, 0), [(0, 0, 0, 0)], 0, 0)
        else:
            n_outer = 1 if n == 1 else _outer_count(hierarchy, n)
            got = (boxes[best], boxes, n_outer, n - n_outer)
        traced[j] = got
        return got

    if m:
        if certify:
            one_component = np.zeros(m, bool)
            # components: levels from the top down
            rmax = _regional_max_values(u)
            cnt_ge_a = len(rmax) - np.searchsorted(rmax, vals, "left")  # non-increasing in j
            run_lo = np.searchsorted(-cnt_ge_a, -cnt_ge_a, "left").tolist()
            cnt_ge = cnt_ge_a.tolist()
            anchor = None  # cnt_ge at the lowest level known to have one component
            j = m - 1
            while j >= 0:
                c = cnt_ge[j]
                bound = c if anchor is None else 1 + c - anchor
                if bound == 1:
                    lo = run_lo[j]
                    one_component[lo:j + 1] = True
                    anchor = c
                    j = lo - 1
                    continue
                if trace(j)[2] == 1:
                    anchor = c
                j -= 1
            # holes: levels from the bottom up
            rmin = _interior_regional_min_values(u)
            cnt_lt_a = np.searchsorted(rmin, vals, "left")  # non-decreasing in j
            run_hi = (np.searchsorted(cnt_lt_a, cnt_lt_a, "right") - 1).tolist()
            cnt_lt = cnt_lt_a.tolist()
            anchor_h = 0  # below every level the background is empty: no hole
            j = 0
            while j < m:
                c = cnt_lt[j]
                if c == anchor_h:
                    # no hole in the whole run; its levels without the one-component
                    # certificate were traced by the first pass already
                    j = run_hi[j] + 1
                    continue
                if trace(j)[3] == 0:
                    anchor_h = c
                j += 1
        else:
            for j in range(m):
                trace(j)

    largest = np.zeros((n_levels, 4), np.int64)  # the empty level keeps [0, 0, 0, 0]
    largest[:m] = fg_box
    if traced:
        ks = list(traced)
        largest[ks] = [traced[k][0] for k in ks]
    return SweepBoxes(inv, largest, {k: v[1] for k, v in traced.items()}, len(traced), n_levels)


def best_iou_per_level(sweep: SweepBoxes, gt_boxes: np.ndarray, iou_fn) -> tuple[np.ndarray, np.ndarray]:
    """(best IoU of the largest box, best IoU of any box) against ``gt_boxes``, per level."""
    largest = iou_fn(sweep.largest, gt_boxes).max(axis=1)
    multi = largest.copy()
    if sweep.all_boxes:
        ks = list(sweep.all_boxes)
        counts = [len(sweep.all_boxes[k]) for k in ks]
        flat = [b for k in ks for b in sweep.all_boxes[k]]
        every = iou_fn(np.array(flat, dtype=np.int64), gt_boxes).max(axis=1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        multi[ks] = np.maximum.reduceat(every, starts)
    return largest, multi
