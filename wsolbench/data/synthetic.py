"""The built-in synthetic WSOL dataset, written in the CUB-200-2011 on-disk layout.

Every user's first run trains on this dataset, so it is tiny and fast to build, yet it
has the difficulty that makes weakly-supervised localization hard (paper, Sec. 1 and 3:
"the classifier may rely on parts of the object and ignore much of it"):

* each image holds ONE object of variable size (10%-60% of the image), position,
  elongation and rotation, on a textured background with class-neutral clutter and,
  often, a part-less object-like decoy;
* the object's body (shape, colour, texture) is drawn independently of the class;
* the class is decided only by a SMALL part (about 6%-12% of the object's area) placed
  at a random spot on the body: its colour, shape and pattern name the class
  (``001.red_square``, ``010.blue_striped_disc``, ...);
* the ground-truth box and mask cover the WHOLE object (body and part). They are exact:
  the mask is the set of object pixels that were painted, the box its tight bounds.

So a classifier may attend to the part alone, and a localizer that follows it finds
the part, not the object. A fixed centred box does badly (``centred_box_accuracy``).

Files (the CUB-200-2011 layout, read by the CUB loader)::

    images/<NNN.class_name>/<class_name>_<NNNN>.jpg
    segmentations/<NNN.class_name>/<class_name>_<NNNN>.png   0/255 grayscale, same stem
    images.txt              <image_id> <relative path>          ids 1-based, consecutive
    classes.txt             <class_id> <NNN.class_name>         1-based
    image_class_labels.txt  <image_id> <class_id>
    train_test_split.txt    <image_id> <1 train | 0 test>
    bounding_boxes.txt      <image_id> <x> <y> <w> <h>          x + w = last object column
    parts/parts.txt         1 discriminative_part
    parts/part_locs.txt     <image_id> 1 <x> <y> 1              centre of the class part
    synthetic.json          parameters, version, counts, class descriptions

Generation is deterministic: each image is drawn from its own random stream keyed by
``(seed, class, split, index)``, JPEGs are encoded by OpenCV at quality 95 (4:4:4 chroma:
the parts are a few pixels wide and 4:2:0 would smear their colour into the body), and
the same parameters give byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsolbench.errors import UserError

#: Bumped whenever the same parameters would give different files.
VERSION = 1

DEFAULTS: dict[str, int] = {
    "classes": 8,
    "train_per_class": 50,
    "test_per_class": 20,
    "size": 64,
    "seed": 0,
}

MIN_SIZE, MAX_SIZE = 32, 1024
OBJECT_AREA = (0.10, 0.60)  # object mask area / image area (log scale, skewed small)
PART_AREA = (0.06, 0.12)  # part area / object area (uniform), before rounding to pixels

# Class parts: colour x shape x pattern. Colours are saturated and far apart in RGB;
# everything else in an image (background, clutter, bodies) is muted, see _muted_rgb.
# The order puts the most distinct colours first, so that few classes differ most.
PART_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (225, 30, 30)),
    ("blue", (35, 75, 230)),
    ("yellow", (240, 215, 20)),
    ("green", (30, 175, 45)),
    ("magenta", (230, 40, 205)),
    ("cyan", (20, 205, 220)),
    ("orange", (250, 125, 10)),
    ("purple", (135, 45, 230)),
)
PART_SHAPES = ("square", "disc", "triangle", "cross")
PART_PATTERNS = ("solid", "striped")
MAX_CLASSES = len(PART_COLOURS) * len(PART_SHAPES) * len(PART_PATTERNS)  # 64


@dataclass(frozen=True)
class PartSpec:
    """What identifies one class: the look of its part."""

    colour: str
    rgb: tuple[int, int, int]
    shape: str
    pattern: str

    @property
    def name(self) -> str:
        mid = "" if self.pattern == "solid" else f"_{self.pattern}"
        return f"{self.colour}{mid}_{self.shape}"


def class_spec(index: int) -> PartSpec:
    """The part of class ``index`` (0-based).

    Colours cycle fastest, so the first 8 classes all differ in colour (and their shapes
    differ too); later classes reuse colours with other shapes, then with stripes.
    """
    if not 0 <= index < MAX_CLASSES:
        raise UserError(f"class index {index} out of range 0..{MAX_CLASSES - 1}")
    nc, ns = len(PART_COLOURS), len(PART_SHAPES)
    c, layer = index % nc, index // nc
    colour, rgb = PART_COLOURS[c]
    return PartSpec(colour, rgb, PART_SHAPES[(layer + c) % ns], PART_PATTERNS[layer // ns])


def class_dirs(classes: int) -> list[str]:
    """CUB-style class folder names: ``001.red_square``, ``002.blue_disc``, ..."""
    return [f"{i + 1:03d}.{class_spec(i).name}" for i in range(classes)]


@dataclass
class SyntheticImage:
    """One rendered image with its exact ground truth (and the part, for debugging)."""

    image: np.ndarray  # uint8 [H, W, 3] RGB
    mask: np.ndarray  # bool [H, W]: the whole object (body and part)
    part_mask: np.ndarray  # bool [H, W]: the class part, inside ``mask``
    box: tuple[float, float, float, float]  # CUB (x, y, w, h), x + w = last column
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- drawing


def _rng(seed: int, class_index: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, class_index, 0 if split == "train" else 1, index])


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """h in degrees, s and v in [0, 1] -> float RGB in [0, 255]."""
    h = (h % 360.0) / 60.0
    i, f = int(h), h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return np.array(rgb, dtype=np.float32) * 255.0


def _muted_rgb(rng: np.random.Generator, s_max: float = 0.45, v: tuple[float, float] = (0.22, 0.85)) -> np.ndarray:
    """A class-neutral, unsaturated colour (backgrounds, clutter, bodies)."""
    return _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.05, s_max), rng.uniform(*v))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a random grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC) / 1.5, -1.5, 1.5)


def _grating(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int,
             period: tuple[float, float]) -> np.ndarray:
    ang = rng.uniform(0, np.pi)
    per = rng.uniform(*period) * size
    return np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / per + rng.uniform(0, 2 * np.pi))


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Two muted colours blended by a random texture (noise, gratings, or both)."""
    c1, c2 = _muted_rgb(rng), _muted_rgb(rng)
    kind = rng.integers(3)
    t = 0.45 * _smooth_noise(rng, size, int(rng.integers(3, 9)))
    if kind >= 1:
        t += rng.uniform(0.2, 0.45) * _grating(rng, yy, xx, size, (0.08, 0.4))
    if kind == 2:
        t += 0.25 * _smooth_noise(rng, size, int(rng.integers(10, 20)))
    t = np.clip(0.5 + t, 0.0, 1.0)[..., None]
    return c1 * (1 - t) + c2 * t


def _fill(mask: np.ndarray, polys: list[np.ndarray]) -> np.ndarray:
    # One fillPoly call per polygon: overlapping polygons passed together can cancel out.
    for p in polys:
        cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask


def _ellipse_pts(cx: float, cy: float, a: float, b: float, n: int = 40, power: float = 2.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / power
    return np.stack([cx + a * np.sign(c) * np.abs(c) ** e, cy + b * np.sign(s) * np.abs(s) ** e], 1)


def _body_polys(rng: np.random.Generator) -> tuple[str, list[np.ndarray]]:
    """A class-neutral object outline at unit scale, centred near 0, randomly rotated."""
    kind = ("ellipse", "blob", "bird")[int(rng.integers(3))]
    aspect = rng.uniform(1.0, 3.0)
    if kind == "ellipse":  # ellipse to rounded rectangle
        polys = [_ellipse_pts(0, 0, aspect, 1.0, power=rng.uniform(2.0, 4.0))]
    elif kind == "blob":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = np.ones_like(t)
        for k in (2, 3, 4, 5):
            r += rng.uniform(0, 0.2 / (k - 1) ** 0.5) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        polys = [np.stack([aspect * r * np.cos(t), r * np.sin(t)], 1)]
    else:  # body + head + tail: a bird-like silhouette with protruding parts
        a = rng.uniform(1.3, 2.2)
        head_r = rng.uniform(0.45, 0.75)
        hy = rng.uniform(-0.5, 0.5)
        ty = rng.uniform(-0.4, 0.4)
        tail_len, tail_w = rng.uniform(0.4, 0.9), rng.uniform(0.25, 0.6)
        polys = [
            _ellipse_pts(0, 0, a, 1.0),
            _ellipse_pts(a * 0.85, hy, head_r, head_r),
            np.array([[-a * 0.7, ty - 0.3], [-a * 0.7, ty + 0.3],
                      [-a - tail_len, ty + tail_w], [-a - tail_len, ty - tail_w]]),
        ]
    # Mostly near-upright or near-horizontal, like photographed animals: elongated objects
    # then get elongated boxes (any aspect ratio), which a fixed box cannot match.
    if rng.random() < 0.7:
        ang = float(rng.integers(4)) * np.pi / 2 + rng.normal(0, 0.25)
    else:
        ang = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]], dtype=np.float64)
    if rng.random() < 0.5:  # mirror
        polys = [p * np.array([1.0, -1.0]) for p in polys]
    return kind, [p @ rot.T for p in polys]


def _unit_area(polys: list[np.ndarray]) -> float:
    """Area of the union of unit-scale polygons, measured by rasterizing at 24 px/unit."""
    k = 24.0
    pts = np.concatenate(polys)
    lo = pts.min(0)
    ext = np.ceil((pts.max(0) - lo) * k).astype(int) + 3
    m = np.zeros((ext[1], ext[0]), np.uint8)
    _fill(m, [(p - lo) * k + 1 for p in polys])
    return float(m.sum()) / (k * k)


def _place_shape(rng: np.random.Generator, size: int, area_px: float,
                 avoid: np.ndarray | None = None, tries: int = 12) -> tuple[str, np.ndarray] | None:
    """Draw an outline of about ``area_px`` pixels fully inside the image (1 px margin).

    With ``avoid`` (bool mask), the shape must not touch it. None if no placement fits.
    """
    for _ in range(tries):
        kind, polys = _body_polys(rng)
        scale = np.sqrt(area_px / _unit_area(polys))
        polys = [p * scale for p in polys]
        pts = np.concatenate(polys)
        lo, hi = pts.min(0), pts.max(0)
        room = (size - 2.5) - (hi - lo)
        if (room < 0).any():
            continue
        off = np.array([rng.uniform(0, room[0]), rng.uniform(0, room[1])]) + 1.0 - lo
        m = _fill(np.zeros((size, size), np.uint8), [p + off for p in polys]).astype(bool)
        if not m.any() or m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
            continue
        if avoid is not None and (m & avoid).any():
            continue
        return kind, m
    return None


def _body_field(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray,
                base: np.ndarray) -> tuple[str, np.ndarray]:
    """Class-neutral body appearance: muted base colour, shading and a texture."""
    ang = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + rng.uniform(0.0, 0.25) * ((xx * np.cos(ang) + yy * np.sin(ang)) / size - 0.5)
    f = base[None, None, :] * shade[..., None]
    kind = ("plain", "stripes", "mottled", "spots")[int(rng.integers(4))]
    if kind == "stripes":
        f = f + rng.uniform(10, 25) * _grating(rng, yy, xx, size, (0.07, 0.16))[..., None]
    elif kind == "mottled":
        f = f + rng.uniform(12, 28) * _smooth_noise(rng, size, int(rng.integers(6, 12)))[..., None]
    elif kind == "spots":
        spots = np.zeros((size, size), np.uint8)
        for _ in range(int(rng.integers(4, 10))):
            c = rng.uniform(0, size, 2)
            cv2.circle(spots, (int(c[0]), int(c[1])), max(1, int(rng.uniform(0.02, 0.05) * size)), 1, -1)
        f = np.where(spots[..., None] > 0, f * rng.uniform(0.65, 0.8), f)
    return kind, f


def _clutter(rng: np.random.Generator, img: np.ndarray, size: int) -> None:
    """Small class-neutral shapes and twigs, in muted colours, painted into ``img``."""
    for _ in range(int(rng.integers(2, 7))):
        col = tuple(float(v) for v in _muted_rgb(rng, s_max=0.5, v=(0.15, 0.9)))
        c = rng.uniform(0, size, 2)
        r = rng.uniform(0.03, 0.12) * size
        kind = int(rng.integers(4))
        if kind == 0:
            cv2.ellipse(img, (int(c[0]), int(c[1])), (max(1, int(r)), max(1, int(r * rng.uniform(0.3, 1)))),
                        float(rng.uniform(0, 180)), 0, 360, col, -1)
        elif kind == 1:
            pts = c + rng.uniform(-r, r, (int(rng.integers(3, 5)), 2))
            cv2.fillPoly(img, [np.round(pts).astype(np.int32)], col)
        elif kind == 2:
            cv2.rectangle(img, (int(c[0] - r), int(c[1] - r / 2)), (int(c[0] + r), int(c[1] + r / 2)), col, -1)
        else:  # twig
            d = rng.uniform(-2.5 * r, 2.5 * r, 2)
            cv2.line(img, (int(c[0]), int(c[1])), (int(c[0] + d[0]), int(c[1] + d[1])), col,
                     max(1, int(rng.integers(1, 3) * size / 64)))


def _part_kernel(shape: str, s: int) -> np.ndarray:
    """The part's footprint, an ``s x s`` uint8 0/1 array."""
    k = np.zeros((s, s), np.uint8)
    if shape == "square":
        k[:] = 1
    elif shape == "disc":
        yy, xx = np.mgrid[:s, :s]
        c = (s - 1) / 2
        k[(yy - c) ** 2 + (xx - c) ** 2 <= (s / 2) ** 2 + 0.25] = 1
    elif shape == "triangle":
        pts = np.array([[0, s - 1], [s - 1, s - 1], [(s - 1) / 2, 0]]) * 16
        cv2.fillPoly(k, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    elif shape == "cross":
        w = max(2, int(round(s / 3)))
        a = (s - w) // 2
        k[a:a + w, :] = 1
        k[:, a:a + w] = 1
    return k


def _fill_fraction(shape: str) -> float:
    return {"square": 1.0, "disc": np.pi / 4, "triangle": 0.5, "cross": 5 / 9}[shape]


def _place_part(rng: np.random.Generator, body: np.ndarray, spec: PartSpec,
                area_px: float) -> np.ndarray | None:
    """A part footprint at a random spot inside ``body`` with 1 px of body around it."""
    s = max(3, int(round(np.sqrt(area_px / _fill_fraction(spec.shape)))))
    body_u8 = body.astype(np.uint8)
    while s >= 3:
        k = _part_kernel(spec.shape, s)
        ring = cv2.dilate(np.pad(k, 1), np.ones((3, 3), np.uint8))
        valid = cv2.erode(body_u8, ring, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        ys, xs = np.nonzero(valid)
        if len(ys):
            j = int(rng.integers(len(ys)))
            y, x = ys[j] + 1, xs[j] + 1
            part = np.zeros_like(body)
            part[y:y + s, x:x + s] = k.astype(bool)
            return part
        s -= 1
    return None


def render(class_index: int, split: str = "train", index: int = 0, size: int = 64,
           seed: int = 0) -> SyntheticImage:
    """Render one image of class ``class_index`` (0-based) exactly as :func:`generate` does.

    The image depends only on ``(seed, class_index, split, index, size)``.
    """
    spec = class_spec(class_index)
    rng = _rng(seed, class_index, split, index)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    lo, hi = np.log(OBJECT_AREA[0]), np.log(OBJECT_AREA[1])
    total = float(size * size)
    for _attempt in range(1000):  # object geometry: exact area range, part fits
        # Log-scale, skewed to small objects (median ~20%): large objects are centred by
        # force, and too many of them would let a fixed centred box score well.
        target = np.exp(lo + (hi - lo) * rng.uniform() ** 1.5) * total
        placed = _place_shape(rng, size, target)
        if placed is None:
            continue
        body_kind, body = placed
        area = int(body.sum())
        if not OBJECT_AREA[0] * total <= area <= OBJECT_AREA[1] * total:
            continue
        # Small objects keep a part of at least ~(0.105 size)^2 px, still <= 12% of them.
        part_px = max(rng.uniform(*PART_AREA) * area, (0.105 * size) ** 2)
        part = _place_part(rng, body, spec, part_px)
        if part is not None:
            break
    else:  # pragma: no cover - not seen for any size in MIN_SIZE..MAX_SIZE
        raise RuntimeError(f"could not place an object in a {size}px image")

    img = _background(rng, size, yy, xx)
    _clutter(rng, img, size)
    decoy = None
    if rng.random() < 0.6:  # a part-less, object-like decoy away from the object
        avoid = cv2.dilate(body.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        d_area = np.exp(rng.uniform(np.log(0.05), np.log(0.25))) * total
        for _ in range(3):  # smaller and smaller until one fits beside the object
            decoy = _place_shape(rng, size, d_area, avoid=avoid, tries=4)
            if decoy is not None:
                break
            d_area *= 0.6
        if decoy is not None:
            _, dfield = _body_field(rng, size, yy, xx, _muted_rgb(rng, v=(0.3, 0.8)))
            img[decoy[1]] = dfield[decoy[1]]
    # Body colour: muted, class-neutral; redrawn (class-independently) until it stands
    # out from the background it lies on, so the object is visible as a whole.
    under = img[body].mean(0)
    for _ in range(10):
        base = _muted_rgb(rng, v=(0.3, 0.8))
        if np.abs(base - under).sum() >= 60:
            break
    texture, bfield = _body_field(rng, size, yy, xx, base)
    img[body] = bfield[body]
    # The class part: the class colour (slightly jittered), solid or striped.
    pcol = np.array(spec.rgb, np.float32) + rng.uniform(-12, 12, 3).astype(np.float32)
    pfield = np.broadcast_to(pcol, img.shape).copy()
    if spec.pattern == "striped":
        period = max(2.0, np.sqrt(part_px) / 2.5)
        d = rng.integers(4)
        coord = (xx, yy, xx + yy, xx - yy)[d]
        dark = (np.floor(coord / period) % 2 == 1)
        pfield[dark] *= 0.4
    img[part] = pfield[part]
    img += rng.normal(0, 3.0, img.shape).astype(np.float32)  # sensor noise
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)

    ys, xs = np.nonzero(body)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    pys, pxs = np.nonzero(part)
    info = {
        "class": class_index,
        "class_name": spec.name,
        "object_area_fraction": area / total,
        "part_area_fraction": float(part.sum()) / area,
        "part_centre": (float(pxs.mean()), float(pys.mean())),
        "body_shape": body_kind,
        "body_texture": texture,
        "body_rgb": tuple(float(v) for v in base),
        "decoy": decoy is not None,
    }
    return SyntheticImage(image, body, part, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)), info)


# --------------------------------------------------------------------------- parameters


def _check_int(name: str, value: Any, lo: int, hi: int | None = None, flag: str | None = None) -> int:
    flag = flag or "--" + name.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{flag} must be a whole number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng_txt = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise UserError(f"{flag} {value} is invalid: it must be {rng_txt}")
    return int(value)


def validate_params(**params: Any) -> dict[str, int]:
    """Defaults filled in and every value checked; UserError names a bad one."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise UserError(f"unknown synthetic dataset parameter(s) {', '.join(unknown)}; "
                        f"known: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    out = {
        "classes": _check_int("classes", p["classes"], 2, MAX_CLASSES),
        "train_per_class": _check_int("train_per_class", p["train_per_class"], 0),
        "test_per_class": _check_int("test_per_class", p["test_per_class"], 0),
        "size": _check_int("size", p["size"], MIN_SIZE, MAX_SIZE),
        "seed": _check_int("seed", p["seed"], 0, 2**63 - 1),
    }
    if out["train_per_class"] + out["test_per_class"] == 0:
        raise UserError("--train-per-class and --test-per-class are both 0: the dataset would be empty")
    return out


def params_key(params: dict[str, int]) -> str:
    """Hash of the (validated) parameters and :data:`VERSION`."""
    blob = json.dumps({"version": VERSION, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- writing


def _encode_jpg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 95,
                            cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    if not ok:  # pragma: no cover - OpenCV without JPEG support
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def _encode_png(mask: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:  # pragma: no cover
        raise RuntimeError("OpenCV could not encode a PNG")
    return buf.tobytes()


def _metadata(params: dict[str, int]) -> dict[str, Any]:
    classes = []
    for i, d in enumerate(class_dirs(params["classes"])):
        s = class_spec(i)
        classes.append({"id": i + 1, "dir": d, "part_colour": s.colour, "part_rgb": list(s.rgb),
                        "part_shape": s.shape, "part_pattern": s.pattern})
    return {
        "name": "wsolbench-synthetic",
        "version": VERSION,
        "format": "CUB-200-2011",
        "params": params,
        "counts": {"classes": params["classes"],
                   "train": params["classes"] * params["train_per_class"],
                   "test": params["classes"] * params["test_per_class"]},
        "box_convention": "x y w h; the object spans columns x..x+w and rows y..y+h inclusive",
        "object_area_fraction": list(OBJECT_AREA),
        "part_area_fraction": list(PART_AREA),
        "jpeg": {"quality": 95, "chroma": "4:4:4", "encoder": "cv2.imencode"},
        "classes": classes,
    }


def _write_tree(root: Path, params: dict[str, int]) -> None:
    dirs = class_dirs(params["classes"])
    images, labels, split_lines, boxes, part_locs = [], [], [], [], []
    img_id = 0
    for c, d in enumerate(dirs):
        name = d.split(".", 1)[1]
        (root / "images" / d).mkdir(parents=True)
        (root / "segmentations" / d).mkdir(parents=True)
        jobs = [("train", i) for i in range(params["train_per_class"])] + \
               [("test", i) for i in range(params["test_per_class"])]
        for n, (split, i) in enumerate(jobs, start=1):
            img_id += 1
            r = render(c, split, i, params["size"], params["seed"])
            stem = f"{name}_{n:04d}"
            (root / "images" / d / f"{stem}.jpg").write_bytes(_encode_jpg(r.image))
            (root / "segmentations" / d / f"{stem}.png").write_bytes(_encode_png(r.mask))
            images.append(f"{img_id} {d}/{stem}.jpg")
            labels.append(f"{img_id} {c + 1}")
            split_lines.append(f"{img_id} {1 if split == 'train' else 0}")
            x, y, w, h = r.box
            boxes.append(f"{img_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
            px, py = r.info["part_centre"]
            part_locs.append(f"{img_id} 1 {px:.1f} {py:.1f} 1")

    def lines(name: str, rows: list[str]) -> None:
        (root / name).write_text("".join(r + "\n" for r in rows), encoding="utf-8")

    lines("images.txt", images)
    lines("classes.txt", [f"{i + 1} {d}" for i, d in enumerate(dirs)])
    lines("image_class_labels.txt", labels)
    lines("train_test_split.txt", split_lines)
    lines("bounding_boxes.txt", boxes)
    (root / "parts").mkdir()
    lines("parts/parts.txt", ["1 discriminative_part"])
    lines("parts/part_locs.txt", part_locs)
    # Written last: its presence marks a complete generation.
    (root / "synthetic.json").write_text(json.dumps(_metadata(params), indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")


def _is_generation(path: Path, params: dict[str, int]) -> bool:
    """Whether ``path`` holds a complete generation of exactly these parameters."""
    try:
        meta = json.loads((path / "synthetic.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("version") == VERSION and meta.get("params") == params
            and (path / "images.txt").is_file())


def _refuse(out: Path) -> UserError:
    return UserError(f"output folder {out} already exists and is not empty (and is not this very "
                     f"synthetic generation); pick another --out or delete it")


def _generate(out: Path, params: dict[str, int]) -> tuple[Path, bool]:
    """Write the dataset; returns ``(path, created)``; ``created`` is False on reuse."""
    out = Path(out).expanduser().absolute()
    if out.exists():
        if not out.is_dir():
            raise UserError(f"output {out} exists and is a file; pick another --out or delete it")
        if any(out.iterdir()):
            if _is_generation(out, params):
                return out, False
            raise _refuse(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the parent folder of {out}: {e.strerror or e}") from None
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _write_tree(tmp, params)
        try:
            os.rename(tmp, out)  # atomic; also replaces an empty folder on POSIX
        except OSError:
            # A racing process finished first (or the folder was filled meanwhile).
            if _is_generation(out, params):
                return out, False
            if out.is_dir() and not any(out.iterdir()):  # an empty folder, on Windows
                out.rmdir()
                os.rename(tmp, out)
                return out, True
            if out.exists():
                raise _refuse(out) from None
            raise
    except PermissionError as e:
        raise UserError(f"cannot write the synthetic dataset next to {out}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out, True


def generate(out: Path, classes: int = 8, train_per_class: int = 50, test_per_class: int = 20,
             size: int = 64, seed: int = 0) -> Path:
    """Write the synthetic dataset to ``out`` in the CUB-200-2011 layout; return ``out``.

    Built in a temporary sibling folder and renamed into place. An existing non-empty
    ``out`` is refused (UserError) unless it already holds this very generation, which
    is then returned as is.
    """
    params = validate_params(classes=classes, train_per_class=train_per_class,
                             test_per_class=test_per_class, size=size, seed=seed)
    return _generate(Path(out), params)[0]


def ensure_synthetic(cache_root: Path, **params: Any) -> Path:
    """The cached generation for ``params`` under ``cache_root/synthetic-<hash>/``.

    Generated on first use. Safe when processes race: each builds its own temporary
    folder, one rename wins and the others use the winner's folder.
    """
    p = validate_params(**params)
    path = Path(cache_root).expanduser().absolute() / f"synthetic-{params_key(p)}"
    if _is_generation(path, p):
        return path
    return _generate(path, p)[0]


def centred_box_accuracy(boxes: list[tuple[float, float, float, float]], size: int,
                         fraction: float = 0.5, iou: float = 0.5) -> float:
    """Share of CUB ``(x, y, w, h)`` boxes that a fixed centred box hits (IoU >= ``iou``).

    The centred box has sides ``fraction * size``; IoU uses the inclusive-pixel
    convention (a box spans ``x..x+w``, ``w + 1`` pixels).
    """
    if not boxes:
        return 0.0
    b = np.asarray(boxes, dtype=np.float64)
    side = fraction * size
    c0 = (size - side) / 2
    c1 = c0 + side - 1
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(x1, c1) - np.maximum(x0, c0) + 1, 0, None)
    ih = np.clip(np.minimum(y1, c1) - np.maximum(y0, c0) + 1, 0, None)
    inter = iw * ih
    union = (b[:, 2] + 1) * (b[:, 3] + 1) + side * side - inter
    return float(np.mean(inter / union >= iou))


# --------------------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``wsolbench synth`` to an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "synth", help="write the built-in synthetic WSOL dataset (CUB-200-2011 layout)",
        description="Write the built-in synthetic WSOL dataset: one object per image on a textured "
                    "background, its class decided by a small part, written as CUB-200-2011 files "
                    "so that the CUB loader reads it.")
    p.add_argument("--out", type=Path, required=True, help="folder to create (must not exist or be empty)")
    p.add_argument("--classes", type=int, default=DEFAULTS["classes"],
                   help=f"number of classes, 2..{MAX_CLASSES} (default %(default)s)")
    p.add_argument("--train-per-class", type=int, default=DEFAULTS["train_per_class"],
                   help="training images per class (default %(default)s)")
    p.add_argument("--test-per-class", type=int, default=DEFAULTS["test_per_class"],
                   help="test images per class (default %(default)s)")
    p.add_argument("--size", type=int, default=DEFAULTS["size"],
                   help=f"image side in pixels, {MIN_SIZE}..{MAX_SIZE} (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random seed (default %(default)s)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``wsolbench synth``: generate, then print where and how many."""
    params = validate_params(classes=args.classes, train_per_class=args.train_per_class,
                             test_per_class=args.test_per_class, size=args.size, seed=args.seed)
    t0 = time.perf_counter()
    path, created = _generate(Path(args.out), params)
    n_tr = params["classes"] * params["train_per_class"]
    n_te = params["classes"] * params["test_per_class"]
    what = "wrote" if created else "already present (identical generation):"
    took = f" in {time.perf_counter() - t0:.1f} s" if created else ""
    print(f"{what} synthetic dataset at {path}{took}: {params['classes']} classes, "
          f"{n_tr} train + {n_te} test images, {params['size']}x{params['size']} px, seed {params['seed']}")
    return 0
