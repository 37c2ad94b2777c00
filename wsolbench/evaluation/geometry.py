"""How ground truth in original image pixels reaches the score map's pixel frame.

A :class:`Geometry` is the evaluation-time image transform of a protocol: a resize to
``resize = (RH, RW)`` followed by an optional centre crop ``crop = (CH, CW)``; its output
size is ``out_size`` (the crop, or the resize without crop). Score maps may come at another
size ``out_hw = (OH, OW)``: ground truth is then scaled from ``out_size`` to ``out_hw``.

Boxes (``[x0, y0, x1, y1]`` floats, original image of ``W x H``), per coordinate:

* without crop (``Geometry.wsoleval()``, 224x224, as wsolevaluation's ``resize_bbox``)::

      x' = int(x * OW / W)        y' = int(y * OH / H)

  (``int`` truncates; no clamping, so a box ending at ``x1 = W`` maps to ``x1' = OW``.)
* with crop (``Geometry.paper()``, 256x256 then centre 224x224)::

      left = int(round((RW - CW) / 2))     top = int(round((RH - CH) / 2))   (torchvision)
      xc = clip(x * RW / W - left, 0, CW - 1)      yc = clip(y * RH / H - top, 0, CH - 1)
      x' = int(xc * OW / CW)                       y' = int(yc * OH / CH)

  A box (partly) outside the crop is clamped to it; one entirely outside becomes a
  zero-width strip on the crop edge (kept, so every image keeps its boxes).

Masks (``uint8``, values 0/1/255) use nearest-neighbour resizing
(``cv2.resize(..., interpolation=cv2.INTER_NEAREST)``): without crop straight to
``(OH, OW)``; with crop to ``(RH, RW)``, then the centre crop, then (if ``out_hw`` differs
from the crop) to ``(OH, OW)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Resize to ``resize`` (H, W), then an optional centre crop ``crop`` (H, W)."""

    resize: tuple[int, int]
    crop: tuple[int, int] | None = None

    def __post_init__(self):
        rh, rw = (int(v) for v in self.resize)
        if rh <= 0 or rw <= 0:
            raise ValueError(f"resize must be positive (H, W), got {self.resize}")
        object.__setattr__(self, "resize", (rh, rw))
        if self.crop is not None:
            ch, cw = (int(v) for v in self.crop)
            if not (0 < ch <= rh and 0 < cw <= rw):
                raise ValueError(f"crop {self.crop} must be positive and fit in resize {self.resize}")
            object.__setattr__(self, "crop", (ch, cw))

    @classmethod
    def paper(cls) -> "Geometry":
        """Resize 256x256, centre crop 224x224."""
        return cls((256, 256), (224, 224))

    @classmethod
    def wsoleval(cls) -> "Geometry":
        """Resize 224x224, no crop."""
        return cls((224, 224), None)

    @classmethod
    def for_protocol(cls, protocol: str) -> "Geometry":
        if protocol == "paper":
            return cls.paper()
        if protocol == "wsoleval":
            return cls.wsoleval()
        raise ValueError(f"unknown protocol '{protocol}' (known: paper, wsoleval)")

    @property
    def out_size(self) -> tuple[int, int]:
        """(H, W) of the transformed image."""
        return self.crop if self.crop is not None else self.resize

    @property
    def crop_offset(self) -> tuple[int, int]:
        """(top, left) of the centre crop inside the resized image ((0, 0) without crop)."""
        if self.crop is None:
            return (0, 0)
        (rh, rw), (ch, cw) = self.resize, self.crop
        return (int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0)))

    def map_boxes(self, boxes, orig_wh: tuple[int, int], out_hw: tuple[int, int] | None = None) -> np.ndarray:
        """Boxes ``(k, 4)`` in original pixels -> int64 boxes ``(k, 4)`` in the output frame."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        w, h = (float(v) for v in orig_wh)
        if w <= 0 or h <= 0:
            raise ValueError(f"image size must be positive, got {orig_wh}")
        oh, ow = (float(v) for v in (out_hw if out_hw is not None else self.out_size))
        xs, ys = b[:, [0, 2]], b[:, [1, 3]]
        if self.crop is None:
            nx = xs * ow / w
            ny = ys * oh / h
        else:
            (rh, rw), (ch, cw) = self.resize, self.crop
            top, left = self.crop_offset
            xc = np.clip(xs * rw / w - left, 0.0, cw - 1.0)
            yc = np.clip(ys * rh / h - top, 0.0, ch - 1.0)
            nx = xc * ow / cw
            ny = yc * oh / ch
        out = np.empty_like(b)
        out[:, [0, 2]] = nx
        out[:, [1, 3]] = ny
        return np.trunc(out).astype(np.int64)

    def map_mask(self, mask: np.ndarray, out_hw: tuple[int, int] | None = None) -> np.ndarray:
        """A ``uint8`` mask at the original size -> the output frame (nearest neighbour)."""
        m = np.ascontiguousarray(mask, dtype=np.uint8)
        if m.ndim != 2:
            raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
        oh, ow = (int(v) for v in (out_hw if out_hw is not None else self.out_size))
        if self.crop is None:
            return cv2.resize(m, (ow, oh), interpolation=cv2.INTER_NEAREST)
        (rh, rw), (ch, cw) = self.resize, self.crop
        top, left = self.crop_offset
        r = cv2.resize(m, (rw, rh), interpolation=cv2.INTER_NEAREST)
        c = np.ascontiguousarray(r[top:top + ch, left:left + cw])
        if (oh, ow) != (ch, cw):
            c = cv2.resize(c, (ow, oh), interpolation=cv2.INTER_NEAREST)
        return c
