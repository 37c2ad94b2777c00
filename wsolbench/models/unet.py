"""Network g of the weight-map methods: a U-Net that maps an image to a weight map in [0, 1].

Paper (section 3, "Architecture"): the encoder is a ResNet whose last feature map is at
1/32 of the input; the decoder has five upsampling blocks that bring the map back to
the input resolution. Each block holds two 3x3 convolutions with zero padding 1, batch
normalization after the last convolution (before the activation), ReLU as that
activation in the first four blocks and a sigmoid in the last one. Each block receives
a skip connection from the encoder stage with the same spatial resolution.

Choices the paper leaves open, made here:

* Upsampling is bilinear interpolation to the size of the skip feature (so any input
  size works, not only multiples of 32), then concatenation with the skip.
* The first convolution of every block is followed by a ReLU (without it the two
  convolutions would collapse into one linear map); only the second one has BN.
* The encoder has no stage at full resolution, so the fifth (last) block receives no
  skip connection: neither an encoder feature nor the input image. It upsamples to
  exactly the input's ``H x W``.
* Decoder widths are ``(256, 128, 64, 32, 16)`` (the last block ends in one channel).

The encoder is any timm model with ``features_only=True``; the decoder is derived from
``feature_info.channels()/reduction()``: one block per halving from the coarsest
reduction down to 1, a skip wherever the encoder has a stage of that reduction.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsolbench.models.backbones import create_backbone


class UpBlock(nn.Module):
    """Upsample to ``size``, concatenate the skip (if any), conv-ReLU-conv-BN-activation."""

    def __init__(self, in_ch: int, skip_ch: int, mid_ch: int, out_ch: int, final: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch + skip_ch, mid_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(mid_ch, out_ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act: nn.Module = nn.Sigmoid() if final else nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, size: tuple[int, int],
                skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = F.relu(self.conv1(x), inplace=True)
        return self.act(self.bn(self.conv2(x)))


class UNet(nn.Module):
    """g: normalized image ``[B, 3, H, W]`` -> weight map ``[B, H, W]`` in ``[0, 1]``."""

    def __init__(self, backbone: str = "resnet18", pretrained: bool | str = False,
                 decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                 out_indices: Sequence[int] = (0, 1, 2, 3, 4)):
        super().__init__()
        self.backbone_name = backbone
        self.encoder = create_backbone(backbone, pretrained, features_only=True,
                                       out_indices=tuple(out_indices))
        channels = list(self.encoder.feature_info.channels())
        self.reductions = [int(r) for r in self.encoder.feature_info.reduction()]
        top = self.reductions[-1]
        n_blocks = int(round(math.log2(top)))
        if 2 ** n_blocks != top:
            raise ValueError(f"backbone {backbone}: coarsest reduction {top} is not a power of two")
        widths = list(decoder_channels)
        if len(widths) < n_blocks:
            widths += [max(widths[-1] // 2, 8)] * (n_blocks - len(widths))
        # The deepest encoder stage of each resolution is the skip for that resolution.
        skip_of = {r: (i, c) for i, (r, c) in enumerate(zip(self.reductions, channels))}
        self.block_reductions: list[int] = []
        self.skip_index: list[int] = []  # encoder output index per block, -1 for none
        blocks = []
        in_ch = channels[-1]
        for b in range(n_blocks):
            r = top >> (b + 1)
            final = b == n_blocks - 1
            idx, skip_ch = skip_of.get(r, (-1, 0)) if r > 1 else (-1, 0)
            mid = widths[b]
            blocks.append(UpBlock(in_ch, skip_ch, mid, 1 if final else mid, final))
            self.block_reductions.append(r)
            self.skip_index.append(idx)
            in_ch = mid
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        feats = self.encoder(x)
        y = feats[-1]
        for block, r, idx in zip(self.blocks, self.block_reductions, self.skip_index):
            if idx >= 0:
                skip = feats[idx]
                y = block(y, tuple(skip.shape[-2:]), skip)
            else:
                size = (H, W) if r == 1 else (-(-H // r), -(-W // r))
                y = block(y, size)
        return y[:, 0]
