"""ours1 and ours2 end to end through ``wsolbench run`` on a tiny synthetic set."""

import json

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_ours1_ours2_run_and_record_s_selection(tmp_path, tiny_config):
    out = tmp_path / "run"
    p = run_cli("run", "--config", str(tiny_config(("ours1", "ours2"))), "--out", str(out))
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "results.json").read_text())
    for m in ("ours1", "ours2"):
        entry = res["methods"][m]
        sel = entry["selection"]
        s = sel["S_per_epoch"]
        assert len(s) == 2 and sel["split"] == "val"
        assert sel["selected_epoch"] == 1 + max(range(len(s)), key=lambda i: s[i])
        for protocol in ("paper", "wsoleval"):
            met = entry["protocols"][protocol]["metrics"]
            assert met["num_images"] == 8 and met["gt_known_loc"] is not None
    # ours2 takes its class predictions from method I's classifier f
    assert res["methods"]["ours1"]["protocols"]["paper"]["metrics"]["top1_cls"] == \
        res["methods"]["ours2"]["protocols"]["paper"]["metrics"]["top1_cls"]
