"""Miniature copies of the real datasets, written in their native formats.

Each ``write_*`` function lays out a few tiny images plus annotation files exactly as the
official archives do (text tables, MATLAB structs via scipy.io.savemat, soft PNG masks,
blue-background segmim JPEGs) and returns a :class:`Mini` with what a loader must find.
Tests get them through the ``make_*`` fixtures (factories writing under ``tmp_path``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest


@dataclass
class Mini:
    root: Path  # what to pass as --root (may be the parent of the dataset folder)
    folder: Path  # the dataset folder itself
    splits: dict[str, list[dict]] = field(default_factory=dict)  # split -> [{id,label,boxes,size}]
    class_names: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}


def write_jpeg(path: Path, w: int, h: int, seed: int = 0, gray: bool = False,
               quality: int = 90) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                    np.full_like(xx, (seed * 37) % 256)], -1).astype(np.float32)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    if gray:
        img = img[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, quality])


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _size(i: int) -> tuple[int, int]:
    return 48 + 8 * (i % 3), 40 + 6 * (i % 4)  # (w, h), varied


# --------------------------------------------------------------------------- CUB


def write_cub(base: Path, *, classes: int = 3, per_class: int = 4,
              segmentations: bool = True) -> Mini:
    """``base/CUB_200_2011/...`` and ``base/segmentations/...`` as the two archives unpack."""
    folder = base / "CUB_200_2011"
    names = [f"{c:03d}.Bird_{chr(65 + c)}" for c in range(1, classes + 1)]
    mini = Mini(root=base, folder=folder, splits={"train": [], "test": []}, class_names=names)
    images, labels, split, bboxes = [], [], [], []
    iid = 0
    for c, cname in enumerate(names, start=1):
        for k in range(per_class):
            iid += 1
            rel = f"{cname}/{cname.split('.')[1]}_{k:04d}_{iid}.jpg"
            w, h = _size(iid)
            write_jpeg(folder / "images" / rel, w, h, seed=iid, gray=(iid == 2))
            x, y, bw, bh = 2.0 + iid % 5, 3.0, w / 2 + 0.5, h / 2
            train = k % 2 == 0
            images.append(f"{iid} {rel}")
            labels.append(f"{iid} {c}")
            split.append(f"{iid} {int(train)}")
            bboxes.append(f"{iid} {x} {y} {bw} {bh}")
            mini.splits["train" if train else "test"].append(
                {"id": rel, "label": c - 1, "boxes": ((x, y, x + bw, y + bh),), "size": (w, h)})
            if segmentations:
                m = np.zeros((h, w), np.uint8)
                m[int(y):int(y + bh), int(x):int(x + bw)] = 102  # 2 of 5 annotators: background
                m[int(y) + 2:int(y + bh) - 2, int(x) + 2:int(x + bw) - 2] = 204  # 4 of 5: object
                p = base / "segmentations" / Path(rel).with_suffix(".png")
                p.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(p), m)
    folder.mkdir(parents=True, exist_ok=True)
    # the official files list ids in order; shuffle two tables to test the id join
    order = np.random.default_rng(1).permutation(len(labels))
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels[i] for i in order) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (folder / "bounding_boxes.txt").write_text("\n".join(bboxes[i] for i in order) + "\n")
    (folder / "classes.txt").write_text("".join(f"{c} {n}\n" for c, n in enumerate(names, 1)))
    return mini


# --------------------------------------------------------------------------- Stanford Cars

CARS_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def cars_struct(rows: list[tuple]) -> np.ndarray:
    """A 1xN MATLAB struct array laid out like the devkit's 'annotations'."""
    arr = np.zeros((1, len(rows)), dtype=[(f, object) for f in CARS_FIELDS])
    for i, (x1, y1, x2, y2, cls, fname) in enumerate(rows):
        arr[0, i] = (np.array([[x1]], np.uint16), np.array([[y1]], np.uint16),
                     np.array([[x2]], np.uint16), np.array([[y2]], np.uint16),
                     np.array([[cls]], np.uint8), np.array([fname]))
    return arr


def write_cars(base: Path, *, classes: int = 3, n_train: int = 5, n_test: int = 4) -> Mini:
    from scipy.io import savemat

    names = [f"Make{c} Model{c} 20{10 + c}" for c in range(1, classes + 1)]
    mini = Mini(root=base, folder=base, splits={"train": [], "test": []}, class_names=names)
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    cn = np.empty((1, classes), dtype=object)
    for i, n in enumerate(names):
        cn[0, i] = n
    savemat(str(base / "devkit" / "cars_meta.mat"), {"class_names": cn})
    for split, n, folder, mat in (
            ("train", n_train, "cars_train", base / "devkit" / "cars_train_annos.mat"),
            ("test", n_test, "cars_test", base / "cars_test_annos_withlabels.mat")):
        rows = []
        for i in range(1, n + 1):
            fname = f"{i:05d}.jpg"
            w, h = _size(i + (7 if split == "test" else 0))
            write_jpeg(base / folder / fname, w, h, seed=100 + i)
            box = (1 + i % 3, 2, w - 2, h - 1 - i % 2)  # 1-based inclusive, inside the image
            cls = 1 + i % classes
            rows.append((*box, cls, fname))
            mini.splits[split].append({"id": f"{folder}/{fname}", "label": cls - 1,
                                       "boxes": (tuple(float(v) for v in box),), "size": (w, h)})
        savemat(str(mat), {"annotations": cars_struct(rows)})
    return mini


# --------------------------------------------------------------------------- Flowers 102


def segmim(img_bgr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The segmim look: the image with its background painted pure blue (RGB 0,0,254)."""
    out = img_bgr.copy()
    out[~mask] = (254, 0, 0)
    return out


def write_flowers(base: Path, *, classes: int = 3, per_split: tuple[int, int, int] = (3, 3, 4),
                  segmentations: bool = True) -> Mini:
    from scipy.io import savemat

    n = sum(per_split)
    labels = [1 + i % classes for i in range(n)]
    perm = np.random.default_rng(2).permutation(n) + 1  # image numbers, 1-based
    ids = {"trnid": perm[:per_split[0]], "valid": perm[per_split[0]:per_split[0] + per_split[1]],
           "tstid": perm[per_split[0] + per_split[1]:]}
    mini = Mini(root=base, folder=base, splits={"train": [], "val": [], "test": []},
                class_names=[f"class_{k:03d}" for k in range(1, classes + 1)])
    for num in range(1, n + 1):
        w, h = _size(num)
        p = base / "jpg" / f"image_{num:05d}.jpg"
        write_jpeg(p, w, h, seed=200 + num)
        if segmentations:
            img = cv2.imread(str(p))
            yy, xx = np.mgrid[:h, :w]
            mask = ((xx - w / 2) ** 2 / (w / 3) ** 2 + (yy - h / 2) ** 2 / (h / 3) ** 2) < 1
            q = base / "segmim" / f"segmim_{num:05d}.jpg"
            q.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(q), segmim(img, mask), [cv2.IMWRITE_JPEG_QUALITY, 75])
    savemat(str(base / "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    savemat(str(base / "setid.mat"), {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        for num in ids[key]:
            mini.splits[split].append({"id": f"jpg/image_{num:05d}.jpg", "label": labels[num - 1] - 1,
                                       "boxes": (), "size": _size(num)})
    return mini


# --------------------------------------------------------------------------- Tiny-ImageNet


def write_tiny(base: Path, *, wnids: tuple[str, ...] = ("n09999999", "n01443537", "n05555555"),
               per_class: int = 3, n_val: int = 4) -> Mini:
    """``base/tiny-imagenet-200/...``; wnids deliberately not in sorted order."""
    folder = base / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(w + "\n" for w in wnids))
    words = {"n09999999": "zebra-ish thing, striped", "n01443537": "goldfish, Carassius auratus",
             "n05555555": "teapot", "n00000001": "not a class here"}
    (folder / "words.txt").write_text("".join(f"{k}\t{v}\n" for k, v in words.items()))
    names = [words.get(w, w).split(",")[0] for w in wnids]
    mini = Mini(root=base, folder=folder, splits={"train": [], "test": []}, class_names=names)
    k = 0
    for label, wnid in enumerate(wnids):
        lines = []
        for j in range(per_class):
            k += 1
            fname = f"{wnid}_{j}.JPEG"
            write_jpeg(folder / "train" / wnid / "images" / fname, 64, 64, seed=300 + k,
                       gray=(k == 2))
            box = (float(j), 5.0, 40.0 + j, 63.0)
            lines.append(f"{fname}\t" + "\t".join(str(int(v)) for v in box))
            mini.splits["train"].append({"id": f"train/{wnid}/images/{fname}", "label": label,
                                         "boxes": (box,), "size": (64, 64)})
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(lines) + "\n")
    lines = []
    for j in range(n_val):
        fname = f"val_{j}.JPEG"
        label = (j * 2) % len(wnids)
        write_jpeg(folder / "val" / "images" / fname, 64, 64, seed=400 + j)
        box = (10.0, 12.0 + j, 50.0, 60.0)
        lines.append(f"{fname}\t{wnids[label]}\t" + "\t".join(str(int(v)) for v in box))
        mini.splits["test"].append({"id": f"val/images/{fname}", "label": label,
                                    "boxes": (box,), "size": (64, 64)})
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return mini


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def make_cub(tmp_path):
    return lambda sub="cub", **kw: write_cub(tmp_path / sub, **kw)


@pytest.fixture
def make_cars(tmp_path):
    return lambda sub="cars", **kw: write_cars(tmp_path / sub, **kw)


@pytest.fixture
def make_flowers(tmp_path):
    return lambda sub="flowers", **kw: write_flowers(tmp_path / sub, **kw)


@pytest.fixture
def make_tiny(tmp_path):
    return lambda sub="tiny", **kw: write_tiny(tmp_path / sub, **kw)


def assert_matches(ds, mini: Mini) -> None:
    """The loaded splits hold exactly the mini dataset's samples, in the same order."""
    assert set(ds.splits) == set(mini.splits)
    for split, want in mini.splits.items():
        got = ds.splits[split]
        assert [s.id for s in got] == [w["id"] for w in want], split
        assert [s.label for s in got] == [w["label"] for w in want], split
        assert [s.boxes for s in got] == [w["boxes"] for w in want], split
        for s in got:
            assert s.path.is_file(), s.path
            assert all(isinstance(v, float) for b in s.boxes for v in b)
    assert ds.class_names == mini.class_names


@pytest.fixture
def matches():
    return assert_matches


@pytest.fixture
def helpers():
    """Small writers the broken-variant tests need."""
    class H:
        jpeg = staticmethod(write_jpeg)
        truncate = staticmethod(truncate)
        cars_struct = staticmethod(cars_struct)
        segmim = staticmethod(segmim)
    return H
