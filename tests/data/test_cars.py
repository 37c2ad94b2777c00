from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from wsolbench.data import cars
from wsolbench.data.catalog import DATASETS, Issues
from wsolbench.errors import UserError


def test_loads_devkit_layout(make_cars, matches):
    mini = make_cars()
    ds = cars.load(mini.root)
    matches(ds, mini)
    assert DATASETS.get("cars") is cars.load
    assert ds.num_classes == 3 and ds.class_names[1] == "Make2 Model2 2012"
    assert not ds.has_masks("train") and ds.has_boxes("test")
    assert "val" not in ds.splits
    s = ds.splits["test"][0]
    assert s.id == "cars_test/00001.jpg" and s.path == mini.root / "cars_test" / "00001.jpg"


def test_struct_layout_matches_the_devkit(make_cars):
    mini = make_cars()
    ann = loadmat(str(mini.root / "devkit" / "cars_train_annos.mat"))["annotations"]
    assert ann.shape == (1, 5)
    assert set(ann.dtype.names) == {"bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"}
    assert ann[0, 0]["bbox_x1"].shape == (1, 1) and ann[0, 0]["fname"][0] == "00001.jpg"


def test_robust_to_other_nestings(make_cars):
    """Values stored as doubles, char arrays nested deeper, a column struct array: all load."""
    mini = make_cars()
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    arr = np.zeros((4, 1), dtype=[(f, object) for f in fields])  # N x 1 instead of 1 x N
    for i in range(4):
        fname = f"{i + 1:05d}.jpg"
        arr[i, 0] = (np.array([[2.0]]), np.array([[[3.0]]]), 30.0, np.array([[20]], np.int32),
                     np.array([[float(1 + i % 3)]]), np.array([[fname]]))
    savemat(str(mini.root / "cars_test_annos_withlabels.mat"), {"annotations": arr})
    ds = cars.load(mini.root)
    assert [s.boxes for s in ds.splits["test"]] == [((2.0, 3.0, 30.0, 20.0),)] * 4
    assert [s.label for s in ds.splits["test"]] == [0, 1, 2, 0]


def test_mat_files_directly_in_root_and_kaggle_nesting(make_cars):
    mini = make_cars()
    for f in ("cars_meta.mat", "cars_train_annos.mat"):
        shutil.move(str(mini.root / "devkit" / f), str(mini.root / f))
    inner = mini.root / "cars_train" / "cars_train"
    inner.mkdir()
    for p in sorted((mini.root / "cars_train").glob("*.jpg")):
        shutil.move(str(p), str(inner / p.name))
    ds = cars.load(mini.root)
    assert all(s.path.is_file() and s.path.parent == inner for s in ds.splits["train"])


def test_missing_root_and_missing_files(make_cars, tmp_path):
    with pytest.raises(UserError, match=r"wsolbench data download cars --root"):
        cars.load(tmp_path / "nope")
    mini = make_cars()
    (mini.root / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(UserError, match=r"cars_test_annos_withlabels.mat is missing.*has no labels"):
        cars.load(mini.root)


def test_damaged_mat_and_missing_field(make_cars):
    mini = make_cars()
    meta = mini.root / "devkit" / "cars_meta.mat"
    meta.write_bytes(b"this is not a MATLAB file at all" * 4)
    with pytest.raises(UserError, match=r"cars_meta.mat cannot be read as a MATLAB file"):
        cars.load(mini.root)
    mini = make_cars("cars2")
    p = mini.root / "devkit" / "cars_train_annos.mat"
    arr = np.zeros((1, 1), dtype=[("bbox_x1", object), ("fname", object)])
    arr[0, 0] = (np.array([[1]]), np.array(["00001.jpg"]))
    savemat(str(p), {"annotations": arr})
    with pytest.raises(UserError, match=r"cars_train_annos.mat: 'annotations' lacks the field\(s\) "
                                        r"bbox_y1, bbox_x2, bbox_y2, class"):
        cars.load(mini.root)
    savemat(str(p), {"something_else": np.zeros(3)})
    with pytest.raises(UserError, match=r"has no variable 'annotations' \(found: something_else\)"):
        cars.load(mini.root)


def test_unknown_class_and_empty_value(make_cars, helpers):
    mini = make_cars()
    p = mini.root / "devkit" / "cars_train_annos.mat"
    rows = [(1, 2, 30, 20, 1, "00001.jpg"), (1, 2, 30, 20, 9, "00002.jpg")]
    savemat(str(p), {"annotations": helpers.cars_struct(rows)})
    with pytest.raises(UserError, match=r"cars_train_annos.mat: annotations\(2\): class 9 is not a "
                                        r"class of cars_meta.mat \(1..3\)"):
        cars.load(mini.root)
    arr = helpers.cars_struct(rows[:1] * 2)
    arr[0, 1]["fname"] = np.array([], dtype="<U1")
    savemat(str(p), {"annotations": arr})
    issues = Issues()
    ds = cars.load(mini.root, issues=issues)
    assert len(ds.splits["train"]) == 1
    assert [i.category for i in issues.items] == ["malformed_row"]
    assert "annotations(2): field(s) fname empty" in issues.items[0].message


def test_boxes_kept_as_stored(make_cars, helpers):
    mini = make_cars()
    rows = [(0, 2, 999, 20, 1, "00001.jpg"), (30, 2, 10, 20, 2, "00002.jpg")]
    savemat(str(mini.root / "devkit" / "cars_train_annos.mat"),
            {"annotations": helpers.cars_struct(rows)})
    ds = cars.load(mini.root)
    assert [s.boxes for s in ds.splits["train"]] == [((0.0, 2.0, 999.0, 20.0),),
                                                     ((30.0, 2.0, 10.0, 20.0),)]
