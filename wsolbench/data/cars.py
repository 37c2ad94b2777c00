"""Stanford Cars (Krause et al., 2013) in its native devkit layout.

``root`` holds::

    devkit/cars_train_annos.mat          struct array 'annotations' (1 x 8,144)
    devkit/cars_meta.mat                 cell array 'class_names' (1 x 196)
    cars_test_annos_withlabels.mat       struct array 'annotations' (1 x 8,041), with labels
    cars_train/00001.jpg ...             (Kaggle's nested cars_train/cars_train/ works too)
    cars_test/00001.jpg ...

Each annotation has the fields ``bbox_x1, bbox_y1, bbox_x2, bbox_y2`` (pixels), ``class``
(1-based) and ``fname``. The .mat files may also sit directly in ``root``. The devkit's own
``cars_test_annos.mat`` has no labels, hence the separately published ``..._withlabels``.

Boxes are kept exactly as stored, ``(bbox_x1, bbox_y1, bbox_x2, bbox_y2)``: the devkit
counts pixels MATLAB-style from 1, which the benchmark (like the WSOL literature) does not
shift. Stanford Cars has no masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsolbench.data.catalog import Issues, problem, require_file, resolve_root
from wsolbench.data.sample import DatasetSplits, Sample
from wsolbench.errors import UserError

_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def load(root: Path | str, *, issues: Issues | None = None) -> DatasetSplits:
    """Parse Stanford Cars at ``root`` into train/test :class:`Sample` lists."""
    root = Path(root).expanduser()
    try:
        root = resolve_root(root, "cars", "cars_meta.mat")
    except UserError:
        root = resolve_root(root, "cars", "devkit/cars_meta.mat")

    meta = _find(root, "cars_meta.mat")
    class_names = [_as_str(v) for v in _variable(meta, "class_names").reshape(-1)]
    if not class_names or any(n is None for n in class_names):
        raise UserError(f"{meta}: 'class_names' must be a cell array of strings")

    train_mat = _find(root, "cars_train_annos.mat")
    test_mat = _find(root, "cars_test_annos_withlabels.mat", hint=(
        "the devkit's cars_test_annos.mat has no labels; the labelled test annotations are "
        "published separately as cars_test_annos_withlabels.mat"))
    splits = {
        "train": _read_split(train_mat, _images_dir(root, "cars_train"), "cars_train",
                             len(class_names), issues),
        "test": _read_split(test_mat, _images_dir(root, "cars_test"), "cars_test",
                            len(class_names), issues),
    }
    notes = {
        "boxes": "devkit bbox_x1, bbox_y1, bbox_x2, bbox_y2 as stored (1-based MATLAB pixels)",
        "masks": "none (Stanford Cars has no segmentations)",
        "splits": "devkit train/test; no official validation split (carved from train)",
    }
    return DatasetSplits(name="cars", root=root, class_names=[str(n) for n in class_names],
                         splits=splits, notes=notes)


def _find(root: Path, filename: str, hint: str = "") -> Path:
    for cand in (root / "devkit" / filename, root / filename):
        if cand.is_file():
            return require_file(cand)
    raise UserError(f"annotation file {filename} is missing from {root} and {root / 'devkit'}"
                    + (f" ({hint})" if hint else "")
                    + f"; get it with `wsolbench data download cars --root {root}`")


def _images_dir(root: Path, name: str) -> Path:
    nested = root / name / name  # the Kaggle copy nests the folders once more
    return nested if nested.is_dir() and not (root / name / "00001.jpg").exists() else root / name


def _variable(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except Exception as exc:  # scipy raises many types for damaged files
        raise UserError(f"{path} cannot be read as a MATLAB file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); restore it") from None
    if key not in data:
        found = ", ".join(k for k in data if not k.startswith("__")) or "nothing"
        raise UserError(f"{path} has no variable '{key}' (found: {found})")
    return np.asarray(data[key])


def _unwrap(value: Any) -> Any:
    """Strip loadmat's nesting: [[x]] / array([x], dtype=object) -> x."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            return value
        value = value.reshape(-1)[0]
    return value


def _as_str(value: Any) -> str | None:
    value = _unwrap(value)
    if isinstance(value, (str, np.str_)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None


def _as_number(value: Any) -> float | None:
    value = _unwrap(value)
    if isinstance(value, (bool, np.bool_)) or isinstance(value, np.ndarray):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _read_split(path: Path, images_dir: Path, id_prefix: str, n_classes: int,
                issues: Issues | None) -> list[Sample]:
    ann = _variable(path, "annotations")
    names = ann.dtype.names or ()
    missing = [f for f in _FIELDS if f not in names]
    if missing:
        raise UserError(f"{path}: 'annotations' lacks the field(s) {', '.join(missing)} "
                        f"(found: {', '.join(names) or 'not a struct array'})")
    records = ann.reshape(-1)
    samples: list[Sample] = []
    seen: set[str] = set()
    for i, rec in enumerate(records, start=1):
        where = f"{path}: annotations({i})"
        fname = _as_str(rec["fname"])
        coords = [_as_number(rec[f]) for f in _FIELDS[:4]]
        cls = _as_number(rec["class"])
        if fname is None or any(c is None for c in coords) or cls is None:
            bad = [f for f, v in zip(_FIELDS, (*coords, cls, fname)) if v is None]
            problem(issues, "malformed_row", f"{where}: field(s) {', '.join(bad)} empty or not "
                                             "a single value")
            continue
        if cls != int(cls) or not 1 <= cls <= n_classes:
            problem(issues, "unknown_id", f"{where}: class {cls:g} is not a class of "
                                          f"cars_meta.mat (1..{n_classes})")
            continue
        sid = f"{id_prefix}/{fname}"
        if sid in seen:
            problem(issues, "duplicate_id", f"{where}: image {fname} is annotated twice")
            continue
        seen.add(sid)
        x1, y1, x2, y2 = (float(c) for c in coords)
        samples.append(Sample(id=sid, path=images_dir / fname, label=int(cls) - 1,
                              boxes=((x1, y1, x2, y2),)))
    if not samples and issues is None:
        raise UserError(f"{path}: 'annotations' is empty")
    return samples
