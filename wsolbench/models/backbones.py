"""timm backbones with the three ways of getting weights.

``pretrained`` is ``False`` (random init), ``True`` (ImageNet weights through timm's
normal download, cached by timm/huggingface), or a path to a local weight file
(``.pth``/``.bin``/``.safetensors``) loaded offline through timm's
``pretrained_cfg_overlay=dict(file=PATH)``. When weights cannot be had, the error says how
to pass a local file instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from torch import nn

from wsolbench.errors import UserError, suggest

SUPPORTED = ("resnet18", "resnet34", "resnet50", "resnet101")


def create_backbone(name: str, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, ...)`` with offline-friendly weight handling."""
    if name not in timm.list_models():
        raise UserError(f"unknown backbone '{name}'{suggest(name, SUPPORTED)}; "
                        f"the paper uses {', '.join(SUPPORTED)} (any timm model name works)")
    if isinstance(pretrained, str) and pretrained.lower() in ("", "false", "none"):
        pretrained = False
    if isinstance(pretrained, str) and pretrained.lower() == "true":
        pretrained = True
    if pretrained is False:
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained is True:
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as exc:  # network errors come in many types (urllib, hf_hub, ssl)
            raise UserError(
                f"could not get ImageNet weights for '{name}' ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:120] if str(exc) else 'no detail'}); when offline, "
                f"download them on another machine and pass the file: "
                f"--set model.pretrained=/path/to/{name}.safetensors") from exc
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise UserError(f"pretrained weight file {path} does not exist; give an existing "
                        ".pth/.safetensors file, true (download) or false (random init)")
    try:
        return timm.create_model(name, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        raise UserError(f"weight file {path} does not fit backbone '{name}' "
                        f"({str(exc).splitlines()[0][:160]}); pass weights of that architecture") from exc
