"""The built-in synthetic dataset: CUB layout, exact ground truth, part-decided classes."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsolbench.data import synthetic as S
from wsolbench.data.masks import load_mask
from wsolbench.errors import UserError

SMALL = dict(classes=3, train_per_class=3, test_per_class=2, size=32, seed=0)


def _rows(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> Path:
    """The default generation (8 classes, 50 + 20 per class, 64 px, seed 0)."""
    return S.generate(tmp_path_factory.mktemp("syn") / "default")


@pytest.fixture(scope="module")
def parsed(default_set):
    root = default_set
    images = _rows(root / "images.txt")
    labels = dict(_rows(root / "image_class_labels.txt"))
    split = dict(_rows(root / "train_test_split.txt"))
    boxes = {r[0]: tuple(float(v) for v in r[1:]) for r in _rows(root / "bounding_boxes.txt")}
    out = []
    for img_id, rel in images:
        # (id, relative path, 0-based class, split, box)
        out.append((img_id, rel, int(labels[img_id]) - 1, "train" if split[img_id] == "1" else "test",
                    boxes[img_id]))
    return out


@pytest.fixture(scope="module")
def rendered(parsed):
    """render() of every image of the default set, in images.txt order (part masks)."""
    counters: dict[tuple[int, str], int] = {}
    out = []
    for _, _, c, split, _ in parsed:
        i = counters.get((c, split), 0)
        counters[(c, split)] = i + 1
        out.append(S.render(c, split, i))
    return out


# ----------------------------------------------------------------------------- layout


def test_files_and_line_formats(default_set, parsed):
    root = default_set
    for name in ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt",
                 "bounding_boxes.txt", "parts/parts.txt", "parts/part_locs.txt", "synthetic.json"):
        assert (root / name).is_file(), name

    classes = _rows(root / "classes.txt")
    assert [int(r[0]) for r in classes] == list(range(1, 9))
    dirs = [r[1] for r in classes]
    assert dirs == S.class_dirs(8)
    assert dirs[0] == "001.red_square"
    assert all(re.fullmatch(r"\d{3}\.[a-z]+(_[a-z]+)+", d) for d in dirs)

    ids = [int(r[0]) for r in _rows(root / "images.txt")]
    n = 8 * 70
    assert ids == list(range(1, n + 1))
    for name, width in (("image_class_labels.txt", 2), ("train_test_split.txt", 2),
                        ("bounding_boxes.txt", 5), ("parts/part_locs.txt", 5)):
        rows = _rows(root / name)
        assert [int(r[0]) for r in rows] == ids, name
        assert all(len(r) == width for r in rows), name
    assert all(r[1] in ("0", "1") for r in _rows(root / "train_test_split.txt"))
    assert all(re.fullmatch(r"\d+\.\d", v) for r in _rows(root / "bounding_boxes.txt") for v in r[1:])

    counts: dict[tuple[int, str], int] = {}
    for _, rel, c, split, _ in parsed:
        counts[(c, split)] = counts.get((c, split), 0) + 1
        assert rel.startswith(dirs[c] + "/") and rel.endswith(".jpg")
        assert (root / "images" / rel).is_file()
        assert (root / "segmentations" / rel).with_suffix(".png").is_file()
    assert counts == {(c, s): k for c in range(8) for s, k in (("train", 50), ("test", 20))}
    assert len(list((root / "images").rglob("*.jpg"))) == n
    assert len(list((root / "segmentations").rglob("*.png"))) == n

    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["version"] == S.VERSION
    assert meta["params"] == S.DEFAULTS
    assert meta["counts"] == {"classes": 8, "train": 400, "test": 160}
    assert [c["dir"] for c in meta["classes"]] == dirs


def test_class_specs_are_distinct_and_readable():
    specs = [S.class_spec(i) for i in range(S.MAX_CLASSES)]
    assert len({(s.colour, s.shape, s.pattern) for s in specs}) == S.MAX_CLASSES >= 50
    assert len({s.name for s in specs}) == S.MAX_CLASSES
    assert len({s.colour for s in specs[:8]}) == 8  # few classes: all colours differ
    assert S.class_dirs(10)[8:] == ["009.red_disc", "010.blue_triangle"]
    assert S.class_spec(32).name == "red_striped_square"


def test_the_cub_loader_reads_it(default_set, parsed):
    from wsolbench.data import cub

    ds = cub.load(default_set, name="synthetic")
    assert ds.class_names == S.class_dirs(8)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 400, "test": 160}
    by_id = {s.id: s for split in ds.splits.values() for s in split}
    for _, rel, c, split, (x, y, w, h) in parsed[::11]:
        s = by_id[rel]
        assert s.label == c and s in ds.splits[split] and s.path.is_file()
        assert s.boxes == ((x, y, x + w, y + h),)
        mask = load_mask(s.mask_paths, s.ignore_path, s.mask_rule)
        ys, xs = np.nonzero(mask == 1)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == s.boxes[0]


# ----------------------------------------------------------------------------- ground truth


def test_boxes_are_tight_bounds_of_masks(default_set, parsed):
    root = default_set
    for _, rel, _, _, box in parsed:
        img = cv2.imread(str(root / "images" / rel), cv2.IMREAD_COLOR)
        seg = cv2.imread(str((root / "segmentations" / rel).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
        assert img.shape == (64, 64, 3) and seg.shape == (64, 64) and seg.dtype == np.uint8
        assert set(np.unique(seg)) <= {0, 255}
        ys, xs = np.nonzero(seg)
        assert len(xs) > 0
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        assert box == (x0, y0, x1 - x0, y1 - y0)  # CUB: x + w is the last object column
        assert 0.10 <= len(xs) / 64**2 <= 0.60


def test_rendered_truth_matches_files(default_set, parsed, rendered):
    root = default_set
    part_locs = _rows(root / "parts" / "part_locs.txt")
    for k in range(0, len(parsed), 7):
        _, rel, _, _, box = parsed[k]
        r = rendered[k]
        seg = cv2.imread(str((root / "segmentations" / rel).with_suffix(".png")), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(seg > 0, r.mask)
        assert r.box == box
        # The shared mask reader binarizes them the same way.
        assert np.array_equal(load_mask([(root / "segmentations" / rel).with_suffix(".png")]), r.mask)
        # Part: non-empty, inside the object, small.
        assert r.part_mask.any() and not (r.part_mask & ~r.mask).any()
        assert 0.04 <= r.part_mask.sum() / r.mask.sum() <= 0.16
        px, py = float(part_locs[k][2]), float(part_locs[k][3])
        pys, pxs = np.nonzero(r.part_mask)
        assert abs(px - pxs.mean()) <= 0.05 and abs(py - pys.mean()) <= 0.05
    fracs = np.array([r.info["part_area_fraction"] for r in rendered])
    assert 0.07 <= np.median(fracs) <= 0.12
    areas = np.array([r.info["object_area_fraction"] for r in rendered])
    assert areas.min() < 0.15 and areas.max() > 0.45  # sizes really vary


def _nearest_centroid_accuracy(feat: np.ndarray, label: np.ndarray, train: np.ndarray) -> float:
    cents = np.stack([feat[train & (label == c)].mean(0) for c in range(label.max() + 1)])
    pred = np.argmin(((feat[~train, None, :] - cents[None]) ** 2).sum(-1), 1)
    return float(np.mean(pred == label[~train]))


def test_class_is_in_the_part_only(default_set, parsed, rendered):
    """Mean colour of the part names the class; the body's and background's do not."""
    root = default_set
    part, body, back = [], [], []
    for (_, rel, _, _, _), r in zip(parsed, rendered):
        img = cv2.cvtColor(cv2.imread(str(root / "images" / rel)), cv2.COLOR_BGR2RGB).astype(np.float64)
        near_part = cv2.dilate(r.part_mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        part.append(img[r.part_mask].mean(0))
        body.append(img[r.mask & ~near_part].mean(0))
        back.append(img[~r.mask].mean(0))
    label = np.array([p[2] for p in parsed])
    train = np.array([p[3] == "train" for p in parsed])
    chance = 1 / 8
    assert _nearest_centroid_accuracy(np.array(part), label, train) >= 0.97
    assert _nearest_centroid_accuracy(np.array(body), label, train) <= chance + 0.12
    assert _nearest_centroid_accuracy(np.array(back), label, train) <= chance + 0.12
    # Body colours are spread the same way in every class (not just equal on average).
    body_arr = np.array(body)
    stds = np.stack([body_arr[label == c].std(0) for c in range(8)])
    assert stds.min() > 25


def test_centred_box_baseline_scores_low(parsed):
    boxes = [p[4] for p in parsed]
    assert S.centred_box_accuracy(boxes, 64, 0.5) < 0.25  # measured 0.148 at seed 0
    # No fixed centred box of any size does well.
    assert max(S.centred_box_accuracy(boxes, 64, f / 10) for f in range(2, 11)) < 0.5
    # The helper itself, on hand-made boxes: the centred box, and the full image (IoU 1/4).
    assert S.centred_box_accuracy([(16.0, 16.0, 31.0, 31.0)], 64) == 1.0
    assert S.centred_box_accuracy([(0.0, 0.0, 63.0, 63.0)], 64) == 0.0


# ----------------------------------------------------------------------------- determinism


def test_same_seed_is_byte_identical_other_seed_differs(tmp_path):
    a = _files(S.generate(tmp_path / "a", **SMALL))
    b = _files(S.generate(tmp_path / "b", **SMALL))
    assert a == b
    c = _files(S.generate(tmp_path / "c", **{**SMALL, "seed": 1}))
    assert a.keys() == c.keys()
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != c[k] for k in jpgs)
    # An image depends on (seed, class, split, index) only, not on the other counts.
    d = _files(S.generate(tmp_path / "d", **{**SMALL, "train_per_class": 5}))
    first = "images/001.red_square/red_square_0001.jpg"
    assert d[first] == a[first]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


# ----------------------------------------------------------------------------- writing


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="pick another --out or delete it"):
        S.generate(out, **SMALL)
    assert (out / "notes.txt").read_text() == "mine"

    gen = S.generate(tmp_path / "gen", **SMALL)
    before = _files(gen)
    assert S.generate(gen, **SMALL) == gen  # the identical generation: reused as is
    assert _files(gen) == before
    with pytest.raises(UserError, match="pick another --out"):
        S.generate(gen, **{**SMALL, "seed": 3})  # a different generation is not replaced

    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError):
        S.generate(tmp_path / "file", **SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (S.generate(empty, **SMALL) / "images.txt").is_file()


def test_ensure_synthetic_caches_and_reuses(tmp_path, monkeypatch):
    p1 = S.ensure_synthetic(tmp_path, **SMALL)
    assert p1.parent == tmp_path and p1.name.startswith("synthetic-")
    assert json.loads((p1 / "synthetic.json").read_text())["params"] == SMALL

    def boom(*a, **k):
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(S, "_write_tree", boom)
    assert S.ensure_synthetic(tmp_path, **SMALL) == p1
    monkeypatch.undo()
    p2 = S.ensure_synthetic(tmp_path, **{**SMALL, "seed": 5})
    assert p2 != p1 and p2.parent == tmp_path
    with pytest.raises(UserError, match="colours"):
        S.ensure_synthetic(tmp_path, colours=3)


def test_losing_a_race_uses_the_winners_folder(tmp_path, monkeypatch):
    out = tmp_path / "cache" / "synthetic-x"
    real = S._write_tree

    def racing(root, params):
        real(root, params)
        # Another process finishes its own generation first, between our build and rename.
        monkeypatch.setattr(S, "_write_tree", real)
        S.generate(out, **params)
        (out / "winner").write_text("1")

    monkeypatch.setattr(S, "_write_tree", racing)
    assert S.generate(out, **SMALL) == out
    assert (out / "winner").is_file()
    assert [p.name for p in out.parent.iterdir()] == ["synthetic-x"]  # loser's temporary removed


# ----------------------------------------------------------------------------- CLI


def _parse(argv):
    parser = argparse.ArgumentParser(prog="wsolbench")
    S.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.mark.parametrize("flag,value", [("--classes", "1"), ("--classes", str(S.MAX_CLASSES + 1)),
                                        ("--size", "16"), ("--train-per-class", "-1"),
                                        ("--test-per-class", "-3"), ("--seed", "-2")])
def test_cli_rejects_bad_values(tmp_path, flag, value):
    args = _parse(["synth", "--out", str(tmp_path / "x"), flag, value])
    with pytest.raises(UserError, match=re.escape(flag) + r".*" + re.escape(value)):
        args.handler(args)
    assert not (tmp_path / "x").exists()


def test_cli_run_prints_where_and_counts(tmp_path, capsys):
    out = tmp_path / "synth"
    args = _parse(["synth", "--out", str(out), "--classes", "2", "--train-per-class", "2",
                   "--test-per-class", "1", "--size", "32"])
    assert S.run(args) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "2 classes" in text and "4 train + 2 test" in text
    assert len(_rows(out / "images.txt")) == 6
    assert S.run(args) == 0  # again: the identical generation is reported, not an error
    assert "already present" in capsys.readouterr().out
