"""Decode every image once into a uint8 array on disk (memory-mapped).

The cache holds images resized to the protocol's resize size, shape ``[N, H, W, 3]``,
plus the original sizes. Its key hashes every source file's path, size and mtime, the
resize size and the cache format version, so a changed dataset or protocol builds a new
cache instead of reading a stale one. Files are written to a temporary name and renamed,
so an interrupted build never leaves a half cache behind.

Decoding also validates images: a missing, truncated or non-image file is reported with
its id before any training starts (or skipped, when the caller allows it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsolbench.data.sample import Sample
from wsolbench.errors import UserError

CACHE_VERSION = 1


@dataclass
class DecodedSplit:
    images: np.ndarray  # uint8 [N, H, W, 3] (memmap)
    orig_sizes: np.ndarray  # int [N, 2] as (W, H)
    samples: list[Sample]  # the samples kept, in order
    skipped: list[dict[str, str]]  # {"id":..., "reason":...}


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode (L, LA, P, CMYK, I;16, RGBA, ...) -> uint8 RGB array."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA", "PA") else img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def decode_resized(path: Path, size_hw: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image to RGB and resize it (bilinear, antialiased like torchvision on PIL)."""
    with Image.open(path) as img:
        img.load()
        orig = img.size
        rgb = to_rgb_array(img)
    h, w = size_hw
    if rgb.shape[:2] != (h, w):
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    return rgb, orig


def _decode_one(args: tuple[Sample, tuple[int, int]]):
    sample, size_hw = args
    try:
        if not Path(sample.path).is_file():
            return None, None, "file is missing"
        rgb, orig = decode_resized(sample.path, size_hw)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError,
            EOFError) as exc:
        if isinstance(exc, UnidentifiedImageError):
            return None, None, "cannot be decoded: it is not an image file (unknown format)"
        return None, None, f"cannot be decoded ({type(exc).__name__}: {str(exc)[:80]})"
    if sample.size is not None and tuple(sample.size) != tuple(orig):
        return None, None, (f"is {orig[0]}x{orig[1]} pixels but the dataset's metadata (e.g. "
                            f"image_sizes.txt) says {sample.size[0]}x{sample.size[1]}")
    return rgb, orig, None


def cache_key(samples: Sequence[Sample], size_hw: tuple[int, int]) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}|{size_hw}".encode())
    for s in samples:
        try:
            st = os.stat(s.path)
            h.update(f"{s.path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{s.path}|missing\n".encode())
    return h.hexdigest()[:16]


def build_image_cache(samples: Sequence[Sample], size_hw: tuple[int, int], cache_dir: Path,
                      *, skip_bad: bool = False, workers: int | None = None,
                      progress=None) -> DecodedSplit:
    """Return the decoded split, building ``cache_dir/<key>.u8`` on first use."""
    cache_dir = Path(cache_dir)
    key = cache_key(samples, size_hw)
    data_path = cache_dir / f"{key}.u8"
    meta_path = cache_dir / f"{key}.json"
    h, w = size_hw
    if data_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["skipped"] and not skip_bad:
            # built by a run with --skip-bad-images: this run must not skip silently
            by_id = {s.id: s for s in samples}
            first = meta["skipped"][0]
            raise UserError(_bad_image_message(by_id[first["id"]], first["reason"]))
        keep = [samples[i] for i in meta["kept"]]
        if not keep:
            first = meta["skipped"][0] if meta["skipped"] else {"id": "?", "reason": "?"}
            raise UserError(f"none of the {len(samples)} images of this split could be read (first: "
                            f"'{first['id']}' {first['reason']}); check the dataset root with: "
                            "wsolbench data check NAME --root DIR")
        images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=(len(keep), h, w, 3))
        return DecodedSplit(images, np.asarray(meta["orig_sizes"], dtype=np.int64).reshape(-1, 2),
                            keep, meta["skipped"])

    if not skip_bad:  # a quick pass first: a half-extracted dataset misses many files
        missing = [s for s in samples if not Path(s.path).is_file()]
        if len(missing) == 1:
            raise UserError(_bad_image_message(missing[0], "file is missing"))
        if missing:
            raise UserError(
                f"{len(missing)} of the {len(samples)} images listed in the annotations are missing "
                f"(first: '{missing[0].id}' at {missing[0].path}); the dataset looks incompletely "
                "extracted: extract it again (wsolbench data check NAME --root DIR lists what is "
                "missing), or pass --skip-bad-images to leave them out")
    tmp = data_path.with_name(f"{data_path.name}.{os.getpid()}.tmp")
    n = len(samples)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob(f"{key}.*.tmp"):  # half builds of killed processes
            pid = stale.name.split(".")[-2]  # (a day old: another host may share this folder)
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) \
                    and time.time() - stale.stat().st_mtime > 86400:
                stale.unlink(missing_ok=True)
        with open(tmp, "wb") as fh:  # reserve the space now: a full disk fails here, not later
            size = max(n, 1) * h * w * 3
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fh.fileno(), 0, size)
            else:  # pragma: no cover
                fh.truncate(size)
        out = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=(max(n, 1), h, w, 3))
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _cache_write_error(tmp, exc) from exc
    kept: list[int] = []
    sizes: list[tuple[int, int]] = []
    skipped: list[dict[str, str]] = []
    workers = workers or min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(workers)
    try:
        results = pool.map(_decode_one, ((s, size_hw) for s in samples), chunksize=16)
        if progress is not None:
            results = progress(results, total=n)
        for i, (rgb, orig, err) in enumerate(results):
            if err is not None:
                if not skip_bad:
                    raise UserError(_bad_image_message(samples[i], err))
                skipped.append({"id": samples[i].id, "reason": err})
                continue
            out[len(kept)] = rgb
            kept.append(i)
            sizes.append(orig)
        pool.shutdown()
        out.flush()
        del out
        # Shrink to the kept rows: the memmap file is only rows [0, len(kept)).
        os.truncate(tmp, len(kept) * h * w * 3)
        os.replace(tmp, data_path)
        meta_tmp = meta_path.with_name(f"{meta_path.name}.{os.getpid()}.tmp")
        meta_tmp.write_text(json.dumps({"kept": kept, "orig_sizes": sizes, "skipped": skipped,
                                        "size_hw": list(size_hw), "version": CACHE_VERSION}))
        os.replace(meta_tmp, meta_path)
    except BaseException as exc:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C / a bad image: stop decoding now
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _cache_write_error(tmp, exc) from exc
        raise
    return build_image_cache(samples, size_hw, cache_dir, skip_bad=skip_bad)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _bad_image_message(sample: Sample, err: str) -> str:
    fix = "fix its size line or the image" if "metadata" in err else "replace it"
    return (f"image '{sample.id}' ({sample.path}) {err}; {fix}, or pass --skip-bad-images to "
            "leave it out (its id is recorded in results.json)")


def _cache_write_error(path: Path, exc: OSError) -> UserError:
    from wsolbench.train.checkpoint import disk_error

    return disk_error(Path(path).parent, exc,
                      where="point the cache elsewhere (--set run.cache_dir=DIR or $WSOLBENCH_CACHE)")
