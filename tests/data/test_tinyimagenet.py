from __future__ import annotations

import pytest

from wsolbench.data import tinyimagenet
from wsolbench.data.catalog import DATASETS, Issues
from wsolbench.errors import UserError


def test_loads_native_layout(make_tiny, matches):
    mini = make_tiny()
    ds = tinyimagenet.load(mini.root)
    matches(ds, mini)
    assert DATASETS.get("tinyimagenet") is tinyimagenet.load
    assert ds.root == mini.folder
    assert set(ds.splits) == {"train", "test"}  # official val serves as test; no val split
    assert "official val" in ds.notes["test_source"]
    assert ds.splits["test"][0].id == "val/images/val_0.JPEG"


def test_class_order_is_wnids_txt_not_listing(make_tiny):
    mini = make_tiny()
    ds = tinyimagenet.load(mini.folder)
    # wnids.txt lists n09999999 first although it sorts last
    first = [s for s in ds.splits["train"] if s.label == 0]
    assert first and all("n09999999" in s.id for s in first)
    assert ds.class_names == ["zebra-ish thing", "goldfish", "teapot"]
    (mini.folder / "words.txt").unlink()
    assert tinyimagenet.load(mini.folder).class_names == ["n09999999", "n01443537", "n05555555"]


def test_missing_root(tmp_path):
    with pytest.raises(UserError) as e:
        tinyimagenet.load(tmp_path / "nope")
    assert "wnids.txt" in str(e.value)
    assert "wsolbench data download tinyimagenet --root" in str(e.value)


def test_unknown_wnid_in_val_names_line(make_tiny):
    mini = make_tiny()
    p = mini.folder / "val" / "val_annotations.txt"
    lines = p.read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split("\t")[1], "n12345678")
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"val_annotations.txt:2: class n12345678 is not in wnids.txt"):
        tinyimagenet.load(mini.folder)


def test_malformed_boxes_line(make_tiny):
    mini = make_tiny()
    p = mini.folder / "train" / "n01443537" / "n01443537_boxes.txt"
    lines = p.read_text().splitlines()
    lines[1] = lines[1].rsplit("\t", 1)[0]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"n01443537_boxes.txt:2: expected 5 columns"):
        tinyimagenet.load(mini.folder)
    issues = Issues()
    ds = tinyimagenet.load(mini.folder, issues=issues)
    assert len(ds.splits["train"]) == 8 and issues.items[0].category == "malformed_row"


def test_missing_boxes_file(make_tiny):
    mini = make_tiny()
    (mini.folder / "train" / "n05555555" / "n05555555_boxes.txt").unlink()
    with pytest.raises(UserError, match=r"n05555555_boxes.txt is missing"):
        tinyimagenet.load(mini.folder)
    issues = Issues()
    ds = tinyimagenet.load(mini.folder, issues=issues)
    assert len(ds.splits["train"]) == 6 and issues.items[0].category == "missing_file"
