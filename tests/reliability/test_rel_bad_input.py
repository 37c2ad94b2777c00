"""Issue 7, bad input: every problem a user can cause gets ONE line that names the file, id
or value and says what to do, a non-zero exit status, no traceback (unless --debug), and
leaves what was computed before intact. Driven through the command line."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from relhelpers import (copy_dataset, error_line, image_rows, make_synth, results, run_main,
                        split_of, write_config)
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A small synthetic dataset on disk (CUB layout): 2 classes, 6 train + 3 test each, 32 px."""
    return make_synth(tmp_path_factory.mktemp("synth") / "synth")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg")
    return write_config(d / "benchmark.toml", cache=d / "cache")


@pytest.fixture
def ds(pristine, tmp_path):
    """A private copy of the dataset, free to corrupt."""
    return copy_dataset(pristine, tmp_path / "data")


def run_on(config, root, out, *extra):
    return run_main("run", "--config", config, "--out", out, "--device", "cpu",
                    "--set", f"datasets.synthetic.root={root}", *extra)


def first_id(root: Path, split: str) -> tuple[str, str]:
    """(numeric id, image id = relative path) of the first image of ``split`` (train/test)."""
    flags = split_of(root)
    return next((i, rel) for i, rel in image_rows(root) if flags[i] == ("1" if split == "train" else "0"))


def assert_nothing_trained(out: Path) -> None:
    assert not (out / "shared").exists() and not (out / "methods").exists()


# --------------------------------------------------------------------------- dataset root
def test_dataset_root_missing(config, tmp_path):
    root, out = tmp_path / "no-such-folder", tmp_path / "run"
    p = run_on(config, root, out)
    assert p.returncode == 2
    line = error_line(p)
    assert str(root) in line and "--set datasets.synthetic.root=" in line
    assert not out.exists()


def test_half_extracted_root_without_images_txt(config, ds, tmp_path):
    (ds / "images.txt").unlink()
    p = run_on(config, ds, tmp_path / "run")
    assert p.returncode == 2
    line = error_line(p)
    assert "images.txt not found" in line and str(ds) in line


def test_half_extracted_root_without_a_class_folder(config, ds, tmp_path):
    gone = sorted((ds / "images").iterdir())[1]
    shutil.rmtree(gone)
    out = tmp_path / "run"
    p = run_on(config, ds, out)
    assert p.returncode == 2
    line = error_line(p)
    assert "of the" in line and "are missing" in line and "incompletely extracted" in line
    assert gone.name in line and "--skip-bad-images" in line
    assert_nothing_trained(out)


def test_half_extracted_masks_are_found_before_training(config, ds, tmp_path):
    _, rel = first_id(ds, "test")
    mask = ds / "segmentations" / Path(rel).with_suffix(".png")
    mask.unlink()
    out = tmp_path / "run"
    p = run_on(config, ds, out)
    assert p.returncode == 2
    line = error_line(p)
    assert f"(first: {mask} for image '{rel}')" in line and "mask file(s) of the test split are missing" in line
    assert_nothing_trained(out)


# --------------------------------------------------------------------------- annotation files
@pytest.mark.parametrize("case", ["missing", "empty", "malformed"])
def test_annotation_file_missing_empty_or_malformed(config, ds, tmp_path, case):
    if case == "missing":
        (ds / "bounding_boxes.txt").unlink()
        expect = [f"{ds / 'bounding_boxes.txt'} is missing"]
    elif case == "empty":
        (ds / "image_class_labels.txt").write_text("")
        expect = [f"{ds / 'image_class_labels.txt'} is empty"]
    else:
        f = ds / "train_test_split.txt"
        lines = f.read_text().splitlines()
        lines[2] = lines[2] + " 7"
        f.write_text("\n".join(lines) + "\n")
        expect = [f"{f}:3:", "expected 2 columns"]
    p = run_on(config, ds, tmp_path / "run")
    assert p.returncode == 2
    line = error_line(p)
    for e in expect:
        assert e in line, line
    assert not (tmp_path / "run").exists()  # the dataset is parsed before the run folder is made


# --------------------------------------------------------------------------- images
def _corrupt(root: Path, split: str, how: str) -> str:
    _, rel = first_id(root, split)
    path = root / "images" / rel
    if how == "absent":
        path.unlink()
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # not an image at all
        path.write_text("this is not a JPEG\n")
    return rel


@pytest.mark.parametrize("how,split,reason", [
    ("absent", "train", "file is missing"),
    ("truncated", "test", "cannot be decoded"),  # a test image: still found before training
    ("text", "train", "cannot be decoded"),
])
def test_bad_image_stops_the_run_before_training(config, ds, tmp_path, how, split, reason):
    rel = _corrupt(ds, split, how)
    out = tmp_path / "run"
    p = run_on(config, ds, out)
    assert p.returncode == 2
    line = error_line(p)
    assert f"image '{rel}'" in line and reason in line and "--skip-bad-images" in line
    assert_nothing_trained(out)


def test_skip_bad_images_continues_and_records_the_ids(config, ds, pristine, tmp_path):
    bad_train = _corrupt(ds, "train", "absent")
    bad_test = _corrupt(ds, "test", "text")
    out = tmp_path / "run"
    p = run_on(config, ds, out)
    assert p.returncode == 2 and bad_train in error_line(p)
    assert f"--resume {out}" in error_line(p)
    # continue the same run folder, now leaving the unreadable images out
    p = run_main("run", "--resume", out, "--skip-bad-images")
    assert p.returncode == 0, p.stderr
    res = results(out)
    skipped = {s["id"]: s["split"] for s in res["skipped_images"]}
    assert skipped.keys() == {bad_train, bad_test} and skipped[bad_test] == "test"
    assert len(res["skipped_images"]) == 2  # once each, although test is decoded per protocol
    assert res["splits_used"]["test"] == 5 and res["methods"]["cam"]["complete"]
    assert json.loads((out / "config.json").read_text())["run"]["skip_bad_images"] is True
    # the image cache built while skipping must not make a later strict run skip silently
    p = run_on(config, ds, tmp_path / "run2")
    assert p.returncode == 2 and bad_train in error_line(p)
    (ds / "images" / bad_train).write_bytes((pristine / "images" / bad_train).read_bytes())  # fixed
    p = run_on(config, ds, tmp_path / "run3")
    assert p.returncode == 2 and f"image '{bad_test}'" in error_line(p)


def test_grayscale_cmyk_palette_and_16bit_images_just_work(config, ds, tmp_path):
    from wsolbench.data.cache import decode_resized

    rows = image_rows(ds)
    kinds = ["L", "CMYK", "P", "I;16", "RGBA", "LA"]
    converted = {}
    new_rows = []
    for (iid, rel), kind in zip(rows, kinds + [None] * len(rows)):
        if kind is None:
            new_rows.append(f"{iid} {rel}")
            continue
        src = ds / "images" / rel
        rgb = Image.open(src).convert("RGB")
        if kind == "I;16":  # 16-bit grayscale PNG, full 16-bit range
            gray = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
            img, ext = Image.fromarray(gray), ".png"
        elif kind == "P":
            img, ext = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), ".png"
        elif kind in ("RGBA", "LA"):
            img, ext = rgb.convert(kind), ".png"
        else:
            img, ext = rgb.convert(kind), ".jpg"
        new_rel = str(Path(rel).with_suffix(ext))
        img.save(ds / "images" / new_rel, quality=95) if ext == ".jpg" else img.save(ds / "images" / new_rel)
        if ext != ".jpg":
            src.unlink()
        new_rows.append(f"{iid} {new_rel}")
        converted[kind] = (ds / "images" / new_rel, np.asarray(rgb))
    (ds / "images.txt").write_text("\n".join(new_rows) + "\n")
    assert Image.open(converted["I;16"][0]).mode.startswith("I")
    assert Image.open(converted["CMYK"][0]).mode == "CMYK"
    for kind, (path, rgb) in converted.items():
        dec, size = decode_resized(path, rgb.shape[:2])
        assert dec.dtype == np.uint8 and dec.shape == rgb.shape and size == (32, 32)
        ref = rgb if kind in ("P", "RGBA", "CMYK") else np.repeat(
            np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, axis=2)
        assert np.abs(dec.astype(int) - ref.astype(int)).mean() < 12, kind
    out = tmp_path / "run"
    p = run_on(config, ds, out)
    assert p.returncode == 0, p.stderr
    res = results(out)
    assert "skipped_images" not in res
    assert sum(res["splits_used"].values()) == len(rows)


def test_image_size_disagreeing_with_wsoleval_metadata(ds, tmp_path):
    from wsolbench.data.cub import load
    from wsolbench.data.wsoleval import write_metadata

    splits = load(ds, name="synthetic").splits
    meta = tmp_path / "metadata"
    wrong = splits["test"][1].id
    for split, samples in splits.items():
        samples = [dataclasses.replace(s, mask_paths=(), size=(40, 32) if s.id == wrong else (32, 32))
                   for s in samples]
        write_metadata(meta / split, samples)
    cfg = write_config(tmp_path / "wsoleval.toml", cache=tmp_path / "cache", dataset="wsoleval")
    out = tmp_path / "run"
    p = run_main("run", "--config", cfg, "--dataset", "wsoleval", "--out", out, "--device", "cpu",
                 "--set", f"datasets.wsoleval.root={ds / 'images'}",
                 "--set", f"datasets.wsoleval.metadata={meta}")
    assert p.returncode == 2
    line = error_line(p)
    assert f"image '{wrong}'" in line and "32x32" in line and "40x32" in line and "image_sizes.txt" in line
    assert_nothing_trained(out)


# --------------------------------------------------------------------------- boxes
def _set_box(root: Path, iid: str, x: float, y: float, w: float, h: float) -> None:
    f = root / "bounding_boxes.txt"
    lines = [f"{iid} {x} {y} {w} {h}" if ln.split()[0] == iid else ln for ln in f.read_text().splitlines()]
    f.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("box,words", [
    ((20, 10, -8, 12), "inverted box"),
    ((900, 900, 10, 10), "entirely outside the image (32x32 pixels)"),
])
def test_inverted_or_outside_box_is_an_error(config, ds, tmp_path, box, words):
    iid, rel = first_id(ds, "test")
    _set_box(ds, iid, *box)
    out = tmp_path / "run"
    p = run_on(config, ds, out)
    assert p.returncode == 2
    line = error_line(p)
    assert f"image '{rel}'" in line and words in line and "fix its annotation" in line
    assert_nothing_trained(out)


def test_box_partly_outside_is_clamped_and_recorded(config, ds, tmp_path):
    iid, rel = first_id(ds, "test")
    _set_box(ds, iid, 20, 4, 30, 10)  # x1 = 50 on a 32 px image
    out = tmp_path / "run"
    p = run_on(config, ds, out)
    assert p.returncode == 0, p.stderr
    clamped = results(out)["clamped_boxes"]["test"]
    assert [c["id"] for c in clamped] == [rel] and clamped[0]["image_size"] == [32, 32]


# --------------------------------------------------------------------------- names and configuration
@pytest.mark.parametrize("args,expect", [
    (("--dataset", "cubb"), "unknown dataset 'cubb' (did you mean 'cub'?)"),
    (("--methods", "cam,centre"), "unknown method 'centre' (did you mean 'center'?)"),
    (("--protocols", "paperr"), "unknown protocol 'paperr' (did you mean 'paper'?)"),
])
def test_unknown_dataset_method_or_protocol_suggests_the_closest(config, tmp_path, args, expect):
    out = tmp_path / "run"
    p = run_main("run", "--config", config, "--out", out, "--device", "cpu", *args)
    assert p.returncode == 2
    assert expect in error_line(p)
    assert not out.exists()


@pytest.mark.parametrize("setting,expect", [
    ("classifier.lrr=0.1", "unknown configuration key 'classifier.lrr' (did you mean 'lr'?)"),
    ("classifier.epochs=many", "configuration key 'classifier.epochs' must be int"),
    ("classifier.epochs=0", "configuration value classifier.epochs = 0 is invalid"),
    ("classifier.lr=-0.1", "configuration value classifier.lr = -0.1 is invalid"),
    ("classifier.select=best", "configuration value classifier.select = 'best' is invalid"),
    ("data.val_fraction=1.5", "configuration value data.val_fraction = 1.5 is invalid"),
    ("model.backbone=resnet19", "unknown backbone 'resnet19' (did you mean 'resnet18'?)"),
])
def test_bad_configuration_key_type_or_value(config, tmp_path, setting, expect):
    out = tmp_path / "run"
    p = run_main("run", "--config", config, "--out", out, "--device", "cpu", "--set", setting)
    assert p.returncode == 2
    assert expect in error_line(p)
    assert not out.exists()


def test_a_real_process_prints_one_line_and_debug_shows_the_traceback(config, tmp_path):
    p = run_cli("run", "--config", str(config), "--out", str(tmp_path / "run"), "--set", "classifier.lrr=1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: unknown configuration key 'classifier.lrr'")
    from wsolbench.errors import UserError

    with pytest.raises(UserError, match="classifier.lrr"):
        run_main("--debug", "run", "--config", config, "--out", tmp_path / "run", "--set", "classifier.lrr=1")


# --------------------------------------------------------------------------- the output folder
def test_existing_run_folder_is_refused_and_kept(config, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"mine": 1}')
    p = run_main("run", "--config", config, "--out", out, "--device", "cpu")
    assert p.returncode == 2
    line = error_line(p)
    assert str(out) in line and "already exists" in line and f"--resume {out}" in line
    assert (out / "results.json").read_text() == '{"mine": 1}'


@pytest.mark.parametrize("case", ["parent-is-a-file", "out-is-a-file", "read-only"])
def test_output_folder_not_writable(config, tmp_path, case):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    ro = tmp_path / "ro"
    if case == "parent-is-a-file":
        out, words = blocker / "run", [f"cannot write {blocker / 'run'}", "choose another --out"]
    elif case == "out-is-a-file":
        out, words = blocker, [f"--out {blocker} is a file", "choose another --out"]
    elif os.geteuid() != 0:
        ro.mkdir()
        ro.chmod(0o555)
        out, words = ro / "run", [f"cannot write {ro / 'run'}", "not writable"]
    else:  # root writes into read-only folders: the file system's refusal is simulated
        out = ro / "run"
        words = [f"cannot write {out}", "not writable"]
    real_mkdir = Path.mkdir

    def refusing_mkdir(self, *args, **kwargs):
        if case == "read-only" and os.geteuid() == 0 and (self == out or out in self.parents):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    try:
        with mock.patch.object(Path, "mkdir", refusing_mkdir):
            p = run_main("run", "--config", config, "--out", out, "--device", "cpu")
    finally:
        if ro.exists():
            ro.chmod(0o755)
    assert p.returncode == 2
    line = error_line(p)
    for w in words:
        assert w in line, line
    assert blocker.read_text() == "not a folder"
