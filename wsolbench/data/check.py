"""``wsolbench data check``: is a dataset on disk complete and sound?

The dataset is parsed by its own loader with row-level problems collected
(:class:`~wsolbench.data.catalog.Issues`) instead of raised, then every image (and mask)
is opened and fully decoded with Pillow -- which, unlike OpenCV, refuses truncated files
-- on a thread pool. JPEGs are decoded at 1/8 scale (DCT scaling still reads every byte
of entropy-coded data, so truncation is still caught, at a fraction of the cost).

Problem categories (any of them makes the check fail):

=====================  =======================================================
unloadable             the loader stopped: root or annotation file missing/empty
split_count            a split's image count differs from the official one
missing_file           a per-class annotation file is missing
malformed_row          an annotation row that cannot be parsed (file:line)
unknown_id             a row names an image/class id that does not exist
duplicate_id           an id annotated twice
missing_row            an image without its label/split/box row
missing_image          an annotated image file that is not there
unreadable_image       an image that cannot be decoded (truncated, not an image)
box_inverted           x1 <= x0 or y1 <= y0
box_outside_image      x0 < 0, y0 < 0, x1 > W + 1 or y1 > H + 1 (the 1 pixel allows
                       inclusive, 1-based corners such as Stanford Cars')
missing_mask           a mask file named by a sample is not there
unreadable_mask        a mask file that cannot be decoded
mask_size_mismatch     a mask whose size differs from its image's
no_masks               masks absent where the benchmark needs them (Flowers)
=====================  =======================================================

Warnings (reported, not failing): ``no_masks`` for CUB without its optional
segmentations (PxAP is then skipped).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wsolbench.data.catalog import DATASETS, Issues, dataset_info
from wsolbench.data.sample import DatasetSplits, Sample
from wsolbench.errors import UserError

BOX_TOLERANCE = 1.0  # pixels beyond the right/bottom edge still accepted
JSON_EXAMPLES = 1000  # messages kept per category in the JSON report


@dataclass
class CheckReport:
    dataset: str
    root: str
    counts: dict[str, dict[str, int | None]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    checked_images: int = 0
    checked_masks: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, category: str, message: str) -> None:
        self.problems.setdefault(category, []).append(message)

    def warn(self, category: str, message: str) -> None:
        self.warnings.setdefault(category, []).append(message)

    def to_json(self) -> dict[str, Any]:
        def block(d: dict[str, list[str]]) -> dict[str, Any]:
            return {k: {"count": len(v), "examples": v[:JSON_EXAMPLES]} for k, v in sorted(d.items())}

        return {
            "dataset": self.dataset,
            "root": self.root,
            "ok": self.ok,
            "counts": self.counts,
            "checked_images": self.checked_images,
            "checked_masks": self.checked_masks,
            "problems": block(self.problems),
            "warnings": block(self.warnings),
            "seconds": round(self.seconds, 2),
        }

    def format(self, examples: int = 3) -> str:
        lines = [f"{self.dataset} at {self.root}"]
        if self.counts:
            parts = []
            for split, c in self.counts.items():
                exp = f"/{c['expected']}" if c.get("expected") is not None else ""
                parts.append(f"{split} {c['found']}{exp}")
            lines.append(f"  images per split (found/expected): {', '.join(parts)}")
        lines.append(f"  decoded {self.checked_images} images and {self.checked_masks} masks "
                     f"in {self.seconds:.1f} s")
        for title, d in (("problems", self.problems), ("warnings", self.warnings)):
            if not d:
                continue
            lines.append(f"{title}:")
            for cat, msgs in sorted(d.items()):
                lines.append(f"  {cat}: {len(msgs)}")
                for m in msgs[:examples]:
                    lines.append(f"    - {m}")
                if len(msgs) > examples:
                    lines.append(f"    ... and {len(msgs) - examples} more")
        n = sum(len(v) for v in self.problems.values())
        lines.append("result: OK, complete and sound" if self.ok else
                     f"result: {n} problem(s) in {len(self.problems)} categor"
                     f"{'y' if len(self.problems) == 1 else 'ies'}")
        return "\n".join(lines)


def check(name: str, root: Path | str, *, decode: bool = True, workers: int | None = None,
          loader_options: dict[str, Any] | None = None, expected: dict[str, int] | None = None,
          log: Callable[[str], None] | None = None) -> CheckReport:
    """Check dataset ``name`` at ``root``; never raises for problems in the data itself.

    ``expected`` replaces the official split sizes (for subsets and test copies).
    """
    info = dataset_info(name)
    loader = DATASETS.get(name)
    t0 = time.monotonic()
    report = CheckReport(dataset=name, root=str(root))
    opts = dict(loader_options or {})
    if name == "synthetic":
        opts.setdefault("name", "synthetic")
    issues = Issues()
    try:
        ds: DatasetSplits = loader(Path(root), issues=issues, **opts)
    except UserError as exc:
        report.add("unloadable", str(exc))
        report.seconds = time.monotonic() - t0
        return report
    report.root = str(ds.root)
    for item in issues.items:
        report.add(item.category, item.message)

    splits = list(ds.splits)
    expected = dict(expected if expected is not None else (info.expected_counts or {}))
    for split in dict.fromkeys([*expected, *splits]):
        found = len(ds.splits.get(split, []))
        report.counts[split] = {"found": found, "expected": expected.get(split)}
        if split in expected and found != expected[split]:
            report.add("split_count", f"{split}: {found} images, expected {expected[split]}")

    if info.has_masks and not any(ds.has_masks(s) for s in splits):
        msg = f"no ground-truth masks found ({ds.notes.get('masks', 'mask folder missing')})"
        (report.add if info.masks_required else report.warn)("no_masks", msg)

    samples = [s for split in splits for s in ds.splits[split]]
    _inspect(samples, report, decode=decode, workers=workers, log=log)
    report.seconds = time.monotonic() - t0
    return report


# --------------------------------------------------------------------------- per-file work


def _inspect(samples: list[Sample], report: CheckReport, *, decode: bool, workers: int | None,
             log: Callable[[str], None] | None) -> None:
    from PIL import ImageFile

    workers = workers or min(8, (os.cpu_count() or 2))
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated files must fail here
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            last = time.monotonic()
            for i, found in enumerate(pool.map(lambda s: _inspect_one(s, decode), samples,
                                               chunksize=64), start=1):
                for cat, msg in found:
                    if cat == "_image":
                        report.checked_images += 1
                    elif cat == "_mask":
                        report.checked_masks += 1
                    else:
                        report.add(cat, msg)
                if log is not None and time.monotonic() - last > 10:
                    last = time.monotonic()
                    log(f"  checked {i}/{len(samples)} images")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _open(path: Path, decode: bool) -> tuple[int, int]:
    """Return (width, height); with ``decode``, decode the whole file (raises if damaged)."""
    from PIL import Image

    with Image.open(path) as im:
        size = im.size
        if decode:
            if im.format == "JPEG":
                im.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
    return size


def _inspect_one(s: Sample, decode: bool) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    size: tuple[int, int] | None = None
    for box in s.boxes:
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            out.append(("box_inverted", f"{s.id}: box {_fmt(box)} is inverted or empty"))
    if not s.path.is_file():
        out.append(("missing_image", f"{s.id}: image file {s.path} is missing"))
    else:
        try:
            size = _open(s.path, decode)
            out.append(("_image", ""))
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
            out.append(("unreadable_image", f"{s.id}: {s.path} cannot be decoded "
                                            f"({_why(exc)})"))
    if size is not None:
        w, h = size
        for box in s.boxes:
            x0, y0, x1, y1 = box
            if x0 < 0 or y0 < 0 or x1 > w + BOX_TOLERANCE or y1 > h + BOX_TOLERANCE:
                out.append(("box_outside_image",
                            f"{s.id}: box {_fmt(box)} lies outside the {w}x{h} image"))
    for mp in (*s.mask_paths, *((s.ignore_path,) if s.ignore_path else ())):
        if not Path(mp).is_file():
            out.append(("missing_mask", f"{s.id}: mask file {mp} is missing"))
            continue
        try:
            msize = _open(Path(mp), decode)
            out.append(("_mask", ""))
        except Exception as exc:
            out.append(("unreadable_mask", f"{s.id}: mask {mp} cannot be decoded ({_why(exc)})"))
            continue
        if size is not None and msize != size:
            out.append(("mask_size_mismatch", f"{s.id}: mask {mp} is {msize[0]}x{msize[1]}, "
                                              f"the image {size[0]}x{size[1]}"))
    return out


def _fmt(box: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def _why(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def write_json(report: CheckReport, path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
