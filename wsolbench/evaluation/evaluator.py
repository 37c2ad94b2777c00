"""THE evaluator: every number wsolbench prints about localization goes through it.

Usage::

    ev = Evaluator("wsoleval")                      # or "paper"
    for batch in loader:
        ev.accumulate(maps, ids, gt_boxes=boxes, masks=masks,
                      gt_labels=labels, pred_labels=preds)
    result = ev.compute()                           # plain JSON-serializable dict

Inputs of :meth:`Evaluator.accumulate` are already in the score map's pixel frame (map GT with
:class:`~wsolbench.evaluation.geometry.Geometry` first). Box and IoU conventions are those of
:mod:`wsolbench.evaluation.boxes`; PxAP is defined in :mod:`wsolbench.evaluation.pxap`.

Protocols
---------

``paper`` (Shaharabany & Wolf): the map as the method returns it (values in [0, 1]; values
within 1e-6 outside are clipped, further out is an error). One box per image
(:func:`~wsolbench.evaluation.boxes.paper_box`: tau = max/10, largest contour).

* ``gt_known_loc``: % of images whose box has IoU >= 0.5 with any GT box (class ignored).
* ``top1_loc``: % of images with that hit AND the classifier's top-1 class right.
* ``top1_cls``: % of images whose top-1 class is right.
* ``box_acc_by_iou``: the same hit rate at each IoU threshold (30/50/70 by default), all at
  the single tau box; ``max_box_acc``, ``max_box_acc_v2`` and ``best_threshold_by_iou`` are
  ``None`` (there is no threshold sweep).
* ``pxap`` on the map values as given.

``wsoleval`` (Choe et al., CVPR 2020): per-image min-max normalization (a constant map
becomes zeros), then the sweep of :mod:`wsolbench.evaluation.sweep` over the grid
``numpy.arange(0, 1, cam_curve_interval)``.

* ``max_box_acc`` (MaxBoxAcc): best over thresholds of the % of images whose LARGEST
  contour's box has IoU >= 0.5 with a GT box; ``gt_known_loc`` is the same number.
* ``box_acc_by_iou[t]``: best over thresholds of the % of images where, at that threshold,
  ANY contour's box (``multi_contour_eval=True``, the default; the largest contour's box
  otherwise) has IoU >= t/100 with any GT box; ``best_threshold_by_iou[t]`` is the first grid
  threshold reaching it. ``max_box_acc_v2`` (MaxBoxAccV2) is their mean.
* ``top1_loc``: best over thresholds of the % of images with the class right AND the largest
  contour's box hitting at IoU 0.5; ``top1_cls`` as above.
* ``pxap`` on the normalized map.

Denominators: box metrics count the images that have at least one GT box; ``top1_loc`` the
images with boxes and labels; ``top1_cls`` the images with labels; PxAP pools the pixels of
the images with masks. A metric is ``None`` when its denominator is 0. All accuracies,
precisions and recalls are percentages in [0, 100]; thresholds are map values in [0, 1].

Distributed evaluation: :meth:`Evaluator.state` holds only additive integer counters
(histograms and hit counts; memory does not grow with the number of images), so the states
of evaluators that saw disjoint images can be summed (:meth:`Evaluator.merge_state`,
:meth:`Evaluator.from_state`) and give exactly the single-pass result.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from wsolbench.errors import MethodOutputError, UserError, suggest
from wsolbench.evaluation.boxes import iou, largest_contour_box, paper_threshold
from wsolbench.evaluation.pxap import bin_edges, mask_histograms, pxap_from_histograms
from wsolbench.evaluation.sweep import (best_iou_per_level, normalize_minmax, sweep_boxes,
                                        threshold_grid, to_uint8)

PROTOCOLS = ("paper", "wsoleval")
RANGE_TOLERANCE = 1e-6

_SCALARS = ("num_images", "num_box_images", "num_mask_images", "num_cls_images",
            "num_top1_images", "cls_correct")


class Evaluator:
    """Streaming WSOL evaluator: ``accumulate(...)`` per batch, then ``compute()``.

    Args:
        protocol: ``"paper"`` or ``"wsoleval"`` (see the module docstring).
        cam_curve_interval: step of the threshold grid ``[0, 1)``; also the PxAP bin width.
        iou_thresholds: IoU thresholds in percent for ``box_acc_by_iou``/MaxBoxAccV2.
        multi_contour_eval: wsoleval only: count a threshold as a hit when any contour's box
            matches (True, MaxBoxAccV2's rule) or only the largest contour's (False).
    """

    def __init__(self, protocol: str = "paper", cam_curve_interval: float = 0.001,
                 iou_thresholds: Sequence[int] = (30, 50, 70), multi_contour_eval: bool = True):
        if protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol '{protocol}'{suggest(protocol, PROTOCOLS)}; "
                            f"known: {', '.join(PROTOCOLS)}")
        interval = float(cam_curve_interval)
        if not (0.0 < interval < 1.0) or not np.isfinite(interval):
            raise UserError(f"cam_curve_interval must be in (0, 1), got {cam_curve_interval}")
        thresholds = []
        for t in iou_thresholds:
            ti = int(t)
            if ti != t or not (0 < ti <= 100):
                raise UserError(f"IoU thresholds are integers in percent within (0, 100], got {t}")
            if ti not in thresholds:
                thresholds.append(ti)
        if not thresholds:
            raise UserError("at least one IoU threshold is needed")
        self.protocol = protocol
        self.cam_curve_interval = interval
        self.iou_thresholds = tuple(thresholds)
        self.multi_contour_eval = bool(multi_contour_eval)
        self.grid = threshold_grid(interval)
        self.edges = bin_edges(self.grid)
        # counter rows: the requested IoU thresholds plus 50 (MaxBoxAcc, GT-known, Top-1 loc)
        self._ious = sorted(set(self.iou_thresholds) | {50})
        self._iou_frac = np.array([t / 100 for t in self._ious], dtype=np.float64)
        self._row50 = self._ious.index(50)
        self._n_thr = len(self.grid) if protocol == "wsoleval" else 1
        self._state = self._empty_state()

    # ------------------------------------------------------------------ state
    def config(self) -> dict:
        """The constructor arguments (what :meth:`from_state` needs besides the state)."""
        return {"protocol": self.protocol, "cam_curve_interval": self.cam_curve_interval,
                "iou_thresholds": list(self.iou_thresholds),
                "multi_contour_eval": self.multi_contour_eval}

    def _empty_state(self) -> dict[str, np.ndarray]:
        nb = len(self.edges) - 1
        st = {k: np.zeros((), np.int64) for k in _SCALARS}
        st["box_hits_largest"] = np.zeros((len(self._ious), self._n_thr), np.int64)
        st["box_hits_multi"] = np.zeros((len(self._ious), self._n_thr), np.int64)
        st["top1_hits"] = np.zeros(self._n_thr, np.int64)
        st["pxap_hist_fg"] = np.zeros(nb, np.int64)
        st["pxap_hist_bg"] = np.zeros(nb, np.int64)
        return st

    def reset(self) -> None:
        self._state = self._empty_state()

    def state(self) -> dict[str, np.ndarray]:
        """Copies of the additive counters (sum two states to merge disjoint image sets)."""
        return {k: v.copy() for k, v in self._state.items()}

    def merge_state(self, state: dict) -> None:
        """Add another evaluator's :meth:`state` (same configuration) into this one."""
        if set(state) != set(self._state):
            raise ValueError(f"state keys {sorted(state)} do not match {sorted(self._state)}")
        for k, v in state.items():
            v = np.asarray(v)
            if v.shape != self._state[k].shape:
                raise ValueError(f"state '{k}' has shape {v.shape}, expected {self._state[k].shape} "
                                 "(different protocol, grid or IoU thresholds?)")
        for k, v in state.items():
            self._state[k] = self._state[k] + np.asarray(v, dtype=np.int64)

    @classmethod
    def from_state(cls, state: dict, **config) -> "Evaluator":
        """An evaluator with ``config`` (see :meth:`config`) holding ``state``."""
        ev = cls(**config)
        ev.merge_state(state)
        return ev

    # ------------------------------------------------------------- accumulate
    def accumulate(self, maps, image_ids: Sequence[str], gt_boxes=None, masks=None,
                   gt_labels=None, pred_labels=None) -> None:
        """Add a batch.

        Args:
            maps: float array ``[B, H, W]`` (or a sequence of B 2-D arrays).
            image_ids: B ids, used in error messages.
            gt_boxes: None, or B int arrays ``(k_i, 4)`` in the map's pixel frame
                (``k_i = 0`` / None entries: the image has no box).
            masks: None, or B ``uint8`` arrays ``H x W`` with 0 (background), 1
                (foreground), 255 (ignored); None entries: no mask.
            gt_labels, pred_labels: None, or int arrays ``[B]`` (both needed for Top-1).

        Raises:
            MethodOutputError: a map is not 2-D, contains NaN/Inf, (paper) has values outside
                [0, 1], or does not match its mask's shape; the message names the image.
        """
        ids = [str(i) for i in image_ids]
        if isinstance(maps, np.ndarray):
            if maps.ndim != 3:
                raise MethodOutputError(
                    f"score maps must have shape [B, H, W], got {maps.shape} "
                    f"(images {', '.join(ids[:3])}{'...' if len(ids) > 3 else ''})")
            seq = list(maps)
        else:
            seq = list(maps)
        B = len(seq)
        if len(ids) != B:
            raise MethodOutputError(f"{B} score maps but {len(ids)} image ids "
                                    f"(first id: {ids[0] if ids else 'none'})")
        boxes_b = self._per_image(gt_boxes, B, "gt_boxes", ids)
        masks_b = self._per_image(masks, B, "masks", ids)
        labels_ok = gt_labels is not None and pred_labels is not None
        if labels_ok:
            gl = np.asarray(gt_labels).reshape(-1)
            pl = np.asarray(pred_labels).reshape(-1)
            if len(gl) != B or len(pl) != B:
                raise ValueError(f"gt_labels/pred_labels must have {B} entries, "
                                 f"got {len(gl)} and {len(pl)}")
        # validate the whole batch before counting anything
        prepared = []
        for i in range(B):
            m = self._check_map(seq[i], ids[i])
            gt = self._check_boxes(boxes_b[i], ids[i])
            mask = self._check_mask(masks_b[i], m.shape, ids[i])
            prepared.append((m, gt, mask))
        st = self._state
        for i, (m, gt, mask) in enumerate(prepared):
            correct = bool(int(gl[i]) == int(pl[i])) if labels_ok else None
            if self.protocol == "wsoleval":
                values = normalize_minmax(m)
            else:
                values = np.clip(m, 0.0, 1.0)
            st["num_images"] += 1
            if correct is not None:
                st["num_cls_images"] += 1
                st["cls_correct"] += int(correct)
            if gt is not None:
                hits_l, hits_m = self._box_hits(values, gt)
                st["num_box_images"] += 1
                st["box_hits_largest"] += hits_l
                st["box_hits_multi"] += hits_m
                if correct is not None:
                    st["num_top1_images"] += 1
                    if correct:
                        st["top1_hits"] += hits_l[self._row50]
            if mask is not None:
                fg, bg = mask_histograms(values, mask, self.edges)
                st["num_mask_images"] += 1
                st["pxap_hist_fg"] += fg
                st["pxap_hist_bg"] += bg

    def _box_hits(self, values: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hit indicators ``(n_ious, n_thr)`` for the largest box and for any box."""
        frac = self._iou_frac[:, None]
        if self.protocol == "paper":
            _, fg = paper_threshold(values)
            best = iou([largest_contour_box(fg)], gt).max(axis=1)  # (1,)
            hits = (best[None, :] >= frac).astype(np.int64)
            return hits, hits
        sweep = sweep_boxes(to_uint8(values), self.grid)
        best_l, best_m = best_iou_per_level(sweep, gt, iou)
        lvl = sweep.level_of_threshold
        hits_l = (best_l[None, :] >= frac)[:, lvl].astype(np.int64)
        hits_m = (best_m[None, :] >= frac)[:, lvl].astype(np.int64)
        return hits_l, hits_m

    # ------------------------------------------------------------- validation
    @staticmethod
    def _per_image(items, B: int, name: str, ids: list[str]) -> list:
        if items is None:
            return [None] * B
        items = list(items)
        if len(items) != B:
            raise ValueError(f"{name} must have one entry per map ({B}), got {len(items)} "
                             f"(first id: {ids[0] if ids else 'none'})")
        return items

    def _check_map(self, m, image_id: str) -> np.ndarray:
        a = np.asarray(m)
        if a.ndim != 2:
            raise MethodOutputError(f"score map of image '{image_id}' must be 2-D (H, W), "
                                    f"got shape {a.shape}")
        if a.size == 0:
            raise MethodOutputError(f"score map of image '{image_id}' is empty ({a.shape})")
        if a.dtype.kind not in "fiub":
            raise MethodOutputError(f"score map of image '{image_id}' has dtype {a.dtype}; "
                                    "expected floats")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            n_bad = int(np.count_nonzero(~np.isfinite(a)))
            raise MethodOutputError(f"score map of image '{image_id}' contains NaN/Inf "
                                    f"({n_bad} of {a.size} values)")
        if a.dtype.kind == "b":
            a = a.astype(np.float32)
        if self.protocol == "paper":
            lo, hi = float(a.min()), float(a.max())
            if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
                raise MethodOutputError(
                    f"score map of image '{image_id}' has values in [{lo:.6g}, {hi:.6g}]; the "
                    "paper protocol needs maps in [0, 1] (normalize them, e.g. with a sigmoid "
                    "or min-max, before evaluating)")
            a = a.astype(np.float64, copy=False)
        return a

    @staticmethod
    def _check_boxes(boxes, image_id: str) -> np.ndarray | None:
        if boxes is None:
            return None
        b = np.asarray(boxes)
        if b.size == 0:
            return None
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"GT boxes of image '{image_id}' must have shape (k, 4), got {b.shape}")
        if b.dtype.kind == "f":
            if not np.isfinite(b).all() or not np.array_equal(b, np.round(b)):
                raise ValueError(f"GT boxes of image '{image_id}' must be integer pixel "
                                 "coordinates in the map's frame (use Geometry.map_boxes)")
        return b.astype(np.int64)

    @staticmethod
    def _check_mask(mask, shape, image_id: str) -> np.ndarray | None:
        if mask is None:
            return None
        mk = np.asarray(mask)
        if mk.shape != tuple(shape):
            raise MethodOutputError(f"score map of image '{image_id}' is {shape[1]}x{shape[0]} "
                                    f"but its mask is {mk.shape[-1]}x{mk.shape[0]} (W x H)")
        if mk.dtype != np.uint8:
            if not np.isin(mk, (0, 1, 255)).all():
                raise ValueError(f"mask of image '{image_id}' must hold 0, 1 or 255")
            mk = mk.astype(np.uint8)
        return mk

    # ---------------------------------------------------------------- compute
    def compute(self) -> dict:
        """The metrics as a plain JSON-serializable dict (see the module docstring)."""
        st = self._state
        n_box = int(st["num_box_images"])
        n_top1 = int(st["num_top1_images"])
        n_cls = int(st["num_cls_images"])
        keys = [str(t) for t in self.iou_thresholds]
        rows = [self._ious.index(t) for t in self.iou_thresholds]
        out: dict = {
            "protocol": self.protocol,
            "num_images": int(st["num_images"]),
            "num_box_images": n_box,
            "num_mask_images": int(st["num_mask_images"]),
            "num_labeled_images": n_cls,
            "cam_curve_interval": self.cam_curve_interval,
            "iou_thresholds": list(self.iou_thresholds),
            "multi_contour_eval": self.multi_contour_eval if self.protocol == "wsoleval" else False,
            "max_box_acc": None, "max_box_acc_threshold": None, "max_box_acc_v2": None,
            "box_acc_by_iou": None, "best_threshold_by_iou": None,
            "gt_known_loc": None, "top1_loc": None, "top1_loc_threshold": None,
            "top1_cls": (float(int(st["cls_correct"]) * 100.0 / n_cls) if n_cls else None),
            "pxap": None, "pxap_best_f1": None,
            "curves": {"thresholds": None, "box_acc": None, "max_box_acc": None,
                       "top1_loc": None, "pr": None},
        }
        curves = out["curves"]
        if n_box:
            acc_l = st["box_hits_largest"] * 100.0 / n_box
            acc_m = st["box_hits_multi"] * 100.0 / n_box
            if self.protocol == "paper":
                out["box_acc_by_iou"] = {k: float(acc_l[r, 0]) for k, r in zip(keys, rows)}
                out["gt_known_loc"] = float(acc_l[self._row50, 0])
            else:
                sel = acc_m if self.multi_contour_eval else acc_l
                out["box_acc_by_iou"] = {k: float(sel[r].max()) for k, r in zip(keys, rows)}
                out["best_threshold_by_iou"] = {k: float(self.grid[int(np.argmax(sel[r]))])
                                                for k, r in zip(keys, rows)}
                out["max_box_acc_v2"] = float(np.mean([out["box_acc_by_iou"][k] for k in keys]))
                curve50 = acc_l[self._row50]
                out["max_box_acc"] = float(curve50.max())
                out["max_box_acc_threshold"] = float(self.grid[int(np.argmax(curve50))])
                out["gt_known_loc"] = out["max_box_acc"]
                curves["thresholds"] = [float(t) for t in self.grid]
                curves["box_acc"] = {k: [float(x) for x in sel[r]] for k, r in zip(keys, rows)}
                curves["max_box_acc"] = [float(x) for x in curve50]
        if n_top1:
            top1 = st["top1_hits"] * 100.0 / n_top1
            out["top1_loc"] = float(top1.max())
            if self.protocol == "wsoleval":
                out["top1_loc_threshold"] = float(self.grid[int(np.argmax(top1))])
                curves["top1_loc"] = [float(x) for x in top1]
        if int(st["num_mask_images"]):
            px = pxap_from_histograms(st["pxap_hist_fg"], st["pxap_hist_bg"], self.edges)
            out["pxap"] = px["pxap"]
            out["pxap_best_f1"] = px["best_f1"]
            curves["pr"] = px["pr"]
        return out


def evaluate(maps: Iterable, image_ids: Sequence[str], **kwargs) -> dict:
    """One-shot helper: ``Evaluator(**config).accumulate(...)`` then ``compute()``.

    Keyword arguments go to the constructor (protocol, cam_curve_interval, iou_thresholds,
    multi_contour_eval) or to :meth:`Evaluator.accumulate` (gt_boxes, masks, labels).
    """
    cfg = {k: kwargs.pop(k) for k in ("protocol", "cam_curve_interval", "iou_thresholds",
                                      "multi_contour_eval") if k in kwargs}
    ev = Evaluator(**cfg)
    ev.accumulate(maps, image_ids, **kwargs)
    return ev.compute()
