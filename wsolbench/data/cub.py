"""CUB-200-2011 (Wah et al., 2011) in its native layout.

``root`` is the ``CUB_200_2011`` folder (its parent is accepted too)::

    images.txt               <image_id> <relative path under images/>
    image_class_labels.txt   <image_id> <class_id>            (class ids 1-based)
    train_test_split.txt     <image_id> <is_training_image>   (5,994 train / 5,794 test)
    bounding_boxes.txt       <image_id> <x> <y> <width> <height>   (floats, pixels)
    classes.txt              <class_id> <class_name>
    images/<class folder>/<name>.jpg

Boxes become ``(x, y, x + width, y + height)`` in original pixels, unchanged otherwise
(boxes outside the image are reported by ``wsolbench data check``, never clipped here).

Masks come from the separate ``segmentations.tgz`` archive, looked up at
``root/segmentations`` or ``root/../segmentations`` (or the ``segmentations`` option)
as ``segmentations/<class folder>/<name>.png``. Those PNGs are soft: each pixel holds
the fraction of annotators who marked it (0..255). Rule ``cub_soft`` binarizes them at
``>= 128`` (CUB_MASK_THRESHOLD), i.e. foreground where a majority of annotators agree.
Without the segmentations folder the samples carry no masks and PxAP is skipped.

The built-in synthetic dataset is written in this layout and loads through
:func:`load` (pass ``name="synthetic"``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from wsolbench.data.catalog import Issues, parse_number, problem, read_rows, resolve_root
from wsolbench.data.masks import register_rule
from wsolbench.data.sample import DatasetSplits, Sample

CUB_MASK_THRESHOLD = 128  # soft mask value (fraction of annotators * 255) counted as object


def _cub_soft(gray: np.ndarray) -> np.ndarray:
    return gray >= CUB_MASK_THRESHOLD


register_rule("cub_soft", _cub_soft, cv2.IMREAD_GRAYSCALE)


def find_segmentations(root: Path, segmentations: Path | str | None = None) -> Path | None:
    """The segmentations folder: the given one, ``root/segmentations`` or ``root/../segmentations``."""
    if segmentations is not None:
        return Path(segmentations)
    for cand in (root / "segmentations", root.parent / "segmentations"):
        if cand.is_dir():
            return cand
    return None


def load(root: Path | str, *, segmentations: Path | str | None = None, name: str = "cub",
         issues: Issues | None = None) -> DatasetSplits:
    """Parse CUB-200-2011 at ``root`` into train/test :class:`Sample` lists.

    ``segmentations``: the folder of soft masks (default: looked up beside the root).
    ``issues``: collect row-level problems instead of raising (``wsolbench data check``).
    """
    root = resolve_root(root, name if name in ("cub", "synthetic") else "cub", "images.txt")

    # images.txt: id -> relative path (the sample id, as in wsolevaluation's CUB metadata)
    images_txt = root / "images.txt"
    paths: dict[int, str] = {}
    for lineno, (sid, rel) in read_rows(images_txt, ("image_id", "path"), issues):
        iid = parse_number(sid, images_txt, lineno, "image_id", issues, integer=True)
        if iid is None:
            continue
        if iid in paths:
            problem(issues, "duplicate_id", f"{images_txt}:{lineno}: image id {iid} appears twice")
            continue
        paths[iid] = rel

    # classes.txt (optional: names fall back to the image folder names)
    classes_txt = root / "classes.txt"
    class_ids: list[int] = []
    class_names: dict[int, str] = {}
    if classes_txt.is_file():
        for lineno, cols in read_rows(classes_txt, ("class_id", "class_name"), issues):
            cid = parse_number(cols[0], classes_txt, lineno, "class_id", issues, integer=True)
            if cid is None:
                continue
            if cid in class_names:
                problem(issues, "duplicate_id", f"{classes_txt}:{lineno}: class id {cid} appears twice")
                continue
            class_names[cid] = cols[1]

    labels_txt = root / "image_class_labels.txt"
    labels: dict[int, int] = {}
    for lineno, (sid, scls) in read_rows(labels_txt, ("image_id", "class_id"), issues):
        iid = _known_id(sid, labels_txt, lineno, paths, issues)
        cid = parse_number(scls, labels_txt, lineno, "class_id", issues, integer=True)
        if iid is None or cid is None:
            continue
        if class_names and cid not in class_names:
            problem(issues, "unknown_id", f"{labels_txt}:{lineno}: class id {cid} is not in "
                                          f"{classes_txt.name} (ids {min(class_names)}..{max(class_names)})")
            continue
        if cid < 1:
            problem(issues, "unknown_id", f"{labels_txt}:{lineno}: class id {cid} (ids are 1-based)")
            continue
        if iid in labels:
            problem(issues, "duplicate_id", f"{labels_txt}:{lineno}: image id {iid} has a second label")
            continue
        labels[iid] = cid

    split_txt = root / "train_test_split.txt"
    is_train: dict[int, bool] = {}
    for lineno, (sid, flag) in read_rows(split_txt, ("image_id", "is_training_image"), issues):
        iid = _known_id(sid, split_txt, lineno, paths, issues)
        if iid is None:
            continue
        if flag not in ("0", "1"):
            problem(issues, "malformed_row", f"{split_txt}:{lineno}: is_training_image must be 0 or 1, got {flag!r}")
            continue
        is_train[iid] = flag == "1"

    boxes_txt = root / "bounding_boxes.txt"
    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    for lineno, cols in read_rows(boxes_txt, ("image_id", "x", "y", "width", "height"), issues):
        iid = _known_id(cols[0], boxes_txt, lineno, paths, issues)
        nums = [parse_number(c, boxes_txt, lineno, f, issues)
                for c, f in zip(cols[1:], ("x", "y", "width", "height"))]
        if iid is None or any(v is None for v in nums):
            continue
        x, y, w, h = (float(v) for v in nums)
        boxes.setdefault(iid, []).append((x, y, x + w, y + h))

    # class ids -> 0-based labels, in id order
    if not class_names:
        for iid, cid in labels.items():
            class_names.setdefault(cid, paths[iid].split("/")[0])
    class_ids = sorted(class_names)
    index = {cid: i for i, cid in enumerate(class_ids)}

    seg_dir = find_segmentations(root, segmentations)
    has_seg = seg_dir is not None and seg_dir.is_dir()
    images_dir = root / "images"
    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    for iid, rel in paths.items():
        missing = [f for f, d in ((labels_txt, labels), (split_txt, is_train), (boxes_txt, boxes))
                   if iid not in d]
        if missing:
            for f in missing:
                problem(issues, "missing_row", f"{f}: no row for image id {iid} ({rel}) of images.txt")
            continue
        mask_paths = (seg_dir / Path(rel).with_suffix(".png"),) if has_seg else ()
        splits["train" if is_train[iid] else "test"].append(Sample(
            id=rel,
            path=images_dir / rel,
            label=index[labels[iid]],
            boxes=tuple(boxes[iid]),
            mask_paths=mask_paths,
            mask_rule="cub_soft",
        ))

    notes = {
        "boxes": "bounding_boxes.txt x y w h -> (x, y, x+w, y+h), original pixels",
        "masks": (f"soft segmentations in {seg_dir}, foreground where value >= {CUB_MASK_THRESHOLD} "
                  "(a majority of annotators)") if has_seg else
                 "no segmentations folder found beside the root: no masks, PxAP skipped",
        "splits": "train_test_split.txt; no official validation split (carved from train)",
    }
    return DatasetSplits(name=name, root=root, class_names=[class_names[c] for c in class_ids],
                         splits=splits, notes=notes)


def _known_id(text: str, path: Path, lineno: int, paths: dict[int, str],
              issues: Issues | None) -> int | None:
    iid = parse_number(text, path, lineno, "image_id", issues, integer=True)
    if iid is None:
        return None
    if iid not in paths:
        problem(issues, "unknown_id", f"{path}:{lineno}: image id {iid} is not in images.txt")
        return None
    return int(iid)
