"""PxAP: a tiny case by hand, the ignore value, and scikit-learn's average precision."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from wsolbench.evaluation import Evaluator, evaluate, threshold_grid
from wsolbench.evaluation.pxap import bin_edges, bin_index, mask_histograms
from wsolbench.evaluation.reference import reference_pxap

VALUES = np.array([[0.95, 0.65, 0.35, 0.15]])
LABELS = np.array([[1, 0, 1, 0]], np.uint8)


def test_tiny_case_by_hand():
    # going down: 0.95 (fg) P=1 R=1/2; 0.65 (bg) P=1/2 R=1/2; 0.35 (fg) P=2/3 R=1; 0.15 (bg)
    # P=1/2 R=1.  PxAP = 1*(1/2) + 2/3*(1/2) = 5/6.
    r = evaluate(VALUES[None], ["t"], masks=[LABELS], protocol="paper", cam_curve_interval=0.1)
    assert r["pxap"] == pytest.approx(100 * 5 / 6)
    best = r["pxap_best_f1"]  # F1: 2/3, 1/2, 4/5, 2/3 -> 0.8 at the bin of 0.35, i.e. [0.3, 0.4)
    assert best["f1"] == pytest.approx(80.0)
    assert best["precision"] == pytest.approx(200 / 3) and best["recall"] == pytest.approx(100.0)
    assert best["threshold"] == threshold_grid(0.1)[3]
    pr = r["curves"]["pr"]
    assert len(pr["thresholds"]) == len(pr["precision"]) == len(pr["recall"]) == 12
    assert pr["recall"][0] == 100.0 and pr["precision"][0] == 50.0  # threshold 0: everything
    assert pr["precision"][-1] is None  # the [2, 3] bin: nothing predicted


def test_ignored_pixels_are_excluded():
    values = np.array([[0.95, 0.65, 0.35, 0.15, 0.99]])
    ignored = np.array([[1, 0, 1, 0, 255]], np.uint8)
    r = evaluate(values[None], ["t"], masks=[ignored], protocol="paper", cam_curve_interval=0.1)
    assert r["pxap"] == pytest.approx(100 * 5 / 6)  # as if the 0.99 pixel were not there
    counted = np.array([[1, 0, 1, 0, 0]], np.uint8)
    r = evaluate(values[None], ["t"], masks=[counted], protocol="paper", cam_curve_interval=0.1)
    # the 0.99 background pixel first: P=0 at R=0, then P=1/2 at R=1/2, P=1/2 at R=1 -> 1/2
    assert r["pxap"] == pytest.approx(50.0)


def test_matches_sklearn_when_scores_sit_on_the_grid():
    # every score is a grid point (or 1.0), so each distinct score has its own bin and the
    # binned PR curve is exactly the one average_precision_score walks
    rng = np.random.default_rng(0)
    for interval in (0.01, 0.001):
        grid = threshold_grid(interval)
        choices = np.append(grid[rng.choice(len(grid), 60, replace=False)], 1.0)
        maps = choices[rng.integers(0, len(choices), (5, 12, 10))]
        masks = [(rng.random((12, 10)) < 0.3 + 0.1 * k).astype(np.uint8) for k in range(5)]
        masks[1][:3] = 255  # ignored rows take no part
        ev = Evaluator("paper", cam_curve_interval=interval)
        ev.accumulate(maps, [str(k) for k in range(5)], masks=masks)
        keep = np.concatenate([m.ravel() for m in masks]) != 255
        y = np.concatenate([m.ravel() for m in masks])[keep]
        s = maps.reshape(-1)[keep]
        assert ev.compute()["pxap"] == pytest.approx(100 * average_precision_score(y, s), abs=1e-9)
        assert ev.compute()["pxap"] == pytest.approx(reference_pxap(maps, masks, grid), abs=1e-9)


def test_wsoleval_normalizes_before_pxap():
    # 10x the tiny case is out of range for the paper protocol; wsoleval min-max normalizes:
    # (v - 1.5) / 8 keeps the order and the bins apart -> the same 5/6
    r = evaluate(10 * VALUES[None], ["t"], masks=[LABELS], protocol="wsoleval", cam_curve_interval=0.1)
    assert r["pxap"] == pytest.approx(100 * 5 / 6)
    assert r["pxap_best_f1"]["threshold"] == threshold_grid(0.1)[2]  # (3.5-1.5)/8 = 0.25


def test_pxap_none_without_foreground_or_masks():
    assert evaluate(VALUES[None], ["t"], protocol="paper")["pxap"] is None
    r = evaluate(VALUES[None], ["t"], masks=[np.zeros((1, 4), np.uint8)], protocol="paper")
    assert r["pxap"] is None and r["num_mask_images"] == 1


def test_bin_index_is_numpy_histogram():
    rng = np.random.default_rng(1)
    for interval in (0.001, 0.01, 0.05, 0.3, 0.5, 0.9, 0.0007):
        edges = bin_edges(threshold_grid(interval))
        v = np.concatenate([rng.random(5000), edges, np.nextafter(edges, -1), np.nextafter(edges, 9),
                            [-0.1, 3.0, 3.1, 1.0, 2.0, 2.5], rng.random(500).astype(np.float32)])
        idx = bin_index(v, edges)
        got = np.bincount(idx[idx >= 0], minlength=len(edges) - 1)
        np.testing.assert_array_equal(got, np.histogram(v, bins=edges)[0])
    assert bin_index(np.array([np.nan]), edges)[0] == -1


def test_mask_histograms_split_fg_bg():
    edges = bin_edges(threshold_grid(0.5))  # bins [0, .5) [.5, 1) [1, 2) [2, 3]
    fg, bg = mask_histograms(np.array([0.1, 0.6, 1.0, 0.7, 0.2]), np.array([1, 1, 1, 0, 255]), edges)
    assert fg.tolist() == [1, 1, 1, 0] and bg.tolist() == [0, 1, 0, 0]
