from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from wsolbench.data import catalog
from wsolbench.data.check import check
from wsolbench.data.cli import add_parser, run
from wsolbench.errors import UserError


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="wsolbench")
    add_parser(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(["data", *argv]))


@pytest.mark.parametrize("name,fixture", [("cub", "make_cub"), ("cars", "make_cars"),
                                          ("flowers", "make_flowers"), ("tinyimagenet", "make_tiny")])
def test_intact_minis_pass(request, name, fixture):
    mini = request.getfixturevalue(fixture)()
    report = check(name, mini.root, expected=mini.counts)
    assert report.ok, report.format()
    assert report.checked_images == sum(mini.counts.values())
    if name in ("cub", "flowers"):
        assert report.checked_masks == report.checked_images


def test_official_counts_are_expected(make_cub):
    mini = make_cub()
    report = check("cub", mini.root)
    assert not report.ok and list(report.problems) == ["split_count"]
    assert report.problems["split_count"] == ["train: 6 images, expected 5994",
                                              "test: 6 images, expected 5794"]
    assert report.counts == {"train": {"found": 6, "expected": 5994},
                             "test": {"found": 6, "expected": 5794}}
    assert catalog.dataset_info("flowers").expected_counts == {"train": 1020, "val": 1020,
                                                               "test": 6149}
    assert catalog.dataset_info("cars").expected_counts == {"train": 8144, "test": 8041}
    assert catalog.dataset_info("tinyimagenet").expected_counts == {"train": 100000, "test": 10000}


def test_broken_cub_reports_every_category(make_cub, helpers):
    mini = make_cub()
    rels = [line.split()[1] for line in (mini.folder / "images.txt").read_text().splitlines()]
    (mini.folder / "images" / rels[0]).unlink()  # missing image
    helpers.truncate(mini.folder / "images" / rels[1], 0.6)  # truncated JPEG
    (mini.folder / "images" / rels[2]).write_bytes(b"not an image")
    boxes = mini.folder / "bounding_boxes.txt"
    text = boxes.read_text().splitlines()
    text.append("4 10 10 5000 5")  # second box of image 4, far outside
    text.append("5 30 10 -8 5")  # inverted (negative width)
    text.append("6 1 2 3")  # malformed: line 15
    boxes.write_text("\n".join(text) + "\n")
    labels = mini.folder / "image_class_labels.txt"
    labels.write_text(labels.read_text() + "404 1\n")  # unknown id: line 13
    helpers.truncate(mini.root / "segmentations" / rels[3].replace(".jpg", ".png"), 0.5)
    report = check("cub", mini.root, expected=mini.counts)
    assert not report.ok
    p = report.problems
    assert set(p) == {"missing_image", "unreadable_image", "box_outside_image", "box_inverted",
                      "malformed_row", "unknown_id", "unreadable_mask"}
    assert len(p["missing_image"]) == 1 and rels[0] in p["missing_image"][0]
    assert len(p["unreadable_image"]) == 2
    assert any(rels[1] in m and "truncated" in m for m in p["unreadable_image"])
    assert p["box_outside_image"] == [f"{rels[3]}: box (10, 10, 5010, 15) lies outside the "
                                      f"{_size(mini, rels[3])} image"]
    assert "bounding_boxes.txt:15: expected 5 columns" in p["malformed_row"][0]
    assert "image_class_labels.txt:13: image id 404 is not in images.txt" in p["unknown_id"][0]
    text = report.format(examples=1)
    assert "missing_image: 1" in text and "unreadable_image: 2" in text and "... and 1 more" in text
    assert "result: 8 problem(s) in 7 categories" in text


def _size(mini, rel):
    w, h = next(s["size"] for sp in mini.splits.values() for s in sp if s["id"] == rel)
    return f"{w}x{h}"


def test_masks_missing_is_warning_for_cub_but_problem_for_flowers(make_cub, make_flowers):
    mini = make_cub(segmentations=False)
    report = check("cub", mini.root, expected=mini.counts)
    assert report.ok and "no_masks" in report.warnings
    mini = make_flowers(segmentations=False)
    report = check("flowers", mini.root, expected=mini.counts)
    assert not report.ok and list(report.problems) == ["no_masks"]


def test_mask_size_mismatch_and_missing_mask(make_flowers, helpers):
    mini = make_flowers()
    masks = sorted((mini.root / "segmim").glob("*.jpg"))
    helpers.jpeg(masks[0], 10, 10)
    masks[1].unlink()
    report = check("flowers", mini.root, expected=mini.counts)
    assert set(report.problems) == {"mask_size_mismatch", "missing_mask"}


def test_tiny_problems(make_tiny, helpers):
    mini = make_tiny()
    ann = mini.folder / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    lines[0] = lines[0].replace("\t10\t", "\t70\t", 1)  # x0 70 > x1 50: inverted
    lines.append("val_9.JPEG\tn00000000\t1\t1\t5\t5")  # unknown class, line 5
    ann.write_text("\n".join(lines) + "\n")
    report = check("tinyimagenet", mini.root, expected=mini.counts)
    assert set(report.problems) == {"box_inverted", "unknown_id"}
    assert "val_annotations.txt:5: class n00000000" in report.problems["unknown_id"][0]


def test_unloadable_root(tmp_path):
    report = check("cars", tmp_path / "nothing")
    assert not report.ok and list(report.problems) == ["unloadable"]
    assert "wsolbench data download cars" in report.problems["unloadable"][0]


def test_cli_check_exit_status_and_json(make_cars, monkeypatch, tmp_path, capsys):
    mini = make_cars()
    out = tmp_path / "report.json"
    assert _cli("check", "cars", "--root", str(mini.root), "--json", str(out)) == 1
    text = capsys.readouterr().out
    assert "split_count: 2" in text and "train 5/8144" in text
    rep = json.loads(out.read_text())
    assert rep["ok"] is False and rep["problems"]["split_count"]["count"] == 2
    assert rep["counts"]["test"] == {"found": 4, "expected": 8041}
    # with the mini's own counts as the official ones, the dataset is complete and sound
    info = dataclasses.replace(catalog.dataset_info("cars"), expected_counts=mini.counts)
    monkeypatch.setitem(catalog._INFOS, "cars", info)
    assert _cli("check", "cars", "--root", str(mini.root), "--json", str(out)) == 0
    assert json.loads(out.read_text())["ok"] is True
    assert "result: OK" in capsys.readouterr().out


def test_cli_errors_and_info(capsys):
    with pytest.raises(UserError, match=r"unknown dataset 'cubb' \(did you mean 'cub'\?\)"):
        _cli("check", "cubb", "--root", "x")
    with pytest.raises(UserError, match="needs --metadata"):
        _cli("check", "wsoleval", "--root", "x")
    with pytest.raises(UserError, match="nothing to download"):
        _cli("download", "synthetic", "--root", "x")
    assert _cli("info") == 0
    text = capsys.readouterr().out
    assert "cub: CUB-200-2011" in text and "Table 1 (loc), Table 4 (pxap)" in text
    assert "102segmentations.tgz" in text and "checksum unknown" in text


def test_dataset_info_records():
    cub = catalog.dataset_info("cub")
    assert cub.paper_tables == (1, 4, 6) and cub.tables["loc"] == 1 and cub.tables["pxap"] == 4
    assert cub.has_boxes and cub.has_masks and cub.default_root == "CUB_200_2011"
    assert catalog.dataset_info("cars").tables == {"loc": 2}
    assert catalog.dataset_info("tinyimagenet").tables == {"loc": 3}
    fl = catalog.dataset_info("flowers")
    assert fl.tables == {"pxap": 5} and not fl.has_boxes and fl.has_masks
    assert set(catalog.DATASETS.names()) >= {"cub", "cars", "flowers", "tinyimagenet",
                                             "wsoleval", "synthetic"}
    assert {i.name for i in catalog.dataset_infos()} == set(catalog.DATASETS.names())


def test_wsoleval_loader_delegates_to_read_metadata(tmp_path, monkeypatch):
    """The wsoleval entry reads train/ val/ test/ through wsoleval.read_metadata (faked here)."""
    import sys
    import types

    from wsolbench.data.sample import Sample

    calls = []

    def read_metadata(meta_dir, image_root=None, mask_root=None):
        calls.append((meta_dir.name, image_root, mask_root))
        return [Sample(id=f"{meta_dir.name}/a.jpg", path=image_root / "a.jpg", label=2)]

    monkeypatch.setitem(sys.modules, "wsolbench.data.wsoleval",
                        types.SimpleNamespace(read_metadata=read_metadata))
    meta = tmp_path / "metadata"
    for split in ("train", "test"):
        (meta / split).mkdir(parents=True)
    images = tmp_path / "images"
    images.mkdir()
    load = catalog.DATASETS.get("wsoleval")
    ds = load(images, metadata=meta)
    assert set(ds.splits) == {"train", "test"} and ds.num_classes == 3
    assert calls == [("train", images, None), ("test", images, None)]
    with pytest.raises(UserError, match="needs 'metadata'"):
        load(images)
    with pytest.raises(UserError, match=r"test is missing"):
        load(images, metadata=tmp_path)
