"""``wsolbench eval``: evaluate saved score maps against a wsolevaluation metadata folder.

::

    wsolbench eval --metadata DIR --scoremaps DIR [--protocol wsoleval|paper]
                   [--image-root DIR] [--mask-root DIR] [--cam-curve-interval 0.001]
                   [--iou-thresholds 30,50,70] [--predictions FILE] [--normalize] [--json FILE]

``--scoremaps`` holds one ``.npy`` per image at ``<scoremaps>/<image path>.npy`` (e.g.
``001.Black/x.jpg.npy``): a 2-D float array, values in [0, 1] unless ``--normalize`` (per-map
min-max normalization) is given. Ground-truth boxes are mapped from the original size
(``image_sizes.txt``) to the map's size, and masks resized (nearest neighbour), with the
protocol's :class:`~wsolbench.evaluation.geometry.Geometry`. ``--predictions`` is a CSV of
``<image path>,<predicted label>`` lines (an optional ``path,predicted_label`` header) that
enables Top-1 loc and Top-1 cls. The default protocol is ``wsoleval``.

Bad input (missing or malformed files, maps with NaN/Inf, wrong rank, out of range) is a
:class:`~wsolbench.errors.UserError`: one line, exit status 2. The package's CLI wires
:func:`add_parser`/:func:`run`; ``python -m wsolbench.evaluation.cli`` runs it standalone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from wsolbench.errors import UserError
from wsolbench.evaluation.evaluator import PROTOCOLS, RANGE_TOLERANCE, Evaluator
from wsolbench.evaluation.geometry import Geometry
from wsolbench.evaluation.sweep import normalize_minmax

DESCRIPTION = ("Evaluate saved score maps (<scoremaps>/<image path>.npy) against a "
               "wsolevaluation metadata folder; prints a summary, --json writes all metrics "
               "and curves.")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metadata", required=True, type=Path, metavar="DIR",
                   help="folder with image_ids.txt, class_labels.txt, image_sizes.txt, localization.txt")
    p.add_argument("--scoremaps", required=True, type=Path, metavar="DIR",
                   help="folder with one <image path>.npy score map per image")
    p.add_argument("--protocol", choices=PROTOCOLS, default="wsoleval",
                   help="evaluation protocol (default: wsoleval)")
    p.add_argument("--image-root", type=Path, metavar="DIR", help="root of the image paths (recorded only)")
    p.add_argument("--mask-root", type=Path, metavar="DIR", help="root of the mask paths in localization.txt")
    p.add_argument("--cam-curve-interval", type=float, default=0.001, metavar="STEP",
                   help="threshold grid step in [0, 1) (default: 0.001)")
    p.add_argument("--iou-thresholds", default="30,50,70", metavar="LIST",
                   help="IoU thresholds in percent for MaxBoxAccV2 (default: 30,50,70)")
    p.add_argument("--predictions", type=Path, metavar="FILE",
                   help="CSV '<image path>,<predicted label>' enabling Top-1 loc / Top-1 cls")
    p.add_argument("--normalize", action="store_true",
                   help="min-max normalize each map instead of requiring values in [0, 1]")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the full result as JSON")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to an argparse ``subparsers`` object (``func=run``)."""
    p = subparsers.add_parser("eval", help="evaluate saved score maps (MaxBoxAcc, PxAP, ...)",
                              description=DESCRIPTION)
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def _parse_ious(text: str) -> tuple[int, ...]:
    out = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            v = int(part)
        except ValueError:
            v = -1
        if not 0 < v <= 100:
            raise UserError(f"--iou-thresholds: expected integers in (0, 100] separated by "
                            f"commas (e.g. 30,50,70), got '{text}'")
        out.append(v)
    return tuple(out)


def read_predictions(path: Path, ids: dict[str, int]) -> dict[str, int]:
    """``<image path>,<predicted label>`` lines -> {image id: label}; every id needs one."""
    if not path.is_file():
        raise UserError(f"{path}: predictions file is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
    preds: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or (n == 1 and line.replace(" ", "") == "path,predicted_label"):
            continue
        parts = line.split(",")
        try:
            label = int(parts[1]) if len(parts) == 2 else -1
        except ValueError:
            label = -1
        if label < 0:
            raise UserError(f"{path}:{n}: expected '<image path>,<predicted label>' with an "
                            f"integer label >= 0, got '{line[:120]}'")
        if parts[0] not in ids:
            raise UserError(f"{path}:{n}: image '{parts[0]}' is not in the metadata's image_ids.txt")
        if parts[0] in preds:
            raise UserError(f"{path}:{n}: image '{parts[0]}' has a second prediction")
        preds[parts[0]] = label
    missing = [i for i in ids if i not in preds]
    if missing:
        raise UserError(f"{path}: no prediction for image '{missing[0]}' "
                        f"({len(missing)} of {len(ids)} images have none)")
    return preds


def load_scoremap(path: Path, image_id: str, normalize: bool) -> np.ndarray:
    """Load and check one score map; one-line :class:`UserError` naming the file otherwise."""
    if not path.is_file():
        raise UserError(f"scoremap {path} is missing (image '{image_id}'; expected one "
                        "<scoremaps>/<image path>.npy per image)")
    try:
        m = np.load(path, allow_pickle=False)
    except Exception as exc:  # corrupt/truncated file, pickled object, not .npy ...
        raise UserError(f"scoremap {path} cannot be read as a .npy array "
                        f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(m, np.ndarray):
        raise UserError(f"scoremap {path} is not a single array (an .npz archive?)")
    if m.ndim != 2:
        raise UserError(f"scoremap {path} has shape {m.shape}; expected a 2-D (H, W) array")
    if m.size == 0:
        raise UserError(f"scoremap {path} is empty (shape {m.shape})")
    if m.dtype.kind not in "fiub":
        raise UserError(f"scoremap {path} has dtype {m.dtype}; expected floats")
    if m.dtype.kind == "f":
        bad = ~np.isfinite(m)
        if bad.any():
            raise UserError(f"scoremap {path} contains NaN/Inf ({int(bad.sum())} of {m.size} values)")
    if normalize:
        return normalize_minmax(m)
    lo, hi = float(m.min()), float(m.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise UserError(f"scoremap {path} has values in [{lo:.6g}, {hi:.6g}], outside [0, 1]; "
                        "pass --normalize to min-max normalize each map")
    return m


def run(args: argparse.Namespace) -> int:
    """Run the evaluation described by parsed ``args``; returns the exit status (0)."""
    from wsolbench.data.masks import load_mask
    from wsolbench.data.wsoleval import IMAGE_SIZES, read_metadata

    ious = _parse_ious(args.iou_thresholds)
    evaluator = Evaluator(args.protocol, cam_curve_interval=args.cam_curve_interval,
                          iou_thresholds=ious)
    samples = read_metadata(args.metadata, image_root=args.image_root, mask_root=args.mask_root)
    if not samples:
        raise UserError(f"{Path(args.metadata) / 'image_ids.txt'} lists no image")
    if not Path(args.scoremaps).is_dir():
        raise UserError(f"scoremap folder {args.scoremaps} does not exist")
    ids = {s.id: k for k, s in enumerate(samples)}
    preds = read_predictions(Path(args.predictions), ids) if args.predictions else None
    geometry = Geometry.for_protocol(args.protocol)

    for s in samples:
        m = load_scoremap(Path(args.scoremaps) / (s.id + ".npy"), s.id, args.normalize)
        hw = m.shape
        boxes = None
        if s.boxes:
            if s.size is None:
                raise UserError(f"{Path(args.metadata) / IMAGE_SIZES}: no size for image '{s.id}' "
                                "(needed to map its boxes to the score map)")
            boxes = geometry.map_boxes(s.boxes, s.size, out_hw=hw)
        mask = None
        if s.mask_paths:
            mask = geometry.map_mask(load_mask(s.mask_paths, s.ignore_path, s.mask_rule), out_hw=hw)
        labels = {}
        if preds is not None:
            labels = {"gt_labels": [s.label], "pred_labels": [preds[s.id]]}
        evaluator.accumulate(m[None], [s.id], gt_boxes=[boxes], masks=[mask], **labels)

    result = evaluator.compute()
    result["inputs"] = {
        "metadata": str(args.metadata), "scoremaps": str(args.scoremaps),
        "image_root": str(args.image_root) if args.image_root else None,
        "mask_root": str(args.mask_root) if args.mask_root else None,
        "predictions": str(args.predictions) if args.predictions else None,
        "normalize": bool(args.normalize),
        "geometry": {"resize": list(geometry.resize),
                     "crop": list(geometry.crop) if geometry.crop else None},
    }
    print(format_summary(result))
    if args.json:
        _write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    return 0


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:6.2f}"


def format_summary(r: dict) -> str:
    """A short human-readable summary of a result dict."""
    ious = [str(t) for t in r["iou_thresholds"]]
    lines = [f"protocol {r['protocol']}: {r['num_images']} images ({r['num_box_images']} with "
             f"boxes, {r['num_mask_images']} with masks, {r['num_labeled_images']} with predictions)"]
    by = r["box_acc_by_iou"]
    if r["protocol"] == "wsoleval":
        if r["max_box_acc"] is not None:
            lines.append(f"  MaxBoxAcc     {_fmt(r['max_box_acc'])}  (IoU 50, largest contour, "
                         f"threshold {r['max_box_acc_threshold']:.3f})")
            rule = "any contour" if r["multi_contour_eval"] else "largest contour"
            lines.append(f"  MaxBoxAccV2   {_fmt(r['max_box_acc_v2'])}  (IoU {'/'.join(ious)}: "
                         f"{' / '.join(f'{by[k]:.2f}' for k in ious)}, {rule})")
        else:
            lines.append("  MaxBoxAcc        n/a  (no boxes)")
    else:
        if by is not None:
            lines.append(f"  box acc       IoU {'/'.join(ious)}: "
                         f"{' / '.join(f'{by[k]:.2f}' for k in ious)}  (tau = max/10, largest contour)")
    lines.append(f"  GT-known loc  {_fmt(r['gt_known_loc'])}")
    lines.append(f"  Top-1 loc     {_fmt(r['top1_loc'])}")
    lines.append(f"  Top-1 cls     {_fmt(r['top1_cls'])}")
    px = r["pxap"]
    best = r["pxap_best_f1"]
    extra = (f"  (best F1 {best['f1']:.2f} at {best['threshold']:.3f})" if best else "")
    lines.append(f"  PxAP          {_fmt(px)}{extra}")
    return "\n".join(lines)


def _write_json(path: Path, result: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror})") from None


def main(argv=None) -> int:
    """Standalone entry point (``python -m wsolbench.evaluation.cli ...``)."""
    parser = argparse.ArgumentParser(prog="wsolbench eval", description=DESCRIPTION)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"error: {msg}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
