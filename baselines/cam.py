"""CAM (Zhou et al., CVPR 2016) on the shared classifier f.

The map of class c is the sum over channels of f's last feature map weighted by the FC
weights of c (no ReLU: the harness min-max normalizes raw maps per image, as
wsolevaluation does). It is computed for the ground-truth class; for Top-1 loc the class
must be predicted right, where the predicted and true class coincide.
"""

from __future__ import annotations

import torch

from wsolbench.methods.base import FitContext, LocalizeOutput, WSOLMethod


def class_activation_maps(features: torch.Tensor, fc_weight: torch.Tensor,
                          labels: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` features, ``[K, C]`` FC weights, ``[B]`` classes -> ``[B, h, w]``."""
    return torch.einsum("bc,bchw->bhw", fc_weight[labels].to(features.dtype), features)


class FeatureMapMethod(WSOLMethod):
    """Base of the methods computed from the shared classifier f's last feature map."""

    map_range = "raw"

    def bind(self, ctx: FitContext) -> None:
        super().bind(ctx)
        self._get_f = ctx.get_classifier

    def features_and_logits(self, images: torch.Tensor):
        """``(f, features [B, C, h, w] float32, logits [B, K])`` of f on ``images``."""
        f = self._get_f()
        feats = f.features(images).float()
        return f, feats, f.fc(feats.mean(dim=(2, 3)))


class CAM(FeatureMapMethod):
    description = "Class activation mapping (Zhou et al. 2016) from f's last feature map and FC weights"

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> LocalizeOutput:
        f, feats, logits = self.features_and_logits(images)
        return LocalizeOutput(maps=class_activation_maps(feats, f.fc.weight.float(), labels),
                              logits=logits)
