"""Figures of a run: drawn from a small generated run (synthetic images, real BatchSource,
hand-made results.json), checked through the figures' artists and the files written."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import wsolbench.evaluation as ev
from baselines.cam import CAM
from baselines.sanity import CenterBaseline, centered_gaussian
from wsolbench.data.cache import build_image_cache
from wsolbench.data.pipeline import BatchSource
from wsolbench.data.sample import DatasetSplits
from wsolbench.methods.base import WSOLMethod
from wsolbench.report import figures as F
from wsolbench.runner import Runner, SplitData, carve_validation, postprocess_maps

SIZE = 48


def _standin_paper_box(m):
    """tau = max/10 and the bounding box of what is left (the evaluator's when it is there)."""
    m = np.asarray(m, dtype=np.float64)
    ys, xs = np.nonzero(m >= m.max() / 10) if m.max() > 0 else ((), ())
    if len(xs) == 0:
        return np.zeros(4, dtype=np.int64)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.int64)


@pytest.fixture(autouse=True)
def low_dpi(monkeypatch):
    monkeypatch.setattr(F, "DPI", 40)  # the same figures, drawn faster


@pytest.fixture(autouse=True)
def paper_box(monkeypatch):
    """The evaluator's paper_box when it exists, else a stand-in with the same contract."""
    if not hasattr(ev, "paper_box"):
        monkeypatch.setattr(ev, "paper_box", _standin_paper_box, raising=False)
    return ev.paper_box


class IdentityGeometry:
    def map_mask(self, mask, out_hw):
        assert mask.shape == tuple(out_hw)
        return mask


class ColourContrast(WSOLMethod):
    """Test-only: distance of each pixel's colour to the image's median colour."""

    uses_classifier = False

    def localize(self, images, labels):
        med = images.flatten(2).median(dim=2).values[:, :, None, None]
        return (images - med).pow(2).sum(1).sqrt()


class Broken(WSOLMethod):
    uses_classifier = False

    def localize(self, images, labels):
        raise RuntimeError("boom")


class FakeRunner:
    """What write_run_figures reads from a wsolbench.runner.Runner after evaluation."""

    _mask = Runner._mask

    def __init__(self, run_dir, dataset, splits, results, fitted):
        self.run_dir = run_dir
        self.dataset = dataset
        self._splits = splits
        self.results = results
        self.fitted = fitted
        self.device = torch.device("cpu")
        self.cfg = {"run": {"amp": False}}

    def split(self, name, protocol="paper"):
        return self._splits[name]


def _curves(peak):
    t = np.round(np.arange(0, 1, 0.01), 3)
    acc = {k: (100 * np.exp(-((t - peak) ** 2) / 0.05) * s).round(2).tolist()
           for k, s in (("30", 0.9), ("50", 0.7), ("70", 0.4))}
    recall = np.linspace(1, 0, 50)
    # the evaluator's PR curve: percent, precision None where nothing is predicted
    precision = (100 * (0.3 + 0.6 * (1 - recall) ** 0.5)).tolist()
    precision[-1] = None
    return {"thresholds": t.tolist(), "box_acc": acc,
            "pr": {"recall": (100 * recall).tolist(), "precision": precision}}


def make_results(n_epochs=12, selected=None, with_epoch_maps=True, val_ids=("a", "b")):
    s = [0.4 + 0.4 * math.sin(e / n_epochs * math.pi) for e in range(n_epochs)]
    selected = int(np.argmax(s)) + 1 if selected is None else selected
    yy, xx = np.mgrid[:16, :16]
    maps = [[np.clip(np.exp(-((xx - 8) ** 2 + (yy - 8) ** 2) / (2 * (1 + e) ** 2)), 0, 1).round(3).tolist()
             for _ in val_ids] for e in range(n_epochs)]
    ours = {"method": "ours1", "complete": True,
            "selection": {"criterion": "max mean S over validation images (paper eq. 6)", "split": "val",
                          "selected_epoch": selected, "epochs_run": n_epochs, "S_per_epoch": s,
                          "val_gt_known_loc_per_epoch_DIAGNOSTIC_ONLY": [30 + 2 * e for e in range(n_epochs)]},
            "diagnostics": {},
            "protocols": {"wsoleval": {"split": "test", "metrics": {"pxap": 55.0, "curves": _curves(0.3)}}}}
    if with_epoch_maps:
        ours["diagnostics"]["epoch_maps"] = {"ids": list(val_ids), "epochs": list(range(1, n_epochs + 1)),
                                             "maps": maps}
    return {
        "dataset": "synthetic", "protocols": ["paper", "wsoleval"],
        "classifier": {"selection": {"criterion": "best top-1 accuracy on the validation split",
                                     "split": "val", "selected_epoch": 3,
                                     "history": [{"epoch": e, "loss": 1.0 / e, "val_acc": 50 + 5 * e - (e > 3) * 20}
                                                 for e in range(1, 7)]}},
        "methods": {
            "contrast": {"method": "contrast", "complete": True, "selection": None, "diagnostics": {},
                         "protocols": {"wsoleval": {"metrics": {"curves": _curves(0.5)}}}},
            "center": {"method": "center", "complete": True, "selection": None, "diagnostics": {},
                       "protocols": {"wsoleval": {"metrics": {"curves": {"thresholds": [0.1, 0.2],
                                                                         "box_acc": {"50": [10.0, 20.0]}}}}}},
            "ours1": ours,
        },
    }


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from wsolbench.data.synthetic import ensure_synthetic

    return ensure_synthetic(tmp_path_factory.mktemp("gen"), classes=3, train_per_class=4, test_per_class=3,
                            size=SIZE)


def make_run(tmp_path, root, *, masks=True, boxes=True, fitted=None, results=None):
    from wsolbench.data.cub import load

    ds = load(root)
    train, val = carve_validation(ds.splits["train"], 0.25)
    test = ds.splits["test"]
    if not masks:
        test = [dataclasses.replace(s, mask_paths=()) for s in test]
    ds = DatasetSplits("synthetic", root, ds.class_names, {"train": train, "val": val, "test": test})
    splits = {}
    for name in ("val", "test"):
        dec = build_image_cache(ds.splits[name], (SIZE, SIZE), tmp_path / "cache")
        src = BatchSource(dec.images, [s.label for s in dec.samples], [s.id for s in dec.samples], None,
                          torch.device("cpu"))
        bx = [np.asarray(s.boxes, dtype=np.float64).round().astype(np.int64).reshape(-1, 4)
              for s in dec.samples] if boxes else None
        splits[name] = SplitData(dec, src, IdentityGeometry(), bx)
    if results is None:
        results = make_results(val_ids=tuple(s.id for s in ds.splits["val"][:2]))
    if fitted is None:
        fitted = {"center": CenterBaseline(), "contrast": ColourContrast()}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps(results))
    return FakeRunner(run_dir, ds, splits, results, fitted)


# --------------------------------------------------------------------------- pure helpers
def test_select_images_first_of_each_class_then_round_robin():
    labels = np.array([2, 2, 0, 1, 0, 2, 1])
    assert F.select_images(labels, 3) == [0, 2, 3]  # first of class 2, 0, 1 in split order
    assert F.select_images(labels, 5) == [0, 2, 3, 1, 4]
    assert F.select_images(labels, 100) == [0, 2, 3, 1, 4, 6, 5]


def test_epoch_columns_keep_first_last_and_selected():
    epochs = list(range(1, 101))
    cols = F._epoch_columns(epochs, 37, k=10)
    picked = [epochs[c] for c in cols]
    assert {1, 100, 37} <= set(picked) and len(picked) <= 10
    assert F._epoch_columns([1, 2, 3], 2) == [0, 1, 2]


def test_denormalize_inverts_the_pipeline_normalization():
    u8 = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    src = BatchSource(u8, [0, 1], ["a", "b"], None, torch.device("cpu"))
    rgb = F.denormalize(src.get(np.array([0, 1]), augment=False).images)
    np.testing.assert_allclose(rgb, u8 / 255.0, atol=1e-5)


def test_iou_inclusive_like_the_evaluator():
    # [0,0,1,1] is 2x2 = 4 pixels, [1,1,2,2] also; they share 1 pixel: 1 / 7.
    assert F._iou(np.array([0, 0, 1, 1]), np.array([[1, 1, 2, 2], [10, 10, 12, 12]])) == pytest.approx(1 / 7)


# --------------------------------------------------------------------------- run figures
def test_write_run_figures_writes_every_figure(tmp_path, synth_root):
    runner = make_run(tmp_path, synth_root)
    status = F.write_run_figures(runner, strict=True)
    assert status == {n: "written" for n in ("boxes.png", "maps_vs_masks.png", "s_curve.png",
                                             "threshold_curves.png", "epochs_maps.png")}
    assert runner.results["figures"] == status
    import matplotlib.image as mpimg

    for name in status:
        img = mpimg.imread(runner.run_dir / "figures" / name)
        assert img.ndim == 3 and img.shape[0] > 60 and img.shape[1] > 60
        assert img[..., :3].std() > 0.05  # not a blank canvas
    assert not list((runner.run_dir / "figures").glob("*.tmp.png"))


def test_boxes_use_the_postprocessed_maps_and_paper_box(tmp_path, synth_root, monkeypatch):
    runner = make_run(tmp_path, synth_root)
    seen = []

    def spy(m):
        seen.append(np.array(m))
        return np.array([1, 2, 20, 30])

    monkeypatch.setattr(ev, "paper_box", spy, raising=False)
    shown = F._Shown(runner)
    fig = F.build_boxes(shown)
    n = len(shown.index)
    assert n == F.N_IMAGES < len(runner.split("test").source)  # 9 test images, 8 shown
    assert len(seen) == 2 * n  # one box per method and image
    # center: the harness' post-processing of the centred Gaussian ("unit": used as is)
    expected = postprocess_maps(centered_gaussian(SIZE, SIZE)[None], (SIZE, SIZE), "unit", "center", ["x"])[0]
    order = list(shown.maps)
    assert order == ["contrast", "center"]  # results.json order, fitted methods only
    np.testing.assert_allclose(seen[n], expected, atol=1e-6)
    for m in seen[:n]:  # contrast maps are "raw": min-max normalized per image
        assert m.min() == pytest.approx(0.0) and m.max() == pytest.approx(1.0)
    # every panel: one red prediction box, green ground-truth boxes, an IoU label
    ax = fig.axes[0]
    colors = [p.get_edgecolor()[:3] for p in ax.patches]
    assert sum(c[0] > 0.9 and c[1] < 0.2 for c in colors) == 1  # one red prediction
    assert sum(c[1] > 0.7 and c[0] < 0.1 for c in colors) == 1  # the one ground-truth box
    rect = [p for p in ax.patches if p.get_edgecolor()[0] > 0.9][0]
    assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == (0.5, 1.5, 20, 29)
    assert any(t.get_text().startswith("IoU ") for t in ax.texts)


def test_first_images_of_distinct_classes_are_shown(tmp_path, synth_root):
    runner = make_run(tmp_path, synth_root)
    shown = F._Shown(runner)
    labels = runner.split("test").source.labels[shown.index]
    assert len(shown.index) == 8
    assert sorted(labels[:3].tolist()) == [0, 1, 2]  # one per class first


def test_figures_degrade_without_masks_boxes_selection_or_curves(tmp_path, synth_root):
    results = {"dataset": "synthetic", "protocols": ["paper"],
               "methods": {"center": {"method": "center", "complete": True, "selection": None,
                                      "protocols": {"paper": {"metrics": {"gt_known_loc": 1.0}}}}}}
    runner = make_run(tmp_path, synth_root, masks=False, boxes=False, results=results,
                      fitted={"center": CenterBaseline()})
    status = F.write_run_figures(runner, strict=True)
    assert status["boxes.png"] == "written"  # predictions only, no ground truth to draw
    assert status["maps_vs_masks.png"].startswith("skipped: the test split has no ground-truth masks")
    for name in ("s_curve.png", "threshold_curves.png", "epochs_maps.png"):
        assert status[name].startswith("skipped:"), (name, status[name])
        assert not (runner.run_dir / "figures" / name).exists()


def test_without_fitted_methods_only_results_figures(tmp_path, synth_root):
    runner = make_run(tmp_path, synth_root, fitted={})
    status = F.write_run_figures(runner, strict=True)
    assert status["boxes.png"].startswith("skipped") and status["maps_vs_masks.png"].startswith("skipped")
    assert status["s_curve.png"] == "written"


def test_a_failing_method_or_figure_is_logged_not_raised(tmp_path, synth_root, monkeypatch, caplog):
    results = make_results(with_epoch_maps=False)
    results["methods"] = {"center": {"method": "center", "complete": True}}
    runner = make_run(tmp_path, synth_root, fitted={"broken": Broken(), "center": CenterBaseline()}, results=results)
    monkeypatch.setattr(F, "build_s_curve", lambda results: 1 / 0)
    status = F.write_run_figures(runner)
    assert status["boxes.png"] == "written"  # drawn for the methods that work
    assert status["s_curve.png"].startswith("failed: ZeroDivisionError")
    assert "broken" in caplog.text and "s_curve.png" in caplog.text
    with pytest.raises(ZeroDivisionError):
        F.write_run_figures(runner, strict=True)
    runner.fitted = {"broken": Broken()}
    status = F.write_run_figures(runner)
    assert status["boxes.png"] == "skipped: no method gave maps (broken: RuntimeError: boom)"


def test_s_curve_marks_selected_epoch_and_labels_diagnostic():
    res = make_results(n_epochs=12, selected=5)
    fig = F.build_s_curve(res)
    ours_ax, clf_ax = fig.axes[0], fig.axes[1]
    lines = {ln.get_label(): ln for ln in ours_ax.get_lines()}
    star = lines["selected: epoch 5"]
    assert list(star.get_xdata()) == [5]
    assert star.get_ydata()[0] == pytest.approx(res["methods"]["ours1"]["selection"]["S_per_epoch"][4])
    twin = [a for a in fig.axes if a is not ours_ax and a.get_shared_x_axes().joined(a, ours_ax)]
    assert twin and any("diagnostic only" in ln.get_label() for ln in twin[0].get_lines())
    assert "classifier f" in clf_ax.get_title()
    kept = {ln.get_label(): ln for ln in clf_ax.get_lines()}["kept: epoch 3"]
    assert list(kept.get_xdata()) == [3]


def test_threshold_curves_one_panel_per_iou_plus_pr():
    fig = F.build_threshold_curves(make_results())
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["BoxAcc at IoU >= 0.3 (wsoleval)", "BoxAcc at IoU >= 0.5 (wsoleval)",
                      "BoxAcc at IoU >= 0.7 (wsoleval)", "pixel precision-recall (PxAP)"]
    iou50 = {ln.get_label().split(" ")[0] for ln in fig.axes[1].get_lines() if not ln.get_label().startswith("_")}
    assert iou50 == {"contrast", "center", "ours1"}
    assert any("PxAP 55.0" in ln.get_label() for ln in fig.axes[3].get_lines())


def test_epoch_maps_titles_and_selected_frame():
    res = make_results(n_epochs=12, selected=5)
    fig = F.build_epoch_maps(res)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert any(t.startswith("epoch 5 (selected)") for t in titles)
    s5 = res["methods"]["ours1"]["selection"]["S_per_epoch"][4]
    assert any(f"mean S {s5:.3f}" in t for t in titles)
    assert len(titles) <= F.MAX_EPOCH_COLUMNS


def test_epoch_maps_skips_silently_when_absent():
    with pytest.raises(F.SkipFigure):
        F.build_epoch_maps(make_results(with_epoch_maps=False))


def test_figures_from_results_alone(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(make_results()))
    status = F.figures_from_results(run, strict=True)
    assert status == {"s_curve.png": "written", "threshold_curves.png": "written", "epochs_maps.png": "written"}
    assert sorted(p.name for p in (run / "figures").iterdir()) == sorted(status)


def test_cam_maps_on_a_tiny_classifier_reach_the_figure(tmp_path, synth_root):
    from wsolbench.models.classifier import Classifier, freeze

    torch.manual_seed(0)
    f = freeze(Classifier("resnet18", 3, pretrained=False))
    cam = CAM()

    class Ctx:
        device = torch.device("cpu")
        get_classifier = staticmethod(lambda: f)

    cam.bind(Ctx())
    runner = make_run(tmp_path, synth_root, fitted={"cam": cam})
    shown = F._Shown(runner)
    assert shown.maps["cam"].shape == (8, SIZE, SIZE) and not shown.errors
    assert F.build_boxes(shown) is not None
