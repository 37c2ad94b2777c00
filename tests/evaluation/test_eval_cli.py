"""``wsolbench eval`` on generated metadata + score maps, and every kind of bad input."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsolbench.evaluation import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def boxes_dataset(tmp_path):
    """Three images. wsoleval GT in the 224x224 map frame: a/1 [50,50,150,150], a/2
    [0,0,50,100] (H=112 doubles y), b/3 [150,150,200,200]; the maps' boxes: [50,50,150,150],
    [0,0,50,100], [0,0,40,40] -> hits, hits, miss at every threshold and IoU."""
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "image_ids.txt").write_text("a/1.jpg\na/2.jpg\nb/3.jpg\n")
    (meta / "class_labels.txt").write_text("a/1.jpg,0\na/2.jpg,1\nb/3.jpg,2\n")
    (meta / "image_sizes.txt").write_text("a/1.jpg,448,448\na/2.jpg,224,112\nb/3.jpg,224,224\n")
    (meta / "localization.txt").write_text("a/1.jpg,100,100,300,300\na/2.jpg,0,0,50,50\n"
                                           "b/3.jpg,150,150,200,200\n")
    maps = tmp_path / "maps"
    (maps / "a").mkdir(parents=True)
    (maps / "b").mkdir()
    m = np.zeros((224, 224), np.float32)
    m[50:150, 50:150] = 1.0
    np.save(maps / "a/1.jpg.npy", m)
    m = np.zeros((224, 224), np.float32)
    m[0:100, 0:50] = 0.5
    np.save(maps / "a/2.jpg.npy", m)
    m = np.zeros((224, 224), np.float32)
    m[0:40, 0:40] = 0.8
    np.save(maps / "b/3.jpg.npy", m)
    (tmp_path / "preds.csv").write_text("path,predicted_label\na/1.jpg,0\na/2.jpg,0\nb/3.jpg,2\n")
    return tmp_path


def argv(root: Path, *extra: str) -> list[str]:
    return ["--metadata", str(root / "meta"), "--scoremaps", str(root / "maps"), *extra]


def test_wsoleval_numbers(boxes_dataset, capsys):
    out = boxes_dataset / "res" / "r.json"
    assert cli.main(argv(boxes_dataset, "--predictions", str(boxes_dataset / "preds.csv"),
                         "--json", str(out))) == 0
    r = json.loads(out.read_text())
    assert r["protocol"] == "wsoleval" and r["num_images"] == 3
    assert r["max_box_acc"] == pytest.approx(200 / 3)
    assert r["box_acc_by_iou"] == pytest.approx({"30": 200 / 3, "50": 200 / 3, "70": 200 / 3})
    assert r["max_box_acc_v2"] == pytest.approx(200 / 3)
    assert r["top1_loc"] == pytest.approx(100 / 3)  # hits {a/1, a/2}, class right {a/1, b/3}
    assert r["top1_cls"] == pytest.approx(200 / 3)
    assert r["pxap"] is None
    assert len(r["curves"]["thresholds"]) == 1000
    assert r["inputs"]["geometry"] == {"resize": [224, 224], "crop": None}
    text = capsys.readouterr().out
    assert "MaxBoxAcc" in text and "66.67" in text and "33.33" in text


def test_paper_numbers(boxes_dataset):
    # paper GT (256 resize, crop offset 16): a/1 [41,41,155,155] vs map box [50,50,150,150]:
    # IoU 101^2/115^2 = 0.77; a/2 [0,0,41,98] vs [0,0,50,100]: 42*99/(51*101) = 0.81; b/3 miss
    out = boxes_dataset / "p.json"
    assert cli.main(argv(boxes_dataset, "--protocol", "paper", "--json", str(out))) == 0
    r = json.loads(out.read_text())
    assert r["gt_known_loc"] == pytest.approx(200 / 3)
    assert r["box_acc_by_iou"] == pytest.approx({"30": 200 / 3, "50": 200 / 3, "70": 200 / 3})
    assert r["max_box_acc"] is None and r["top1_loc"] is None
    assert r["inputs"]["geometry"] == {"resize": [256, 256], "crop": [224, 224]}


def test_through_subparsers(boxes_dataset):
    parser = argparse.ArgumentParser(prog="wsolbench")
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    args = parser.parse_args(["eval", *argv(boxes_dataset, "--iou-thresholds", "50")])
    assert args.func(args) == 0


def test_masks_and_ignore(tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "image_ids.txt").write_text("m/1.jpg\n")
    (meta / "class_labels.txt").write_text("m/1.jpg,0\n")
    (meta / "localization.txt").write_text("m/1.jpg,m/1_fg.png,m/1_ignore.png\n")
    (tmp_path / "masks/m").mkdir(parents=True)
    fg = np.zeros((20, 40), np.uint8)
    fg[:, :20] = 255  # left half
    ign = np.zeros((20, 40), np.uint8)
    ign[0:5, 35:40] = 255  # top-right 5x5
    cv2.imwrite(str(tmp_path / "masks/m/1_fg.png"), fg)
    cv2.imwrite(str(tmp_path / "masks/m/1_ignore.png"), ign)
    (tmp_path / "maps/m").mkdir(parents=True)
    np.save(tmp_path / "maps/m/1.jpg.npy", np.full((10, 20), 0.3, np.float32))
    # wsoleval, at 10x20 (nearest): 100 foreground pixels, ignore rows 0-2 x cols 18-19 = 6
    # pixels; a constant map ranks everything equal: PxAP = precision = 100 / (200 - 6).
    # paper: the mask goes through the 256 resize and the centre crop first.
    from wsolbench.data.masks import load_mask
    from wsolbench.evaluation import Geometry

    paper_mask = Geometry.paper().map_mask(
        load_mask([tmp_path / "masks/m/1_fg.png"], tmp_path / "masks/m/1_ignore.png"), out_hw=(10, 20))
    n_fg, n_bg = int((paper_mask == 1).sum()), int((paper_mask == 0).sum())
    expected = {"wsoleval": 100 * 100 / 194, "paper": 100 * n_fg / (n_fg + n_bg)}
    for proto in ("wsoleval", "paper"):
        out = tmp_path / f"{proto}.json"
        assert cli.main(argv(tmp_path, "--mask-root", str(tmp_path / "masks"), "--protocol", proto,
                             "--json", str(out))) == 0
        r = json.loads(out.read_text())
        assert r["pxap"] == pytest.approx(expected[proto])
        assert r["num_mask_images"] == 1 and r["max_box_acc"] is None


def run_main(capsys, args) -> tuple[int, str]:
    rc = cli.main(args)
    err = capsys.readouterr().err
    return rc, err


def assert_one_line_error(rc: int, err: str, *needles: str):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_missing_scoremap(boxes_dataset, capsys):
    os.remove(boxes_dataset / "maps/b/3.jpg.npy")
    assert_one_line_error(*run_main(capsys, argv(boxes_dataset)), "b/3.jpg.npy", "missing")


def test_wrong_rank(boxes_dataset, capsys):
    np.save(boxes_dataset / "maps/a/2.jpg.npy", np.zeros((2, 224, 224), np.float32))
    assert_one_line_error(*run_main(capsys, argv(boxes_dataset)), "a/2.jpg.npy", "(2, 224, 224)", "2-D")


def test_nan(boxes_dataset, capsys):
    m = np.zeros((224, 224), np.float32)
    m[3, 4] = np.nan
    np.save(boxes_dataset / "maps/a/2.jpg.npy", m)
    assert_one_line_error(*run_main(capsys, argv(boxes_dataset)), "a/2.jpg.npy", "NaN/Inf")


def test_out_of_range_needs_normalize(boxes_dataset, capsys):
    m = np.zeros((224, 224), np.float32)
    m[50:150, 50:150] = 3.0
    np.save(boxes_dataset / "maps/a/1.jpg.npy", m)
    assert_one_line_error(*run_main(capsys, argv(boxes_dataset, "--protocol", "paper")),
                          "a/1.jpg.npy", "outside [0, 1]", "--normalize")
    out = boxes_dataset / "n.json"
    assert cli.main(argv(boxes_dataset, "--protocol", "paper", "--normalize", "--json", str(out))) == 0
    assert json.loads(out.read_text())["gt_known_loc"] == pytest.approx(200 / 3)


def test_malformed_metadata_line(boxes_dataset, capsys):
    (boxes_dataset / "meta/class_labels.txt").write_text("a/1.jpg,0\na/2.jpg,one\nb/3.jpg,2\n")
    assert_one_line_error(*run_main(capsys, argv(boxes_dataset)), "class_labels.txt:2:")


def test_malformed_predictions_and_thresholds(boxes_dataset, capsys):
    (boxes_dataset / "p.csv").write_text("a/1.jpg,0\na/2.jpg\n")
    assert_one_line_error(*run_main(capsys, argv(boxes_dataset, "--predictions", str(boxes_dataset / "p.csv"))),
                          "p.csv:2:")
    (boxes_dataset / "p.csv").write_text("a/1.jpg,0\n")
    assert_one_line_error(*run_main(capsys, argv(boxes_dataset, "--predictions", str(boxes_dataset / "p.csv"))),
                          "no prediction for image 'a/2.jpg'")
    assert_one_line_error(*run_main(capsys, argv(boxes_dataset, "--iou-thresholds", "30,fifty")),
                          "--iou-thresholds")


def test_missing_size_for_boxes(boxes_dataset, capsys):
    os.remove(boxes_dataset / "meta/image_sizes.txt")
    assert_one_line_error(*run_main(capsys, argv(boxes_dataset)), "image_sizes.txt", "a/1.jpg")


def test_subprocess_exit_codes(boxes_dataset):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "wsolbench.evaluation.cli", *argv(boxes_dataset)]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "MaxBoxAcc" in ok.stdout
    os.remove(boxes_dataset / "maps/a/1.jpg.npy")
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(bad.returncode, bad.stderr, "a/1.jpg.npy", "missing")
    assert bad.stdout == ""
