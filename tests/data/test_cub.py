from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from wsolbench.data import cub
from wsolbench.data.catalog import DATASETS, Issues
from wsolbench.data.masks import load_mask
from wsolbench.errors import UserError


def test_loads_native_layout(make_cub, matches):
    mini = make_cub()
    ds = cub.load(mini.folder)
    matches(ds, mini)
    assert ds.name == "cub" and ds.num_classes == 3
    assert ds.class_names[0] == "001.Bird_B"
    assert "val" not in ds.splits and ds.val_source == ""  # the harness carves val from train
    s = ds.splits["train"][0]
    assert s.mask_rule == "cub_soft"
    assert s.mask_paths == (mini.root / "segmentations" / s.id.replace(".jpg", ".png"),)
    assert ds.has_masks("test") and ds.has_boxes("test")


def test_box_is_x_y_plus_width_height(make_cub):
    mini = make_cub()
    first = (mini.folder / "images.txt").read_text().split()[1]
    row = next(line.split() for line in (mini.folder / "bounding_boxes.txt").read_text().splitlines()
               if line.split()[0] == "1")
    x, y, w, h = map(float, row[1:])
    sample = next(s for sp in cub.load(mini.folder).splits.values() for s in sp if s.id == first)
    assert sample.boxes == ((x, y, x + w, y + h),)


def test_parent_folder_is_accepted_and_segmentations_found_beside(make_cub):
    mini = make_cub()
    ds = cub.load(mini.root)  # the folder that holds CUB_200_2011/ and segmentations/
    assert ds.root == mini.folder
    assert ds.has_masks("train")


def test_segmentations_inside_root_and_explicit(make_cub, tmp_path):
    mini = make_cub()
    shutil.move(str(mini.root / "segmentations"), str(mini.folder / "segmentations"))
    assert cub.load(mini.folder).has_masks("train")
    elsewhere = tmp_path / "masks"
    shutil.move(str(mini.folder / "segmentations"), str(elsewhere))
    assert not cub.load(mini.folder).has_masks("train")
    assert cub.load(mini.folder, segmentations=elsewhere).has_masks("train")


def test_without_segmentations_no_masks(make_cub):
    mini = make_cub(segmentations=False)
    ds = cub.load(mini.folder)
    assert not ds.has_masks("train") and not ds.has_masks("test")
    assert "PxAP skipped" in ds.notes["masks"]


def test_soft_mask_majority_threshold(make_cub):
    mini = make_cub()
    s = cub.load(mini.folder).splits["test"][0]
    mask = load_mask(s.mask_paths, rule=s.mask_rule)
    raw = cv2.imread(str(s.mask_paths[0]), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == raw.shape
    assert set(np.unique(mask)) == {0, 1}
    assert np.array_equal(mask == 1, raw == 204)  # 4/5 annotators: object; 2/5: background
    assert cub.CUB_MASK_THRESHOLD == 128
    rule = cub._cub_soft
    assert not rule(np.array([127], np.uint8))[0] and rule(np.array([128], np.uint8))[0]


def test_registry_entries():
    assert DATASETS.get("cub") is cub.load
    assert DATASETS.get("synthetic") is cub.load


def test_missing_root_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError) as e:
        cub.load(tmp_path / "nowhere")
    msg = str(e.value)
    assert "does not exist" in msg and "images.txt" in msg
    assert f"wsolbench data download cub --root {tmp_path / 'nowhere'}" in msg
    assert "\n" not in msg
    with pytest.raises(UserError, match="images.txt not found"):
        cub.load(tmp_path)


@pytest.mark.parametrize("fname", ["image_class_labels.txt", "train_test_split.txt",
                                   "bounding_boxes.txt"])
def test_missing_or_empty_annotation_file(make_cub, fname):
    mini = make_cub()
    (mini.folder / fname).write_text("")
    with pytest.raises(UserError, match=f"{fname} is empty"):
        cub.load(mini.folder)
    (mini.folder / fname).unlink()
    with pytest.raises(UserError, match=f"{fname} is missing"):
        cub.load(mini.folder)


def test_malformed_line_names_file_and_line(make_cub):
    mini = make_cub()
    p = mini.folder / "bounding_boxes.txt"
    lines = p.read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0]  # drop the height
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"bounding_boxes.txt:3: expected 5 columns"):
        cub.load(mini.folder)
    lines[2] = lines[2] + " tall"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"bounding_boxes.txt:3: height must be a finite number"):
        cub.load(mini.folder)


def test_unknown_ids(make_cub):
    mini = make_cub()
    p = mini.folder / "image_class_labels.txt"
    p.write_text(p.read_text() + "99 1\n")
    with pytest.raises(UserError, match=r"image_class_labels.txt:13: image id 99 is not in images.txt"):
        cub.load(mini.folder)
    p.write_text(p.read_text().replace("99 1\n", ""))
    p.write_text(p.read_text().replace(" 3\n", " 7\n", 1))
    with pytest.raises(UserError, match=r"class id 7 is not in classes.txt"):
        cub.load(mini.folder)


def test_image_without_rows(make_cub):
    mini = make_cub()
    p = mini.folder / "train_test_split.txt"
    p.write_text("\n".join(p.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(UserError, match=r"train_test_split.txt: no row for image id 12"):
        cub.load(mini.folder)


def test_boxes_outside_the_image_are_kept(make_cub):
    mini = make_cub()
    p = mini.folder / "bounding_boxes.txt"
    p.write_text(p.read_text().replace("\n", "\n1 -5.0 0 500 600\n", 1))
    sample = next(s for s in cub.load(mini.folder).splits["train"] if s.id.endswith("_1.jpg"))
    assert (-5.0, 0.0, 495.0, 600.0) in sample.boxes  # not clipped; `data check` reports it


def test_issues_collect_instead_of_raising(make_cub):
    mini = make_cub()
    p = mini.folder / "image_class_labels.txt"
    p.write_text(p.read_text() + "oops\n77 1\n")
    issues = Issues()
    ds = cub.load(mini.folder, issues=issues)
    cats = sorted(i.category for i in issues.items)
    assert cats == ["malformed_row", "unknown_id"]
    assert sum(len(v) for v in ds.splits.values()) == 12
