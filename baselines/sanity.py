"""Two floor baselines that look at no pixel: where would a method land by chance?

* ``center``: a centred Gaussian whose tau = max/10 level set is the centred box of half
  the image's width and height (sigma = side / (4 * sqrt(2 ln 10))); the wsoleval
  threshold sweep may pick any centred box size.
* ``full``: a uniform map (zero on the outermost pixel ring, so that min-max
  normalization keeps it), i.e. the whole image as the box.

Class predictions, where a run has f, come from f.
"""

from __future__ import annotations

import math

import torch

from wsolbench.methods.base import WSOLMethod

_LEVEL = math.sqrt(2 * math.log(10))  # exp(-r^2 / 2 sigma^2) = 1/10 at r = sigma * _LEVEL


def centered_gaussian(h: int, w: int, device=None) -> torch.Tensor:
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5 - h / 2) / (h / (4 * _LEVEL))
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5 - w / 2) / (w / (4 * _LEVEL))
    return torch.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))


class CenterBaseline(WSOLMethod):
    description = "Fixed centred Gaussian (floor baseline; looks at no pixel)"
    uses_classifier = False
    map_range = "unit"

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        return centered_gaussian(h, w, images.device).expand(b, h, w)


class FullBaseline(WSOLMethod):
    description = "Uniform map: the whole image as the box (floor baseline)"
    uses_classifier = False
    map_range = "unit"

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        m = torch.zeros(h, w, device=images.device)
        m[1:-1, 1:-1] = 1.0
        return m.expand(b, h, w)
