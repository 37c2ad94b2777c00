"""An example wsolbench plug-in: spectral-residual saliency as a WSOL method.

Spectral residual (Hou & Zhang, CVPR 2007) finds what is "unexpected" in an image's
log-amplitude spectrum: the image is made grey and small (``size`` x ``size``), its
log-amplitude spectrum ``L`` minus a 3x3 local average of ``L`` is the residual ``R``,
and the saliency map is ``|IFFT(exp(R + i * phase))|^2`` smoothed by a Gaussian
(sigma = 3 pixels at size 64, scaled with ``size``).

It is an honest floor for WSOL: it looks at pixels but never at a label or a
classifier (``uses_classifier = False``), and nothing is trained (no ``fit``). The map is
returned raw; wsolbench resizes it to the input and min-max normalizes it, like every
``raw`` map. Class predictions (Top-1 loc) need a classifier: a run with only this
method reports localization metrics without Top-1 numbers.

The whole plug-in contract is visible here: subclass ``WSOLMethod``, declare ``options``
(configurable in ``[methods.saliency]`` of benchmark.toml or inline as
``--methods "saliency[size=32]"``), implement ``localize``, and register the class under
the ``wsolbench.methods`` entry-point group in pyproject.toml.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from wsolbench.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from wsolbench.errors import UserError
from wsolbench.methods.base import WSOLMethod

__all__ = ["SpectralSaliency", "spectral_residual"]
__version__ = "0.1.0"

_LUMA = (0.299, 0.587, 0.114)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, 1, H, W]`` with reflected borders."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))


def spectral_residual(gray: torch.Tensor, sigma: float) -> torch.Tensor:
    """Spectral-residual saliency of grey images ``[B, h, w]`` (float) -> ``[B, h, w]``."""
    spec = torch.fft.fft2(gray)
    log_amp = torch.log(spec.abs() + 1e-8)
    phase = torch.angle(spec)
    avg = F.avg_pool2d(F.pad(log_amp[:, None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0]
    residual = log_amp - avg
    sal = torch.fft.ifft2(torch.exp(torch.complex(residual, phase))).abs() ** 2
    return _gaussian_blur(sal[:, None], sigma)[:, 0]


class SpectralSaliency(WSOLMethod):
    description = "Spectral-residual saliency (Hou & Zhang 2007): no label, no classifier, no training"
    options = {"size": 64}  # the working resolution of the spectrum (Hou & Zhang: 64)
    uses_classifier = False
    map_range = "raw"

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        size = int(self.opts["size"])
        if size < 8:
            raise UserError(f"saliency: option size must be >= 8, got {size}")
        with torch.autocast(device_type=images.device.type, enabled=False):
            x = images.float()
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            rgb = (x * std + mean).clamp(0, 1)  # the pipeline's normalization undone
            gray = (rgb * torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            gray = F.interpolate(gray, size=(size, size), mode="area")[:, 0]
            return spectral_residual(gray, sigma=3.0 * size / 64)
