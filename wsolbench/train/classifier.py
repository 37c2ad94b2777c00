"""Training the shared classifier f with the configured schedule (paper: SGD, batch 16,
lr 0.001, weight decay 1e-4, lr x0.1 every 80 epochs, 200 epochs; random crop + flip).

The kept epoch is the one with the best validation top-1 accuracy (validation data only),
or the last epoch with ``classifier.select = "last"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from wsolbench.models.classifier import Classifier
from wsolbench.train.distributed import all_reduce_sum
from wsolbench.train.loop import train_epochs


def accuracy(model: torch.nn.Module, source: Any, batch_size: int, dist, autocast) -> float:
    """Top-1 accuracy (percent) of ``model`` on an evaluation BatchSource, all ranks pooled."""
    model.eval()
    hits = torch.zeros(2, dtype=torch.float64, device=source.device)
    with torch.no_grad():
        for batch in source.iterate(batch_size):
            with autocast():
                logits = model(batch.images)
            hits[0] += (logits.argmax(1) == batch.labels).sum()
            hits[1] += len(batch.labels)
    all_reduce_sum(hits, dist)
    return float(100.0 * hits[0] / hits[1].clamp(min=1))


def train_classifier(runner: Any, workdir: Path) -> Classifier:
    cfg = runner.cfg
    c = cfg["classifier"]
    device, dist = runner.device, runner.dist
    model = Classifier(cfg["model"]["backbone"], runner.dataset.num_classes,
                       pretrained=cfg["model"]["pretrained"]).to(device)
    if cfg["run"]["channels_last"] and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    train, val = runner.split("train").source, runner.split("val").source
    opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"],
                          weight_decay=c["weight_decay"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, c["lr_step"]), gamma=c["lr_gamma"])
    amp = bool(cfg["run"]["amp"]) and device.type == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp)

    def step(batch, nets):
        with autocast():
            return F.cross_entropy(nets["f"](batch.images), batch.labels)

    bs = int(c["batch_size"])
    eval_bs = int(cfg["run"]["eval_batch_size"])
    select = "val_acc" if c["select"] == "val_acc" else None
    result = train_epochs(
        name="classifier f", workdir=workdir, modules={"f": model}, optimizer=opt, scheduler=sched,
        epochs=int(c["epochs"]), batches=lambda e: train.epoch(e, bs), train_step=step,
        after_epoch=lambda e: {"val_acc": accuracy(model, val, eval_bs, dist, autocast)},
        select=select, device=device, dist=dist, compile=bool(cfg["run"]["compile"]),
        steps_per_epoch=train.steps_per_epoch(bs))
    model.load_state_dict(result.best_state["f"])
    best = result.history[result.best_epoch - 1] if result.history else {}
    runner.results.setdefault("classifier", {})["selection"] = {
        "criterion": "best top-1 accuracy on the validation split" if select else "last epoch",
        "split": "val", "selected_epoch": result.best_epoch, "val_acc": best.get("val_acc"),
        "history": result.history}
    return model
