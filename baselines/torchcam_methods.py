"""Grad-CAM++, LayerCAM and Score-CAM on the shared classifier f, through torchcam.

Optional extra ``cams`` (``pip install 'wsolbench[cams]'``): torchcam is imported only when
one of these methods is built for a run (a missing torchcam is a one-line error before
anything trains), so registering, listing or running other methods (``--methods cam``)
never imports it.

Every adapter hooks f's last feature map (option ``target_layer``, a module name of f;
default ``"backbone"``, whose output is ``f.features(x)``: for a timm ResNet this is the
output of ``backbone.layer4``), computes the map for the ground-truth class of each image
and returns it RAW (``normalized=False``; no resizing): the harness does the one shared
post-processing (resize, per-image min-max). The logits are f's, from the same forward.

* ``gradcampp``: Grad-CAM++ (Chattopadhay et al., WACV 2018). torchcam 0.5.0's
  ``GradCAMpp._get_weights`` divides ``alpha[mask].div_(...)``, an in-place division of
  the COPY that boolean indexing returns, so the normalization of alpha is lost and the
  weights become ``sum(grad^2 * relu(grad))``. The adapter keeps torchcam's hooks and
  back-propagation and computes the paper's weights:
  ``alpha = g^2 / (2 g^2 + sum_ab A(a,b) * g^3)`` (0 where ``g = 0``; no epsilon, see
  :func:`paper_gradcampp_weights`),
  ``w_k = sum_ij alpha_k(i,j) * relu(g_k(i,j))``, map ``relu(sum_k w_k A_k)``.
* ``layercam``: LayerCAM (Jiang et al., TIP 2021): ``relu(sum_k relu(g_k) * A_k)`` per pixel.
* ``scorecam``: Score-CAM (Wang et al., CVPRW 2020): each channel, min-max normalized and
  upsampled, masks the input; its weight is the softmax over channels of the class score
  gain. ``C`` extra forward passes of f per image (512 for a ResNet18; option
  ``batch_size`` chunks them).

f's parameters stay frozen (``requires_grad=False``): the gradient-based adapters make
the INPUT require gradients inside ``torch.enable_grad()`` (the harness calls
``localize`` under ``no_grad``), so the hooked feature map is part of a graph and
``torch.autograd.grad`` reaches it without touching any parameter of f. Autocast is
turned off inside the adapters: gradients are taken in float32.

Grad-CAM itself is not offered: on f (a ResNet with global average pooling and one
linear layer) ``d y_c / d A_k(i,j) = W[c,k] / (h*w)`` at every pixel, so the Grad-CAM
weights are ``W[c,k] / (h*w)`` and Grad-CAM is ``relu(CAM) / (h*w)``: CAM (``cam``) up to
a positive scale and a ReLU, not an independent method. For the same reason LayerCAM on
f is ``relu(sum_k relu(W[c,k]) A_k) / (h*w)``: CAM with the negative class weights dropped.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from wsolbench.errors import UserError
from wsolbench.methods.base import FitContext, LocalizeOutput, WSOLMethod

TORCHCAM_HINT = "pip install 'wsolbench[cams]' (torchcam>=0.5,<0.6; it needs Python >= 3.11)"


def _torchcam_methods() -> Any:
    try:
        import torchcam.methods as tcm
    except ImportError as exc:
        raise UserError(f"the Grad-CAM++/LayerCAM/Score-CAM baselines need the optional library "
                        f"torchcam, which is not importable ({exc}); {TORCHCAM_HINT}") from None
    return tcm


def paper_gradcampp_weights(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights ``[B, C]`` from activations and gradients ``[B, C, h, w]``.

    ``alpha = g^2 / (2 g^2 + sum_ab A(a,b) g^3)``, ``weights = sum_ij alpha * relu(g)``
    (Chattopadhay et al. 2018, eq. 19 with the exponential-output approximation, as every
    public implementation does). alpha is 0 where ``g == 0`` or the denominator is 0. No
    epsilon is added to the denominator: on f the gradients are ``W[c,k] / (h*w)``, so
    ``g^2`` is often 1e-8..1e-6 and the usual ``+ 1e-8`` would bias alpha noticeably.
    """
    g2 = grads.pow(2)
    g3 = g2 * grads
    sum_a = activations.flatten(2).sum(-1)[..., None, None]
    denom = 2 * g2 + sum_a * g3
    ok = (g2 > 0) & (denom != 0)
    alpha = torch.where(ok, g2 / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(g2))
    return (alpha * torch.relu(grads)).flatten(2).sum(-1)


def _paper_gradcampp(tcm: Any) -> type:
    class PaperGradCAMpp(tcm.GradCAMpp):
        """torchcam's GradCAMpp (hooks, back-propagation) with the paper's alpha."""

        def _get_weights(self, class_idx, scores, **kwargs):  # noqa: ANN001
            self._backprop(scores, class_idx, **kwargs)
            return [paper_gradcampp_weights(a, g) for a, g in zip(self.hook_a, self.hook_g)]

    return PaperGradCAMpp


class _TorchCAMMethod(WSOLMethod):
    """The shared adapter: build the torchcam extractor on f per batch, hooks removed after."""

    map_range = "raw"
    options: ClassVar[dict[str, Any]] = {"target_layer": "backbone"}
    needs_grad: ClassVar[bool] = True

    def __init__(self, **options: Any):
        super().__init__(**options)
        _torchcam_methods()  # fail when the run is set up, not after other methods have trained
        self._check_options()

    def _check_options(self) -> None:
        if not isinstance(self.opts["target_layer"], str) or not self.opts["target_layer"]:
            raise UserError(f"{type(self).__name__}: option target_layer must be a module name of f, "
                            f"e.g. 'backbone' or 'backbone.layer4'; got {self.opts['target_layer']!r}")

    def bind(self, ctx: FitContext) -> None:
        super().bind(ctx)
        self._get_f = ctx.get_classifier

    def _extractor_class(self, tcm: Any) -> type:
        raise NotImplementedError

    def _extractor_kwargs(self) -> dict[str, Any]:
        return {}

    def _extractor(self, f: torch.nn.Module) -> Any:
        tcm = _torchcam_methods()
        layer = str(self.opts["target_layer"])
        names = dict(f.named_modules())
        if layer not in names:
            close = [n for n in names if n.endswith("layer4") or n == "backbone"][:3]
            raise UserError(f"{type(self).__name__}: option target_layer={layer!r} is not a module of f; "
                            f"use a name from f.named_modules(), e.g. {', '.join(close) or 'backbone'}")
        return self._extractor_class(tcm)(f, target_layer=layer, **self._extractor_kwargs())

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> LocalizeOutput:
        f = self._get_f()
        classes = [int(c) for c in labels.tolist()]
        x = images.detach().float()
        grad_ctx = torch.enable_grad() if self.needs_grad else torch.no_grad()
        with torch.autocast(device_type=x.device.type, enabled=False), self._extractor(f) as ex, grad_ctx:
            if self.needs_grad:
                x.requires_grad_(True)
            scores = f(x)
            maps = ex(class_idx=classes, scores=scores, normalized=False)[0]
        return LocalizeOutput(maps=maps.detach().float(), logits=scores.detach().float())


class GradCAMpp(_TorchCAMMethod):
    description = "Grad-CAM++ (Chattopadhay et al. 2018) on f via torchcam (paper's alpha; see module doc)"

    def _extractor_class(self, tcm: Any) -> type:
        return _paper_gradcampp(tcm)


class LayerCAM(_TorchCAMMethod):
    description = "LayerCAM (Jiang et al. 2021) on f's last feature map via torchcam"

    def _extractor_class(self, tcm: Any) -> type:
        return tcm.LayerCAM


class ScoreCAM(_TorchCAMMethod):
    description = "Score-CAM (Wang et al. 2020) on f via torchcam (C forward passes per image)"
    options: ClassVar[dict[str, Any]] = {"target_layer": "backbone", "batch_size": 64}
    needs_grad = False

    def _extractor_class(self, tcm: Any) -> type:
        return tcm.ScoreCAM

    def _check_options(self) -> None:
        super()._check_options()
        bs = self.opts["batch_size"]
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise UserError(f"ScoreCAM: option batch_size must be an integer >= 1, got {bs!r}")

    def _extractor_kwargs(self) -> dict[str, Any]:
        return {"batch_size": int(self.opts["batch_size"])}
