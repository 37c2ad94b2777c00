"""Straightforward reference implementations, written literally from the protocol text.

Slow on purpose: one ``cv2.threshold`` + ``cv2.findContours`` per image per grid threshold,
``numpy.histogram`` for PxAP. The fast :class:`~wsolbench.evaluation.Evaluator` must produce
exactly the same numbers; ``tests/evaluation`` and ``benchmarks/bench_eval.py`` check it.
Nothing here is used by the product itself.
"""

from __future__ import annotations

import cv2
import numpy as np

from wsolbench.evaluation.boxes import iou


def reference_normalize(score_map: np.ndarray) -> np.ndarray:
    """Min-max normalization: ``(m - min) / (max - min)``, zeros for a constant map."""
    m = np.asarray(score_map)
    m = m.astype(np.result_type(m.dtype, np.float32))
    lo, hi = m.min(), m.max()
    if hi == lo:
        return np.zeros_like(m)
    return (m - lo) / (m - lo).max()


def reference_boxes_at_thresholds(score_map: np.ndarray, grid: np.ndarray):
    """For every grid threshold: (largest contour's box, boxes of all contours)."""
    scoremap_image = (score_map * 255).astype(np.uint8)
    height, width = scoremap_image.shape
    largest_boxes, all_boxes = [], []
    for t in grid:
        _, binary = cv2.threshold(scoremap_image, int(t * np.max(scoremap_image)), 255,
                                  cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        if len(contours) == 0:
            largest_boxes.append((0, 0, 0, 0))
            all_boxes.append([(0, 0, 0, 0)])
            continue

        def to_box(c):
            x, y, w, h = cv2.boundingRect(c)
            return (x, y, min(x + w, width - 1), min(y + h, height - 1))

        largest_boxes.append(to_box(max(contours, key=cv2.contourArea)))
        all_boxes.append([to_box(c) for c in contours])
    return largest_boxes, all_boxes


def reference_box_counts(maps, gt_boxes, grid, iou_thresholds=(30, 50, 70),
                         gt_labels=None, pred_labels=None) -> dict:
    """Per-threshold hit counts of the wsoleval protocol by the per-image, per-threshold loop.

    Same layout as the evaluator's state: ``hits_largest``/``hits_multi`` have one row per
    IoU threshold of ``sorted(set(iou_thresholds) | {50})``; images without GT box are skipped.
    """
    ious = sorted(set(int(t) for t in iou_thresholds) | {50})
    n_thr = len(grid)
    hits_largest = np.zeros((len(ious), n_thr), np.int64)
    hits_multi = np.zeros((len(ious), n_thr), np.int64)
    top1_hits = np.zeros(n_thr, np.int64)
    n = n_top1 = 0
    for i, (m, gt) in enumerate(zip(maps, gt_boxes)):
        gt = np.asarray(gt).reshape(-1, 4)
        if len(gt) == 0:
            continue
        largest, every = reference_boxes_at_thresholds(reference_normalize(m), grid)
        best_largest = iou(np.array(largest), gt).max(axis=1)
        # one IoU call for all boxes of all thresholds, then the best per threshold
        ious_all = iou(np.concatenate([np.array(b) for b in every]), gt).max(axis=1)
        best_multi, start = [], 0
        for b in every:
            best_multi.append(ious_all[start:start + len(b)].max())
            start += len(b)
        best_multi = np.array(best_multi)
        for r, t in enumerate(ious):
            hits_largest[r] += best_largest >= t / 100
            hits_multi[r] += best_multi >= t / 100
        n += 1
        if gt_labels is not None and pred_labels is not None:
            n_top1 += 1
            if int(gt_labels[i]) == int(pred_labels[i]):
                top1_hits += best_largest >= 0.5
    return {"hits_largest": hits_largest, "hits_multi": hits_multi, "top1_hits": top1_hits,
            "num_box_images": n, "num_top1_images": n_top1}


def reference_box_metrics(counts: dict, grid, iou_thresholds=(30, 50, 70)) -> dict:
    """MaxBoxAcc, MaxBoxAccV2 (all contours), per-IoU best accuracy/threshold, Top-1 loc."""
    ious = sorted(set(int(t) for t in iou_thresholds) | {50})
    n, n_top1 = counts["num_box_images"], counts["num_top1_images"]
    out = dict(counts)
    if n:
        acc_l = counts["hits_largest"] * 100.0 / n
        acc_m = counts["hits_multi"] * 100.0 / n
        row50 = ious.index(50)
        by_iou = {str(t): float(acc_m[ious.index(int(t))].max()) for t in iou_thresholds}
        out.update(
            max_box_acc=float(acc_l[row50].max()),
            max_box_acc_threshold=float(grid[int(np.argmax(acc_l[row50]))]),
            box_acc_by_iou=by_iou,
            best_threshold_by_iou={str(t): float(grid[int(np.argmax(acc_m[ious.index(int(t))]))])
                                   for t in iou_thresholds},
            max_box_acc_v2=float(np.mean([by_iou[str(t)] for t in iou_thresholds])),
        )
    if n_top1:
        out["top1_loc"] = float((counts["top1_hits"] * 100.0 / n_top1).max())
    return out


def reference_wsoleval_boxes(maps, gt_boxes, grid, iou_thresholds=(30, 50, 70),
                             gt_labels=None, pred_labels=None) -> dict:
    """:func:`reference_box_counts` and :func:`reference_box_metrics` in one call."""
    counts = reference_box_counts(maps, gt_boxes, grid, iou_thresholds, gt_labels, pred_labels)
    return reference_box_metrics(counts, grid, iou_thresholds)


def reference_pxap(maps, masks, grid) -> float:
    """PxAP (percent) as wsolevaluation's mask evaluator: ``numpy.histogram`` of the map values
    at foreground (1) and background (0) pixels with right edges ``grid + [1, 2, 3]``,
    reverse cumulative sums, sum of precision times recall steps where tp + fp > 0."""
    edges = np.append(grid, [1.0, 2.0, 3.0])
    fg = np.zeros(len(edges) - 1)
    bg = np.zeros(len(edges) - 1)
    for m, mask in zip(maps, masks):
        fg += np.histogram(m[mask == 1], bins=edges)[0]
        bg += np.histogram(m[mask == 0], bins=edges)[0]
    tp = fg[::-1].cumsum()
    fp = bg[::-1].cumsum()
    fn = fg.sum() - tp
    nonzero = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    return float((precision[1:] * np.diff(recall))[nonzero[1:]].sum() * 100)
