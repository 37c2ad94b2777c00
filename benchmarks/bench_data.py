"""Training samples per second: the uint8 cache pipeline vs decoding the JPEG files.

Both pipelines produce the same thing -- normalized float batches of random 224x224 crops
(with random horizontal flips) of images resized to 256x256, on the training device --
and are measured side by side in one process on the same files:

* cache: ``wsolbench.data.pipeline.BatchSource`` over the uint8 cache (decoded and resized
  once by ``wsolbench.data.cache.build_image_cache``); crop, flip and normalization are
  tensor operations (on CUDA the split lives on the GPU);
* jpeg: the usual torchvision pipeline: PIL decode -> Resize((256, 256)) -> RandomCrop(224)
  -> RandomHorizontalFlip -> ToTensor -> Normalize, in a DataLoader with one worker per
  CPU core (pinned memory and non-blocking copies on CUDA).

The first epoch of each is a warm-up (DataLoader workers start, pages come into the page
cache) and is not counted. The one-off cache build is reported separately.

    python benchmarks/bench_data.py                      # CPU, paper sizes, 512 images
    python benchmarks/bench_data.py --quick              # a smoke run (seconds)
    python benchmarks/bench_data.py --device cuda --images 2048
    python benchmarks/bench_data.py --root data/CUB_200_2011/images   # real JPEGs

Target (issue 6): cache >= 10x jpeg on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsolbench.data.cache import build_image_cache  # noqa: E402
from wsolbench.data.pipeline import IMAGENET_MEAN, IMAGENET_STD, BatchSource  # noqa: E402
from wsolbench.data.sample import Sample  # noqa: E402


def make_jpegs(out: Path, n: int, wh: tuple[int, int], seed: int = 0) -> list[Path]:
    """``n`` JPEGs of natural-ish content (smooth colour fields, shapes, fine texture), q=90."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = wh
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        low = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
        img = Image.fromarray(low).resize((w, h), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
            x1, y1 = x0 + rng.integers(10, w // 2), y0 + rng.integers(10, h // 2)
            draw.ellipse([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        arr = np.asarray(img).astype(np.int16) + rng.normal(0, 12, (h, w, 1)).astype(np.int16)
        p = out / f"{i:05d}.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


class JpegDataset(torch.utils.data.Dataset):
    def __init__(self, paths, labels, resize: int, crop: int):
        from torchvision import transforms as T

        self.paths, self.labels = paths, labels
        self.tf = T.Compose([T.Resize((resize, resize)), T.RandomCrop(crop), T.RandomHorizontalFlip(),
                             T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            return self.tf(img.convert("RGB")), self.labels[i]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_epoch(make_iter, epoch: int, device, sink: torch.Tensor) -> tuple[float, int]:
    """Seconds and samples of one epoch (ends with a device synchronisation)."""
    n = 0
    sync(device)
    t0 = time.perf_counter()
    for images, labels in make_iter(epoch):
        sink += images[:, 0, 0, 0].sum()  # touch the batch on the device (no host sync)
        n += images.shape[0]
    sync(device)
    return time.perf_counter() - t0, n


def time_side_by_side(pipelines: dict, epochs: int, device) -> dict[str, tuple[float, int]]:
    """Epoch 1 of every pipeline is a warm-up; then the pipelines alternate epoch by epoch,
    so a change in machine load during the run hits all of them alike."""
    sink = torch.zeros((), device=device)
    totals = {k: [0.0, 0] for k in pipelines}
    for e in range(1, epochs + 1):
        for name, make_iter in pipelines.items():
            s, n = run_epoch(make_iter, e, device, sink)
            if e >= 2:
                totals[name][0] += s
                totals[name][1] += n
    return {k: (v[0], v[1]) for k, v in totals.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--images", type=int, default=512, help="number of JPEG files (generated)")
    ap.add_argument("--jpeg-size", default="500x375", help="WxH of the generated JPEGs (CUB is ~500x375)")
    ap.add_argument("--root", type=Path, help="use the *.jpg files under this folder instead")
    ap.add_argument("--resize", type=int, default=256)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--batch", type=int, default=128, help="batch size (paper: 128 for g, 16 for f)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per pipeline; the first is warm-up")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers (jpeg)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: 64 images, 2 epochs")
    args = ap.parse_args()
    if args.quick:
        args.images, args.epochs = 64, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    w, h = (int(v) for v in args.jpeg_size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="wsolbench-bench-data-") as tmp:
        tmp = Path(tmp)
        if args.root:
            paths = sorted(args.root.rglob("*.jpg"))[: args.images]
            source = f"{len(paths)} JPEGs under {args.root}"
        else:
            t = time.perf_counter()
            paths = make_jpegs(tmp / "jpeg", args.images, (w, h))
            source = f"{len(paths)} generated JPEGs {w}x{h} q90 ({time.perf_counter() - t:.1f} s to write)"
        labels = [i % 10 for i in range(len(paths))]
        samples = [Sample(id=p.name, path=p, label=l) for p, l in zip(paths, labels)]

        t = time.perf_counter()
        decoded = build_image_cache(samples, (args.resize, args.resize), tmp / "cache")
        build_s = time.perf_counter() - t

        src = BatchSource(decoded.images, labels, [s.id for s in samples], (args.crop, args.crop),
                          device, seed=0, on_device=device.type == "cuda",
                          channels_last=device.type == "cuda")
        ds = JpegDataset(paths, labels, args.resize, args.crop)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
            pin_memory=device.type == "cuda", persistent_workers=args.workers > 0, drop_last=False)

        def jpeg_iter(e):
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

        timed = time_side_by_side({
            "cache": lambda e: ((b.images, b.labels) for b in src.epoch(e, args.batch)),
            "jpeg": jpeg_iter}, args.epochs, device)
        (cache_s, cache_n), (jpeg_s, jpeg_n) = timed["cache"], timed["jpeg"]

    cache_rate, jpeg_rate = cache_n / cache_s, jpeg_n / jpeg_s
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, device {device} ({gpu})")
    print(f"source: {source}; resize {args.resize}x{args.resize}, random crop {args.crop} + h-flip, "
          f"batch {args.batch}, {args.epochs - 1} timed epoch(s) after 1 warm-up")
    print(f"cache build (one-off): {build_s:.2f} s = {len(paths) / build_s:.0f} images/s "
          f"-> {decoded.images.nbytes / 1e6:.0f} MB uint8")
    print(f"cache pipeline ({src.placement}): {cache_rate:10.0f} samples/s")
    print(f"jpeg pipeline ({args.workers} workers): {jpeg_rate:10.0f} samples/s")
    print(f"ratio cache/jpeg: {cache_rate / jpeg_rate:.1f}x  (target >= 10x on a 2-core CPU)")


if __name__ == "__main__":
    main()
