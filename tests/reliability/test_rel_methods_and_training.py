"""Issue 7: plug-ins that return garbage, a diverging training, a full disk, and an
interrupted method training (g of method I). Run in this process through
``wsolbench.cli.main`` so that test plug-ins can be registered and ``os.replace`` patched."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from relhelpers import comparable, error_line, image_rows, make_synth, results, run_main, split_of, write_config
from wsolbench.methods import METHODS, LocalizeOutput, WSOLMethod


# --------------------------------------------------------------------------- test plug-ins
def _ones(images: torch.Tensor) -> torch.Tensor:
    b, _, h, w = images.shape
    return torch.ones(b, h // 4, w // 4)


class NaNMaps(WSOLMethod):
    description = "test: NaN in the second image's map"
    uses_classifier = False
    broken = True

    def localize(self, images, labels):
        m = _ones(images)
        m[0, 1, 1] = 0.0
        if type(self).broken:
            m[1, 2, 3] = float("nan")
        return m


class InfMaps(WSOLMethod):
    description = "test: +Inf in the first image's map"
    uses_classifier = False

    def localize(self, images, labels):
        m = _ones(images)
        m[0, 0, 0] = float("inf")
        return m


class ShortBatch(WSOLMethod):
    description = "test: one map too few"
    uses_classifier = False

    def localize(self, images, labels):
        return _ones(images)[1:]


class FlatLogits(WSOLMethod):
    description = "test: logits of the wrong shape"
    uses_classifier = False

    def localize(self, images, labels):
        return LocalizeOutput(maps=_ones(images), logits=torch.zeros(len(images)))


class Crashing(WSOLMethod):
    description = "test: a bug inside localize"
    uses_classifier = False

    def localize(self, images, labels):
        return {}["maps"]


class ConstRaw(WSOLMethod):
    description = "test: a constant raw map"
    uses_classifier = False

    def localize(self, images, labels):
        return 3.0 * _ones(images)


class ConstUnit(WSOLMethod):
    description = "test: a constant map in [0, 1]"
    uses_classifier = False
    map_range = "unit"

    def localize(self, images, labels):
        return 0.5 * _ones(images)


class NearlyFull(WSOLMethod):
    description = "test: ones with one pixel at 0.2 (the paper box is the whole image)"
    uses_classifier = False
    map_range = "unit"

    def localize(self, images, labels):
        b, _, h, w = images.shape
        m = torch.ones(b, h, w)
        m[:, 0, 0] = 0.2
        return m


PLUGINS = {"relnan": NaNMaps, "relinf": InfMaps, "relshort": ShortBatch, "rellogits": FlatLogits, "relcrash": Crashing,
           "relconstraw": ConstRaw, "relconstunit": ConstUnit, "relnearfull": NearlyFull}


@pytest.fixture(scope="module", autouse=True)
def plugins():
    """Register the test plug-ins for this module only."""
    for name, cls in PLUGINS.items():
        METHODS.register(name, cls, origin="tests/reliability")
    yield
    for name in PLUGINS:
        METHODS._entries.pop(name, None)
        METHODS._origins.pop(name, None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_synth(tmp_path_factory.mktemp("synth") / "synth")
    flags = split_of(root)
    test_ids = [rel for iid, rel in image_rows(root) if flags[iid] == "0"]
    cfg = write_config(tmp_path_factory.mktemp("cfg") / "benchmark.toml",
                       cache=tmp_path_factory.mktemp("cache"), backbone="test_resnet")
    return root, cfg, test_ids


def run(data, out, *args):
    root, cfg, _ = data
    return run_main("run", "--config", cfg, "--out", out, "--device", "cpu",
                    "--set", f"datasets.synthetic.root={root}", *args)


# --------------------------------------------------------------------------- maps
@pytest.mark.parametrize("method,expect", [
    ("relnan", "method 'relnan' returned NaN/Inf values for image '{ids[1]}'"),
    ("relinf", "method 'relinf' returned NaN/Inf values for image '{ids[0]}'"),
    ("relshort", "method 'relshort' returned maps of shape (5, 8, 8) for a batch of 6 images "
                 "(first '{ids[0]}')"),
    ("rellogits", "method 'rellogits' returned logits of shape (6,) for a batch of 6 images "
                  "(first '{ids[0]}'); they must be [B, 2]"),
    ("relcrash", "method 'relcrash' failed in localize on the batch starting with image '{ids[0]}': "
                 "KeyError: 'maps'"),
], ids=["nan", "inf", "shape", "logits", "crash"])
def test_method_returning_bad_maps_names_method_and_image(data, tmp_path, method, expect):
    out = tmp_path / "run"
    p = run(data, out, "--methods", f"cam,{method}")
    assert p.returncode == 2
    line = error_line(p)
    assert expect.format(ids=data[2]) in line, line
    assert f"--resume {out}" in line
    res = results(out)  # what was computed before is intact
    assert res["methods"]["cam"]["complete"] and method not in res["methods"]
    if method != "relnan":
        return
    # fix the plug-in, resume: cam is not evaluated again, the fixed method is
    cam_before = res["methods"]["cam"]
    NaNMaps.broken = False
    try:
        p = run_main("run", "--resume", out)
    finally:
        NaNMaps.broken = True
    assert p.returncode == 0, p.stderr
    res = results(out)
    assert res["methods"]["cam"] == cam_before and res["methods"]["relnan"]["complete"]


def test_constant_maps_follow_each_protocols_rule(data, tmp_path):
    out = tmp_path / "run"
    p = run(data, out, "--methods", "relconstraw,relconstunit,relnearfull")
    assert p.returncode == 0, p.stderr
    m = {label: {pr: v["metrics"] for pr, v in e["protocols"].items()}
         for label, e in results(out)["methods"].items()}
    # paper: a raw map is min-max normalized (constant -> zeros -> no contour -> box [0,0,0,0]);
    # a map in [0, 1] is thresholded at tau = max/10 = c/10: every pixel is kept, the box is the
    # whole image, exactly as for a map whose box is the whole image for another reason
    assert m["relconstraw"]["paper"]["gt_known_loc"] == 0.0
    for key in ("gt_known_loc", "box_acc_by_iou"):
        assert m["relconstunit"]["paper"][key] == m["relnearfull"]["paper"][key]
    assert m["relnearfull"]["paper"]["gt_known_loc"] > 0.0
    # wsoleval: min-max makes any constant map all zeros: no contour at any threshold
    for label in ("relconstraw", "relconstunit"):
        assert m[label]["wsoleval"]["max_box_acc"] == 0.0
        assert m[label]["wsoleval"]["max_box_acc_v2"] == 0.0


# --------------------------------------------------------------------------- training
def test_nan_training_loss_stops_and_keeps_the_last_good_epoch(data, tmp_path):
    out = tmp_path / "run"
    # lr x 1e30 after epoch 1: epoch 2 diverges
    p = run(data, out, "--methods", "cam", "--set", "classifier.epochs=3", "--set", "classifier.lr_step=1",
            "--set", "classifier.lr_gamma=1e30")
    assert p.returncode == 2
    line = error_line(p)
    last = out / "shared" / "classifier" / "last.pt"
    assert "classifier f: the training loss became nan in epoch 2" in line
    assert f"the last good checkpoint (epoch 1) is kept at {last}" in line
    assert "--set classifier.lr=" in line and "--resume" in line  # says why NOT to resume
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(t).all() for t in ckpt["modules"]["f"].values()
                                      if t.is_floating_point())
    assert not (out / "shared" / "classifier" / "final.pt").exists()
    assert results(out)["splits_used"]["train"] > 0  # written before training: intact


def test_disk_full_keeps_earlier_results_and_resumes(data, tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    real_replace = os.replace

    def full_disk(src, dst, *a, **kw):
        if Path(dst).name == "results.json" and json.loads(Path(src).read_text()).get(
                "methods", {}).get("center"):
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", full_disk)
    p = run(data, out, "--methods", "cam,center")
    monkeypatch.setattr(os, "replace", real_replace)
    assert p.returncode == 2
    line = error_line(p)
    assert f"cannot write {out / 'results.json'}: the disk is full" in line
    assert f"--resume {out}" in line
    before = results(out)  # the last complete results.json, not a torn one
    assert before["methods"]["cam"]["complete"] and "center" not in before["methods"]
    assert not list(out.rglob("*.tmp"))
    f_mtime = (out / "shared" / "classifier" / "final.pt").stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="wsolbench")
    p = run_main("run", "--resume", out)
    assert p.returncode == 0, p.stderr
    after = results(out)
    assert after["methods"]["cam"] == before["methods"]["cam"] and after["methods"]["center"]["complete"]
    assert "cam already evaluated; skipping" in caplog.text
    assert (out / "shared" / "classifier" / "final.pt").stat().st_mtime_ns == f_mtime  # f not retrained


@pytest.mark.slow
def test_interrupted_method_training_resumes_from_its_last_epoch(data, tmp_path, monkeypatch, caplog):
    """Method I's g stopped after its 2nd of 4 epochs (Ctrl-C right after the checkpoint):
    --resume continues g at epoch 3 and ends where an uninterrupted run ends."""
    import wsolbench.train.loop as loop

    args = ("--methods", "ours1", "--set", "methods.ours1.epochs=4", "--seed", "5")
    root, cfg, _ = data
    ref_cfg = write_config(tmp_path / "ref.toml", cache=tmp_path / "ref-cache", backbone="test_resnet")
    p = run_main("run", "--config", ref_cfg, "--out", tmp_path / "ref", "--device", "cpu",
                 "--set", f"datasets.synthetic.root={root}", *args)
    assert p.returncode == 0, p.stderr

    real_save = loop.atomic_torch_save

    def save_then_stop(obj, path):
        real_save(obj, path)
        if Path(path).name == "last.pt" and Path(path).parent.name == "g" and obj["epoch"] == 2:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    monkeypatch.setattr(loop, "atomic_torch_save", save_then_stop)
    p = run(data, out, *args)
    monkeypatch.setattr(loop, "atomic_torch_save", real_save)
    assert p.returncode == 130 and f"wsolbench run --resume {out}" in p.stderr
    assert not (out / "methods" / "ours1" / "final.pt").exists()
    caplog.set_level(logging.INFO, logger="wsolbench")
    p = run_main("run", "--resume", out)
    assert p.returncode == 0, p.stderr
    assert "ours1 g: resuming after epoch 2 of 4" in caplog.text
    res = results(out)
    assert res["methods"]["ours1"]["selection"]["epochs_run"] == 4
    assert comparable(res) == comparable(results(tmp_path / "ref"))
