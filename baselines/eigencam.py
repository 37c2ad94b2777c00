"""EigenCAM (Muhammad & Yeasin, IJCNN 2020) on the shared classifier f, without a library.

The map is the first principal component of f's last feature map ``A`` (``[C, h, w]``),
seen as ``h * w`` samples of a ``C``-dimensional vector:

1. ``X = A`` reshaped to ``[h*w, C]``, centred over the positions (``X - mean over h*w``);
2. ``v`` = the first right singular vector of ``X`` (the direction of largest variance);
3. map = ``X @ v`` reshaped to ``[h, w]`` (the projection of every position on ``v``).

A singular vector has no sign of its own (``-v`` is as good as ``v``), so the sign is
fixed here: the map is flipped when it correlates negatively with the mean activation
over channels (``A.mean(0)``), i.e. the map points where the network's features are
strong, not where they are weak. A map whose correlation is exactly 0 (e.g. a constant
feature map, whose map is all zeros) is left as it is.

EigenCAM ignores the class (the same map for every label); class predictions (logits)
come from f, as for CAM. The map is returned RAW: the harness resizes and min-max
normalizes it like every other ``raw`` map.
"""

from __future__ import annotations

import torch

from baselines.cam import FeatureMapMethod
from wsolbench.methods.base import LocalizeOutput


def eigen_maps(features: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` feature maps -> ``[B, h, w]`` first-principal-component maps.

    Computed in float64 (an SVD of ``h*w x C`` per image: cheap at CAM resolutions).
    """
    b, c, h, w = features.shape
    x = features.detach().to(torch.float64).flatten(2).transpose(1, 2)  # [B, hw, C]
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)  # vh: [B, min(hw, C), C]
    proj = torch.einsum("bpc,bc->bp", x, vh[:, 0, :])  # [B, hw]
    # Sign: correlate positively with the mean activation over channels.
    mean_act = features.detach().to(torch.float64).mean(dim=1).flatten(1)  # [B, hw]
    mean_act = mean_act - mean_act.mean(dim=1, keepdim=True)
    corr = (proj * mean_act).sum(dim=1)
    sign = torch.where(corr < 0, -1.0, 1.0).to(proj.dtype)
    return (proj * sign[:, None]).view(b, h, w).to(features.dtype)


class EigenCAM(FeatureMapMethod):
    description = ("EigenCAM (Muhammad & Yeasin 2020): first principal component of f's last "
                   "feature map, class-agnostic")

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> LocalizeOutput:
        with torch.no_grad():
            _, feats, logits = self.features_and_logits(images)
        return LocalizeOutput(maps=eigen_maps(feats), logits=logits)
