"""Methods I and II (ours1, ours2): frozen f, switches, S-score selection, fit/resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import wsolbench.evaluation as evaluation
from wsolbench.data.pipeline import BatchSource
from wsolbench.methods.base import FitContext, LocalizeOutput
from wsolbench.methods.ours import MethodI, MethodII, sample_triplets, triplet_batches
from wsolbench.methods.ours_losses import apply_weight, consistency_loss, inner_loss, l1_reg, outer_loss
from wsolbench.models.classifier import Classifier, Embedding, freeze
from wsolbench.models.unet import UNet
from wsolbench.train.checkpoint import load_checkpoint
from wsolbench.train.loop import train_epochs

DEV = torch.device("cpu")
TINY = {"epochs": 2, "batch_size": 4}
TINY_SIAMESE = {"siamese_epochs": 1, "siamese_batch_size": 4}



def _source(n: int, seed: int) -> BatchSource:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 36, 36, 3), dtype=np.uint8)
    labels = [i % 3 for i in range(n)]
    return BatchSource(images, labels, [f"img{seed}_{i}" for i in range(n)], (32, 32), DEV, seed=seed)


@pytest.fixture(scope="module")
def data():
    return _source(12, 1), _source(6, 2)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return freeze(Classifier("resnet18", 3, pretrained=False))


class Memo:
    """ctx.shared(kind, build): build once per kind, in a folder of its own (as the runner)."""

    def __init__(self, root: Path):
        self.root, self.objects, self.built = root, {}, []

    def __call__(self, kind, build):
        if kind not in self.objects:
            self.built.append(kind)
            self.objects[kind] = build(self.root / kind)
        return self.objects[kind]


def make_ctx(tmp: Path, data, f, name="ours1", memo=None, boxes=True) -> FitContext:
    train, val = data
    return FitContext(
        method=name, dataset="synthetic", num_classes=3, train=train, val=val,
        val_boxes=[np.array([[4, 4, 24, 24]]) for _ in range(len(val))] if boxes else None,
        device=DEV, options={}, seed=0, workdir=tmp / name,
        model_config={"backbone": "resnet18", "pretrained": False},
        get_classifier=lambda: f, shared=memo or Memo(tmp / "shared"), progress=False)


def _fake_s(values):
    """s_scores stand-in: every image of the k-th call (one val batch = one epoch) gets values[k]."""
    calls = []

    def s_scores(maps):
        calls.append(len(maps))
        return np.full(len(maps), values[len(calls) - 1], dtype=np.float64)

    return s_scores, calls


# --------------------------------------------------------------------------- sampling
def test_sample_triplets_classes_and_replay():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # class 3 has a single image
    anchors = np.repeat(np.arange(len(labels)), 200)
    pos, neg = sample_triplets(labels, anchors, torch.Generator().manual_seed(5))
    assert np.all(labels[pos] == labels[anchors])
    assert np.all(labels[neg] != labels[anchors])
    many = labels[anchors] != 3
    assert np.all(pos[many] != anchors[many])  # another image whenever the class has one
    assert np.all(pos[~many] == anchors[~many])
    # every candidate is reachable: anchor 0's positives cover {1, 2}
    assert set(pos[anchors == 0]) == {1, 2}
    assert set(neg[anchors == 9]) == set(range(9))
    pos2, neg2 = sample_triplets(labels, anchors, torch.Generator().manual_seed(5))
    assert np.array_equal(pos, pos2) and np.array_equal(neg, neg2)


def test_sample_triplets_needs_two_classes():
    from wsolbench.errors import UserError

    with pytest.raises(UserError):
        sample_triplets(np.zeros(4, dtype=int), np.arange(4), torch.Generator().manual_seed(0))


def test_triplet_batches_replay_per_epoch(data):
    train, _ = data
    first = [tuple(b.index for b in t) for t in triplet_batches(train, 3, 4, 2)]
    again = [tuple(b.index for b in t) for t in triplet_batches(train, 3, 4, 2)]
    other = [tuple(b.index for b in t) for t in triplet_batches(train, 4, 4, 2)]
    assert len(first) == 3
    assert all(np.array_equal(x, y) for a, b in zip(first, again) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for a, b in zip(first, other) for x, y in zip(a, b))


# --------------------------------------------------------------------------- method I
def test_method_i_step_gradients_reach_g_not_f(tmp_path, data, classifier):
    ctx = make_ctx(tmp_path, data, classifier)
    m = MethodI(**TINY)
    m.bind(ctx)
    torch.manual_seed(0)
    g = UNet("resnet18")
    batch = next(ctx.train.epoch(1, 4))
    loss = m._train_step(ctx)(batch, {"g": g})
    loss.backward()
    assert all(p.grad is None for p in classifier.parameters())
    assert g.encoder.conv1.weight.grad.abs().sum() > 0
    assert g.blocks[-1].conv2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("weighting", ["normalized", "pixels"])
def test_method_i_loss_formula_and_reg_switch(tmp_path, data, classifier, weighting):
    ctx = make_ctx(tmp_path, data, classifier)
    torch.manual_seed(0)
    g = UNet("resnet18")
    batch = next(ctx.train.epoch(1, 4))
    x = batch.images
    with torch.no_grad():
        maps = g(x)  # train mode: batch statistics, the same on every call
        d = consistency_loss(classifier(x), classifier(apply_weight(x, maps, weighting)))
        losses = {}
        for reg, lam in [(True, 1.0), (True, 2.5), (False, 1.0)]:
            step = MethodI(reg=reg, reg_weight=lam, weighting=weighting)._train_step(ctx)
            losses[(reg, lam)] = step(batch, {"g": g}).item()
    assert losses[(False, 1.0)] == pytest.approx(d.item(), rel=1e-5)
    assert losses[(True, 1.0)] == pytest.approx(d.item() + l1_reg(maps).item(), rel=1e-5)
    assert losses[(True, 2.5)] == pytest.approx(d.item() + 2.5 * l1_reg(maps).item(), rel=1e-5)


def test_method_i_option_errors(tmp_path, data, classifier):
    from wsolbench.errors import UserError

    for bad in ({"weighting": "rgb"}, {"select": "best"}):
        with pytest.raises(UserError):
            MethodI(**TINY, **bad).fit(make_ctx(tmp_path, data, classifier))


def test_s_selection_picks_max_mean_s(tmp_path, data, classifier, monkeypatch):
    s_values = [0.2, 0.9, 0.4]
    fake, calls = _fake_s(s_values)
    monkeypatch.setattr(evaluation, "s_scores", fake, raising=False)
    ctx = make_ctx(tmp_path, data, classifier, boxes=False)
    m = MethodI(epochs=3, batch_size=8)
    m.fit(ctx)
    assert len(calls) == 3 and all(c == 6 for c in calls)  # 6 val images, one batch per epoch
    assert m.selection["selected_epoch"] == 2
    assert m.selection["S_per_epoch"] == pytest.approx(s_values)
    assert m.selection["val_gt_known_loc_per_epoch_DIAGNOSTIC_ONLY"] is None
    best = load_checkpoint(tmp_path / "ours1" / "g" / "best.pt")
    assert best["epoch"] == 2
    for k, v in m.g.state_dict().items():
        assert torch.equal(v.cpu(), best["modules"]["g"][k]), k
    last = load_checkpoint(tmp_path / "ours1" / "g" / "last.pt")
    assert last["epoch"] == 3
    assert not all(torch.equal(v, last["modules"]["g"][k]) for k, v in best["modules"]["g"].items())


def test_select_last_keeps_last_epoch(tmp_path, data, classifier, monkeypatch):
    fake, _ = _fake_s([0.9, 0.1])
    monkeypatch.setattr(evaluation, "s_scores", fake, raising=False)
    m = MethodI(epochs=2, batch_size=8, select="last")
    m.fit(make_ctx(tmp_path, data, classifier, boxes=False))
    assert m.selection["selected_epoch"] == 2
    last = load_checkpoint(tmp_path / "ours1" / "g" / "last.pt")
    for k, v in m.g.state_dict().items():
        assert torch.equal(v.cpu(), last["modules"]["g"][k]), k


def test_train_epochs_select_s_with_fake_after_epoch(tmp_path):
    # the loop's own contract, as the methods use it: best = argmax of the "S" record
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    values = {1: 0.3, 2: 0.1, 3: 0.8, 4: 0.5}
    result = train_epochs(
        name="t", workdir=tmp_path, modules={"g": net}, optimizer=opt, scheduler=None, epochs=4,
        batches=lambda e: [torch.ones(3, 2)], train_step=lambda b, n: n["g"](b).pow(2).mean(),
        after_epoch=lambda e: {"S": values[e]}, select="S", progress=False)
    assert result.best_epoch == 3
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 3


def test_fit_localize_resume_method_i(tmp_path, data, classifier):
    f_before = {k: v.clone() for k, v in classifier.state_dict().items()}
    ctx = make_ctx(tmp_path, data, classifier)
    m = MethodI(**TINY)
    m.fit(ctx)
    # f is bit-identical (parameters and buffers) after training g
    for k, v in classifier.state_dict().items():
        assert torch.equal(v, f_before[k]), k
    workdir = tmp_path / "ours1" / "g"
    assert (workdir / "last.pt").is_file() and (workdir / "best.pt").is_file()
    sel = m.selection
    assert sel["split"] == "val" and sel["epochs_run"] == 2
    assert len(sel["S_per_epoch"]) == 2 and all(0 <= s <= 1 for s in sel["S_per_epoch"])
    assert sel["selected_epoch"] == 1 + int(np.argmax(sel["S_per_epoch"]))
    diag = sel["val_gt_known_loc_per_epoch_DIAGNOSTIC_ONLY"]
    assert diag is not None and len(diag) == 2 and all(math.isfinite(d) for d in diag)
    assert [h["epoch"] for h in ctx.diagnostics["epochs"]] == [1, 2]

    images = next(ctx.val.iterate(4)).images
    out = m.localize(images, torch.zeros(4, dtype=torch.long))
    assert isinstance(out, LocalizeOutput)
    assert out.maps.shape == (4, 32, 32) and out.maps.min() >= 0 and out.maps.max() <= 1
    torch.testing.assert_close(out.logits, classifier(images))
    assert MethodI.map_range == "unit"

    # a second fit in the same workdir resumes: no epoch is run again
    mtime = (workdir / "last.pt").stat().st_mtime_ns
    m2 = MethodI(**TINY)
    m2.fit(make_ctx(tmp_path, data, classifier))
    assert (workdir / "last.pt").stat().st_mtime_ns == mtime
    assert m2.selection == sel
    torch.testing.assert_close(m2.localize(images, None).maps, out.maps)

    # state_dict round trip: the harness restores g and re-binds f
    m3 = MethodI(**TINY)
    m3.bind(ctx)
    m3.load_state_dict(m.state_dict())
    assert m3.selection == sel
    torch.testing.assert_close(m3.localize(images, None).maps, out.maps)


# --------------------------------------------------------------------------- method II
def _switch_losses(tmp_path, data, classifier):
    ctx = make_ctx(tmp_path, data, classifier, name="ours2")
    torch.manual_seed(0)
    emb = freeze(Embedding("resnet18", dim=8))
    g = UNet("resnet18").eval()  # eval: maps do not depend on the batch composition
    batch = next(triplet_batches(ctx.train, 1, 4, 2))
    losses = {}
    for inner in (True, False):
        for outer in (True, False):
            for reg in (True, False):
                m = MethodII(inner=inner, outer=outer, reg=reg, margin=1.0)
                m.embedding = emb
                step = m._train_step(ctx)
                if not (inner or outer or reg):
                    continue
                with torch.no_grad():
                    losses[(inner, outer, reg)] = step(batch, {"g": g}).item()
    return ctx, emb, g, batch, losses


def test_method_ii_losses_and_switches(tmp_path, data, classifier):
    ctx, emb, g, (a, p, n), losses = _switch_losses(tmp_path, data, classifier)
    with torch.no_grad():
        ma, mp, mn = g(a.images), g(p.images), g(n.images)
        jfa = apply_weight(a.images, ma, "normalized")
        jba = apply_weight(a.images, 1 - ma, "normalized")
        jfp = apply_weight(p.images, mp, "normalized")
        jfn = apply_weight(n.images, mn, "normalized")
        l_in = inner_loss(emb(a.images), emb(jfa), emb(jba)).item()
        l_out = outer_loss(emb(jfa), emb(jfp), emb(jfn)).item()
        r = l1_reg(ma).item()
    assert l_in > 0 and l_out > 0
    approx = lambda v: pytest.approx(v, rel=1e-4, abs=1e-5)  # noqa: E731
    assert losses[(True, False, False)] == approx(l_in)
    assert losses[(False, True, False)] == approx(l_out)
    assert losses[(False, False, True)] == approx(r)
    assert losses[(True, True, False)] == approx(l_in + l_out)
    assert losses[(True, False, True)] == approx(l_in + r)
    assert losses[(False, True, True)] == approx(l_out + r)
    assert losses[(True, True, True)] == approx(l_in + l_out + r)


def test_method_ii_gradients_reach_g_not_f_prime(tmp_path, data, classifier):
    ctx = make_ctx(tmp_path, data, classifier, name="ours2")
    torch.manual_seed(0)
    emb = freeze(Embedding("resnet18", dim=8))
    g = UNet("resnet18")
    m = MethodII(margin=10.0)  # a large margin keeps both triplet hinges active
    m.embedding = emb
    m._train_step(ctx)(next(triplet_batches(ctx.train, 1, 4, 2)), {"g": g}).backward()
    assert all(q.grad is None for q in emb.parameters())
    assert g.encoder.conv1.weight.grad.abs().sum() > 0


def test_method_ii_refuses_all_switches_off(tmp_path, data, classifier):
    from wsolbench.errors import UserError

    with pytest.raises(UserError):
        MethodII(inner=False, outer=False, reg=False).fit(make_ctx(tmp_path, data, classifier, "ours2"))


def test_fit_localize_resume_method_ii(tmp_path, data, classifier):
    f_before = {k: v.clone() for k, v in classifier.state_dict().items()}
    memo = Memo(tmp_path / "shared")
    ctx = make_ctx(tmp_path, data, classifier, name="ours2", memo=memo)
    m = MethodII(**TINY, **TINY_SIAMESE)
    m.fit(ctx)
    assert len(memo.built) == 1 and memo.built[0].startswith("siamese-resnet18-d200-")
    siamese_dir = memo.root / memo.built[0]
    assert (siamese_dir / "last.pt").is_file()
    assert load_checkpoint(siamese_dir / "last.pt")["epoch"] == 1
    emb = memo.objects[memo.built[0]]
    assert not emb.training and not any(q.requires_grad for q in emb.parameters())
    for k, v in classifier.state_dict().items():
        assert torch.equal(v, f_before[k]), k
    workdir = tmp_path / "ours2" / "g"
    assert (workdir / "last.pt").is_file() and (workdir / "best.pt").is_file()
    sel = m.selection
    assert sel["epochs_run"] == 2 and sel["selected_epoch"] == 1 + int(np.argmax(sel["S_per_epoch"]))

    images = next(ctx.val.iterate(4)).images
    out = m.localize(images, None)
    assert out.maps.shape == (4, 32, 32) and 0 <= out.maps.min() and out.maps.max() <= 1
    torch.testing.assert_close(out.logits, classifier(images))  # class predictions from f

    # an ablation label in the same run shares f' (memoized), trains its own g ...
    m_abl = MethodII(**TINY, **TINY_SIAMESE, inner=False)
    m_abl.fit(make_ctx(tmp_path, data, classifier, name="ours2_noinner", memo=memo))
    assert len(memo.built) == 1
    # ... while another f' schedule gets its own f'
    other = MethodII(**TINY, siamese_epochs=2, siamese_batch_size=4)
    assert other.siamese_kind(ctx) != memo.built[0]

    # a fresh process (new memo) resumes f' and g from their workdirs: nothing re-runs
    mtimes = [(d / "last.pt").stat().st_mtime_ns for d in (siamese_dir, workdir)]
    memo2 = Memo(tmp_path / "shared")
    m2 = MethodII(**TINY, **TINY_SIAMESE)
    m2.fit(make_ctx(tmp_path, data, classifier, name="ours2", memo=memo2))
    assert memo2.built == memo.built[:1]
    assert [(d / "last.pt").stat().st_mtime_ns for d in (siamese_dir, workdir)] == mtimes
    assert m2.selection == sel
    torch.testing.assert_close(m2.localize(images, None).maps, out.maps)


@pytest.mark.parametrize("degenerate_area,expected", [(0.98, 3), (1.5, 1)])
def test_degenerate_uniform_epochs_are_not_selected(tmp_path, data, classifier, monkeypatch,
                                                    degenerate_area, expected):
    """Epoch 1's maps give whole-image boxes (S = 1 trivially): not eligible, unless the
    threshold is above 1, which is the paper's rule unchanged."""
    fake, calls = _fake_s([1.0, 0.6, 0.8])
    monkeypatch.setattr(evaluation, "s_scores", fake, raising=False)
    boxes_seen = []

    def fake_box(m):
        h, w = m.shape
        boxes_seen.append(1)
        epoch = 1 + (len(boxes_seen) - 1) // 6  # 6 validation images per epoch
        return np.array([0, 0, w - 1, h - 1]) if epoch == 1 else np.array([0, 0, w // 2, h // 2])

    monkeypatch.setattr(evaluation, "paper_box", fake_box, raising=False)
    m = MethodI(epochs=3, batch_size=8, degenerate_area=degenerate_area)
    m.fit(make_ctx(tmp_path, data, classifier, boxes=False))
    sel = m.selection
    assert sel["selected_epoch"] == expected
    assert sel["box_area_per_epoch"][0] == pytest.approx(1.0)
    assert sel["degenerate_epochs"] == ([1] if degenerate_area <= 1 else [])
