"""The losses of the weight-map methods equal their formulas on hand-made tensors."""

import math

import pytest
import torch

from wsolbench.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from wsolbench.methods.ours_losses import (
    apply_weight,
    consistency_loss,
    inner_loss,
    l1_reg,
    outer_loss,
    triplet,
)


def test_consistency_loss_is_soft_target_cross_entropy():
    # row 0: target softmax(0, 0) = (1/2, 1/2); prediction softmax(ln 3, 0) = (3/4, 1/4)
    # row 1: target softmax(ln 4, 0) = (4/5, 1/5); prediction softmax(0, 0) = (1/2, 1/2)
    clean = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]], requires_grad=True)
    masked = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], requires_grad=True)
    row0 = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    row1 = -(0.8 * math.log(0.5) + 0.2 * math.log(0.5))
    loss = consistency_loss(clean, masked)
    assert loss.item() == pytest.approx((row0 + row1) / 2, abs=1e-6)
    loss.backward()
    assert clean.grad is None  # the clean prediction is a target: no gradient
    assert masked.grad is not None and masked.grad.abs().sum() > 0


def test_consistency_loss_minimal_when_predictions_agree():
    clean = torch.tensor([[2.0, -1.0, 0.5]])
    entropy = -(clean.softmax(1) * clean.log_softmax(1)).sum().item()
    assert consistency_loss(clean, clean).item() == pytest.approx(entropy, abs=1e-6)
    assert consistency_loss(clean, torch.tensor([[0.0, 0.0, 3.0]])).item() > entropy


def test_l1_reg_is_mean_absolute_value_over_pixels():
    maps = torch.tensor([[[0.0, 1.0], [0.5, 0.5]], [[1.0, 1.0], [1.0, 1.0]]])
    assert l1_reg(maps).item() == pytest.approx((2.0 + 4.0) / 8)
    assert l1_reg(torch.tensor([[[-2.0, 2.0]]])).item() == pytest.approx(2.0)


def test_triplet_hand_computed():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # distances 5 and 1
    n = torch.tensor([[0.0, 1.0], [0.0, 3.0]])  # distances 1 and 3
    # max(5 - 1 + 1, 0) = 5 ; max(1 - 3 + 1, 0) = 0
    assert triplet(a, p, n).item() == pytest.approx(2.5)
    assert triplet(a, p, n, margin=2.0).item() == pytest.approx((6.0 + 0.0) / 2)
    assert triplet(a, p, n, margin=0.0).item() == pytest.approx(2.0)


def test_triplet_gradient_finite_at_zero_distance():
    a = torch.zeros(1, 3, requires_grad=True)
    loss = triplet(a, torch.zeros(1, 3), torch.ones(1, 3))
    loss.backward()
    assert torch.isfinite(a.grad).all()


def test_inner_and_outer_assign_roles_of_eq_3_and_4():
    torch.manual_seed(0)
    e_img, e_fg_a, e_bg, e_fg_p, e_fg_n = torch.randn(5, 4, 8).unbind(0)
    d = lambda x, y: (x - y).norm(dim=1)  # noqa: E731
    inner = torch.clamp(d(e_img, e_fg_a) - d(e_img, e_bg) + 1.0, min=0).mean()
    outer = torch.clamp(d(e_fg_a, e_fg_p) - d(e_fg_a, e_fg_n) + 1.0, min=0).mean()
    assert inner_loss(e_img, e_fg_a, e_bg).item() == pytest.approx(inner.item(), abs=1e-6)
    assert outer_loss(e_fg_a, e_fg_p, e_fg_n).item() == pytest.approx(outer.item(), abs=1e-6)


def test_apply_weight_normalized_and_pixels():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    ones, zeros = torch.ones(2, 4, 5), torch.zeros(2, 4, 5)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for mode in ("normalized", "pixels"):
        torch.testing.assert_close(apply_weight(x, ones, mode), x)
    # normalized: weight 0 -> 0 in normalized space = the mean colour
    assert torch.equal(apply_weight(x, zeros, "normalized"), torch.zeros_like(x))
    # pixels: weight 0 -> black, i.e. (0 - mean) / std after normalization
    torch.testing.assert_close(apply_weight(x, zeros, "pixels"), ((0 - mean) / std).expand_as(x))
    half = torch.full((2, 4, 5), 0.5)
    torch.testing.assert_close(apply_weight(x, half, "pixels"), (0.5 * (x * std + mean) - mean) / std)
    torch.testing.assert_close(apply_weight(x, half, "normalized"), 0.5 * x)
    with pytest.raises(ValueError):
        apply_weight(x, ones, "bogus")
