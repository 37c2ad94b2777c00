"""The plug-in contract for WSOL methods.

A method is one class with ``fit(ctx)`` and ``localize(images, labels)``; the harness
owns data, the shared classifier f, post-processing, evaluation and tables::

    class MyMethod(WSOLMethod):
        options = {"epochs": 5, "lr": 1e-3}   # its table in benchmark.toml: [methods.mine]

        def fit(self, ctx):                   # train on ctx.train, select on ctx.val
            ...

        def localize(self, images, labels):   # images [B,3,H,W] normalized, labels [B]
            return maps                       # [B,h,w], any h,w; or LocalizeOutput

Register it through the ``wsolbench.methods`` entry-point group (see README).

Maps are raw scores unless ``map_range = "unit"`` says they are already in [0, 1] (e.g. a
sigmoid output). The harness resizes every map to the input size, rejects NaN/Inf with
the method's name and the image id, and min-max normalizes ``"raw"`` maps per image.
``labels`` are the ground-truth classes: for Top-1 loc the class must also be predicted
right, and then the predicted and true class coincide, so one map per image suffices.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn


@dataclass
class LocalizeOutput:
    maps: torch.Tensor  # [B, h, w]
    logits: torch.Tensor | None = None  # [B, num_classes] when the method classifies


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@dataclass
class FitContext:
    """What the harness hands to ``fit``. Methods never touch test data."""

    method: str  # the method's label in this run (e.g. "ours2[inner=false]")
    dataset: str
    num_classes: int
    train: Any  # wsolbench.data.pipeline.BatchSource over the training images
    val: Any  # BatchSource over the validation images (early stopping, selection)
    val_boxes: list[Any] | None  # per val image: int array (k,4) in the crop frame, or None
    device: torch.device
    options: dict[str, Any]
    seed: int
    workdir: Path  # this method's folder in the run: checkpoints, logs
    model_config: dict[str, Any]  # backbone, pretrained, ... for the method's own networks
    get_classifier: Callable[[], nn.Module]  # the shared f: frozen, eval mode, on device
    shared: Callable[..., Any]  # shared(kind, build) -> build(workdir) memoized: trained once per run
    dist: DistInfo = field(default_factory=DistInfo)
    amp: bool = False  # bf16 autocast on CUDA
    channels_last: bool = False
    compile: bool = False
    progress: bool = True
    diagnostics: dict[str, Any] = field(default_factory=dict)  # goes to results.json

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def log(self, key: str, value: Any) -> None:
        """Record a diagnostic (e.g. the S score per epoch) under this method."""
        self.diagnostics[key] = value


class WSOLMethod(abc.ABC):
    """Base class of every WSOL method (built-in, baseline or plug-in)."""

    options: ClassVar[dict[str, Any]] = {}
    uses_classifier: ClassVar[bool] = True  # harness trains/loads f before fit
    map_range: ClassVar[str] = "raw"  # "raw" (min-max normalized by the harness) or "unit"
    description: ClassVar[str] = ""

    def __init__(self, **options: Any):
        self.opts = {**self.options, **options}
        self.device = torch.device("cpu")
        self.selection: dict[str, Any] | None = None  # what fit selected, for results.json

    def fit(self, ctx: FitContext) -> None:  # noqa: B027 - optional hook
        """Train what the method needs. Default: nothing to train."""

    @abc.abstractmethod
    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | LocalizeOutput:
        """Return score maps [B, h, w] (and optionally logits) for normalized images."""

    def bind(self, ctx: FitContext) -> None:
        """Called before ``fit`` and before ``localize`` when resuming; keep what you need."""
        self.device = ctx.device

    def state_dict(self) -> dict[str, Any]:
        """What ``localize`` needs after ``fit`` (saved so that a resumed run skips fit)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore what :meth:`state_dict` returned."""


