"""Training images per second of f, g of ours1 and g of ours2, next to their ceiling.

For each network two runs go through the SAME code: ``wsolbench.train.loop.train_epochs``
with the method's own ``train_step`` (``Classifier`` + cross-entropy for f,
``MethodI._train_step``/``MethodII._train_step`` for g), the same optimizer and the same
settings (bf16 autocast and channels_last on CUDA, optional ``torch.compile``):

* pipeline: batches from the real data path, ``BatchSource`` over a uint8 split (on the
  GPU on CUDA, as ``run.data_on_device``), random crop + flip; ours2 draws its triplets
  with ``TripletSampler`` and fetches positives and negatives per step, as in a run;
* ceiling: batches of random tensors already on the device (no data pipeline at all).

``pipeline / ceiling`` is the share of the networks' own speed that the whole training
path keeps (target: >= 80%). Images per second count the training samples of a step
(the anchors for ours2, whose g also sees a positive and a negative per anchor). The
first ``--warmup`` steps of each run are not timed; the clock stops after the last
optimizer step (with a device synchronisation), before the epoch's checkpoint.

    python benchmarks/bench_train.py --quick                  # CPU smoke run, small sizes
    python benchmarks/bench_train.py                          # CPU, 64 px
    python benchmarks/bench_train.py --device cuda            # the paper's sizes: 224 px,
                                                              # f batch 16, g batch 128
    python benchmarks/bench_train.py --device cuda --compile
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsolbench.data.pipeline import Batch, BatchSource  # noqa: E402
from wsolbench.methods.base import DistInfo, FitContext  # noqa: E402
from wsolbench.methods.ours import MethodI, MethodII  # noqa: E402
from wsolbench.models.classifier import Classifier, Embedding, freeze  # noqa: E402
from wsolbench.models.unet import UNet  # noqa: E402
from wsolbench.train.loop import train_epochs  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wraps an epoch's batches: starts after ``warmup`` batches, stops when the loop asks
    for the batch after the last one (i.e. after the last optimizer step)."""

    def __init__(self, device: torch.device, warmup: int):
        self.device, self.warmup = device, warmup
        self.seconds, self.steps = 0.0, 0

    def wrap(self, batches: Iterable[Any]) -> Iterable[Any]:
        t0 = None
        n = 0
        for i, b in enumerate(batches):
            if i == self.warmup:
                sync(self.device)
                t0 = time.perf_counter()
            if i >= self.warmup:
                n += 1
            yield b
        sync(self.device)
        if t0 is not None:
            self.seconds, self.steps = time.perf_counter() - t0, n


def random_batch(b: int, size: int, classes: int, device: torch.device, channels_last: bool) -> Batch:
    x = torch.randn(b, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return Batch(x, torch.randint(0, classes, (b,), device=device), np.arange(b))


def make_source(n: int, resize: int, crop: int, classes: int, device: torch.device,
                channels_last: bool) -> BatchSource:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, resize, resize, 3), dtype=np.uint8)
    return BatchSource(images, [i % classes for i in range(n)], [str(i) for i in range(n)],
                       (crop, crop), device, seed=0, on_device=device.type == "cuda",
                       channels_last=channels_last, name="benchmark train")


def build(net: str, args, device: torch.device, src: BatchSource, workdir: Path):
    """(modules, optimizer, train_step, pipeline batches(epoch), ceiling batch maker, batch)."""
    cl, amp = args.channels_last, args.amp

    def to_dev(m):
        m = m.to(device)
        return m.to(memory_format=torch.channels_last) if cl else m

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")

    if net == "f":
        bs = args.batch_f
        model = to_dev(Classifier(args.backbone, args.classes))
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

        def step(batch, nets):
            with autocast():
                return F.cross_entropy(nets["f"](batch.images), batch.labels)

        return ({"f": model}, opt, step, lambda e: src.epoch(e, bs),
                lambda: random_batch(bs, args.size, args.classes, device, cl), bs)

    bs = args.batch_g
    f = freeze(to_dev(Classifier(args.backbone, args.classes)))
    method = (MethodI if net == "ours1" else MethodII)(batch_size=bs)
    ctx = FitContext(method=net, dataset="benchmark", num_classes=args.classes, train=src, val=src,
                     val_boxes=None, device=device, options=method.opts, seed=0, workdir=workdir,
                     model_config={"backbone": args.backbone, "pretrained": False},
                     get_classifier=lambda: f, shared=None, dist=DistInfo(), amp=amp,
                     channels_last=cl, compile=args.compile, progress=False)
    method.bind(ctx)
    if net == "ours2":
        method.embedding = freeze(to_dev(Embedding(args.backbone, dim=int(method.opts["embed_dim"]))))
    g = to_dev(UNet(args.backbone))
    opt = torch.optim.SGD(g.parameters(), lr=1e-4, momentum=0.9)
    step = method._train_step(ctx)
    batches = method._batches(ctx)
    if net == "ours1":
        ceiling = lambda: random_batch(bs, args.size, args.classes, device, cl)  # noqa: E731
    else:
        ceiling = lambda: tuple(random_batch(bs, args.size, args.classes, device, cl)  # noqa: E731
                                for _ in range(3))
    return {"g": g}, opt, step, batches, ceiling, bs


def measure(modules, opt, step, batches: Callable[[int], Iterable[Any]], args, device,
            workdir: Path) -> tuple[float, float]:
    """(images per second, seconds per step) of ``args.steps`` steps through train_epochs."""
    clock = Clock(device, args.warmup)
    limit = args.warmup + args.steps

    def limited(epoch):
        for i, b in enumerate(batches(epoch)):
            if i >= limit:
                break
            yield b

    train_epochs(name="bench", workdir=workdir, modules=modules, optimizer=opt, scheduler=None,
                 epochs=1, batches=lambda e: clock.wrap(limited(e)), train_step=step,
                 device=device, compile=args.compile, progress=False)
    if clock.steps < args.steps:
        raise RuntimeError(f"only {clock.steps} timed steps (need more images)")
    per_step = clock.seconds / clock.steps
    return args.bs / per_step, per_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--nets", default="f,ours1,ours2")
    ap.add_argument("--size", type=int, help="crop size (default: 224 on CUDA, 64 on CPU)")
    ap.add_argument("--resize", type=int, help="resize before the crop (default: size * 256/224)")
    ap.add_argument("--batch-f", type=int, help="batch of f (default: 16, the paper's)")
    ap.add_argument("--batch-g", type=int, help="batch of g (default: 128 on CUDA, the paper's; 16 on CPU)")
    ap.add_argument("--steps", type=int, help="timed steps per run (default: 30 CUDA, 6 CPU)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default: 10 CUDA, 2 CPU)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating ceiling/pipeline runs; best of each")
    ap.add_argument("--classes", type=int, default=200, help="classes of f (CUB: 200)")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--no-amp", dest="amp", action="store_false", help="no bf16 autocast on CUDA")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--compile", action="store_true", help="torch.compile the trained network")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 32 px, batch 4, 2 steps")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.size, args.batch_f, args.batch_g, args.steps, args.warmup, args.rounds = 32, 4, 4, 2, 1, 1
    args.size = args.size or (224 if cuda else 64)
    args.resize = args.resize or round(args.size * 256 / 224)
    args.batch_f = args.batch_f or 16
    args.batch_g = args.batch_g or (128 if cuda else 16)
    args.steps = args.steps or (30 if cuda else 6)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.channels_last = args.channels_last and cuda
    args.amp = args.amp and cuda
    if cuda:
        torch.backends.cudnn.benchmark = True

    gpu = torch.cuda.get_device_name(device) if cuda else "-"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}, device {device} ({gpu})")
    print(f"crop {args.size} (resize {args.resize}), backbone {args.backbone}, {args.classes} classes, "
          f"bf16 autocast {args.amp}, channels_last {args.channels_last}, compile {args.compile}, "
          f"{args.steps} timed steps after {args.warmup} warm-up steps, best of {args.rounds} "
          "alternating rounds")
    print(f"{'network':34s} {'batch':>5s} {'pipeline img/s':>15s} {'ceiling img/s':>14s} "
          f"{'pipeline/ceiling':>17s} {'peak GPU GB':>12s}")
    worst = None
    for net in [n.strip() for n in args.nets.split(",") if n.strip()]:
        bs = args.batch_f if net == "f" else args.batch_g
        args.bs = bs
        n_images = bs * (args.warmup + args.steps + 1)
        src = make_source(n_images, args.resize, args.size, args.classes, device, args.channels_last)
        rates: dict[str, float] = {"ceiling": 0.0, "pipeline": 0.0}
        with tempfile.TemporaryDirectory(prefix="wsolbench-bench-train-") as tmp:
            torch.manual_seed(0)
            modules, opt, step, batches, ceiling, _ = build(net, args, device, src, Path(tmp))
            fixed = [ceiling() for _ in range(2)]  # two resident random batches, alternated
            feeds = {"ceiling": lambda e: (fixed[i % 2] for i in range(args.warmup + args.steps + 1)),
                     "pipeline": batches}
            # ceiling and pipeline alternate, --rounds times each (the first ceiling run
            # also warms up cuDNN's autotuning); each keeps its best round, which filters
            # out other load on the machine
            for r in range(args.rounds):
                for kind in ("ceiling", "pipeline"):
                    if cuda and kind == "pipeline":
                        torch.cuda.reset_peak_memory_stats(device)
                    rate, _ = measure(modules, opt, step, feeds[kind], args, device,
                                      Path(tmp) / f"{kind}-{r}")
                    rates[kind] = max(rates[kind], rate)
                    if cuda and kind == "pipeline":
                        rates["peak"] = torch.cuda.max_memory_allocated(device) / 2**30
            del modules, opt, step, fixed
            if cuda:
                torch.cuda.empty_cache()
        ceiling_rate = rates["ceiling"]
        share = rates["pipeline"] / ceiling_rate
        worst = share if worst is None else min(worst, share)
        label = {"f": "f (classifier)", "ours1": "g of ours1 (method I)",
                 "ours2": "g of ours2 (method II, triplets)"}.get(net, net)
        peak = f"{rates['peak']:.1f}" if "peak" in rates else "-"
        print(f"{label:34s} {bs:5d} {rates['pipeline']:15.1f} {ceiling_rate:14.1f} "
              f"{share:16.0%} {peak:>12s}")
    print(f"lowest pipeline/ceiling: {worst:.0%} (target >= 80%)")


if __name__ == "__main__":
    main()
