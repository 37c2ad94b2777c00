from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from wsolbench.data import flowers
from wsolbench.data.catalog import DATASETS, Issues
from wsolbench.data.masks import load_mask
from wsolbench.errors import UserError


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_loads_native_layout_with_val(make_flowers, matches):
    mini = make_flowers()
    ds = flowers.load(mini.root)
    matches(ds, mini)
    assert DATASETS.get("flowers") is flowers.load
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [3, 3, 4]
    assert "valid" in ds.val_source
    assert not ds.has_boxes("test")  # the paper reports PxAP only
    s = ds.splits["test"][0]
    num = s.id[len("jpg/image_"):-4]
    assert s.mask_paths == (mini.root / "segmim" / f"segmim_{num}.jpg",)
    assert s.mask_rule == "flowers_segmim"


def test_segmim_masks_through_load_mask(make_flowers):
    mini = make_flowers()
    for s in flowers.load(mini.root).splits["train"]:
        mask = load_mask(s.mask_paths, rule=s.mask_rule)
        h, w = mask.shape
        yy, xx = np.mgrid[:h, :w]
        truth = ((xx - w / 2) ** 2 / (w / 3) ** 2 + (yy - h / 2) ** 2 / (h / 3) ** 2) < 1
        assert _iou(mask == 1, truth) > 0.9  # tiny 50 px images: the outline dominates


def _flower(seed: int, h: int = 240, w: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A textured, many-coloured five-petal flower with a hole, plus a separate leaf."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2 + rng.integers(-10, 10), w / 2 + rng.integers(-10, 10)
    ang, r = np.arctan2(yy - cy, xx - cx), np.hypot(yy - cy, xx - cx)
    mask = r < 70 + 25 * np.cos(5 * ang + rng.uniform(0, 6))
    mask |= ((xx - 40) ** 2 / 400 + (yy - h + 40) ** 2 / 100) < 1
    mask &= ~(r < 12)  # background seen through the middle
    ph = rng.uniform(0, 6, 3)
    img = np.stack([110 + 70 * np.sin(xx / 9.0 + ph[0]), 120 + 90 * np.cos(yy / 7.0 + ph[1]),
                    150 + 90 * np.sin((xx + yy) / 13.0 + ph[2])], -1)  # BGR, bluish parts too
    img = np.clip(img + rng.normal(0, 15, img.shape), 0, 255).astype(np.uint8)
    return img, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segmim_rule_on_noisy_jpeg(tmp_path, helpers, seed):
    img, truth = _flower(seed)
    path = tmp_path / "segmim_00001.jpg"
    cv2.imwrite(str(path), helpers.segmim(img, truth), [cv2.IMWRITE_JPEG_QUALITY, 75])
    mask = load_mask((path,), rule="flowers_segmim")
    assert mask.shape == truth.shape
    assert _iou(mask == 1, truth) > 0.98
    # an exact-colour test would fail on the same file: JPEG moves the blue
    decoded = cv2.imread(str(path))
    exact = ~np.all(decoded == (254, 0, 0), axis=-1)
    assert _iou(exact, truth) < 0.9


def test_segmim_rule_extremes():
    blue = np.zeros((20, 20, 3), np.uint8)
    blue[..., 0] = 255
    assert not flowers.segmim_foreground(blue).any()
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 2] = 200
    assert flowers.segmim_foreground(red).all()
    dark = np.full((20, 20, 3), 25, np.uint8)  # a dark grey is not background
    assert flowers.segmim_foreground(dark).all()


def test_without_segmim_no_masks(make_flowers):
    mini = make_flowers(segmentations=False)
    ds = flowers.load(mini.root)
    assert not any(ds.has_masks(k) for k in ds.splits)


def test_missing_root_and_files(make_flowers, tmp_path):
    with pytest.raises(UserError, match=r"wsolbench data download flowers --root"):
        flowers.load(tmp_path / "nope")
    mini = make_flowers()
    (mini.root / "setid.mat").unlink()
    with pytest.raises(UserError, match=r"setid.mat is missing"):
        flowers.load(mini.root)
    savemat(str(mini.root / "setid.mat"), {"trnid": np.array([[1, 2]])})
    with pytest.raises(UserError, match=r"setid.mat has no variable 'valid'"):
        flowers.load(mini.root)


def test_unknown_and_duplicate_image_numbers(make_flowers):
    mini = make_flowers()
    savemat(str(mini.root / "setid.mat"), {"trnid": np.array([[1, 2]]), "valid": np.array([[3]]),
                                           "tstid": np.array([[4, 77, 2]])})
    with pytest.raises(UserError, match=r"setid.mat: 'tstid' entry 2 names image 77, but "
                                        r"imagelabels.mat labels images 1..10"):
        flowers.load(mini.root)
    issues = Issues()
    ds = flowers.load(mini.root, issues=issues)
    assert [i.category for i in issues.items] == ["unknown_id", "duplicate_id"]
    assert [s.id for s in ds.splits["test"]] == ["jpg/image_00004.jpg"]


def test_bad_labels(make_flowers):
    mini = make_flowers()
    savemat(str(mini.root / "imagelabels.mat"), {"labels": np.array([[1, 0, 2]])})
    with pytest.raises(UserError, match=r"'labels' entry 2 is 0; labels are 1-based"):
        flowers.load(mini.root)


def test_parent_folder_accepted(make_flowers, tmp_path):
    mini = make_flowers()
    shutil.move(str(mini.root), str(tmp_path / "flowers102"))
    (tmp_path / "flowers").mkdir()
    shutil.move(str(tmp_path / "flowers102"), str(tmp_path / "flowers" / "flowers102"))
    assert flowers.load(tmp_path / "flowers").root == tmp_path / "flowers" / "flowers102"
