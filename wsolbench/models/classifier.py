"""The classifier f (backbone -> global average pooling -> one linear layer) and the
Siamese embedding f' of method II (backbone -> GAP -> linear projection)."""

from __future__ import annotations

import torch
from torch import nn

from wsolbench.models.backbones import create_backbone


class Classifier(nn.Module):
    """f: a timm backbone's last feature map, global average pooling, one FC layer."""

    def __init__(self, backbone: str, num_classes: int, pretrained: bool | str = False):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = create_backbone(backbone, pretrained, num_classes=0, global_pool="")
        self.fc = nn.Linear(self.backbone.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``[B, C, h, w]``."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class Embedding(nn.Module):
    """f' of method II: backbone, GAP, a linear projection to ``dim`` (200 in the paper)."""

    def __init__(self, backbone: str, dim: int = 200, pretrained: bool | str = False):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, num_classes=0, global_pool="avg")
        self.proj = nn.Linear(self.backbone.num_features, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(x))


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients for the parameters (gradients still flow to inputs)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
