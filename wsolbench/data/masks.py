"""Ground-truth masks: read files, binarize them by the dataset's rule.

A loaded mask is a ``uint8`` array at the original image size with values
``0`` (background), ``1`` (foreground) and ``255`` (ignored by PxAP).

Rules are named on each :class:`~wsolbench.data.sample.Sample` (``mask_rule``); a rule
maps one decoded mask file (grayscale or BGR ``uint8``) to a boolean foreground array.
Dataset modules add their own rules with :func:`register_rule`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from wsolbench.errors import UserError

IGNORE = 255

Rule = Callable[[np.ndarray], np.ndarray]
_RULES: dict[str, tuple[Rule, int]] = {}


def register_rule(name: str, rule: Rule, imread_flag: int = cv2.IMREAD_GRAYSCALE) -> None:
    """Register ``rule(decoded) -> bool array``; ``imread_flag`` says how to decode files."""
    _RULES[name] = (rule, imread_flag)


def _binary(gray: np.ndarray) -> np.ndarray:
    # wsolevaluation's masks are 0/255 PNGs; anything above mid-grey is foreground.
    return gray > 127


register_rule("binary", _binary)


def read_image_file(path: Path, flag: int) -> np.ndarray:
    """Decode an image file with OpenCV, raising a one-line error naming the file."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise UserError(f"mask file {path} is missing; restore it or fix the annotation that names it")
    img = cv2.imdecode(data, flag)
    if img is None:
        raise UserError(f"mask file {path} cannot be decoded (truncated or not an image); replace it")
    return img


def load_mask(mask_paths: tuple[Path, ...] | list[Path], ignore_path: Path | None = None,
              rule: str = "binary") -> np.ndarray:
    """Union of the foreground of ``mask_paths``; background pixels inside ``ignore_path``
    become 255 (left out of PxAP)."""
    if rule not in _RULES:
        _import_rule_module(rule)
    fn, flag = _RULES[rule]
    out: np.ndarray | None = None
    for p in mask_paths:
        fg = fn(read_image_file(Path(p), flag))
        if out is not None and fg.shape != out.shape:
            raise UserError(f"mask file {p} is {fg.shape[1]}x{fg.shape[0]} but another mask of the "
                            f"same image is {out.shape[1]}x{out.shape[0]}; fix the mask files")
        out = fg if out is None else (out | fg)
    if out is None:
        raise UserError("no mask file given for an image that should have one")
    mask = out.astype(np.uint8)
    if ignore_path is not None:
        ign = read_image_file(Path(ignore_path), cv2.IMREAD_GRAYSCALE) > 127
        if ign.shape != mask.shape:
            raise UserError(f"ignore mask {ignore_path} does not match its image's mask size")
        # As wsolevaluation: the ignore region never hides annotated foreground.
        mask[ign & (mask == 0)] = IGNORE
    return mask


def _import_rule_module(rule: str) -> None:
    # Dataset modules register their rules on import; the rule's name is the module's.
    import importlib

    try:
        importlib.import_module(f"wsolbench.data.{rule.split('_')[0]}")
    except ImportError:
        pass
    if rule not in _RULES:
        raise UserError(f"unknown mask rule '{rule}'; known: {', '.join(sorted(_RULES))}")
