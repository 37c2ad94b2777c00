"""Reading and writing wsolevaluation metadata; errors name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsolbench.data.sample import Sample
from wsolbench.data.wsoleval import read_metadata, write_metadata
from wsolbench.errors import UserError


def write(meta: Path, **files: str) -> Path:
    meta.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (meta / f"{name}.txt").write_text(text)
    return meta


GOOD = dict(
    image_ids="001.Black/a.jpg\n001.Black/b.jpg\n002.Red/c.jpg\n",
    class_labels="001.Black/a.jpg,0\n001.Black/b.jpg,0\n002.Red/c.jpg,1\n",
    image_sizes="001.Black/a.jpg,500,300\n001.Black/b.jpg,640,480\n002.Red/c.jpg,100,100\n",
    localization="001.Black/a.jpg,10,20,110,220\n001.Black/a.jpg,5,5,6.5,7\n002.Red/c.jpg,0,0,99,99\n",
)


def test_read_boxes(tmp_path):
    samples = read_metadata(write(tmp_path / "m", **GOOD), image_root=tmp_path / "img")
    assert [s.id for s in samples] == ["001.Black/a.jpg", "001.Black/b.jpg", "002.Red/c.jpg"]
    a = samples[0]
    assert a.path == tmp_path / "img" / "001.Black/a.jpg"
    assert a.label == 0 and a.size == (500, 300) and a.mask_rule == "binary"
    assert a.boxes == ((10.0, 20.0, 110.0, 220.0), (5.0, 5.0, 6.5, 7.0))
    assert samples[1].boxes == () and samples[2].label == 1


def test_read_masks_several_rows(tmp_path):
    meta = write(tmp_path / "m", image_ids="x/1.jpg\nx/2.jpg\n", class_labels="x/1.jpg,3\nx/2.jpg,4\n",
                 localization="x/1.jpg,x/1_a.png,x/1_ignore.png\nx/1.jpg,x/1_b.png,\n"
                              "x/2.jpg,x/2_a.png,\n")
    s1, s2 = read_metadata(meta, mask_root=tmp_path / "masks")
    assert s1.mask_paths == (tmp_path / "masks/x/1_a.png", tmp_path / "masks/x/1_b.png")
    assert s1.ignore_path == tmp_path / "masks/x/1_ignore.png"
    assert s2.mask_paths == (tmp_path / "masks/x/2_a.png",) and s2.ignore_path is None
    assert s1.size is None and s1.boxes == ()
    assert read_metadata(meta)[0].mask_paths == (Path("x/1_a.png"), Path("x/1_b.png"))


def test_round_trip(tmp_path):
    samples = [
        Sample(id="a/1.jpg", path=tmp_path / "img/a/1.jpg", label=2, boxes=((1.0, 2.0, 30.0, 40.5),),
               size=(64, 48)),
        Sample(id="a/2.jpg", path=tmp_path / "img/a/2.jpg", label=0,
               mask_paths=(tmp_path / "masks/a/2_m.png", tmp_path / "masks/a/2_n.png"),
               ignore_path=tmp_path / "masks/a/2_ignore.png", size=(10, 20)),
    ]
    write_metadata(tmp_path / "meta", samples, mask_root=tmp_path / "masks")
    loc = (tmp_path / "meta/localization.txt").read_text().splitlines()
    assert loc == ["a/1.jpg,1,2,30,40.5", "a/2.jpg,a/2_m.png,a/2_ignore.png", "a/2.jpg,a/2_n.png,"]
    again = read_metadata(tmp_path / "meta", image_root=tmp_path / "img", mask_root=tmp_path / "masks")
    assert again == samples


@pytest.mark.parametrize("files, match", [
    (dict(class_labels="a.jpg,0\n"), r"image_ids\.txt: metadata file is missing"),
    (dict(image_ids="a.jpg\n"), r"class_labels\.txt: metadata file is missing"),
    (dict(image_ids="a.jpg\nb.jpg\n", class_labels="a.jpg,0\nb.jpg,x\n"),
     r"class_labels\.txt:2: expected '<image path>,<class label>'"),
    (dict(image_ids="a.jpg\nb.jpg\n", class_labels="a.jpg,0\nb.jpg,-1\n"), r"class_labels\.txt:2:"),
    (dict(image_ids="a.jpg\na.jpg\n", class_labels="a.jpg,0\n"), r"image_ids\.txt:2: .*listed twice"),
    (dict(image_ids="a.jpg\nb.jpg\n", class_labels="a.jpg,0\n"), r"class_labels\.txt: no label line for image 'b\.jpg'"),
    (dict(image_ids="a.jpg\n", class_labels="a.jpg,0\nz.jpg,1\n"), r"class_labels\.txt:2: image 'z\.jpg' is not listed"),
    (dict(image_ids="a.jpg\n", class_labels="a.jpg,0\n", image_sizes="a.jpg,10\n"),
     r"image_sizes\.txt:1: expected '<image path>,<width>,<height>'"),
    (dict(image_ids="a.jpg\n", class_labels="a.jpg,0\n", image_sizes="\na.jpg,0,5\n"), r"image_sizes\.txt:2:"),
    (dict(image_ids="a.jpg\n", class_labels="a.jpg,0\n", localization="a.jpg,1,2,3,4\na.jpg,1,2,3\n"),
     r"localization\.txt:2: expected .*<x0>,<y0>,<x1>,<y1>.* or .*<mask path>"),
    (dict(image_ids="a.jpg\n", class_labels="a.jpg,0\n", localization="a.jpg,1,2,x,4\n"),
     r"localization\.txt:1: expected '<image path>,<x0>,<y0>,<x1>,<y1>' with numbers"),
    (dict(image_ids="a.jpg\n", class_labels="a.jpg,0\n", localization="a.jpg,5,2,3,4\n"),
     r"localization\.txt:1: expected a box with x0 <= x1"),
    (dict(image_ids="a.jpg\n", class_labels="a.jpg,0\n", localization="a.jpg,m.png,i.png\na.jpg,n.png,j.png\n"),
     r"localization\.txt:2: expected an empty ignore path"),
    (dict(image_ids="a.jpg\n", class_labels="a.jpg,0\n", localization="q.jpg,1,2,3,4\n"),
     r"localization\.txt:1: image 'q\.jpg' is not listed"),
])
def test_errors_name_file_and_line(tmp_path, files, match):
    meta = write(tmp_path / "m", **files)
    with pytest.raises(UserError, match=match) as info:
        read_metadata(meta)
    assert "\n" not in str(info.value)


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_metadata(tmp_path / "nope")


def test_blank_lines_and_crlf_are_fine(tmp_path):
    meta = write(tmp_path / "m", image_ids="a.jpg\r\n\r\nb.jpg\r\n", class_labels="a.jpg,1\r\nb.jpg,0\r\n\r\n")
    assert [(s.id, s.label) for s in read_metadata(meta)] == [("a.jpg", 1), ("b.jpg", 0)]


def test_write_rejects_commas_in_ids(tmp_path):
    with pytest.raises(UserError, match="comma"):
        write_metadata(tmp_path / "m", [Sample(id="a,b.jpg", path=Path("a,b.jpg"), label=0)])
