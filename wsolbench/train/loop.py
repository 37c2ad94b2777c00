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
from wsolbench.train.distributed import all_reduce_sum


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
        if best_path.exists():
            result.best_state = load_checkpoint(best_path)["modules"]
    nets = _wrap(modules, dist, device, compile)
    show = progress and dist.is_main and sys.stderr.isatty()
    for epoch in range(start, epochs + 1):
        for m in nets.values():
            if any(p.requires_grad for p in m.parameters()):
                m.train()
        total = torch.zeros((), device=device)
        steps = 0
        it = batches(epoch)
        if show:
            from tqdm import tqdm

            it = tqdm(it, total=steps_per_epoch, desc=f"{name} epoch {epoch}/{epochs}",
                      leave=False, dynamic_ncols=True)
        for batch in it:
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
        mean_loss = (stats[0] / stats[1].clamp(min=1)).item()
        if not math.isfinite(mean_loss):
            kept = f"epoch {epoch - 1} at {last_path}" if epoch > 1 else "none (it diverged in epoch 1)"
            raise TrainingDiverged(
                f"{name}: the training loss became {mean_loss} in epoch {epoch}; last good "
                f"checkpoint: {kept}; lower the learning rate (--set ...lr=) and resume with --resume")
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
            if improved:
                atomic_torch_save({"epoch": epoch, "modules": result.best_state}, best_path)
            atomic_torch_save({
                "epoch": epoch, "modules": _states(modules), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(), "history": result.history, "best_epoch": result.best_epoch,
                "best_value": best_value,
            }, last_path)
    if select is None:
        result.best_epoch = epochs
        result.best_state = _states(modules)
    return result
