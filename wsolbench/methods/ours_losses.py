"""The losses of the weight-map methods (paper section 3) as small pure functions.

Notation: ``f`` is the frozen classifier (method I) or the frozen Siamese embedding f'
(method II), ``g`` the weight-map network, ``I`` an image, ``M = g(I)`` its map.

* :func:`consistency_loss`  D of eq. 1, cross-entropy between f's softmax on I (soft
  target, no gradient) and f's output on the weighted image I * M.
* :func:`l1_reg`            R of eq. 1: L1 norm of M taken as the mean over pixels.
* :func:`triplet`           eq. 2: max(||a - p|| - ||a - n|| + margin, 0), Euclidean norm.
* :func:`inner_loss`        eq. 3: triplet(f(I_a), f(J_a^f), f(J_a^b)).
* :func:`outer_loss`        eq. 4: triplet(f(J_a^f), f(J_p^f), f(J_n^f)).
* :func:`apply_weight`      J = M * I (or (1 - M) * I), in normalized or pixel space.

Every loss is averaged over the batch and computed in float32 (also under bf16 autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsolbench.data.pipeline import IMAGENET_MEAN, IMAGENET_STD

WEIGHTINGS = ("normalized", "pixels")
_MEAN_STD: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_std(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean/std as ``[1, 3, 1, 1]`` tensors, made once per device (no copy per step)."""
    key = (device, dtype)
    if key not in _MEAN_STD:
        _MEAN_STD[key] = (torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1).to(device),
                          torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1).to(device))
    return _MEAN_STD[key]


def consistency_loss(logits_clean: torch.Tensor, logits_masked: torch.Tensor) -> torch.Tensor:
    """D(f(I), f(I * M)) = mean_b [ -sum_k softmax(f(I))_bk * log_softmax(f(I * M))_bk ].

    The clean prediction is the target: it is detached (soft labels, no gradient).
    """
    target = logits_clean.detach().float().softmax(dim=1)
    log_q = logits_masked.float().log_softmax(dim=1)
    return -(target * log_q).sum(dim=1).mean()


def l1_reg(maps: torch.Tensor) -> torch.Tensor:
    """R(M) = mean over images and pixels of |M| (maps ``[B, H, W]``; in [0, 1] it is mean M)."""
    return maps.float().abs().mean()


def triplet(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Eq. 2: mean_b max(||a_b - p_b||_2 - ||a_b - n_b||_2 + margin, 0) for embeddings ``[B, D]``."""
    a, p, n = a.float(), p.float(), n.float()
    d_ap = torch.linalg.vector_norm(a - p, dim=1)
    d_an = torch.linalg.vector_norm(a - n, dim=1)
    return F.relu(d_ap - d_an + margin).mean()


def inner_loss(e_image: torch.Tensor, e_fg: torch.Tensor, e_bg: torch.Tensor,
               margin: float = 1.0) -> torch.Tensor:
    """Eq. 3: the whole anchor image f(I_a) is the anchor, its foreground f(J_a^f) the
    positive and its background f(J_a^b) the negative."""
    return triplet(e_image, e_fg, e_bg, margin)


def outer_loss(e_fg_a: torch.Tensor, e_fg_p: torch.Tensor, e_fg_n: torch.Tensor,
               margin: float = 1.0) -> torch.Tensor:
    """Eq. 4: foregrounds of anchor f(J_a^f), same-class positive f(J_p^f) and
    other-class negative f(J_n^f)."""
    return triplet(e_fg_a, e_fg_p, e_fg_n, margin)


def apply_weight(images: torch.Tensor, weights: torch.Tensor, weighting: str = "normalized") -> torch.Tensor:
    """Weight normalized images ``[B, 3, H, W]`` by maps ``[B, H, W]`` pixel-wise.

    ``"normalized"``: multiply the ImageNet-normalized tensor, so a weight of 0 gives 0,
    i.e. the dataset mean colour (what f sees as "nothing"). ``"pixels"``: un-normalize to
    [0, 1] pixels, multiply, normalize again, so a weight of 0 gives black.
    """
    w = weights.unsqueeze(1)
    if weighting == "normalized":
        return images * w
    if weighting == "pixels":
        mean, std = _mean_std(images.device, images.dtype)
        return ((images * std + mean) * w - mean) / std
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
