"""EigenCAM (native) and the torchcam adapters (Grad-CAM++, LayerCAM, Score-CAM) on f.

On f (GAP + one linear layer) the gradient of class c's logit with respect to the last
feature map is W[c, k] / (h*w) at every pixel, so the gradient-based maps can be worked
out by hand from f's features and FC weights.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from baselines.eigencam import EigenCAM, eigen_maps
from baselines.torchcam_methods import GradCAMpp, LayerCAM, ScoreCAM, paper_gradcampp_weights
from wsolbench.errors import UserError
from wsolbench.runner import postprocess_maps


class Ctx:
    device = torch.device("cpu")

    def __init__(self, f):
        self.get_classifier = lambda: f


def bound(cls, f, **opts):
    m = cls(**opts)
    m.bind(Ctx(f))
    return m


@pytest.fixture(scope="module")
def tiny_f():
    from wsolbench.models.classifier import Classifier, freeze

    torch.manual_seed(0)
    return freeze(Classifier("resnet18", 3, pretrained=False))


class TinyNet(nn.Module):
    """backbone: one 3x3 conv (stride 2) + ReLU -> 4 channels; GAP; fc: 4 -> 3."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


# --------------------------------------------------------------------------- EigenCAM
def test_eigen_maps_is_the_first_principal_component():
    # features = u * p + v * q + const with u _|_ v and the centred patterns p~ _|_ q~, so the
    # centred [hw, C] matrix is p~ u^T + q~ v^T: an exact SVD whose first component is
    # (p~ / |p~|, u / |u|) because |p~| |u| > |q~| |v|. The map is then |u| * p~.
    yy, xx = torch.meshgrid(torch.arange(6.0, dtype=torch.float64), torch.arange(5.0, dtype=torch.float64),
                            indexing="ij")
    p = torch.exp(-((xx - 3) ** 2 + (yy - 2) ** 2) / 4)
    pc = p - p.mean()
    q = torch.cos(1.3 * xx) * torch.sin(0.7 * yy)
    qc = q - q.mean()
    qc = qc - (qc * pc).sum() / (pc * pc).sum() * pc  # Gram-Schmidt: q~ _|_ p~
    qc = 0.5 * qc * pc.norm() / qc.norm()
    u = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    v = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)  # u . v = 0
    feats = (u[:, None, None] * pc + v[:, None, None] * qc + 0.3)[None]  # [1, 3, 6, 5]
    m = eigen_maps(feats)[0]
    torch.testing.assert_close(m, u.norm() * pc, atol=1e-9, rtol=1e-9)
    assert m.argmax() == p.argmax()


def test_eigen_maps_sign_follows_the_mean_activation():
    yy, xx = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    p = (xx + yy) / 6
    u = torch.tensor([1.0, -3.0])  # channels mostly anti-correlated with p: mean activation is -p
    feats = (u[:, None, None] * p)[None]
    m = eigen_maps(feats)[0]
    mean_act = feats[0].mean(0)
    assert torch.corrcoef(torch.stack([m.flatten(), mean_act.flatten()]))[0, 1] > 0.99
    # the same features with the channel signs flipped: flipped map
    m2 = eigen_maps(-feats)[0]
    torch.testing.assert_close(m2, -m)


def test_eigen_maps_constant_features_give_zero_map():
    m = eigen_maps(torch.ones(2, 3, 4, 4))
    assert torch.isfinite(m).all() and (m == 0).all()


def test_eigencam_on_f_returns_maps_and_fs_logits(tiny_f):
    x = torch.randn(2, 3, 64, 64)
    out = bound(EigenCAM, tiny_f).localize(x, torch.tensor([0, 2]))
    assert out.maps.shape == (2, 2, 2) and torch.isfinite(out.maps).all()
    torch.testing.assert_close(out.logits, tiny_f(x))
    torch.testing.assert_close(out.maps, eigen_maps(tiny_f.features(x)))


def test_importing_the_cam_modules_does_not_import_torchcam():
    code = ("import sys, baselines.cam, baselines.eigencam, baselines.torchcam_methods\n"
            "from wsolbench.methods import METHODS\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torchcam']\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_missing_torchcam_is_a_one_line_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcam", None)
    monkeypatch.setitem(sys.modules, "torchcam.methods", None)
    with pytest.raises(UserError, match=r"wsolbench\[cams\]") as exc:
        LayerCAM()  # when the run builds its methods, before anything trains
    assert "\n" not in str(exc.value)
    EigenCAM()  # needs no library


# --------------------------------------------------------------------------- torchcam adapters
needs_torchcam = pytest.mark.skipif(importlib.util.find_spec("torchcam") is None,
                                    reason="torchcam is not installed (pip install 'wsolbench[cams]')")


# Score-CAM runs f once per channel (512) per image: one small image keeps the test fast.
@needs_torchcam
@pytest.mark.parametrize("cls,shape", [(GradCAMpp, (2, 3, 32, 32)), (LayerCAM, (2, 3, 32, 32)),
                                       (ScoreCAM, (1, 3, 16, 16))])
def test_torchcam_adapters_return_raw_finite_maps_and_fs_logits(cls, shape, tiny_f):
    x = torch.randn(*shape)
    labels = torch.tensor([0, 2])[: shape[0]]
    before = {k: v.clone() for k, v in tiny_f.state_dict().items()}
    with torch.no_grad():  # as the harness calls localize
        out = bound(cls, tiny_f).localize(x, labels)
    assert cls.map_range == "raw"
    assert out.maps.shape == (shape[0], 1, 1) and torch.isfinite(out.maps).all()
    torch.testing.assert_close(out.logits, tiny_f(x))
    # f untouched: no parameter changed or got a gradient, no hook left behind
    assert all(torch.equal(before[k], v) for k, v in tiny_f.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in tiny_f.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_f.modules())


def _by_hand(f, x, labels):
    feats = f.features(x)
    hw = feats.shape[2] * feats.shape[3]
    grads = (f.fc.weight[labels] / hw)[:, :, None, None].expand_as(feats)
    return feats, grads


@needs_torchcam
def test_layercam_matches_the_hand_computed_map(tiny_f):
    x, labels = torch.randn(2, 3, 64, 64), torch.tensor([1, 0])
    feats, grads = _by_hand(tiny_f, x, labels)
    expected = torch.relu((torch.relu(grads) * feats).sum(1))
    out = bound(LayerCAM, tiny_f).localize(x, labels)
    assert out.maps.shape == (2, 2, 2)
    torch.testing.assert_close(out.maps, expected, rtol=1e-4, atol=1e-7)


@needs_torchcam
def test_gradcampp_uses_the_papers_alpha(tiny_f):
    x, labels = torch.randn(2, 3, 64, 64), torch.tensor([2, 1])
    feats, grads = _by_hand(tiny_f, x, labels)
    # on f: alpha = 1 / (2 + S_k g_k) with S_k = sum of A_k and g_k = W[c,k] / hw
    g = grads[:, :, 0, 0]
    s = feats.flatten(2).sum(-1)
    weights = feats.shape[2] * feats.shape[3] * torch.relu(g) / (2 + s * g)
    torch.testing.assert_close(paper_gradcampp_weights(feats, grads), weights, rtol=1e-4, atol=1e-9)
    expected = torch.relu(torch.einsum("bc,bchw->bhw", weights, feats))
    out = bound(GradCAMpp, tiny_f).localize(x, labels)
    torch.testing.assert_close(out.maps, expected, rtol=1e-4, atol=1e-9)
    # the harness' post-processing: per-image min-max of the raw map
    norm = postprocess_maps(out.maps, (64, 64), "raw", "gradcampp", ["a", "b"])
    assert norm.shape == (2, 64, 64) and np.isclose(norm.max(), 1.0)


def test_gradcampp_alpha_is_zero_where_the_gradient_is():
    a = torch.rand(1, 2, 3, 3)
    g = torch.zeros(1, 2, 3, 3)
    g[0, 1] = 0.5
    w = paper_gradcampp_weights(a, g)
    assert w[0, 0] == 0 and w[0, 1] > 0


@needs_torchcam
def test_scorecam_matches_the_hand_computed_map():
    f = TinyNet()
    x, labels = torch.randn(2, 3, 8, 8), torch.tensor([2, 0])
    feats = f.features(x)  # [2, 4, 4, 4]
    lo = feats.flatten(2).amin(-1)[..., None, None]
    norm = feats - lo
    norm = norm / (norm.flatten(2).amax(-1)[..., None, None] + 1e-8)
    up = torch.nn.functional.interpolate(norm, size=(8, 8), mode="bilinear", align_corners=False)
    base = f(x).gather(1, labels[:, None])[:, 0]
    gains = torch.stack([f(up[:, k:k + 1] * x).gather(1, labels[:, None])[:, 0] - base
                         for k in range(4)], 1)
    expected = torch.relu(torch.einsum("bc,bchw->bhw", torch.softmax(gains, 1), feats))
    with torch.no_grad():
        out = bound(ScoreCAM, f, batch_size=3).localize(x, labels)
    torch.testing.assert_close(out.maps, expected, rtol=1e-4, atol=1e-6)


@needs_torchcam
def test_layer_option_is_checked(tiny_f):
    m = bound(LayerCAM, tiny_f, target_layer="backbone.layer9")
    with pytest.raises(UserError, match="target_layer='backbone.layer9'.*backbone.layer4"):
        m.localize(torch.randn(1, 3, 32, 32), torch.tensor([0]))
    m = bound(LayerCAM, tiny_f, target_layer="backbone.layer4")  # the same map as "backbone"
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(m.localize(x, torch.tensor([1])).maps,
                               bound(LayerCAM, tiny_f).localize(x, torch.tensor([1])).maps)


@needs_torchcam
def test_options_are_checked_when_built():
    with pytest.raises(UserError, match="batch_size must be an integer >= 1"):
        ScoreCAM(batch_size=0)
    with pytest.raises(UserError, match="target_layer must be a module name"):
        GradCAMpp(target_layer="")
