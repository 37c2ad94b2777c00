"""Oxford Flowers 102 (Nilsback & Zisserman, 2008) in its native layout.

``root`` holds::

    jpg/image_00001.jpg ... image_08189.jpg
    imagelabels.mat      'labels'  (1 x 8,189, values 1..102)
    setid.mat            'trnid' (1,020), 'valid' (1,020), 'tstid' (6,149): 1-based image numbers
    segmim/segmim_00001.jpg ...   (from 102segmentations.tgz)

Splits: ``train`` = trnid, ``val`` = valid (the official validation split), ``test`` =
tstid. There are no boxes (the paper reports PxAP only, Table 5).

Masks: the segmim files are JPEGs of the image with the background painted pure blue
(RGB 0,0,254..255). JPEG compression blurs colour (4:2:0 chroma subsampling spreads it
over about two pixels at every outline) and adds ringing, so testing for "exactly blue"
fails. Rule ``flowers_segmim`` works in YCrCb instead: a pixel is background when its luma
is within ``SEGMIM_LUMA_TOL`` of pure blue's (29) *and* its blue-difference chroma Cb is
above ``SEGMIM_MIN_CB`` (pure blue: 255, grey: 128). Luma is stored at full resolution, so
it places the outline sharply; the blurred chroma only has to confirm "blue-ish". A 3x3
opening then closing of the foreground removes isolated speckles left by JPEG ringing.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from wsolbench.data.catalog import Issues, problem, require_file, resolve_root
from wsolbench.data.masks import register_rule
from wsolbench.data.sample import DatasetSplits, Sample
from wsolbench.errors import UserError

SEGMIM_BLUE_LUMA = 29  # Y of RGB (0, 0, 255): 0.114 * 255
SEGMIM_LUMA_TOL = 20
SEGMIM_MIN_CB = 170
_SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}


def segmim_foreground(bgr: np.ndarray) -> np.ndarray:
    """Boolean foreground of a decoded segmim JPEG (BGR ``uint8``)."""
    if bgr.ndim == 2:  # a grey file cannot hold the blue background: all foreground
        return np.ones(bgr.shape, dtype=bool)
    ycc = cv2.cvtColor(bgr[..., :3], cv2.COLOR_BGR2YCrCb)
    y = ycc[..., 0].astype(np.int16)
    cb = ycc[..., 2]
    background = (np.abs(y - SEGMIM_BLUE_LUMA) <= SEGMIM_LUMA_TOL) & (cb >= SEGMIM_MIN_CB)
    fg = (~background).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel)
    return fg.astype(bool)


register_rule("flowers_segmim", segmim_foreground, cv2.IMREAD_COLOR)


def load(root: Path | str, *, issues: Issues | None = None) -> DatasetSplits:
    """Parse Oxford Flowers 102 at ``root`` into train/val/test :class:`Sample` lists."""
    root = resolve_root(root, "flowers", "imagelabels.mat")
    labels_mat = require_file(root / "imagelabels.mat")
    setid_mat = require_file(root / "setid.mat")

    labels = _int_vector(labels_mat, "labels")
    if labels.size == 0:
        raise UserError(f"{labels_mat}: 'labels' is empty")
    bad = np.flatnonzero(labels < 1)
    if bad.size:
        raise UserError(f"{labels_mat}: 'labels' entry {bad[0] + 1} is {labels[bad[0]]}; "
                        "labels are 1-based (1..102)")
    n_classes = int(labels.max())
    seg_dir = root / "segmim"
    has_seg = seg_dir.is_dir()

    splits: dict[str, list[Sample]] = {}
    owner: dict[int, str] = {}
    for split, key in _SPLIT_KEYS.items():
        ids = _int_vector(setid_mat, key)
        samples: list[Sample] = []
        for j, num in enumerate(ids.tolist(), start=1):
            if not 1 <= num <= labels.size:
                problem(issues, "unknown_id", f"{setid_mat}: '{key}' entry {j} names image {num}, "
                                              f"but imagelabels.mat labels images 1..{labels.size}")
                continue
            if num in owner:
                problem(issues, "duplicate_id", f"{setid_mat}: '{key}' entry {j} names image {num}, "
                                                f"already in '{_SPLIT_KEYS[owner[num]]}'")
                continue
            owner[num] = split
            rel = f"jpg/image_{num:05d}.jpg"
            samples.append(Sample(
                id=rel, path=root / rel, label=int(labels[num - 1]) - 1,
                mask_paths=(seg_dir / f"segmim_{num:05d}.jpg",) if has_seg else (),
                mask_rule="flowers_segmim",
            ))
        splits[split] = samples

    notes = {
        "boxes": "none (Oxford Flowers 102 has masks only)",
        "masks": (f"segmim JPEGs in {seg_dir}: background = luma within {SEGMIM_LUMA_TOL} of pure "
                  f"blue's and Cb >= {SEGMIM_MIN_CB}, then 3x3 open/close") if has_seg else
                 "no segmim folder: no masks, PxAP skipped",
        "splits": "setid.mat trnid / valid / tstid",
    }
    return DatasetSplits(name="flowers", root=root,
                         class_names=[f"class_{k:03d}" for k in range(1, n_classes + 1)],
                         splits=splits, val_source="official validation split (setid.mat 'valid')",
                         notes=notes)


def _int_vector(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except Exception as exc:  # scipy raises many types for damaged files
        raise UserError(f"{path} cannot be read as a MATLAB file ({type(exc).__name__}); "
                        "restore it") from None
    if key not in data:
        found = ", ".join(k for k in data if not k.startswith("__")) or "nothing"
        raise UserError(f"{path} has no variable '{key}' (found: {found})")
    arr = np.asarray(data[key])
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"{path}: '{key}' must be a numeric vector")
    flat = arr.reshape(-1)
    if flat.size and (not np.all(np.isfinite(flat)) or np.any(flat != np.round(flat))):
        raise UserError(f"{path}: '{key}' must hold whole numbers")
    return flat.astype(np.int64)
