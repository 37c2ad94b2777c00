"""Generated score maps for the evaluation tests (CAM-like blobs, noise, plateaus)."""

from __future__ import annotations

import cv2
import numpy as np


def cam_like(rng: np.random.Generator, h: int = 224, w: int = 224, cells: int = 7,
             noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A CAM-like map (a Gaussian bump plus noise on a ``cells x cells`` grid, bilinearly
    upsampled) and a GT box around the bump."""
    yy, xx = np.mgrid[0:cells, 0:cells]
    cx, cy = rng.uniform(1, cells - 1, 2)
    sx, sy = rng.uniform(0.7, 2.5, 2)
    z = np.exp(-((xx - cx) ** 2 / (2 * sx ** 2) + (yy - cy) ** 2 / (2 * sy ** 2)))
    z = z + noise * rng.random((cells, cells))
    m = cv2.resize(z.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    x0 = int(np.clip((cx - sx) / cells * w, 0, w - 1))
    x1 = int(np.clip((cx + sx) / cells * w, 0, w - 1))
    y0 = int(np.clip((cy - sy) / cells * h, 0, h - 1))
    y1 = int(np.clip((cy + sy) / cells * h, 0, h - 1))
    return m, np.array([[x0, y0, x1, y1]])


def assorted_maps(rng: np.random.Generator) -> list[np.ndarray]:
    """Small maps of many kinds: CAM-like at several noise levels, white noise, quantized
    (plateaus), sparse binary, constant, tiny and thin shapes."""
    maps = [cam_like(rng, 48, 40, cells=int(rng.integers(3, 9)), noise=n)[0]
            for n in (0.0, 0.3, 1.0, 3.0) for _ in range(5)]
    maps += [rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))).astype(np.float32)
             for _ in range(12)]
    maps += [np.round(cam_like(rng, 40, 36, noise=0.5)[0] * k) / k for k in (2, 3, 5, 8)]
    maps += [(rng.random((24, 24)) > 0.6).astype(np.float32) * float(rng.random()) for _ in range(6)]
    maps += [np.zeros((9, 7)), np.ones((5, 7)), np.eye(12), 1 - np.eye(12), np.ones((1, 1)),
             np.arange(30, dtype=np.float64).reshape(5, 6)]
    ring = np.zeros((15, 15))
    ring[3:12, 3:12] = 1.0
    ring[5:10, 5:10] = 0.2
    ring[7, 7] = 0.9  # a peak inside a hole inside a ring
    maps.append(ring)
    return maps
