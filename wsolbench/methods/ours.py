"""The weight-map methods of Shaharabany & Wolf, "Learning a Weight Map for Weakly-Supervised
Localization": method I (``ours1``, classifier consistency) and method II (``ours2``,
Siamese triplets). Both train a U-Net g (:class:`wsolbench.models.unet.UNet`) that outputs a
per-pixel weight map M = g(I) in [0, 1] and pick the epoch of g by the S score (eq. 6).

Losses (formula -> code in :mod:`wsolbench.methods.ours_losses`):

* method I, eq. 1: ``D(f(I), f(I * g(I))) + lambda * R(g(I))`` with D the cross-entropy
  against f's softmax on I (soft target, no gradient) and R the mean of |M| over pixels.
  f is the shared classifier, frozen: no parameter or buffer of f changes, gradients flow
  through f into the weighted image and on to g.
* method II: f' (backbone -> GAP -> Linear(., 200)) is first trained with the triplet loss
  of eq. 2 (Euclidean distance, margin 1), then frozen; g minimises
  ``L_inner (eq. 3) + L_outer (eq. 4) + lambda * R(M_a)`` with ``J^f = M * I`` and
  ``J^b = (1 - M) * I``. Switches ``inner``/``outer``/``reg`` give the paper's Table 6.

Where the weighting happens (option ``weighting``): ``"normalized"`` (default) multiplies
the ImageNet-normalized tensor the data pipeline serves, so weight 0 gives the mean colour
(a "neutral" input for f); ``"pixels"`` un-normalizes to [0, 1] pixels, multiplies and
normalizes again, so weight 0 gives black. The paper writes ``I * g(I)`` without saying
which; its released code is not available to us.

Early stopping (both methods): after every epoch of g the mean S of eq. 6 over the
validation images (the evaluator's :func:`wsolbench.evaluation.s_scores`, all-reduced over
ranks) is recorded; the checkpoint with the largest mean S is kept (``select="s_score"``)
and used by :meth:`localize`. The validation GT-known loc per epoch is logged as a
diagnostic only (it uses validation boxes); it never selects anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from wsolbench.errors import UserError
from wsolbench.methods.base import FitContext, LocalizeOutput, WSOLMethod
from wsolbench.methods.ours_losses import (
    WEIGHTINGS,
    apply_weight,
    consistency_loss,
    inner_loss,
    l1_reg,
    outer_loss,
    triplet,
)
from wsolbench.models.classifier import Embedding, freeze
from wsolbench.models.unet import UNet
from wsolbench.train.distributed import all_reduce_sum
from wsolbench.train.loop import train_epochs

SELECTS = ("s_score", "last")
# Per-epoch map snapshots for the Fig. 4-style figure (diagnostics.epoch_maps): g's maps of
# a few fixed validation images (the first image of each class), area-downsampled.
EPOCH_MAP_IMAGES = 4
EPOCH_MAP_SIZE = 24
EPOCH_MAP_EPOCHS = 12  # epochs kept in results.json: evenly spread + the selected one
S_CRITERION = ("max mean S over validation images (paper eq. 6) among epochs whose maps are not "
               "degenerate (mean tau-box area below degenerate_area of the image)")
# Streams of BatchSource.epoch_generator (stream 1 is the crop/flip of BatchSource.epoch).
TRIPLET_STREAM_G = 2
TRIPLET_STREAM_SIAMESE = 3


# --------------------------------------------------------------------------- sampling
class TripletSampler:
    """Draws, for anchor indices, a positive (same class, another image when the class has
    one) and a negative (any image of another class), uniformly, from a given generator.
    The class grouping is computed once, so a draw costs O(batch) on the host."""

    def __init__(self, labels: np.ndarray):
        labels = np.asarray(labels)
        self.labels = labels
        self.order = np.argsort(labels, kind="stable")  # indices grouped by class
        self.classes, self.starts, self.counts = np.unique(labels[self.order], return_index=True,
                                                           return_counts=True)
        self.rank_in_order = np.empty_like(self.order)
        self.rank_in_order[self.order] = np.arange(len(self.order))
        if len(self.classes) < 2:
            raise UserError("method II needs at least two classes in the training set "
                            "to draw negatives for its triplets")

    def __call__(self, anchors: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        anchors = np.asarray(anchors, dtype=np.int64)
        total = len(self.labels)
        c = np.searchsorted(self.classes, self.labels[anchors])
        start, count = self.starts[c], self.counts[c]
        u = torch.rand(2, len(anchors), generator=generator, dtype=torch.float64).numpy()
        # positive: one of the other (count - 1) images of the class; the anchor if alone
        k = np.minimum((u[0] * np.maximum(count - 1, 1)).astype(np.int64), np.maximum(count - 2, 0))
        own = self.rank_in_order[anchors] - start
        k = np.where(count > 1, k + (k >= own), 0)
        pos = self.order[start + k]
        # negative: one of the (total - count) images outside the class
        m = np.minimum((u[1] * (total - count)).astype(np.int64), total - count - 1)
        neg = self.order[np.where(m < start, m, m + count)]
        return pos, neg


def sample_triplets(labels: np.ndarray, anchors: np.ndarray,
                    generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One-off :class:`TripletSampler` draw: (positive indices, negative indices)."""
    return TripletSampler(labels)(anchors, generator)


def triplet_batches(source: Any, epoch: int, batch_size: int, stream: int,
                    sampler: TripletSampler | None = None) -> Iterator[tuple]:
    """(anchor, positive, negative) Batches of one epoch; positives and negatives get the same
    kind of random crop + flip as anchors, all randomness from the epoch's generators, so a
    resumed epoch replays exactly."""
    sampler = sampler or TripletSampler(source.labels)
    gen = source.epoch_generator(epoch, stream=stream)
    for a in source.epoch(epoch, batch_size):
        pos, neg = sampler(a.index, gen)
        yield (a, source.get(pos, augment=True, generator=gen),
               source.get(neg, augment=True, generator=gen))


# --------------------------------------------------------------------------- base
def _snapshot_positions(val: Any, k: int = EPOCH_MAP_IMAGES) -> list[int]:
    """The first validation image of each class, in split order (at most ``k``)."""
    seen: set[int] = set()
    out: list[int] = []
    for i, c in enumerate(np.asarray(val.labels).tolist()):
        if c not in seen:
            seen.add(c)
            out.append(i)
        if len(out) == k:
            break
    return out


def _spread(epochs: list[int], selected: int | None, k: int) -> list[int]:
    """Positions of at most ``k`` (+1) epochs: evenly spread, first and last, and the selected."""
    n = len(epochs)
    pos = set(range(n)) if n <= k else {int(round(v)) for v in np.linspace(0, n - 1, k)}
    if selected in epochs:
        pos.add(epochs.index(selected))
    return sorted(pos)


class _WeightMapMethod(WSOLMethod):
    """What both methods share: g, its training through train_epochs, S-score selection,
    saving/loading the selected g, and localize (maps = g(I), logits = f(I))."""

    uses_classifier = True
    map_range = "unit"

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.g: UNet | None = None
        self._g_backbone: str | None = None
        self._get_classifier: Callable[[], nn.Module] | None = None
        self._classifier: nn.Module | None = None
        self._autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext

    # ------------------------------------------------------------------ options
    def _check_options(self) -> None:
        o = self.opts
        if o["weighting"] not in WEIGHTINGS:
            raise UserError(f"{type(self).__name__}: option weighting={o['weighting']!r}; "
                            f"use one of {', '.join(WEIGHTINGS)}")
        if o["select"] not in SELECTS:
            raise UserError(f"{type(self).__name__}: option select={o['select']!r}; "
                            f"use one of {', '.join(SELECTS)}")
        for key in ("epochs", "batch_size"):
            if int(o[key]) < 1:
                raise UserError(f"{type(self).__name__}: option {key} must be >= 1, got {o[key]}")

    # ------------------------------------------------------------------ harness hooks
    def bind(self, ctx: FitContext) -> None:
        super().bind(ctx)
        self._get_classifier = ctx.get_classifier
        self._classifier = None
        self._autocast = ctx.autocast

    def _train_step(self, ctx: FitContext) -> Callable[[Any, dict[str, nn.Module]], torch.Tensor]:
        raise NotImplementedError

    def _batches(self, ctx: FitContext) -> Callable[[int], Iterator[Any]]:
        raise NotImplementedError

    def _prepare(self, ctx: FitContext) -> None:
        """Build what the train step needs before g is trained (method II: f')."""

    def fit(self, ctx: FitContext) -> None:
        self.bind(ctx)
        self._check_options()
        o = self.opts
        self._prepare(ctx)
        backbone = ctx.model_config["backbone"]
        g = UNet(backbone, pretrained=ctx.model_config.get("pretrained", False)).to(ctx.device)
        if ctx.channels_last and ctx.device.type == "cuda":
            g = g.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(g.parameters(), lr=float(o["lr"]), momentum=float(o["momentum"]),
                                    weight_decay=float(o["weight_decay"]))
        bs = int(o["batch_size"])
        result = train_epochs(
            name=f"{ctx.method} g", workdir=Path(ctx.workdir) / "g", modules={"g": g},
            optimizer=optimizer, scheduler=None, epochs=int(o["epochs"]),
            batches=self._batches(ctx), train_step=self._train_step(ctx),
            after_epoch=self._after_epoch(ctx, g),
            select="S_eligible" if o["select"] == "s_score" else None,
            device=ctx.device, dist=ctx.dist, compile=ctx.compile, progress=ctx.progress,
            steps_per_epoch=ctx.train.steps_per_epoch(bs))
        history = result.history
        snapshots = [h.pop("_epoch_maps", None) for h in history]  # not part of the logged history
        selected = result.best_epoch
        if result.best_state is not None:
            g.load_state_dict(result.best_state["g"])
        else:  # no finite S in any epoch: keep the last epoch and say so
            selected = history[-1]["epoch"] if history else None
        g.eval()
        self.g, self._g_backbone = g, backbone
        diag = [h.get("val_gt_known_loc_DIAGNOSTIC_ONLY") for h in history]
        self.selection = {
            "criterion": S_CRITERION if o["select"] == "s_score"
            else "last epoch (select='last'); S per epoch logged, not used",
            "split": "val",
            "selected_epoch": selected,
            "epochs_run": len(history),
            "S_per_epoch": [h.get("S") for h in history],
            "box_area_per_epoch": [h.get("box_area") for h in history],
            "degenerate_epochs": [h["epoch"] for h in history
                                  if h.get("box_area", 0.0) >= float(o["degenerate_area"])],
            "val_gt_known_loc_per_epoch_DIAGNOSTIC_ONLY": diag if any(d is not None for d in diag) else None,
        }
        if result.best_state is None and o["select"] == "s_score":
            self.selection["note"] = "no epoch had a finite mean S; the last epoch is used"
        elif o["select"] == "s_score" and len(self.selection["degenerate_epochs"]) == len(history):
            self.selection["note"] = ("every epoch's maps were degenerate (boxes of the whole image); "
                                      "selected by max S alone: train g longer or with a larger lr")
        ctx.log("epochs", history)
        kept = _spread([h["epoch"] for h in history], selected, EPOCH_MAP_EPOCHS)
        kept = [i for i in kept if snapshots[i] is not None]
        if kept:
            ctx.log("epoch_maps", {"ids": [ctx.val.ids[i] for i in _snapshot_positions(ctx.val)],
                                   "epochs": [history[i]["epoch"] for i in kept],
                                   "maps": [snapshots[i] for i in kept], "size": EPOCH_MAP_SIZE})

    def _after_epoch(self, ctx: FitContext, g: nn.Module) -> Callable[[int], dict[str, float]]:
        """The S score of eq. 6 averaged over the validation images (all ranks), plus the
        validation GT-known loc as a labelled diagnostic when validation boxes exist."""
        bs = int(self.opts["batch_size"])
        with_loc = bool(self.opts["val_loc"]) and ctx.val_boxes is not None
        snap_pos = _snapshot_positions(ctx.val)

        def after_epoch(epoch: int) -> dict[str, float]:
            from wsolbench.evaluation import paper_box, s_scores

            g.eval()
            evaluator = None
            if with_loc:
                from wsolbench.evaluation import Evaluator

                evaluator = Evaluator(protocol="paper")
            s_sum, n, area_sum = 0.0, 0, 0.0
            with torch.no_grad():
                for batch in ctx.val.iterate(bs):
                    with ctx.autocast():
                        maps = g(batch.images)
                    maps_np = maps.float().cpu().numpy()
                    s = np.asarray(s_scores(maps_np), dtype=np.float64)
                    s_sum += float(s.sum())
                    hw = maps_np.shape[1] * maps_np.shape[2]
                    for m in maps_np:
                        x0, y0, x1, y1 = paper_box(m)
                        area_sum += (x1 - x0 + 1) * (y1 - y0 + 1) / hw
                    n += len(s)
                    if evaluator is not None:
                        evaluator.accumulate(maps_np, [ctx.val.ids[i] for i in batch.index],
                                             gt_boxes=[ctx.val_boxes[i] for i in batch.index])
            hits, n_box = 0.0, 0.0
            if evaluator is not None and n:
                res = evaluator.compute()
                n_box = float(res["num_box_images"])
                hits = float(res["gt_known_loc"] or 0.0) * n_box / 100.0
            # Each rank saw its shard: sum (S, count, loc hits, images with boxes) over ranks.
            stats = torch.tensor([s_sum, float(n), hits, n_box, area_sum], dtype=torch.float64,
                                 device=ctx.device)
            all_reduce_sum(stats, ctx.dist)
            s_tot, n_tot, hits_tot, box_tot, area_tot = stats.tolist()
            mean_s = s_tot / n_tot if n_tot else float("nan")
            area = area_tot / n_tot if n_tot else float("nan")
            degenerate = area >= float(self.opts["degenerate_area"])
            # S lies in [0, 1]: shifting degenerate epochs by -2 ranks them below every
            # eligible epoch while keeping the paper's order among themselves.
            out: dict[str, float] = {"S": mean_s, "box_area": area,
                                     "S_eligible": mean_s - 2.0 if degenerate else mean_s}
            if with_loc:  # percent, as the evaluator reports it
                out["val_gt_known_loc_DIAGNOSTIC_ONLY"] = (100.0 * hits_tot / box_tot if box_tot
                                                           else float("nan"))
            if snap_pos:  # every rank computes the same snapshot: histories stay identical
                with torch.no_grad(), ctx.autocast():
                    m = g(ctx.val.get(np.asarray(snap_pos, dtype=np.int64), augment=False).images)
                m = m.float().reshape(len(snap_pos), 1, *m.shape[-2:])
                small = torch.nn.functional.adaptive_avg_pool2d(m, EPOCH_MAP_SIZE)[:, 0]
                out["_epoch_maps"] = np.round(small.cpu().numpy(), 3).tolist()
            return out

        return after_epoch

    # ------------------------------------------------------------------ localize
    def _f(self) -> nn.Module:
        if self._classifier is None:
            if self._get_classifier is None:
                raise RuntimeError(f"{type(self).__name__}.localize needs bind(ctx) first "
                                   "(the shared classifier f gives the class predictions)")
            self._classifier = self._get_classifier()
        return self._classifier

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> LocalizeOutput:
        if self.g is None:
            raise RuntimeError(f"{type(self).__name__}.localize called before fit or load_state_dict")
        if next(self.g.parameters()).device != images.device:
            self.g.to(images.device)
        f = self._f()
        with torch.no_grad(), self._autocast():
            maps = self.g(images)
            logits = f(images)
        return LocalizeOutput(maps=maps.float(), logits=logits.float())

    # ------------------------------------------------------------------ save / load
    def state_dict(self) -> dict[str, Any]:
        if self.g is None:
            return {}
        return {"g": {k: v.detach().cpu() for k, v in self.g.state_dict().items()},
                "g_backbone": self._g_backbone, "selection": self.selection}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        g = UNet(state["g_backbone"], pretrained=False)
        g.load_state_dict(state["g"])
        self.g = g.to(self.device).eval()
        self._g_backbone = state["g_backbone"]
        self.selection = state.get("selection")


# --------------------------------------------------------------------------- method I
class MethodI(_WeightMapMethod):
    """Method I (eq. 1): train g with the shared classifier f frozen to minimise
    ``CE(softmax f(I), f(I * g(I))) + reg_weight * mean|g(I)|``; select the epoch of g by
    the mean S score (eq. 6) on validation images.

    ``weighting="normalized"`` multiplies the normalized image (weight 0 -> mean colour),
    ``"pixels"`` multiplies [0, 1] pixels (weight 0 -> black). ``reg=False`` is the
    paper's Fig. 8 ablation. No learning-rate schedule (the paper gives none for g).
    """

    description = "Weight map g trained for classifier consistency (Shaharabany & Wolf, method I)"
    options = {
        "epochs": 100,
        "batch_size": 128,
        "lr": 1e-4,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "reg": True,
        "reg_weight": 1.0,
        "weighting": "normalized",
        "select": "s_score",
        "val_loc": True,
        # A near-uniform map (g before it starts to localize) keeps every pixel at tau = max/10,
        # so its box is the whole image and S = 1 trivially. Epochs whose validation boxes
        # cover at least this fraction of the image on average are not eligible for selection
        # (uses no labels); > 1 gives the paper's rule unchanged.
        "degenerate_area": 0.98,
    }

    def _batches(self, ctx: FitContext) -> Callable[[int], Iterator[Any]]:
        bs = int(self.opts["batch_size"])
        return lambda epoch: ctx.train.epoch(epoch, bs)

    def _train_step(self, ctx: FitContext) -> Callable[[Any, dict[str, nn.Module]], torch.Tensor]:
        f = freeze(ctx.get_classifier())
        o = self.opts
        weighting, reg, lam = o["weighting"], bool(o["reg"]), float(o["reg_weight"])

        def step(batch: Any, nets: dict[str, nn.Module]) -> torch.Tensor:
            x = batch.images
            with ctx.autocast():
                with torch.no_grad():
                    logits_clean = f(x)
                maps = nets["g"](x)
                logits_masked = f(apply_weight(x, maps, weighting))
            loss = consistency_loss(logits_clean, logits_masked)
            if reg:
                loss = loss + lam * l1_reg(maps)
            return loss

        return step


# --------------------------------------------------------------------------- method II
class MethodII(_WeightMapMethod):
    """Method II: a Siamese embedding f' (backbone -> GAP -> Linear(., embed_dim)) is trained
    with the triplet loss of eq. 2 (shared within the run through ``ctx.shared``), frozen,
    and g is trained to minimise ``L_inner (eq. 3) + L_outer (eq. 4) + reg_weight * R(M_a)``
    with ``J^f = M * I``, ``J^b = (1 - M) * I``. Triplets: for each anchor a positive of the
    same class (another image where there is one) and a negative of another class, drawn
    with the epoch generator and augmented like the anchors. Class predictions come from
    method I's classifier f, as in the paper. Epoch selection by the S score (eq. 6).

    f' schedule defaults to the paper's f schedule (SGD, lr 0.001, momentum 0.9, wd 1e-4,
    batch 16, 200 epochs, lr x0.1 every 80 epochs); f' keeps its last epoch. f' is built
    through ``ctx.shared(kind, build)`` with ``build(workdir)`` training it there with
    :func:`train_epochs` (idempotent: a complete workdir returns at once, a partial one resumes).
    """

    description = "Weight map g trained with Siamese triplet losses (Shaharabany & Wolf, method II)"
    options = {
        **MethodI.options,
        "inner": True,
        "outer": True,
        "margin": 1.0,
        "embed_dim": 200,
        "siamese_epochs": 200,
        "siamese_batch_size": 16,
        "siamese_lr": 0.001,
        "siamese_momentum": 0.9,
        "siamese_weight_decay": 1e-4,
        "siamese_lr_step": 80,
        "siamese_lr_gamma": 0.1,
    }

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.embedding: nn.Module | None = None

    def _check_options(self) -> None:
        super()._check_options()
        o = self.opts
        if not (o["inner"] or o["outer"] or o["reg"]):
            raise UserError(f"{type(self).__name__}: inner, outer and reg are all off; "
                            "nothing would train g")

    # ------------------------------------------------------------------ f'
    def _siamese_config(self, ctx: FitContext) -> dict[str, Any]:
        o = self.opts
        return {"backbone": ctx.model_config["backbone"],
                "pretrained": str(ctx.model_config.get("pretrained", False)),
                "dim": int(o["embed_dim"]), "margin": float(o["margin"]),
                "epochs": int(o["siamese_epochs"]), "batch_size": int(o["siamese_batch_size"]),
                "lr": float(o["siamese_lr"]), "momentum": float(o["siamese_momentum"]),
                "weight_decay": float(o["siamese_weight_decay"]),
                "lr_step": int(o["siamese_lr_step"]), "lr_gamma": float(o["siamese_lr_gamma"]),
                "seed": ctx.seed}

    def _build_siamese(self, ctx: FitContext) -> Callable[[Path], nn.Module]:
        cfg = self._siamese_config(ctx)

        def build(workdir: Path) -> nn.Module:
            emb = Embedding(cfg["backbone"], dim=cfg["dim"],
                            pretrained=ctx.model_config.get("pretrained", False)).to(ctx.device)
            if ctx.channels_last and ctx.device.type == "cuda":
                emb = emb.to(memory_format=torch.channels_last)
            optimizer = torch.optim.SGD(emb.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                        weight_decay=cfg["weight_decay"])
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(cfg["lr_step"], 1),
                                                        gamma=cfg["lr_gamma"])
            bs, margin = cfg["batch_size"], cfg["margin"]
            sampler = TripletSampler(ctx.train.labels)

            def step(batch: Any, nets: dict[str, nn.Module]) -> torch.Tensor:
                a, p, n = batch
                b = a.images.shape[0]
                with ctx.autocast():  # one forward for anchor, positive and negative
                    e = nets["embedding"](torch.cat([a.images, p.images, n.images]))
                return triplet(e[:b], e[b:2 * b], e[2 * b:], margin)

            result = train_epochs(
                name="siamese f'", workdir=Path(workdir), modules={"embedding": emb},
                optimizer=optimizer, scheduler=scheduler, epochs=cfg["epochs"],
                batches=lambda epoch: triplet_batches(ctx.train, epoch, bs, TRIPLET_STREAM_SIAMESE,
                                                      sampler),
                train_step=step, device=ctx.device, dist=ctx.dist, compile=ctx.compile,
                progress=ctx.progress, steps_per_epoch=ctx.train.steps_per_epoch(bs))
            emb.load_state_dict(result.best_state["embedding"])
            ctx.log("siamese_epochs", result.history)
            return freeze(emb)

        return build

    def siamese_kind(self, ctx: FitContext) -> str:
        """The ``ctx.shared`` name of f': ``siamese-<backbone>-d<dim>-<hash of its config>``,
        so variants with the same f' settings (e.g. the inner/outer/reg ablations) share one
        f' per run while a different f' schedule gets its own (and its own folder)."""
        cfg = self._siamese_config(ctx)
        digest = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]
        return f"siamese-{cfg['backbone']}-d{cfg['dim']}-{digest}"

    def _prepare(self, ctx: FitContext) -> None:
        # ctx.shared(kind, build): the harness memoizes per run and gives build a workdir.
        self.embedding = freeze(ctx.shared(self.siamese_kind(ctx), self._build_siamese(ctx)))

    # ------------------------------------------------------------------ g
    def _batches(self, ctx: FitContext) -> Callable[[int], Iterator[Any]]:
        bs = int(self.opts["batch_size"])
        if self.opts["outer"]:
            sampler = TripletSampler(ctx.train.labels)
            return lambda epoch: triplet_batches(ctx.train, epoch, bs, TRIPLET_STREAM_G, sampler)
        # without L_outer no positive or negative is needed
        return lambda epoch: ((a, None, None) for a in ctx.train.epoch(epoch, bs))

    def _train_step(self, ctx: FitContext) -> Callable[[Any, dict[str, nn.Module]], torch.Tensor]:
        emb = self.embedding
        assert emb is not None
        o = self.opts
        weighting, margin = o["weighting"], float(o["margin"])
        use_inner, use_outer, reg = bool(o["inner"]), bool(o["outer"]), bool(o["reg"])
        lam = float(o["reg_weight"])

        def step(batch: Any, nets: dict[str, nn.Module]) -> torch.Tensor:
            a, p, n = batch
            xa = a.images
            b = xa.shape[0]
            with ctx.autocast():
                # one g forward for a, p, n (the BN batch statistics then cover all three)
                x = torch.cat([xa, p.images, n.images]) if use_outer else xa
                maps = nets["g"](x)
                m_a = maps[:b]
                weighted = [apply_weight(xa, m_a, weighting)]  # J_a^f
                if use_inner:
                    weighted.append(apply_weight(xa, 1.0 - m_a, weighting))  # J_a^b
                if use_outer:
                    weighted.append(apply_weight(p.images, maps[b:2 * b], weighting))  # J_p^f
                    weighted.append(apply_weight(n.images, maps[2 * b:], weighting))  # J_n^f
                if use_inner or use_outer:  # one f' forward for all weighted images
                    e = emb(torch.cat(weighted)) if len(weighted) > 1 else emb(weighted[0])
                if use_inner:
                    with torch.no_grad():
                        e_image = emb(xa)  # f'(I_a): no path to g
            terms = []
            if use_inner or use_outer:
                chunks = list(e.split(b))
                e_fg_a = chunks.pop(0)
                if use_inner:
                    terms.append(inner_loss(e_image, e_fg_a, chunks.pop(0), margin))
                if use_outer:
                    terms.append(outer_loss(e_fg_a, chunks[0], chunks[1], margin))
            if reg:
                terms.append(lam * l1_reg(m_a))
            return sum(terms[1:], terms[0])

        return step
