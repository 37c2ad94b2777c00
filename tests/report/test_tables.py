"""Tables are rendered from results.json alone; published rows stay labelled."""

import json

import pytest

from wsolbench.errors import UserError
from wsolbench.report.tables import find_results, render_paper_table, render_run


def _entry(method, gt, top1, cls, pxap, options=None, epoch=None):
    return {"method": method, "complete": True, "options": options or {},
            "selection": {"selected_epoch": epoch} if epoch else None,
            "protocols": {"paper": {"split": "test", "metrics": {
                "gt_known_loc": gt, "top1_loc": top1, "top1_cls": cls, "pxap": pxap}},
                "wsoleval": {"split": "test", "metrics": {
                    "gt_known_loc": gt, "max_box_acc": gt, "max_box_acc_v2": gt - 10,
                    "box_acc_by_iou": {"30": gt + 5, "50": gt, "70": gt - 35}, "top1_loc": top1,
                    "pxap": pxap}}}}


def _write(tmp_path, name, dataset, methods):
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps({"dataset": dataset, "protocols": ["paper", "wsoleval"],
                                                "methods": methods}))
    return d


def test_single_run_table_has_measured_rows_with_split(tmp_path):
    d = _write(tmp_path, "run1", "cub", {"cam": _entry("cam", 50.0, 40.0, 80.0, 60.0),
                                         "ours1": _entry("ours1", 70.0, 55.5, 80.0, None, epoch=4)})
    md = render_run(find_results([d]))
    assert "| CAM " in md and "| Ours (method I) " in md
    assert "70.00" in md and "55.50" in md
    assert "measured (run1, test split)" in md
    assert "MaxBoxAccV2" in md and "60.00" in md  # wsoleval: 70 - 10
    csv = render_run(find_results([d]), "csv")
    assert csv.splitlines()[0].startswith("protocol,Method,GT-known loc[%]")


def test_several_runs_give_mean_and_sample_std(tmp_path):
    a = _write(tmp_path, "s0", "cub", {"ours1": _entry("ours1", 70.0, 50.0, 80.0, 1.0)})
    b = _write(tmp_path, "s1", "cub", {"ours1": _entry("ours1", 74.0, 54.0, 80.0, 3.0)})
    md = render_run(find_results([a, b]))
    # mean 72, sample std sqrt(((70-72)^2 + (74-72)^2) / 1) = 2.83
    assert "72.00 ± 2.83" in md and "2.00 ± 1.41" in md
    assert "measured (2 runs, test split)" in md


def test_paper_table_1_keeps_published_rows_labelled(tmp_path):
    d = _write(tmp_path, "r", "cub", {"ours1": _entry("ours1", 70.0, 50.0, 80.0, None)})
    md = render_paper_table(1, find_results([d]))
    lines = md.splitlines()
    pub = [l for l in lines if "Ours (method I)" in l and "published" in l]
    meas = [l for l in lines if "Ours (method I)" in l and "measured" in l]
    assert pub and "82.85" in pub[0] and "67.00" in pub[0]
    assert meas and "70.00" in meas[0] and "82.85" not in meas[0]


def test_paper_table_6_rows_by_switches(tmp_path):
    d = _write(tmp_path, "r", "cub", {
        "ours2": _entry("ours2", 60.0, 1, 1, 1, {"reg": True, "inner": True, "outer": True}),
        "ours2[inner=false]": _entry("ours2", 55.0, 1, 1, 1, {"reg": True, "inner": False, "outer": True})})
    md = render_paper_table(6, find_results([d]))
    rows = [l for l in md.splitlines() if "measured" in l]
    assert len(rows) == 2
    assert any("✓" in r and "55.00" in r and r.count("✓") == 2 for r in rows)
    assert any("62.13" in l and "published" in l for l in md.splitlines())


def test_missing_run_folder_and_bad_json_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        find_results([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no results.json"):
        find_results([tmp_path / "empty"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        find_results([bad])
    with pytest.raises(UserError, match="tables 1-6"):
        render_paper_table(9, [])


def test_runs_with_other_options_are_not_pooled(tmp_path):
    a = _write(tmp_path, "short", "cub", {"ours2": _entry("ours2", 20.0, 1, 1, 1, {"epochs": 6, "lr": 0.1})})
    b = _write(tmp_path, "long", "cub", {"ours2": _entry("ours2", 32.0, 1, 1, 1, {"epochs": 20, "lr": 0.1})})
    md = render_run(find_results([a, b]))
    assert "Ours (method II) {epochs=6}" in md and "Ours (method II) {epochs=20}" in md
    assert "±" not in md.split("wsoleval")[0]  # two settings, one run each: no mean ± std
    assert "26.00" not in md  # the mean of the two settings would be 26.00
