"""``wsolbench run`` end to end on a tiny synthetic set, driven through the command line."""

import json

from tests.conftest import run_cli


def _metrics(res, method, protocol="paper"):
    return res["methods"][method]["protocols"][protocol]["metrics"]


def test_run_writes_a_complete_run_folder(tmp_path, tiny_config):
    cfg = tiny_config(("cam", "center", "full"))
    out = tmp_path / "run"
    p = run_cli("run", "--config", str(cfg), "--out", str(out), "--device", "cpu")
    assert p.returncode == 0, p.stderr
    for name in ("results.json", "config.json", "meta.json", "table.md", "table.csv", "report.md",
                 "figures/boxes.png", "figures/threshold_curves.png"):
        assert (out / name).is_file(), name
    assert "figures/boxes.png" in (out / "report.md").read_text()
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "synthetic" and res["splits_used"]["test"] == 8
    for m in ("cam", "center", "full"):
        entry = res["methods"][m]
        assert entry["complete"]
        for protocol in ("paper", "wsoleval"):
            met = _metrics(res, m, protocol)
            assert met["num_images"] == 8 and entry["protocols"][protocol]["split"] == "test"
            for key in ("gt_known_loc", "top1_loc", "top1_cls", "pxap"):
                assert met[key] is not None and 0.0 <= met[key] <= 100.0, (m, protocol, key)
        assert _metrics(res, m, "wsoleval")["max_box_acc_v2"] is not None
    # f is shared: every method reports the same classifier accuracy
    assert len({_metrics(res, m)["top1_cls"] for m in ("cam", "center", "full")}) == 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 0 and "torch" in meta["versions"] and "classifier f" in meta["durations_s"]
    cfg_saved = json.loads((out / "config.json").read_text())
    assert cfg_saved["datasets"]["synthetic"]["classes"] == 2
    table = (out / "table.md").read_text()
    assert "CAM" in table and "measured (run, test split)" in table


def test_existing_run_folder_is_never_overwritten(tmp_path, tiny_config):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    p = run_cli("run", "--config", str(tiny_config()), "--out", str(out))
    assert p.returncode == 2
    assert "already exists" in p.stderr and "Traceback" not in p.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_method_typo_suggests_and_fails_fast(tmp_path, tiny_config):
    p = run_cli("run", "--config", str(tiny_config()), "--methods", "ourz1", "--out", str(tmp_path / "r"))
    assert p.returncode == 2
    assert "unknown method 'ourz1' (did you mean 'ours1'?)" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "r").exists()


def test_help_lists_subcommands():
    p = run_cli("--help")
    assert p.returncode == 0
    for sub in ("run", "eval", "table", "synth", "methods", "datasets", "data"):
        assert sub in p.stdout


def test_several_seeds_share_nothing_and_table_shows_mean_std(tmp_path, tiny_config):
    out = tmp_path / "seeds"
    p = run_cli("run", "--config", str(tiny_config(("cam",))), "--seeds", "0,1", "--out", str(out),
                "--set", "datasets.synthetic.classifier.epochs=1")
    assert p.returncode == 0, p.stderr
    runs = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["seed"] for r in runs] == [0, 1]
    # nothing shared: each seed trained its own f (different cache keys, different weights)
    keys = [r["classifier"]["key"] for r in runs]
    assert keys[0] != keys[1]
    table = (out / "table.md").read_text()
    assert "measured (2 runs, test split)" in table and "±" in table
    vals = [_metrics(r, "cam")["gt_known_loc"] for r in runs]
    mean = sum(vals) / 2
    assert f"{mean:.2f} ±" in table
