"""PxAP: pixel average precision from score histograms pooled over a split (Choe et al.).

Definition used by both protocols
---------------------------------

* Bins: with the threshold grid ``g = numpy.arange(0, 1, cam_curve_interval)``, the bin
  edges are ``e = g + [1.0, 2.0, 3.0]``, i.e. bins ``[0, s), [s, 2s), ..., [g[-1], 1),
  [1, 2), [2, 3]`` (exactly ``numpy.histogram(values, bins=e)``: half-open bins, the last
  one closed; values outside ``[0, 3]`` are dropped).
* Histograms of the map values at ground-truth foreground pixels (mask value 1) and at
  background pixels (mask value 0) are summed over all images; pixels marked 255 (ignore)
  are excluded.
* Going down from the top bin: ``tp`` and ``fp`` are the reverse cumulative sums of the
  foreground and background histograms, i.e. ``tp[l]`` counts foreground pixels with value
  ``>= sigma_l`` where ``sigma_l`` is the left edge of the l-th bin from the top;
  ``precision = tp / (tp + fp)``, ``recall = tp / #foreground``.
* ``PxAP = 100 * sum_{l >= 1, tp[l] + fp[l] > 0} precision[l] * (recall[l] - recall[l-1])``
  (the top bin ``[2, 3]`` is empty for maps in [0, 1], so starting at ``l = 1`` loses
  nothing). The paper's printed formula subtracts ``PxPrec(sigma_{l-1})``; that is a typo for
  the recall step, which is what Choe et al. compute.
* Best F1: the threshold ``sigma_l`` maximising ``2 P R / (P + R)`` over the points above.

Under the wsoleval protocol the map is min-max normalized first; under the paper protocol
it is used as the method returns it (values in [0, 1]).
"""

from __future__ import annotations

import numpy as np


def bin_edges(grid: np.ndarray) -> np.ndarray:
    """``grid`` followed by 1.0, 2.0, 3.0 (float64)."""
    return np.append(np.asarray(grid, dtype=np.float64), [1.0, 2.0, 3.0])


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the histogram bin of every value, -1 outside ``[edges[0], edges[-1]]``.

    Same bins as ``numpy.histogram(values, bins=edges)``. The grid part of ``edges`` is
    uniform, so an estimate ``floor(v / step)`` is corrected by exact comparisons against
    the edges (and falls back to ``searchsorted`` if the estimate is ever off by more).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    outside = ~((v >= edges[0]) & (v <= edges[-1]))  # also NaN
    if outside.any():
        v = np.where(outside, edges[0], v)
    nb = len(edges) - 1
    n_grid = nb - 2
    step = edges[1] - edges[0] if n_grid > 1 else 1.0
    idx = np.floor((v - edges[0]) / step)
    np.clip(idx, 0, n_grid - 1, out=idx)
    idx = idx.astype(np.int64)
    idx[v >= 1.0] = n_grid
    idx[v >= 2.0] = n_grid + 1
    for _ in range(2):
        idx -= (v < edges[idx]) & (idx > 0)
        idx += (v >= edges[idx + 1]) & (idx < nb - 1)
    ok = (edges[idx] <= v) & ((v < edges[idx + 1]) | ((idx == nb - 1) & (v <= edges[-1])))
    if not ok.all():
        bad = ~ok
        fix = np.searchsorted(edges, v[bad], side="right") - 1
        fix[v[bad] == edges[-1]] = nb - 1
        idx[bad] = fix
    idx[outside] = -1
    return idx


def mask_histograms(values: np.ndarray, mask: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(foreground histogram, background histogram) of one map; mask 0/1/255 (255 ignored)."""
    nb = len(edges) - 1
    idx = bin_index(values, edges)
    m = np.asarray(mask).ravel()
    valid = (idx >= 0) & ((m == 0) | (m == 1))
    # one bincount: foreground bins first, background bins after them
    key = idx[valid] + nb * (m[valid] == 0)
    both = np.bincount(key, minlength=2 * nb)
    return both[:nb].astype(np.int64), both[nb:].astype(np.int64)


def _pct(x) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else x


def pxap_from_histograms(hist_fg: np.ndarray, hist_bg: np.ndarray, edges: np.ndarray) -> dict:
    """PxAP (percent), the best-F1 point and the PR curve from pooled histograms.

    Returns ``{"pxap": float|None, "best_f1": {...}|None, "pr": {...}|None}``; ``None`` when
    there is no foreground pixel. The PR curve lists, for every threshold ``sigma`` (bin left
    edges, ascending), precision and recall in percent (``None`` where nothing is predicted).
    """
    hist_fg = np.asarray(hist_fg, dtype=np.float64)
    hist_bg = np.asarray(hist_bg, dtype=np.float64)
    num_pos = hist_fg.sum()
    if num_pos <= 0:
        return {"pxap": None, "best_f1": None, "pr": None}
    tp = hist_fg[::-1].cumsum()
    fp = hist_bg[::-1].cumsum()
    fn = num_pos - tp
    predicted = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    auc = float((precision[1:] * np.diff(recall))[predicted[1:]].sum() * 100)
    sigma = np.asarray(edges[:-1], dtype=np.float64)[::-1]  # threshold of each reversed bin
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(predicted & (precision + recall > 0),
                      2 * precision * recall / (precision + recall), -1.0)
    best = int(np.argmax(f1))
    best_f1 = None
    if f1[best] >= 0:
        best_f1 = {"f1": float(f1[best] * 100), "precision": float(precision[best] * 100),
                   "recall": float(recall[best] * 100), "threshold": float(sigma[best])}
    pr = {"thresholds": [float(s) for s in sigma[::-1]],
          "precision": [_pct(p * 100) if ok else None
                        for p, ok in zip(precision[::-1], predicted[::-1])],
          "recall": [_pct(r * 100) for r in recall[::-1]]}
    return {"pxap": auc, "best_f1": best_f1, "pr": pr}
