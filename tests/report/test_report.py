"""report.md of a run folder and the ``wsolbench report`` command."""

from __future__ import annotations

import argparse
import json

import pytest

from wsolbench.errors import UserError
from wsolbench.report import report as R


def _entry(method, gt, selection=None, options=None):
    return {"method": method, "complete": True, "options": options or {}, "description": "",
            "selection": selection, "diagnostics": {},
            "protocols": {"paper": {"split": "test", "metrics": {
                "gt_known_loc": gt, "top1_loc": gt - 10, "top1_cls": 80.0, "pxap": None}}}}


def make_run_dir(tmp_path, dataset="synthetic", figures=None, skipped=None, complete=True):
    d = tmp_path / "20250101T000000Z-ours1+cam"
    d.mkdir()
    ours = _entry("ours1", 71.25, selection={
        "criterion": "max mean S over validation images (paper eq. 6)", "split": "val",
        "selected_epoch": 3, "epochs_run": 5, "S_per_epoch": [0.5, 0.6, 0.75, 0.7, 0.65],
        "val_gt_known_loc_per_epoch_DIAGNOSTIC_ONLY": None}, options={"epochs": 5, "reg": True})
    ours["complete"] = complete
    results = {
        "schema": 1, "dataset": dataset, "protocols": ["paper"], "seed": 7,
        "splits": {"train": 40, "val": 8, "test": 16}, "splits_used": {"train": 40, "val": 8, "test": 15},
        "val_source": "15% of each training class",
        "classifier": {"backbone": "resnet18", "selection": {
            "criterion": "best top-1 accuracy on the validation split", "split": "val", "selected_epoch": 4,
            "val_acc": 87.5, "history": [{"epoch": e, "val_acc": 50.0 + e} for e in range(1, 7)]}},
        "methods": {"ours1": ours, "cam": _entry("cam", 40.5)},
        "timings_s": {"dataset": 0.5, "classifier f": 12.25, "fit ours1": 30.0},
        "skipped_images": skipped or [],
    }
    if figures is not None:
        results["figures"] = figures
    (d / "results.json").write_text(json.dumps(results))
    (d / "config.json").write_text(json.dumps({
        "run": {"methods": ["ours1", "cam"], "protocols": ["paper"], "seed": 7},
        "dataset": {"name": dataset, "classes": 4}, "data": {"resize": 72, "crop": 64},
        "model": {"backbone": "resnet18", "pretrained": False},
        "classifier": {"epochs": 6}, "evaluation": {"cam_curve_interval": 0.001}}))
    (d / "meta.json").write_text(json.dumps({"device": "cpu", "git": "abc123", "started_utc": "2025-01-01T00:00:00",
                                             "versions": {"torch": "2.x"}, "argv": ["wsolbench", "run"]}))
    return d


def test_report_has_tables_selection_figures_config_timings(tmp_path):
    d = make_run_dir(tmp_path, figures={"boxes.png": "written",
                                        "maps_vs_masks.png": "skipped: the test split has no ground-truth masks"})
    (d / "figures").mkdir()
    (d / "figures" / "boxes.png").write_bytes(b"\x89PNG fake")
    text = R.write_report(d).read_text()
    assert text.startswith("# wsolbench report: synthetic (20250101T000000Z-ours1+cam)")
    # the measured table (same renderer as table.md)
    assert "| Ours (method I) " in text and "71.25" in text and "40.50" in text
    assert "[table.md](table.md)" in text
    # selection: f and the method, with epoch, criterion, split and the S of the chosen epoch
    sel = text.split("## Model selection")[1].split("## Figures")[0]
    assert "| classifier f (shared) | best top-1 accuracy on the validation split | val | 4 | 6 |" in sel
    assert "| ours1 | max mean S over validation images (paper eq. 6) | val | 3 | 5 | mean S 0.7500 |" in sel
    assert "| cam | nothing to select" in sel
    # figures: relative links for the files there, reasons for those that are not
    figs = text.split("## Figures")[1].split("## Configuration")[0]
    assert "![boxes.png](figures/boxes.png)" in figs
    assert "| maps_vs_masks.png | skipped: the test split has no ground-truth masks |" in figs
    assert "| s_curve.png | not drawn yet: run `wsolbench report" in figs
    assert "| epochs_maps.png | not drawn yet" in figs
    assert "](" + str(tmp_path) not in text and "](/" not in text  # links stay relative
    # configuration, method options, timings, skipped images
    assert "| data.crop | 64 |" in text and "| model.pretrained | false |" in text
    assert '{"epochs": 5, "reg": true}' in text
    assert "| classifier f | 12.2 |" in text and "| **total** | 42.8 |" in text
    assert "None: every image of every split was read." in text
    assert "| images used (train / val / test) | 40 / 8 / 15 |" in text
    assert "incomplete" not in text


def test_report_embeds_the_papers_tables_for_its_dataset(tmp_path):
    text = R.write_report(make_run_dir(tmp_path, dataset="cub")).read_text()
    assert "### Table 1. Results on the CUB benchmark" in text
    assert "CAM (Zhou 2016)" in text  # a published row, labelled
    assert "(published)" in text


def test_report_lists_skipped_images_and_flags_incomplete_runs(tmp_path):
    skipped = [{"split": "test", "id": f"img{i}.jpg", "reason": "truncated JPEG"} for i in range(60)]
    text = R.write_report(make_run_dir(tmp_path, skipped=skipped, complete=False)).read_text()
    assert "60 unreadable image(s)" in text and "| test | img0.jpg | truncated JPEG |" in text
    assert "img55.jpg" not in text and "... and 10 more" in text
    assert "**This run is incomplete**" in text and "--resume" in text


def _args(path, **kw):
    return argparse.Namespace(run_dir=path, no_figures=False, **kw)


def test_command_redraws_figures_and_writes_report(tmp_path, capsys):
    d = make_run_dir(tmp_path)
    assert R.run(_args(d)) == 0
    assert (d / "figures" / "s_curve.png").is_file()  # drawn from results.json
    text = (d / "report.md").read_text()
    assert "![s_curve.png](figures/s_curve.png)" in text
    assert "| threshold_curves.png | skipped: no method has wsoleval threshold curves" in text
    assert "| boxes.png | drawn only by `wsolbench run`" in text
    assert capsys.readouterr().out.strip() == f"report: {d / 'report.md'}"


def test_command_rejects_missing_or_non_run_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist") as exc:
        R.run(_args(tmp_path / "nope"))
    assert "\n" not in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a run folder"):
        R.run(_args(tmp_path / "empty"))


def test_add_parser_registers_report_with_its_handler(tmp_path):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    R.add_parser(sub)
    args = parser.parse_args(["report", str(tmp_path), "--no-figures"])
    assert args.handler is R.run and args.no_figures and args.run_dir == tmp_path


def test_cli_main_report_error_is_one_line(tmp_path, capsys):
    pytest.importorskip("wsolbench.evaluation.cli")  # the CLI imports the evaluator's command
    from wsolbench.cli import main

    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run folder") and "\n" not in err
