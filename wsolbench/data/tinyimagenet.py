"""Tiny-ImageNet-200 (Le & Yang, 2015) in its native layout.

``root`` is the ``tiny-imagenet-200`` folder (its parent is accepted too)::

    wnids.txt                              the 200 class ids; their order IS the label order
    words.txt                              optional: <wnid> TAB <names>, for class names
    train/<wnid>/images/<wnid>_<k>.JPEG    500 per class
    train/<wnid>/<wnid>_boxes.txt          <file> TAB <x0> <y0> <x1> <y1>
    val/images/val_<k>.JPEG                10,000
    val/val_annotations.txt                <file> TAB <wnid> TAB <x0> <y0> <x1> <y1>

The official test split has no labels, so -- as in the paper -- the official *val*
split serves as the benchmark's **test** split; there is no validation split (the
harness carves one out of train). Images are 64x64, a few of them grayscale (the image
cache converts them to RGB). Boxes are kept as stored, ``(x0, y0, x1, y1)`` pixels.
"""

from __future__ import annotations

from pathlib import Path

from wsolbench.data.catalog import Issues, parse_number, problem, read_rows, require_file, resolve_root
from wsolbench.data.sample import DatasetSplits, Sample
from wsolbench.errors import UserError

_BOX = ("x0", "y0", "x1", "y1")


def load(root: Path | str, *, issues: Issues | None = None) -> DatasetSplits:
    """Parse Tiny-ImageNet at ``root``: splits 'train' and 'test' (= official val)."""
    root = resolve_root(root, "tinyimagenet", "wnids.txt")
    wnids_txt = root / "wnids.txt"
    wnids: list[str] = []
    for lineno, (wnid,) in read_rows(wnids_txt, ("wnid",), issues):
        if wnid in wnids:
            problem(issues, "duplicate_id", f"{wnids_txt}:{lineno}: class {wnid} appears twice")
            continue
        wnids.append(wnid)
    index = {w: i for i, w in enumerate(wnids)}

    train: list[Sample] = []
    for wnid in wnids:
        boxes_txt = root / "train" / wnid / f"{wnid}_boxes.txt"
        if not boxes_txt.is_file() and issues is not None:
            issues.add("missing_file", f"{boxes_txt} is missing: class {wnid} has no training images")
            continue
        for lineno, cols in read_rows(boxes_txt, ("file",) + _BOX, issues):
            box = _box(cols[1:], boxes_txt, lineno, issues)
            if box is None:
                continue
            rel = f"train/{wnid}/images/{cols[0]}"
            train.append(Sample(id=rel, path=root / rel, label=index[wnid], boxes=(box,)))

    val_txt = root / "val" / "val_annotations.txt"
    test: list[Sample] = []
    seen: set[str] = set()
    for lineno, cols in read_rows(val_txt, ("file", "wnid") + _BOX, issues):
        fname, wnid = cols[0], cols[1]
        if wnid not in index:
            problem(issues, "unknown_id", f"{val_txt}:{lineno}: class {wnid} is not in wnids.txt")
            continue
        box = _box(cols[2:], val_txt, lineno, issues)
        if box is None:
            continue
        if fname in seen:
            problem(issues, "duplicate_id", f"{val_txt}:{lineno}: image {fname} is annotated twice")
            continue
        seen.add(fname)
        rel = f"val/images/{fname}"
        test.append(Sample(id=rel, path=root / rel, label=index[wnid], boxes=(box,)))

    names = _class_names(root, wnids)
    notes = {
        "test_source": "the official val split (val/val_annotations.txt), as in the paper; "
                       "the official test split has no labels",
        "boxes": "<wnid>_boxes.txt / val_annotations.txt x0 y0 x1 y1 as stored",
        "masks": "none",
        "class_order": "wnids.txt",
    }
    return DatasetSplits(name="tinyimagenet", root=root, class_names=names,
                         splits={"train": train, "test": test}, notes=notes)


def _box(cols: list[str], path: Path, lineno: int,
         issues: Issues | None) -> tuple[float, float, float, float] | None:
    vals = [parse_number(c, path, lineno, f, issues) for c, f in zip(cols, _BOX)]
    if any(v is None for v in vals):
        return None
    x0, y0, x1, y1 = (float(v) for v in vals)
    return (x0, y0, x1, y1)


def _class_names(root: Path, wnids: list[str]) -> list[str]:
    """First synonym from words.txt when present, else the wnid itself."""
    words_txt = root / "words.txt"
    words: dict[str, str] = {}
    wanted = set(wnids)
    if words_txt.is_file():
        try:
            require_file(words_txt)
            for line in words_txt.read_text(encoding="utf-8").splitlines():
                wnid, _, text = line.partition("\t")
                if wnid in wanted and text.strip():
                    words[wnid] = text.split(",")[0].strip()
        except (UserError, UnicodeDecodeError):
            words = {}
    return [words.get(w, w) for w in wnids]
