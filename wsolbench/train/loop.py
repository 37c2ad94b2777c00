"""The one epoch loop every trained network goes through.

It owns what must be done the same way for f, f' and every g: per-epoch checkpoints
(weights, optimizer, scheduler, RNG states, history) written atomically, resuming from
the last complete epoch, keeping the best epoch by a selection metric computed on
validation data, DistributedDataParallel wrapping, and stopping on a NaN loss with the
last good checkpoint kept. The loss is accumulated on the device and read once per
epoch, so a step never waits for the host.

All data randomness of an epoch must come from ``BatchSource.epoch_generator(epoch)``
(or ``BatchSource.epoch``) so a resumed epoch replays exactly.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from wsolbench.errors import TrainingDiverged
from wsolbench.methods.base import DistInfo
from wsolbench.train.checkpoint import atomic_torch_save, load_checkpoint, rng_state, set_rng_state
from wsolbench.train.distributed import all_reduce_sum, broadcast_buffers


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None  # 1-based
    best_state: dict[str, Any] | None = None  # module state dicts at the best epoch
    resumed_from: int | None = None


def _wrap(modules: Mapping[str, nn.Module], dist: DistInfo, device: torch.device,
          compile_: bool) -> dict[str, nn.Module]:
    out = {}
    for k, m in modules.items():
        trainable = any(p.requires_grad for p in m.parameters())
        if dist.enabled and trainable:
            from torch.nn.parallel import DistributedDataParallel as DDP

            m = DDP(m, device_ids=[device.index] if device.type == "cuda" else None)
        if compile_ and trainable:
            m = torch.compile(m)
        out[k] = m
    return out


def _batch_len(batch: Any) -> int | None:
    """Images in a training batch (a Batch, or a tuple of Batches such as triplets)."""
    labels = getattr(batch, "labels", None)
    if labels is None and isinstance(batch, (tuple, list)) and batch:
        labels = getattr(batch[0], "labels", None)
    return len(labels) if labels is not None else None


def _states(modules: Mapping[str, nn.Module]) -> dict[str, Any]:
    return {k: copy.deepcopy({n: t.detach().cpu() for n, t in m.state_dict().items()})
            for k, m in modules.items()}


def train_epochs(*, name: str, workdir: Path, modules: Mapping[str, nn.Module],
                 optimizer: torch.optim.Optimizer, scheduler: Any, epochs: int,
                 batches: Callable[[int], Iterable[Any]],
                 train_step: Callable[[Any, dict[str, nn.Module]], torch.Tensor],
                 after_epoch: Callable[[int], dict[str, float]] | None = None,
                 select: str | None = None, device: torch.device = torch.device("cpu"),
                 dist: DistInfo | None = None, compile: bool = False, progress: bool = True,
                 steps_per_epoch: int | None = None) -> TrainResult:
    """Train ``modules`` for ``epochs`` epochs (1-based in history), resumable.

    ``train_step(batch, nets)`` returns the batch's mean loss (a 0-d tensor); the loop does
    zero_grad/backward/step. ``after_epoch(epoch)`` returns metrics such as the S score;
    with ``select``, the epoch maximising that metric is kept as the best state.
    Checkpoints: ``workdir/last.pt`` after every epoch, ``workdir/best.pt`` on improvement.
    """
    dist = dist or DistInfo()
    workdir = Path(workdir)
    last_path, best_path = workdir / "last.pt", workdir / "best.pt"
    result = TrainResult()
    start = 1
    best_value = -math.inf
    if last_path.exists():
        ckpt = load_checkpoint(last_path)
        for k, m in modules.items():
            m.load_state_dict(ckpt["modules"][k])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        result.history = ckpt["history"]
        result.best_epoch = ckpt.get("best_epoch")
        best_value = ckpt.get("best_value", -math.inf)
        start = ckpt["epoch"] + 1
        result.resumed_from = ckpt["epoch"]
        if dist.is_main and start <= epochs:
            logging.getLogger("wsolbench").info("%s: resuming after epoch %d of %d (%s)", name,
                                                ckpt["epoch"], epochs, last_path)
        # last.pt is written before best.pt: a kill between the two leaves best.pt one
        # improvement behind, and then the best epoch is last.pt's own epoch.
        best = load_checkpoint(best_path) if best_path.exists() else None
        if best is not None and best.get("epoch") == result.best_epoch:
            result.best_state = best["modules"]
        elif result.best_epoch is not None and result.best_epoch == ckpt["epoch"]:
            result.best_state = ckpt["modules"]
            if dist.is_main:
                atomic_torch_save({"epoch": ckpt["epoch"], "modules": ckpt["modules"]}, best_path)
    nets = _wrap(modules, dist, device, compile)
    warned_single = False
    show = progress and dist.is_main and sys.stderr.isatty()
    for epoch in range(start, epochs + 1):
        for m in nets.values():
            if any(p.requires_grad for p in m.parameters()):
                m.train()
        total = torch.zeros((), device=device)
        steps = 0
        it = batches(epoch)
        # BatchNorm cannot train on one sample: a split of k * batch_size + 1 images would crash
        has_bn = any(isinstance(x, nn.modules.batchnorm._BatchNorm) and x.training
                     for m in nets.values() for x in m.modules())
        if show:
            from tqdm import tqdm

            it = tqdm(it, total=steps_per_epoch, desc=f"{name} epoch {epoch}/{epochs}",
                      leave=False, dynamic_ncols=True)
        for batch in it:
            if has_bn and _batch_len(batch) == 1:
                if not warned_single:
                    logging.getLogger("wsolbench").warning(
                        "%s: a training batch holds a single image (the split size is one more than "
                        "a multiple of the batch size); such batches are skipped", name)
                    warned_single = True
                continue
            loss = train_step(batch, nets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach().float()
            steps += 1
        if scheduler is not None:
            scheduler.step()
        stats = torch.stack([total, torch.tensor(float(steps), device=device)])
        all_reduce_sum(stats, dist)
        # DDP syncs BatchNorm running stats from rank 0 at the START of each forward, so after
        # the last step every rank holds its own; use rank 0's (the saved ones) for validation
        broadcast_buffers(modules, dist)
        mean_loss = (stats[0] / stats[1].clamp(min=1)).item()
        if not math.isfinite(mean_loss):
            kept = (f"the last good checkpoint (epoch {epoch - 1}) is kept at {last_path}" if epoch > 1
                    else "no checkpoint is kept (it diverged in its first epoch)")
            raise TrainingDiverged(
                f"{name}: the training loss became {mean_loss} in epoch {epoch}; training stopped and "
                f"{kept}; lower the learning rate")
        for m in modules.values():
            m.eval()
        record: dict[str, Any] = {"epoch": epoch, "loss": mean_loss,
                                  "lr": optimizer.param_groups[0]["lr"]}
        if after_epoch is not None:
            record.update(after_epoch(epoch))
        result.history.append(record)
        improved = select is not None and record.get(select, -math.inf) > best_value
        if improved:
            best_value = record[select]
            result.best_epoch = epoch
            result.best_state = _states(modules)
        if dist.is_main:
            atomic_torch_save({
                "epoch": epoch, "modules": _states(modules), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(), "history": result.history, "best_epoch": result.best_epoch,
                "best_value": best_value,
            }, last_path)
            if improved:  # after last.pt: see the resume branch above
                atomic_torch_save({"epoch": epoch, "modules": result.best_state}, best_path)
    if select is None:
        result.best_epoch = epochs
        result.best_state = _states(modules)
    return result
