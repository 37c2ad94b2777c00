"""The fast wsoleval sweep gives exactly the boxes of the literal per-threshold loop."""

from __future__ import annotations

import numpy as np
import pytest

from wsolbench.evaluation import Evaluator, threshold_grid
from wsolbench.evaluation.reference import (reference_boxes_at_thresholds, reference_normalize,
                                            reference_wsoleval_boxes)
from wsolbench.evaluation.sweep import (_interior_regional_min_values, _regional_max_values,
                                        normalize_minmax, sweep_boxes, to_uint8)

from ._maps import assorted_maps, cam_like


@pytest.mark.parametrize("interval, every", [(0.001, 3), (0.0037, 1), (0.013, 1)])
def test_fast_sweep_equals_reference_boxes(interval, every):
    rng = np.random.default_rng(7)
    grid = threshold_grid(interval)
    traced = levels = 0
    for m in assorted_maps(rng)[::every]:
        n = reference_normalize(m)
        np.testing.assert_array_equal(n, normalize_minmax(m))
        ref_largest, ref_all = reference_boxes_at_thresholds(n, grid)
        fast = sweep_boxes(to_uint8(n), grid)
        largest, every = fast.per_threshold()
        assert largest == ref_largest, m.shape
        assert every == ref_all, m.shape  # same boxes, same (OpenCV) order
        traced += fast.traced
        levels += fast.n_levels
    assert traced < levels  # the certificates do skip tracing


def test_fast_sweep_equals_reference_on_full_size_cam_maps():
    rng = np.random.default_rng(11)
    grid = threshold_grid(0.001)
    for noise in (0.0, 0.3, 2.0):
        m, _ = cam_like(rng, noise=noise)
        n = normalize_minmax(m)
        ref = reference_boxes_at_thresholds(n, grid)
        fast = sweep_boxes(to_uint8(n), grid)
        assert fast.per_threshold() == (ref[0], ref[1])
        if noise == 0.0:
            assert fast.traced == 0  # one smooth bump: every level certified


def test_certified_and_fully_traced_sweeps_agree():
    rng = np.random.default_rng(3)
    grid = threshold_grid(0.001)
    for m in assorted_maps(rng)[:20]:
        u = to_uint8(normalize_minmax(m))
        a, b = sweep_boxes(u, grid), sweep_boxes(u, grid, certify=False)
        assert a.per_threshold() == b.per_threshold()
        assert b.traced >= a.traced


def _flat_zones(u: np.ndarray, maxima: bool) -> list[int]:
    """Brute force: values of regional maxima (8-conn, value >= 1) or of regional minima
    (4-conn, not touching the border, value <= 254)."""
    h, w = u.shape
    seen = np.zeros(u.shape, bool)
    steps = ([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)] if maxima
             else [(-1, 0), (1, 0), (0, -1), (0, 1)])
    out = []
    for y in range(h):
        for x in range(w):
            if seen[y, x]:
                continue
            v, stack, ok, border = u[y, x], [(y, x)], True, False
            seen[y, x] = True
            while stack:
                a, b = stack.pop()
                border |= a in (0, h - 1) or b in (0, w - 1)
                for dy, dx in steps:
                    c, d = a + dy, b + dx
                    if 0 <= c < h and 0 <= d < w:
                        if u[c, d] == v and not seen[c, d]:
                            seen[c, d] = True
                            stack.append((c, d))
                        elif (u[c, d] > v) if maxima else (u[c, d] < v):
                            ok = False
            if ok and (v > 0 if maxima else (not border and v < 255)):
                out.append(int(v))
    return sorted(out)


def test_regional_extrema_against_brute_force():
    rng = np.random.default_rng(5)
    maps = [to_uint8(normalize_minmax(m)) for m in assorted_maps(rng)]
    maps += [(rng.random((20, 20)) * 4).astype(np.uint8) * 60, np.full((4, 4), 255, np.uint8)]
    for u in maps:
        assert _regional_max_values(u).tolist() == _flat_zones(u, maxima=True)
        assert _interior_regional_min_values(u).tolist() == _flat_zones(u, maxima=False)


def test_evaluator_equals_reference_loop():
    rng = np.random.default_rng(2)
    data = [cam_like(rng, 64, 56, noise=n) for n in (0.0, 0.2, 0.5, 1.5) for _ in range(4)]
    maps = [d[0] for d in data]
    boxes = [d[1] for d in data]
    boxes[3] = np.vstack([boxes[3], [[0, 0, 20, 20]]])  # several GT boxes: any may match
    gl = rng.integers(0, 3, len(maps))
    pl = rng.integers(0, 3, len(maps))
    for interval in (0.001, 0.05):
        grid = threshold_grid(interval)
        ref = reference_wsoleval_boxes(maps, boxes, grid, (30, 50, 70), gl, pl)
        ev = Evaluator("wsoleval", cam_curve_interval=interval)
        for i in range(0, len(maps), 5):
            ev.accumulate(np.stack(maps[i:i + 5]), [str(k) for k in range(i, i + 5)][:len(maps[i:i + 5])],
                          gt_boxes=boxes[i:i + 5], gt_labels=gl[i:i + 5], pred_labels=pl[i:i + 5])
        st = ev.state()
        np.testing.assert_array_equal(st["box_hits_largest"], ref["hits_largest"])
        np.testing.assert_array_equal(st["box_hits_multi"], ref["hits_multi"])
        np.testing.assert_array_equal(st["top1_hits"], ref["top1_hits"])
        res = ev.compute()
        for key in ("max_box_acc", "max_box_acc_threshold", "max_box_acc_v2", "box_acc_by_iou",
                    "best_threshold_by_iou", "top1_loc"):
            assert res[key] == ref[key], key
