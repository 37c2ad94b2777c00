"""Boxes, IoU, contours, the paper's box rule and its early-stopping score S.

Conventions (shared by both protocols, as in wsolevaluation)
-------------------------------------------------------------

* A box is ``[x0, y0, x1, y1]`` in integer pixel coordinates of the score map.
* A box is read off a contour with ``x, y, w, h = cv2.boundingRect(contour)`` as
  ``[x, y, min(x + w, W - 1), min(y + h, H - 1)]`` for a map of ``H x W`` pixels. Note that
  ``x + w`` is one past the last pixel of the contour, so the box is one pixel wider and
  taller than the contour unless it touches the right/bottom edge (kept as is, for
  comparability with published numbers).
* A map with no contour (nothing left after thresholding) gives the box ``[0, 0, 0, 0]``.
* IoU uses inclusive pixel areas: ``area = (x1 - x0 + 1) * (y1 - y0 + 1)``; the
  intersection is ``max(0, min(x1) - max(x0) + 1) * max(0, min(y1) - max(y0) + 1)``; a
  non-positive union (degenerate boxes such as ``[5, 5, 4, 4]``) gives IoU 0.
* Contours: ``cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)`` (OpenCV
  border following, Suzuki & Abe), all contours including hole borders; "the largest
  contour" is the first contour of maximal ``cv2.contourArea`` in OpenCV's output order
  (Python's ``max(contours, key=cv2.contourArea)``).

Paper protocol box (:func:`paper_box`)
---------------------------------------

``tau = max(M) / 10`` on the map as the method returns it; values ``< tau`` are set to zero
(giving ``M_hat``); contours of the non-zero pixels of ``M_hat``; the largest contour; its box.
Comparisons are made in float64 (a float32 map is converted exactly).

S score (:func:`s_score`, paper eq. 6)
--------------------------------------

``S = sum(M_hat[y0:y1+1, x0:x1+1]) / sum(M_hat)`` with ``[x0, y0, x1, y1] = paper_box(M)``
(inclusive pixel ranges, the box convention above); ``S = 0`` when ``M_hat`` sums to 0.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

EMPTY_BOX = (0, 0, 0, 0)


def iou(boxes_a, boxes_b) -> np.ndarray:
    """IoU matrix ``(N, M)`` between boxes ``(N, 4)`` and ``(M, 4)`` (``[x0, y0, x1, y1]``).

    Inclusive pixel areas (``+1``); IoU 0 where the union is not positive. Computed in
    float64 (exact for integer boxes).
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    ax0, ay0, ax1, ay1 = (a[:, i, None] for i in range(4))
    bx0, by0, bx1, by1 = (b[None, :, i] for i in range(4))
    inter = (np.maximum(0.0, np.minimum(ax1, bx1) - np.maximum(ax0, bx0) + 1.0)
             * np.maximum(0.0, np.minimum(ay1, by1) - np.maximum(ay0, by0) + 1.0))
    area_a = (ax1 - ax0 + 1.0) * (ay1 - ay0 + 1.0)
    area_b = (bx1 - bx0 + 1.0) * (by1 - by0 + 1.0)
    union = area_a + area_b - inter
    positive = union > 0
    out = np.zeros(union.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=positive)
    return out


def rect_to_box(rect: Sequence[int], height: int, width: int) -> tuple[int, int, int, int]:
    """``cv2.boundingRect`` output ``(x, y, w, h)`` -> ``[x, y, min(x+w, W-1), min(y+h, H-1)]``."""
    x, y, w, h = (int(v) for v in rect)
    return (x, y, min(x + w, width - 1), min(y + h, height - 1))


def find_contours(binary: np.ndarray, offset: tuple[int, int] = (0, 0)):
    """OpenCV border following (RETR_TREE, CHAIN_APPROX_SIMPLE) on the non-zero pixels.

    Returns ``(contours, hierarchy)``; works with OpenCV 3 (3 return values) and 4/5 (2).
    """
    img = np.ascontiguousarray(binary)
    if img.dtype == np.bool_:
        img = img.view(np.uint8)
    res = cv2.findContours(img, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
    return res[-2], res[-1]


def largest_contour_index(contours) -> int:
    """Index of the first contour with maximal ``cv2.contourArea`` (-1 when there is none)."""
    best, best_area = -1, -1.0
    for i, c in enumerate(contours):
        a = cv2.contourArea(c)
        if a > best_area:
            best, best_area = i, a
    return best


def contour_boxes(contours, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Box of every contour (the convention above)."""
    return [rect_to_box(cv2.boundingRect(c), height, width) for c in contours]


def largest_contour_box(binary: np.ndarray) -> tuple[int, int, int, int]:
    """Box of the largest contour of the non-zero pixels of ``binary``; ``[0,0,0,0]`` if none."""
    h, w = binary.shape
    contours, _ = find_contours(binary)
    i = largest_contour_index(contours)
    if i < 0:
        return EMPTY_BOX
    return rect_to_box(cv2.boundingRect(contours[i]), h, w)


def _as_map(score_map) -> np.ndarray:
    m = np.asarray(score_map)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D score map, got shape {m.shape}")
    if m.size == 0:
        raise ValueError("empty score map")
    m = m.astype(np.float64, copy=False)
    if not np.isfinite(m).all():
        raise ValueError("score map contains NaN or Inf values")
    return m


def paper_threshold(score_map) -> tuple[np.ndarray, np.ndarray]:
    """``(M_hat, foreground)``: the map with values below ``tau = max/10`` zeroed, and its
    non-zero pixels (the pixels whose contours give the paper box)."""
    m = _as_map(score_map)
    tau = m.max() / 10.0
    fg = (m >= tau) & (m != 0)
    m_hat = np.where(fg, m, 0.0)
    return m_hat, fg


def paper_box(score_map) -> np.ndarray:
    """The paper's box (int array of 4): tau = max/10, largest contour, its bounding box."""
    _, fg = paper_threshold(score_map)
    return np.asarray(largest_contour_box(fg), dtype=np.int64)


def s_score(score_map) -> float:
    """Paper eq. 6: share of ``M_hat`` inside the paper box (0 for an all-zero ``M_hat``)."""
    m_hat, fg = paper_threshold(score_map)
    total = float(m_hat.sum())
    if total <= 0.0:
        return 0.0
    x0, y0, x1, y1 = largest_contour_box(fg)
    inside = float(m_hat[y0:y1 + 1, x0:x1 + 1].sum())
    return inside / total


def s_scores(maps: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    """:func:`s_score` of every map of a batch ``[B, H, W]`` -> float64 array ``[B]``."""
    if isinstance(maps, np.ndarray):
        if maps.ndim != 3:
            raise ValueError(f"expected maps of shape [B, H, W], got {maps.shape}")
    return np.asarray([s_score(m) for m in maps], dtype=np.float64)
