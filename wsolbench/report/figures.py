"""Figures of a run folder (PNG, matplotlib's Agg canvas; no pyplot, no global state).

Written into ``<run_dir>/figures/`` at the end of ``wsolbench run`` by
:func:`write_run_figures` (which has the fitted methods and the test images), and
redrawn by ``wsolbench report`` from results.json alone by :func:`figures_from_results`:

============================  ============================================================  ===========
file                          what                                                          needs
============================  ============================================================  ===========
``boxes.png``                 test images x methods: map overlay, ground-truth boxes         the run
                              (green) and the paper-protocol box (red, tau = max/10,
                              largest contour) with its IoU (paper Fig. 5)
``maps_vs_masks.png``         image, ground-truth mask, each method's map (paper Fig. 6/7)   the run, masks
``s_curve.png``               mean S on validation per epoch, selected epoch marked;         results.json
                              validation GT-known loc per epoch labelled "diagnostic
                              only"; f's validation accuracy per epoch
``threshold_curves.png``      wsoleval BoxAcc vs threshold (IoU 30/50/70), PR curves         results.json
``epochs_maps.png``           g's maps across epochs on a few validation images, mean S      results.json
                              per epoch, selected epoch framed (paper Fig. 4)                (diagnostics)
============================  ============================================================  ===========

Every figure is drawn only from what is there: a figure whose data is missing (no masks,
no boxes, no method with a selection, no per-epoch maps) is skipped with a reason, and a
figure that fails is logged and skipped, never failing a finished run. Both entry points
return ``{file name: "written" | "skipped: why" | "failed: why"}``.

The test images shown are fixed: the first image of each class in the split's order
(round-robin over classes when fewer classes than panels), so runs can be compared.
Maps go through :func:`wsolbench.runner.postprocess_maps`, exactly as the evaluator sees
them; boxes come from :func:`wsolbench.evaluation.paper_box`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("wsolbench")

FIG_DIR = "figures"
DPI = 100
N_IMAGES = 8
MAX_EPOCH_COLUMNS = 10
GT_COLOR = "#00c000"
PRED_COLOR = "#ff2020"
MAP_CMAP = "jet"

CAPTIONS = {
    "boxes.png": "Test images (first image of each class) per method: the method's map (overlay), "
                 "ground-truth boxes (green) and the paper-protocol box (red: tau = max/10, largest "
                 "contour) with its IoU to the best-matching ground-truth box (cf. paper Fig. 5).",
    "maps_vs_masks.png": "Test images, their ground-truth masks (white; grey = ignored) and each "
                         "method's post-processed map in [0, 1] (cf. paper Fig. 6/7).",
    "s_curve.png": "Model selection on validation data: mean S (paper eq. 6) per epoch with the "
                   "selected epoch marked; the validation GT-known loc per epoch is a diagnostic only "
                   "(never used for selection); the classifier f's validation accuracy per epoch.",
    "threshold_curves.png": "wsoleval protocol: box accuracy vs. threshold on the normalized map at "
                            "each IoU criterion (maximum marked), and pixel precision-recall curves "
                            "(PxAP) when masks exist.",
    "epochs_maps.png": "Maps of g across training epochs on fixed validation images, with the mean S "
                       "over the validation split per epoch; the selected epoch is framed in red "
                       "(cf. paper Fig. 4).",
}


# --------------------------------------------------------------------------- small helpers
class SkipFigure(Exception):
    """A figure whose data is not there; the message says what is missing."""


def _figure(width: float, height: float, layout: str | None = None):
    from matplotlib.figure import Figure

    return Figure(figsize=(max(width, 2.0), max(height, 1.5)), dpi=DPI, layout=layout)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=fig.dpi, bbox_inches="tight")
    tmp.replace(path)


def _num(v: Any) -> float:
    """A results.json number (None/NaN allowed) as a float (NaN when missing)."""
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _short(text: str, n: int = 18) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]


def _iou(box: np.ndarray, gts: np.ndarray) -> float:
    """Best IoU of ``box`` with rows of ``gts`` (inclusive pixel areas, as the evaluator)."""
    gts = np.asarray(gts, dtype=np.float64).reshape(-1, 4)
    if len(gts) == 0:
        return math.nan
    b = np.asarray(box, dtype=np.float64)
    iw = np.maximum(0.0, np.minimum(b[2], gts[:, 2]) - np.maximum(b[0], gts[:, 0]) + 1)
    ih = np.maximum(0.0, np.minimum(b[3], gts[:, 3]) - np.maximum(b[1], gts[:, 1]) + 1)
    inter = iw * ih
    union = (b[2] - b[0] + 1) * (b[3] - b[1] + 1) + (gts[:, 2] - gts[:, 0] + 1) * (gts[:, 3] - gts[:, 1] + 1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = np.where(union > 0, inter / union, 0.0)
    return float(vals.max())


def _draw_box(ax, box, color: str, lw: float = 1.8) -> None:
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) for v in box)
    # Inclusive pixel box: pixel centres x0..x1 -> edges x0-0.5 .. x1+0.5.
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                           edgecolor=color, linewidth=lw))


def _overlay(m: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """RGBA overlay of a [0, 1] map: colour from the map, opacity growing with the value,
    so that low-scoring pixels leave the image as it is."""
    from matplotlib import colormaps

    rgba = colormaps[MAP_CMAP](np.clip(m, 0.0, 1.0))
    rgba[..., 3] = strength * np.clip(m, 0.0, 1.0)
    return rgba


def _colors(results: dict[str, Any]) -> dict[str, str]:
    """One colour per method label, the same in every panel (results.json order)."""
    return {label: f"C{i % 10}" for i, label in enumerate(_methods(results))}


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _paper_box_fn() -> Callable[[np.ndarray], np.ndarray] | None:
    try:
        from wsolbench.evaluation import paper_box
    except ImportError:
        return None
    return paper_box


def select_images(labels: np.ndarray, n: int = N_IMAGES) -> list[int]:
    """Positions of the first image of each class in split order; round-robin over the
    classes (second image of each class, ...) when there are fewer classes than ``n``."""
    labels = np.asarray(labels)
    seen: dict[int, int] = {}
    rank = []
    for i, c in enumerate(labels.tolist()):
        k = seen.get(c, 0)
        seen[c] = k + 1
        rank.append((k, i))
    return [i for _, i in sorted(rank)[:n]]


def denormalize(images) -> np.ndarray:
    """Normalized ``[B, 3, H, W]`` tensor -> ``[B, H, W, 3]`` float array in [0, 1]."""
    from wsolbench.data.pipeline import IMAGENET_MEAN, IMAGENET_STD

    x = images.detach().float().cpu().numpy().transpose(0, 2, 3, 1)
    x = x * np.asarray(IMAGENET_STD, dtype=np.float32) + np.asarray(IMAGENET_MEAN, dtype=np.float32)
    return np.clip(x, 0.0, 1.0)


def load_results(run_dir: Path) -> dict[str, Any]:
    from wsolbench.errors import UserError

    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise UserError(f"{run_dir} has no results.json; give a run folder of 'wsolbench run'")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); it may be from an interrupted write") from None


def _methods(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(results.get("methods") or {})


# --------------------------------------------------------------------------- run figures
def _method_maps(runner: Any, label: str, method: Any, images, labels, ids: list[str],
                 out_hw: tuple[int, int]) -> np.ndarray:
    import torch

    from wsolbench.methods.base import LocalizeOutput
    from wsolbench.runner import postprocess_maps

    try:
        from wsolbench.runner import _autocast
        ac = _autocast(runner.device, runner.cfg["run"]["amp"])
    except (ImportError, AttributeError, KeyError, TypeError):
        import contextlib
        ac = contextlib.nullcontext()
    with torch.no_grad(), ac:
        out = method.localize(images, labels)
    maps = out.maps if isinstance(out, LocalizeOutput) else out
    return postprocess_maps(maps, out_hw, method.map_range, label, ids)


def _test_protocol(results: dict[str, Any]) -> str:
    protocols = list(results.get("protocols") or [])
    return "paper" if "paper" in protocols or not protocols else protocols[0]


class _Shown:
    """The fixed test images of a run, their maps per method, fetched once."""

    def __init__(self, runner: Any):
        self.runner = runner
        self.protocol = _test_protocol(runner.results)
        self.data = runner.split("test", self.protocol)
        src = self.data.source
        self.index = select_images(src.labels)
        batch = src.get(np.asarray(self.index, dtype=np.int64), augment=False)
        self.images = batch.images
        self.labels = batch.labels
        self.ids = [src.ids[i] for i in self.index]
        self.rgb = denormalize(batch.images)
        self.out_hw = tuple(src.out_hw)
        names = getattr(runner.dataset, "class_names", None) or []
        self.class_names = [names[int(c)] if int(c) < len(names) else str(int(c))
                            for c in src.labels[self.index]]
        fitted = getattr(runner, "fitted", None) or {}
        order = [lab for lab in _methods(runner.results) if lab in fitted]
        order += [lab for lab in fitted if lab not in order]
        self.maps: dict[str, np.ndarray] = {}
        self.errors: dict[str, str] = {}
        for label in order:
            try:
                self.maps[label] = _method_maps(runner, label, fitted[label], self.images, self.labels,
                                                self.ids, self.out_hw)
            except Exception as exc:  # noqa: BLE001 - one broken method must not hide the others
                self.errors[label] = f"{type(exc).__name__}: {exc}"
                log.warning("figures: no maps of %s (%s)", label, self.errors[label])


def _no_maps(shown: _Shown) -> SkipFigure:
    if shown.errors:
        return SkipFigure("no method gave maps (" + "; ".join(f"{k}: {v}" for k, v in shown.errors.items()) + ")")
    return SkipFigure("no fitted method to draw (runner.fitted is empty)")


def build_boxes(shown: _Shown):
    if not shown.maps:
        raise _no_maps(shown)
    paper_box = _paper_box_fn()
    if paper_box is None:
        raise SkipFigure("wsolbench.evaluation.paper_box is not available")
    labels = list(shown.maps)
    n = len(shown.index)
    fig = _figure(1.6 * n + 0.6, 1.75 * len(labels) + 0.6, layout="constrained")
    axes = fig.subplots(len(labels), n, squeeze=False)
    boxes = shown.data.boxes
    for r, label in enumerate(labels):
        for c in range(n):
            ax = axes[r][c]
            m = shown.maps[label][c]
            ax.imshow(shown.rgb[c], interpolation="nearest")
            ax.imshow(_overlay(m), interpolation="nearest")
            gts = boxes[shown.index[c]] if boxes is not None else None
            if gts is not None:
                for g in np.asarray(gts).reshape(-1, 4):
                    _draw_box(ax, g, GT_COLOR)
            pred = np.asarray(paper_box(m)).reshape(4)
            _draw_box(ax, pred, PRED_COLOR)
            if gts is not None and len(np.asarray(gts).reshape(-1, 4)):
                v = _iou(pred, gts)
                ax.text(0.02, 0.98, f"IoU {v:.2f}", transform=ax.transAxes, va="top", ha="left",
                        fontsize=7, color="white",
                        bbox=dict(facecolor=GT_COLOR if v >= 0.5 else PRED_COLOR, alpha=0.8, pad=1,
                                  edgecolor="none"))
            _clean(ax)
            if r == 0:
                ax.set_title(f"{_short(shown.class_names[c], 16)}\n{_short(shown.ids[c], 18)}", fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    gt_note = "ground truth (green), " if boxes is not None else "(no ground-truth boxes), "
    fig.suptitle(f"Boxes on test images, {shown.protocol} geometry: {gt_note}paper-protocol "
                 "prediction (red, tau = max/10, largest contour)", fontsize=9)
    return fig


def build_maps_vs_masks(shown: _Shown):
    runner = shown.runner
    if not shown.maps:
        raise _no_maps(shown)
    ds = runner.dataset
    if not (hasattr(ds, "has_masks") and ds.has_masks("test")):
        raise SkipFigure("the test split has no ground-truth masks")
    samples = shown.data.decoded.samples
    cols = [k for k, i in enumerate(shown.index) if samples[i].mask_paths]
    if not cols:
        raise SkipFigure("none of the shown test images has a mask")
    masks = [runner._mask(samples[shown.index[k]], shown.data) for k in cols]
    labels = list(shown.maps)
    rows = 2 + len(labels)
    fig = _figure(1.5 * len(cols) + 0.8, 1.55 * rows + 0.6, layout="constrained")
    axes = fig.subplots(rows, len(cols), squeeze=False)
    for j, k in enumerate(cols):
        axes[0][j].imshow(shown.rgb[k], interpolation="nearest")
        axes[0][j].set_title(_short(shown.ids[k], 18), fontsize=7)
        mk = np.asarray(masks[j])
        shown_mask = np.where(mk == 255, 0.5, (mk > 0).astype(np.float32))
        axes[1][j].imshow(shown_mask, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        for r, label in enumerate(labels):
            im = axes[2 + r][j].imshow(shown.maps[label][k], cmap=MAP_CMAP, vmin=0.0, vmax=1.0,
                                       interpolation="nearest")
        for r in range(rows):
            _clean(axes[r][j])
    for r, name in enumerate(["image", "GT mask", *labels]):
        axes[r][0].set_ylabel(name, fontsize=9)
    fig.colorbar(im, ax=axes[2:, :].ravel().tolist(), shrink=0.8, aspect=30, label="map value")
    fig.suptitle("Test images, ground-truth masks and post-processed maps in [0, 1]", fontsize=9)
    return fig


# --------------------------------------------------------------------------- results figures
def build_s_curve(results: dict[str, Any]):
    from matplotlib.ticker import MaxNLocator

    panels: list[tuple[str, dict[str, Any]]] = []
    for label, entry in _methods(results).items():
        sel = entry.get("selection") or {}
        if sel.get("S_per_epoch"):
            panels.append((label, sel))
    clf_sel = (results.get("classifier") or {}).get("selection") or {}
    history = [h for h in (clf_sel.get("history") or []) if isinstance(h, dict)]
    if not panels and not history:
        raise SkipFigure("no method recorded S per epoch and f has no validation history")
    n = len(panels) + (1 if history else 0)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig = _figure(4.6 * ncols, 3.3 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax, (label, sel) in zip(axes, panels):
        s = [_num(v) for v in sel["S_per_epoch"]]
        epochs = list(range(1, len(s) + 1))
        ax.plot(epochs, s, "-o", color="C0", ms=3, label="mean S on val (selects)")
        chosen = sel.get("selected_epoch")
        if chosen is not None and 1 <= int(chosen) <= len(s):
            ax.axvline(int(chosen), color=PRED_COLOR, ls=":", lw=1.2)
            ax.plot([int(chosen)], [s[int(chosen) - 1]], "*", color=PRED_COLOR, ms=12,
                    label=f"selected: epoch {int(chosen)}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("mean S (eq. 6)", color="C0")
        diag = sel.get("val_gt_known_loc_per_epoch_DIAGNOSTIC_ONLY")
        handles, names = ax.get_legend_handles_labels()
        if diag:
            d = [_num(v) for v in diag]
            ax2 = ax.twinx()
            ax2.plot(list(range(1, len(d) + 1)), d, "--s", color="C2", ms=3, alpha=0.8,
                     label="val GT-known loc [%]\n(diagnostic only, not used)")
            ax2.set_ylabel("val GT-known loc [%] (diagnostic only)", color="C2", fontsize=8)
            h2, n2 = ax2.get_legend_handles_labels()
            handles, names = handles + h2, names + n2
        ax.legend(handles, names, fontsize=7, loc="best")
        crit = sel.get("criterion") or ""
        ax.set_title(f"{label}\n{_short(crit, 60)} [{sel.get('split', '?')} split]", fontsize=8)
        ax.grid(alpha=0.3)
    if history:
        ax = axes[len(panels)]
        ep = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
        acc = [_num(h.get("val_acc")) for h in history]
        ax.plot(ep, acc, "-o", color="C1", ms=3, label="val top-1 acc [%]")
        chosen = clf_sel.get("selected_epoch")
        if chosen is not None and int(chosen) in ep:
            ax.axvline(int(chosen), color=PRED_COLOR, ls=":", lw=1.2)
            ax.plot([int(chosen)], [acc[ep.index(int(chosen))]], "*", color=PRED_COLOR, ms=12,
                    label=f"kept: epoch {int(chosen)}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("val top-1 accuracy [%]")
        ax.set_title(f"classifier f\n{_short(clf_sel.get('criterion') or '', 60)}", fontsize=8)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.suptitle("Selection on validation data (no test labels)", fontsize=10)
    fig.tight_layout()
    return fig


def _curves(entry: dict[str, Any], protocol: str) -> dict[str, Any]:
    prot = (entry.get("protocols") or {}).get(protocol) or {}
    return ((prot.get("metrics") or {}).get("curves")) or {}


def build_threshold_curves(results: dict[str, Any]):
    box_curves: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    for label, entry in _methods(results).items():
        cur = _curves(entry, "wsoleval")
        thr = np.asarray([_num(v) for v in (cur.get("thresholds") or [])])
        per_iou = {}
        for k, vals in (cur.get("box_acc") or {}).items():
            arr = np.asarray([_num(v) for v in (vals or [])])
            if len(arr) and len(arr) == len(thr):
                per_iou[str(k)] = arr
        if per_iou:
            box_curves[label] = (thr, per_iou)
        for protocol in ("wsoleval", "paper"):
            pr = _curves(entry, protocol).get("pr") or {}
            p = np.asarray([_num(v) for v in (pr.get("precision") or [])])
            r = np.asarray([_num(v) for v in (pr.get("recall") or [])])
            if len(p) and len(p) == len(r):
                pxap = _num(((entry.get("protocols") or {}).get(protocol) or {}).get("metrics", {}).get("pxap"))
                pr_curves[label] = (r, p, pxap)
                break
    if not box_curves and not pr_curves:
        raise SkipFigure("no method has wsoleval threshold curves or PR curves in results.json")
    ious = sorted({k for _, per in box_curves.values() for k in per}, key=lambda k: _num(k))
    colors = _colors(results)
    n = len(ious) + (1 if pr_curves else 0)
    fig = _figure(4.2 * n, 3.6)
    axes = fig.subplots(1, n, squeeze=False)[0]
    percent = any(np.nanmax(a) > 1.5 for _, per in box_curves.values() for a in per.values()
                  if np.isfinite(a).any())
    unit = "[%]" if percent else "(fraction)"
    for ax, k in zip(axes, ious):
        for label, (thr, per) in box_curves.items():
            if k not in per:
                continue
            y = per[k]
            color = colors[label]
            best = int(np.nanargmax(y)) if np.isfinite(y).any() else None
            name = label if best is None else f"{label} (max {y[best]:.1f} at {thr[best]:.2f})"
            ax.plot(thr, y, color=color, lw=1.3, label=name)
            if best is not None:
                ax.plot([thr[best]], [y[best]], "o", color=color, ms=4)
        ax.set_title(f"BoxAcc at IoU >= {_num(k) / 100:.1f} (wsoleval)", fontsize=9)
        ax.set_xlabel("threshold on the min-max normalized map")
        ax.set_ylabel(f"box accuracy {unit}")
        ax.legend(fontsize=6.5, loc="best")
        ax.grid(alpha=0.3)
    if pr_curves:
        ax = axes[-1]
        for label, (r, p, pxap) in pr_curves.items():
            name = label if not math.isfinite(pxap) else f"{label} (PxAP {pxap:.1f})"
            ax.plot(r, p, color=colors[label], lw=1.3, label=name)
        pr_pct = any(np.nanmax(np.concatenate([r, p])) > 1.5 for r, p, _ in pr_curves.values()
                     if np.isfinite(np.concatenate([r, p])).any())
        top = 102 if pr_pct else 1.02
        pr_unit = " [%]" if pr_pct else ""
        ax.set_title("pixel precision-recall (PxAP)", fontsize=9)
        ax.set_xlabel(f"recall{pr_unit}")
        ax.set_ylabel(f"precision{pr_unit}")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.legend(fontsize=6.5, loc="best")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Test split, {results.get('dataset', '?')}: threshold sweep curves", fontsize=10)
    fig.tight_layout()
    return fig


def _epoch_columns(epochs: list[int], selected: int | None, k: int = MAX_EPOCH_COLUMNS) -> list[int]:
    """Positions of at most ``k`` epochs, evenly spread, always with the first, the last and
    the selected one."""
    n = len(epochs)
    if n <= k:
        return list(range(n))
    pos = {int(round(v)) for v in np.linspace(0, n - 1, k - 1)}
    if selected is not None and selected in epochs:
        pos.add(epochs.index(selected))
    return sorted(pos)


def build_epoch_maps(results: dict[str, Any],
                     val_images: Callable[[list[str]], dict[str, np.ndarray]] | None = None):
    blocks = []
    for label, entry in _methods(results).items():
        em = (entry.get("diagnostics") or {}).get("epoch_maps")
        if not em or not em.get("maps") or not em.get("epochs"):
            continue
        maps = np.asarray(em["maps"], dtype=np.float64)  # [epoch, image, h, w]
        if maps.ndim != 4 or maps.shape[0] != len(em["epochs"]):
            log.warning("figures: %s has epoch_maps of shape %s; expected [epoch][image][h][w]",
                        label, maps.shape)
            continue
        blocks.append((label, entry, em, maps))
    if not blocks:
        raise SkipFigure("no method recorded per-epoch maps (diagnostics.epoch_maps)")
    paper_box = _paper_box_fn()
    images: dict[str, np.ndarray] = {}
    if val_images is not None:
        ids = [i for _, _, em, _ in blocks for i in em.get("ids", [])]
        try:
            images = val_images(ids)
        except Exception as exc:  # noqa: BLE001 - the maps alone are still worth drawing
            log.warning("figures: validation images for epochs_maps.png unavailable (%s)", exc)
    rows = sum(m.shape[1] for *_, m in blocks)
    ncols = max(len(_epoch_columns([int(e) for e in em["epochs"]],
                                   (entry.get("selection") or {}).get("selected_epoch")))
                for _, entry, em, _ in blocks) + (1 if images else 0)
    fig = _figure(1.45 * ncols + 0.8, 1.5 * rows + 0.8, layout="constrained")
    axes = fig.subplots(rows, ncols, squeeze=False)
    r0 = 0
    for label, entry, em, maps in blocks:
        sel = entry.get("selection") or {}
        s_per_epoch = [_num(v) for v in (sel.get("S_per_epoch") or [])]
        chosen = sel.get("selected_epoch")
        epochs = [int(e) for e in em["epochs"]]
        cols = _epoch_columns(epochs, chosen)
        ids = list(em.get("ids") or [])
        off = 1 if images else 0
        for i in range(maps.shape[1]):
            r = r0 + i
            img_id = ids[i] if i < len(ids) else f"image {i}"
            if images:
                ax = axes[r][0]
                if img_id in images:
                    ax.imshow(images[img_id], interpolation="nearest")
                _clean(ax)
                ax.set_ylabel(f"{label}\n{_short(img_id, 16)}", fontsize=7)
            for j, p in enumerate(cols):
                ax = axes[r][off + j]
                m = maps[p, i]
                lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
                vmin, vmax = (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, hi)
                ax.imshow(m, cmap=MAP_CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
                if paper_box is not None and np.isfinite(m).all() and hi > 0:
                    try:
                        _draw_box(ax, np.asarray(paper_box(m)).reshape(4), "white", lw=1.2)
                    except Exception:  # noqa: BLE001 - the box is decoration here
                        pass
                _clean(ax)
                e = epochs[p]
                if e == chosen:
                    for spine in ax.spines.values():
                        spine.set_edgecolor(PRED_COLOR)
                        spine.set_linewidth(3)
                if i == 0:
                    s = s_per_epoch[e - 1] if 1 <= e <= len(s_per_epoch) else math.nan
                    title = f"epoch {e}" + (" (selected)" if e == chosen else "")
                    if math.isfinite(s):
                        title += f"\nmean S {s:.3f}"
                    ax.set_title(title, fontsize=7, color=PRED_COLOR if e == chosen else "black")
                if j == 0 and not images:
                    ax.set_ylabel(f"{label}\n{_short(img_id, 16)}", fontsize=7)
            for j in range(off + len(cols), ncols):
                axes[r][j].set_visible(False)
        r0 += maps.shape[1]
    fig.suptitle("g's maps on validation images across epochs (white: paper box; red frame: "
                 "selected epoch; mean S over all validation images)", fontsize=9)
    return fig


# --------------------------------------------------------------------------- entry points
def _attempt(status: dict[str, str], path: Path, build: Callable[[], Any], strict: bool) -> None:
    """Build and save one figure; record ``written`` / ``skipped: why`` / ``failed: why``."""
    name = path.name
    try:
        fig = build()
        _save(fig, path)
        status[name] = "written"
    except SkipFigure as why:
        status[name] = f"skipped: {why}"
    except Exception as exc:  # noqa: BLE001 - a figure must never fail a finished run
        if strict:
            raise
        status[name] = f"failed: {type(exc).__name__}: {exc}"
        log.warning("figure %s not drawn: %s: %s", name, type(exc).__name__, exc)


def _results_figures(results: dict[str, Any], fig_dir: Path, status: dict[str, str], strict: bool,
                     val_images: Callable[[list[str]], dict[str, np.ndarray]] | None = None) -> None:
    _attempt(status, fig_dir / "s_curve.png", lambda: build_s_curve(results), strict)
    _attempt(status, fig_dir / "threshold_curves.png", lambda: build_threshold_curves(results), strict)
    _attempt(status, fig_dir / "epochs_maps.png", lambda: build_epoch_maps(results, val_images), strict)


def _val_images(runner: Any) -> Callable[[list[str]], dict[str, np.ndarray]]:
    def fetch(ids: list[str]) -> dict[str, np.ndarray]:
        src = runner.split("val").source
        pos = {i: k for k, i in enumerate(src.ids)}
        wanted = [i for i in dict.fromkeys(ids) if i in pos]
        if not wanted:
            return {}
        batch = src.get(np.asarray([pos[i] for i in wanted], dtype=np.int64), augment=False)
        return dict(zip(wanted, denormalize(batch.images)))

    return fetch


def write_run_figures(runner: Any, *, strict: bool = False) -> dict[str, str]:
    """All figures of a finished run into ``runner.run_dir/figures``.

    Needs ``runner.fitted`` (label -> fitted method) for the image figures; without it
    they are skipped. The status per file is also stored in ``runner.results["figures"]``
    (the runner saves results.json after this). ``strict=True`` re-raises a figure's
    exception (for tests) instead of logging it.
    """
    fig_dir = Path(runner.run_dir) / FIG_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    shown: list[_Shown] = []

    def get_shown() -> _Shown:
        if not shown:
            shown.append(_Shown(runner))
        return shown[0]

    if getattr(runner, "fitted", None):
        _attempt(status, fig_dir / "boxes.png", lambda: build_boxes(get_shown()), strict)
        _attempt(status, fig_dir / "maps_vs_masks.png", lambda: build_maps_vs_masks(get_shown()), strict)
    else:
        for name in ("boxes.png", "maps_vs_masks.png"):
            status[name] = "skipped: the runner kept no fitted methods (runner.fitted)"
    _results_figures(runner.results, fig_dir, status, strict, _val_images(runner))
    runner.results["figures"] = dict(status)
    return status


def figures_from_results(run_dir: Path, *, strict: bool = False) -> dict[str, str]:
    """Redraw what results.json alone allows (s_curve, threshold_curves, epochs_maps)."""
    results = load_results(Path(run_dir))
    status: dict[str, str] = {}
    _results_figures(results, Path(run_dir) / FIG_DIR, status, strict)
    return status
