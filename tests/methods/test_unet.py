"""Network g: output shape, range, architecture and gradient flow."""

import pytest
import torch
from torch import nn

from wsolbench.models.unet import UNet




@pytest.fixture(scope="module")
def g():
    torch.manual_seed(0)
    return UNet("resnet18", pretrained=False)


@pytest.mark.parametrize("hw", [(32, 32), (64, 96), (50, 70), (33, 31)])
def test_output_shape_and_range(g, hw):
    x = torch.randn(2, 3, *hw)
    for mode in (g.train, g.eval):
        mode()
        with torch.no_grad():
            y = g(x)
        assert y.shape == (2, *hw)
        assert torch.isfinite(y).all()
        assert y.min() >= 0 and y.max() <= 1


def test_architecture_follows_paper(g):
    # five upsampling blocks 1/32 -> 1/16 -> 1/8 -> 1/4 -> 1/2 -> 1
    assert len(g.blocks) == 5
    assert g.block_reductions == [16, 8, 4, 2, 1]
    assert g.reductions == [2, 4, 8, 16, 32]
    # skips from the encoder stage of the same resolution; none at full resolution
    assert g.skip_index == [3, 2, 1, 0, -1]
    for i, block in enumerate(g.blocks):
        assert block.conv1.kernel_size == (3, 3) and block.conv1.padding == (1, 1)
        assert block.conv2.kernel_size == (3, 3) and block.conv2.padding == (1, 1)
        assert isinstance(block.bn, nn.BatchNorm2d)
        assert isinstance(block.act, nn.Sigmoid if i == 4 else nn.ReLU)
    assert g.blocks[-1].conv2.out_channels == 1


def test_gradients_reach_encoder_and_decoder(g):
    g.train()
    g.zero_grad()
    g(torch.randn(2, 3, 32, 32)).mean().backward()
    assert g.encoder.conv1.weight.grad.abs().sum() > 0
    assert g.blocks[0].conv1.weight.grad.abs().sum() > 0
    assert g.blocks[-1].conv2.weight.grad.abs().sum() > 0
