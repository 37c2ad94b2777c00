"""IoU, the paper's box rule (tau = max/10, largest contour) and the S score, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from wsolbench.evaluation import iou, paper_box, s_score, s_scores


# ---------------------------------------------------------------------------- IoU
@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 9, 9], [0, 0, 9, 9], 1.0),  # identical
    ([0, 0, 9, 9], [5, 5, 14, 14], 25 / 175),  # overlap 5x5, areas 10x10 each (+1 convention)
    ([0, 0, 4, 4], [10, 10, 12, 12], 0.0),  # disjoint
    ([0, 0, 4, 4], [4, 0, 8, 4], 5 / 45),  # share one column: inclusive pixels overlap (1x5)
    ([0, 0, 4, 4], [5, 0, 9, 4], 0.0),  # adjacent, no shared pixel
    ([0, 0, 9, 9], [2, 2, 5, 5], 16 / 100),  # contained: 4x4 inside 10x10
    ([3, 3, 3, 3], [3, 3, 3, 3], 1.0),  # one pixel is a 1x1 box
    ([0, 0, 0, 0], [0, 0, 1, 1], 1 / 4),  # the "no contour" box is pixel (0, 0)
    ([5, 5, 4, 4], [5, 5, 4, 4], 0.0),  # zero-size boxes: union 0 -> IoU 0
    ([5, 5, 2, 2], [0, 0, 9, 9], 0.0),  # inverted box: no intersection
])
def test_iou_by_hand(a, b, expected):
    got = iou([a], [b])
    assert got.shape == (1, 1)
    assert got[0, 0] == pytest.approx(expected, abs=1e-12)
    assert iou([b], [a])[0, 0] == pytest.approx(expected, abs=1e-12)


def test_iou_matrix_shapes():
    a = np.array([[0, 0, 9, 9], [5, 5, 14, 14]])
    b = np.array([[0, 0, 9, 9], [2, 2, 5, 5], [20, 20, 30, 30]])
    m = iou(a, b)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m[0], [1.0, 0.16, 0.0])
    np.testing.assert_allclose(m[1], [25 / 175, 1 / 115, 0.0])  # one shared pixel (5, 5)
    assert iou(np.zeros((0, 4)), b).shape == (0, 3)


# ---------------------------------------------------------------------- paper box
def two_blobs() -> np.ndarray:
    m = np.zeros((64, 64), np.float32)
    m[5:15, 5:15] = 1.0  # small but strong: 10x10, contour area 9*9 = 81
    m[30:50, 20:40] = 0.5  # large, weaker: 20x20, contour area 19*19 = 361
    return m


def test_largest_contour_wins_not_the_strongest():
    # boundingRect of the big blob: x=20, y=30, w=h=20 -> [20, 30, 20+20, 30+20]
    assert paper_box(two_blobs()).tolist() == [20, 30, 40, 50]


def test_tau_is_relative_to_the_map_maximum():
    m = np.zeros((40, 40))
    m[10:20, 10:20] = 1.0
    m[10:20, 20:30] = 0.11  # 0.11 * max: kept, extends the blob to column 29
    assert paper_box(m).tolist() == [10, 10, 30, 20]
    assert paper_box(0.5 * m).tolist() == [10, 10, 30, 20]  # scaling keeps the box
    m[10:20, 20:30] = 0.09  # 0.09 * max: below tau, dropped
    assert paper_box(m).tolist() == [10, 10, 20, 20]
    assert paper_box(0.5 * m).tolist() == [10, 10, 20, 20]
    m[10:20, 20:30] = 0.1  # exactly tau: "values below tau" are zeroed, tau itself stays
    assert paper_box(m).tolist() == [10, 10, 30, 20]


def test_paper_box_empty_and_constant_maps():
    assert paper_box(np.zeros((8, 12))).tolist() == [0, 0, 0, 0]  # no contour
    # a constant positive map is one contour around the whole map: x+w = W -> W-1
    assert paper_box(np.full((8, 12), 0.3)).tolist() == [0, 0, 11, 7]


def test_paper_box_clamps_to_the_last_pixel():
    m = np.zeros((10, 10))
    m[6:10, 7:10] = 1.0  # touches the right and bottom edges
    assert paper_box(m).tolist() == [7, 6, 9, 9]
    m = np.zeros((10, 10))
    m[2:5, 3:6] = 1.0  # interior: x+w = 6, y+h = 5 (one past the blob, not clamped)
    assert paper_box(m).tolist() == [3, 2, 6, 5]


# ------------------------------------------------------------------------ S score
def test_s_score_two_components_by_hand():
    m = np.zeros((10, 10))
    m[1:4, 1:4] = 1.0  # mass 9, contour area 4
    m[5:10, 5:10] = 0.2  # mass 5, contour area 16 -> the largest contour
    # box [5, 5, min(10, 9), min(10, 9)] = [5, 5, 9, 9] holds the 0.2 block only
    assert paper_box(m).tolist() == [5, 5, 9, 9]
    assert s_score(m) == pytest.approx(5 / 14)


def test_s_score_ignores_values_below_tau():
    m = np.zeros((10, 10))
    m[1:4, 1:4] = 1.0
    m[5:10, 5:10] = 0.05  # below tau = 0.1: zeroed in M_hat
    assert s_score(m) == pytest.approx(1.0)


def test_s_score_single_blob_and_empty_map():
    m = np.zeros((12, 12))
    m[2:6, 3:9] = np.linspace(0.5, 1.0, 6)[None, :]
    assert s_score(m) == pytest.approx(1.0)
    assert s_score(np.zeros((5, 5))) == 0.0
    assert s_score(np.full((5, 5), 0.7)) == pytest.approx(1.0)


def test_s_scores_batched_matches_single():
    a = np.zeros((10, 10))
    a[1:4, 1:4] = 1.0
    a[5:10, 5:10] = 0.2
    batch = np.stack([a, np.zeros((10, 10)), 0.5 * a])
    out = s_scores(batch)
    assert out.dtype == np.float64 and out.shape == (3,)
    np.testing.assert_allclose(out, [5 / 14, 0.0, 5 / 14])
    with pytest.raises(ValueError):
        s_scores(np.zeros((10, 10)))
