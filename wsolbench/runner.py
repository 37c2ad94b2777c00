"""``wsolbench run``: train what is needed, select without test labels, evaluate, write.

Stages (each resumable, each timed in meta.json):

1. resolve the dataset and its splits (a validation split carved from train when the
   dataset has none: a fixed, seed-independent part, see :func:`carve_validation`);
2. decode every image once into the uint8 cache (this also validates the images);
3. train the shared classifier f once (reused from the model cache when the same
   dataset/backbone/seed/config was trained before);
4. per method: ``fit`` on train/val, save its state, evaluate the test split under each
   configured protocol with the shared evaluator; results.json is rewritten after every
   method so nothing computed is lost;
5. render tables (and figures) from results.json.

Test labels, boxes and masks are read only by the evaluation of stage 4.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from wsolbench import __version__
from wsolbench.config import check_method_options
from wsolbench.data.cache import DecodedSplit, build_image_cache
from wsolbench.data.masks import load_mask
from wsolbench.data.pipeline import BatchSource
from wsolbench.data.sample import DatasetSplits, Sample
from wsolbench.errors import MethodOutputError, TrainingDiverged, UserError
from wsolbench.methods.base import FitContext, LocalizeOutput, WSOLMethod
from wsolbench.methods.spec import MethodSpec, parse_spec, split_specs
from wsolbench.train import distributed as D
from wsolbench.train.eval_pool import EvalSink, LazyMask, default_workers
from wsolbench.train.checkpoint import (atomic_torch_save, atomic_write_text, disk_error,
                                        load_checkpoint, seed_everything)

log = logging.getLogger("wsolbench")
RESULTS_SCHEMA = 1


# --------------------------------------------------------------------------- helpers
def methods_registry():
    from wsolbench.methods import METHODS

    return METHODS


def cache_root(cfg: dict[str, Any]) -> Path:
    explicit = cfg["run"].get("cache_dir") or os.environ.get("WSOLBENCH_CACHE")
    return Path(explicit).expanduser() if explicit else Path.home() / ".cache" / "wsolbench"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for but no CUDA GPU is visible; use --device cpu")
    return dev


def check_values(cfg: dict[str, Any]) -> None:
    """Check the VALUES of a resolved configuration (keys and types are checked by
    :mod:`wsolbench.config`), before anything is created: one error naming the key."""
    from wsolbench.errors import suggest

    def bad(key: str, value: Any, want: str) -> UserError:
        return UserError(f"configuration value {key} = {value!r} is invalid: it must be {want}; "
                         f"fix it (--set {key}=...)")

    def number(key: str, lo: float, hi: float = math.inf, *, lo_open: bool = False,
               hi_open: bool = False, integer: bool = False) -> None:
        section, name = key.split(".")
        v = cfg[section][name]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi) \
            and (not integer or float(v).is_integer())
        if not ok:
            rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open or hi == math.inf else ']'}"
            raise bad(key, v, f"{'an integer' if integer else 'a number'} in {rng}")

    for key in ("run.eval_batch_size", "classifier.epochs", "classifier.batch_size",
                "classifier.lr_step", "data.resize", "data.crop", "data.wsoleval_size"):
        number(key, 1, integer=True)
    number("run.threads", 0, integer=True)
    number("data.val_fraction", 0, 1, hi_open=True)
    number("classifier.lr", 0, lo_open=True)
    number("classifier.momentum", 0, 1, hi_open=True)
    number("classifier.weight_decay", 0)
    number("classifier.lr_gamma", 0, lo_open=True)
    number("evaluation.cam_curve_interval", 0, 1, lo_open=True, hi_open=True)
    if cfg["classifier"]["select"] not in ("val_acc", "last"):
        raise bad("classifier.select", cfg["classifier"]["select"], "'val_acc' or 'last'")
    thr = cfg["evaluation"]["iou_thresholds"]
    if not thr or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 100
                          for t in thr):
        raise bad("evaluation.iou_thresholds", thr, "a non-empty list of IoU percentages in (0, 100]")
    protocols = cfg["run"]["protocols"]
    if not protocols:
        raise bad("run.protocols", protocols, "a non-empty list of paper, wsoleval")
    for p in protocols:
        if p not in ("paper", "wsoleval"):
            raise UserError(f"unknown protocol '{p}'{suggest(p, ('paper', 'wsoleval'))}; "
                            "use paper or wsoleval (--protocols paper,wsoleval)")
    if not cfg["run"]["methods"]:
        raise bad("run.methods", cfg["run"]["methods"], "a non-empty list of methods (--methods cam,...)")
    backbone = cfg["model"]["backbone"]
    from wsolbench.models.backbones import SUPPORTED

    if backbone not in SUPPORTED:
        import timm

        if backbone not in timm.list_models():
            raise UserError(f"unknown backbone '{backbone}'{suggest(backbone, SUPPORTED)} "
                            f"(model.backbone); use one of {', '.join(SUPPORTED)} or a timm model name")


def _stable_hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def carve_validation(train: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of every class of ``train`` (at least one image per class).

    The held-out images are those whose SHA-1 of the image id is smallest within their
    class, so the split depends only on the dataset, never on the seed or on test data.
    """
    by_class: dict[int, list[Sample]] = {}
    for s in train:
        by_class.setdefault(s.label, []).append(s)
    val_ids: set[str] = set()
    for samples in by_class.values():
        k = max(1, int(round(fraction * len(samples)))) if len(samples) > 1 else 0
        ranked = sorted(samples, key=lambda s: hashlib.sha1(s.id.encode()).hexdigest())
        val_ids.update(s.id for s in ranked[:k])
    return [s for s in train if s.id not in val_ids], [s for s in train if s.id in val_ids]


def load_dataset(cfg: dict[str, Any]) -> DatasetSplits:
    from wsolbench.data.catalog import DATASETS

    d = cfg["dataset"]
    name = d["name"]
    loader_name = d.get("loader") or name
    if loader_name not in DATASETS:
        DATASETS.get(loader_name)  # raises with a suggestion
    load = DATASETS.get(loader_name)
    root = d.get("root") or ""
    options: dict[str, Any] = {}
    if loader_name == "synthetic" and not root:
        from wsolbench.data.synthetic import ensure_synthetic

        params = {k: d[k] for k in ("classes", "train_per_class", "test_per_class", "size") if k in d}
        if "gen_seed" in d:
            params["seed"] = d["gen_seed"]
        try:
            root = str(ensure_synthetic(cache_root(cfg) / "datasets", **params))
        except OSError as exc:
            raise disk_error(Path(exc.filename or cache_root(cfg)), exc,
                             where="point the cache elsewhere (--set run.cache_dir=DIR or "
                                   "$WSOLBENCH_CACHE)") from exc
    if not root:
        raise UserError(f"dataset '{name}' has no root; pass --set datasets.{name}.root=DIR "
                        f"(get it with: wsolbench data download {loader_name} --root DIR)")
    if d.get("metadata"):
        options["metadata"] = d["metadata"]
    if not Path(root).expanduser().exists():
        from wsolbench.data.catalog import dataset_info

        try:
            get = (f" or get it with: wsolbench data download {loader_name} --root DIR"
                   if dataset_info(loader_name).sources else "")
        except UserError:
            get = ""
        raise UserError(f"dataset '{name}': its root folder {root} does not exist; point "
                        f"--set datasets.{name}.root=DIR at the extracted dataset{get}")
    ds = load(Path(root).expanduser(), **options)
    ds.name = name
    if "val" not in ds.splits or not ds.splits["val"]:
        train, val = carve_validation(ds.splits["train"], cfg["data"]["val_fraction"])
        ds.splits["train"], ds.splits["val"] = train, val
        ds.val_source = (f"{cfg['data']['val_fraction']:.0%} of each training class, held out "
                         "by smallest SHA-1 of the image id (seed-independent)")
    elif not ds.val_source:
        ds.val_source = "the dataset's own validation split"
    for split in ("train", "test"):
        if not ds.splits.get(split):
            raise UserError(f"dataset '{name}' at {root} has no '{split}' images; "
                            f"check it with: wsolbench data check {loader_name} --root {root}")
    return ds


def versions() -> dict[str, str]:
    import cv2
    import timm
    import torchvision

    return {"wsolbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__}


def git_hash() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def new_run_dir(cfg: dict[str, Any], labels: list[str]) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    tag = "+".join(labels)
    tag = "".join(c if c.isalnum() or c in "+-_=." else "_" for c in tag)[:80]
    base = Path(cfg["run"]["out"]) / cfg["run"]["dataset"]
    path = base / f"{stamp}-{tag}"
    n = 2
    while path.exists():
        path = base / f"{stamp}-{tag}-{n}"
        n += 1
    return path


def _progress_fn(enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return lambda it, total=None, desc=None: tqdm(it, total=total, desc=desc, leave=False,
                                                  dynamic_ncols=True)


# --------------------------------------------------------------------------- post-processing
def postprocess_maps(maps: torch.Tensor, out_hw: tuple[int, int], map_range: str, method: str,
                     ids: list[str]) -> np.ndarray:
    """The one shared post-processing: check, resize to the input, normalize raw maps.

    * shape must be ``[B, h, w]`` (``[B, 1, h, w]`` accepted);
    * NaN/Inf is an error naming the method and the first image concerned;
    * maps are resized bilinearly to the input size;
    * ``raw`` maps are min-max normalized per image (a constant map becomes all zeros);
      ``unit`` maps must already lie in [0, 1] and are used as they are.
    """
    b = len(ids)
    if not isinstance(maps, torch.Tensor):
        try:
            maps = torch.as_tensor(np.asarray(maps, dtype=np.float32))
        except (TypeError, ValueError):
            raise MethodOutputError(f"method '{method}' returned {type(maps).__name__} instead of a "
                                    f"tensor of maps (batch starting with image '{ids[0]}'); localize "
                                    "must return [B, h, w]") from None
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3 or maps.shape[0] != b or maps.shape[1] < 1 or maps.shape[2] < 1:
        raise MethodOutputError(f"method '{method}' returned maps of shape {tuple(maps.shape)} for "
                                f"a batch of {b} images (first '{ids[0]}'); localize must return [B, h, w]")
    maps = maps.detach().float()
    finite = torch.isfinite(maps).flatten(1).all(1)
    if not bool(finite.all()):
        first = ids[int((~finite).nonzero()[0])]
        raise MethodOutputError(f"method '{method}' returned NaN/Inf values for image '{first}'; "
                                "fix the method (maps must be finite)")
    if tuple(maps.shape[1:]) != tuple(out_hw):
        maps = F.interpolate(maps[:, None], size=out_hw, mode="bilinear", align_corners=False)[:, 0]
    if map_range == "raw":
        flat = maps.flatten(1)
        lo = flat.min(1).values[:, None, None]
        span = (flat.max(1).values[:, None, None] - lo)
        maps = torch.where(span > 0, (maps - lo) / span.clamp(min=1e-12), torch.zeros_like(maps))
    else:
        lo, hi = float(maps.min()), float(maps.max())
        if lo < -1e-4 or hi > 1 + 1e-4:
            bad = (maps.flatten(1).amin(1) < -1e-4) | (maps.flatten(1).amax(1) > 1 + 1e-4)
            first = ids[int(bad.nonzero()[0])]
            raise MethodOutputError(f"method '{method}' declares maps in [0, 1] but returned values in "
                                    f"[{lo:.3g}, {hi:.3g}] (first image '{first}'); set map_range = 'raw'")
        maps = maps.clamp(0, 1)
    return maps.cpu().numpy()


# --------------------------------------------------------------------------- the run
@dataclass
class RunState:
    """What the command line needs to know if the run stops early."""

    run_dir: Path | None = None
    stage: str = "start"
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class SplitData:
    decoded: DecodedSplit
    source: BatchSource
    geometry: Any
    boxes: list[np.ndarray] | None  # in the source's output frame


class Runner:
    def __init__(self, cfg: dict[str, Any], state: RunState | None = None, *,
                 resume: Path | None = None):
        self.cfg = cfg
        self.state = state or RunState()
        self.resume = resume
        self.dist = D.init_from_env(pick_device(cfg["run"]["device"]).type)
        dev = pick_device(cfg["run"]["device"])
        if dev.type == "cuda" and self.dist.enabled:
            dev = torch.device("cuda", self.dist.local_rank)
        self.device = dev
        self.seed = int(cfg["run"]["seed"])
        self.results: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self._classifier = None
        self._shared: dict[str, Any] = {}
        self._splits: dict[tuple[str, str], SplitData] = {}
        self.fitted: dict[str, WSOLMethod] = {}  # label -> fitted method (figures use them)
        self.progress = _progress_fn(self.dist.is_main)

    # ----------------------------------------------------------------- bookkeeping
    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.state.stage = name
        if self.dist.is_main:
            log.info("%s ...", name)
        t0 = time.perf_counter()
        yield
        self.state.timings[name] = round(self.state.timings.get(name, 0.0) + time.perf_counter() - t0, 3)

    def write_json(self, name: str, obj: Any) -> None:
        if self.dist.is_main:
            atomic_write_text(self.run_dir / name, dumps_json(obj) + "\n")

    def save_results(self) -> None:
        self.results["timings_s"] = dict(self.state.timings)
        self.write_json("results.json", self.results)
        self.meta["durations_s"] = dict(self.state.timings)
        self.write_json("meta.json", self.meta)

    # ----------------------------------------------------------------- set-up
    def prepare_run_dir(self, labels: list[str]) -> None:
        if self.resume is not None:
            self.run_dir = Path(self.resume)
            prev = self.run_dir / "results.json"
            if prev.exists():
                self.results = json.loads(prev.read_text())
            meta = self.run_dir / "meta.json"
            if meta.exists():
                self.meta = json.loads(meta.read_text())
                self.state.timings.update(self.meta.get("durations_s", {}))
            if self.dist.is_main:
                _remove_stale_temporaries(self.run_dir)
        else:
            path = Path(self.cfg["run"]["run_dir"]) if self.cfg["run"].get("run_dir") else \
                new_run_dir(self.cfg, labels)
            path = D.broadcast_object(path, self.dist)
            if self.dist.is_main:
                if path.exists() and not path.is_dir():
                    raise UserError(f"--out {path} is a file, not a folder; choose another --out")
                if path.exists() and any(path.iterdir()):
                    raise UserError(f"run folder {path} already exists and is not empty; runs are never "
                                    f"overwritten: choose another --out, or continue it with --resume {path}")
                try:
                    path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise disk_error(path, exc) from exc
            D.barrier(self.dist)
            self.run_dir = path
        self.state.run_dir = self.run_dir
        if self.dist.is_main:
            self.write_json("config.json", self.cfg)
        self.meta.setdefault("started_utc", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if self.resume is not None:
            self.meta.setdefault("resumed_utc", []).append(
                datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self.meta.update({
            "versions": versions(), "git": git_hash(), "seed": self.seed,
            "device": str(self.device) + (f" ({torch.cuda.get_device_name(self.device)})"
                                          if self.device.type == "cuda" else ""),
            "world_size": self.dist.world_size, "host": socket.gethostname(),
            "argv": sys.argv, "deterministic": self.cfg["run"]["deterministic"],
        })

    def build_methods(self, specs: list[MethodSpec]) -> list[tuple[MethodSpec, WSOLMethod]]:
        reg = methods_registry()
        out = []
        for spec in specs:
            cls = reg.get(spec.name)
            table = self.cfg["methods"].get(spec.name, {})
            opts = check_method_options(spec.label, spec.name, dict(cls.options), {**table})
            opts = check_method_options(spec.label, spec.name, dict(cls.options), {**opts, **spec.overrides})
            out.append((spec, cls(**opts)))
        return out

    # ----------------------------------------------------------------- data
    def paper_geometry(self):
        from wsolbench.evaluation.geometry import Geometry

        r, c = self.cfg["data"]["resize"], self.cfg["data"]["crop"]
        if c > r:
            raise UserError(f"data.crop ({c}) is larger than data.resize ({r}); make crop <= resize")
        return Geometry(resize=(r, r), crop=(c, c))

    def geometry(self, protocol: str):
        from wsolbench.evaluation.geometry import Geometry

        if protocol == "paper":
            return self.paper_geometry()
        if protocol == "wsoleval":
            s = self.cfg["data"]["wsoleval_size"]
            return Geometry(resize=(s, s), crop=None)
        raise UserError(f"unknown protocol '{protocol}'; use paper or wsoleval")

    def split(self, name: str, protocol: str = "paper") -> SplitData:
        key = (name, protocol)
        if key in self._splits:
            return self._splits[key]
        geo = self.geometry(protocol)
        samples = self.dataset.splits[name]
        cache_dir = cache_root(self.cfg) / "images" / self.dataset.name
        skip = bool(self.cfg["run"]["skip_bad_images"])
        builder = self.dist.local_rank == 0  # one builder per machine, the others read its cache
        if builder:
            decoded = build_image_cache(samples, geo.resize, cache_dir, skip_bad=skip,
                                        progress=self.progress)
        D.barrier(self.dist)
        if not builder:
            decoded = build_image_cache(samples, geo.resize, cache_dir, skip_bad=skip)
        for sk in decoded.skipped:  # once per image, although the test split is decoded per protocol
            entry = {"split": name, **sk}
            if entry not in self.results.setdefault("skipped_images", []):
                self.results["skipped_images"].append(entry)
        on_device = bool(self.cfg["run"]["data_on_device"]) and self.device.type == "cuda" and name == "train"
        max_gb = float(self.cfg["run"].get("data_on_device_max_gb", 8.0))
        src = BatchSource(decoded.images, [s.label for s in decoded.samples],
                          [s.id for s in decoded.samples], geo.crop, self.device, seed=self.seed,
                          dist=self.dist, on_device=on_device, on_device_max_bytes=int(max_gb * 2**30),
                          name=f"{name} [{protocol}]",
                          channels_last=bool(self.cfg["run"]["channels_last"]) and self.device.type == "cuda")
        self._check_boxes(name, decoded)
        if name == "test":
            _check_mask_files(decoded.samples)
        boxes = None
        if any(s.boxes for s in decoded.samples):
            boxes = [geo.map_boxes(np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4),
                                   tuple(int(v) for v in wh), out_hw=src.out_hw)
                     for s, wh in zip(decoded.samples, decoded.orig_sizes)]
        self._splits[key] = SplitData(decoded, src, geo, boxes)
        return self._splits[key]

    def _check_boxes(self, split: str, decoded: DecodedSplit) -> None:
        """Inverted boxes stop the run; boxes past the border are clamped and recorded."""
        outside = []
        for s, (w, h) in zip(decoded.samples, decoded.orig_sizes):
            for box in s.boxes:
                x0, y0, x1, y1 = box
                if x1 < x0 or y1 < y0:
                    raise UserError(
                        f"image '{s.id}' ({split} split) has an inverted box {list(box)} (x1 < x0 or "
                        f"y1 < y0); fix its annotation (wsolbench data check lists all such rows)")
                if x0 > w or y0 > h or x1 < 0 or y1 < 0:  # nothing of it inside: not clampable
                    raise UserError(
                        f"image '{s.id}' ({split} split) has a box {list(box)} entirely outside the "
                        f"image ({int(w)}x{int(h)} pixels); fix its annotation (the box or the image "
                        "is wrong; wsolbench data check lists all such rows)")
                # one pixel of slack: some datasets (Stanford Cars) use 1-based inclusive corners
                if x0 < -1 or y0 < -1 or x1 > w + 1 or y1 > h + 1:
                    outside.append({"id": s.id, "box": list(box), "image_size": [int(w), int(h)]})
        if outside:
            log.warning("%d box(es) of the %s split lie outside their image; they are clamped "
                        "(first: %s)", len(outside), split, outside[0]["id"])
            self.results.setdefault("clamped_boxes", {})[split] = outside

    # ----------------------------------------------------------------- shared models
    def model_config(self) -> dict[str, Any]:
        return dict(self.cfg["model"])

    def classifier_key(self) -> dict[str, Any]:
        return {"dataset": self.dataset.name, "root": str(self.dataset.root),
                "n_train": len(self.dataset.splits["train"]), "model": self.cfg["model"],
                "classifier": self.cfg["classifier"], "data": self.cfg["data"], "seed": self.seed,
                "version": 1}

    def get_classifier(self):
        if self._classifier is None:
            with self.stage("classifier f"), _diverged_hint("classifier.lr"):
                self._classifier = self._train_or_load_classifier()
        return self._classifier

    def _train_or_load_classifier(self):
        from wsolbench.models.classifier import Classifier, freeze
        from wsolbench.train.classifier import train_classifier

        key = self.classifier_key()
        digest = _stable_hash(key)
        workdir = self.run_dir / "shared" / "classifier"
        final = workdir / "final.pt"
        cached = cache_root(self.cfg) / "models" / f"classifier-{digest}.pt"
        info = self.results.setdefault("classifier", {})
        model = Classifier(self.cfg["model"]["backbone"], self.dataset.num_classes, pretrained=False)
        if not final.exists() and cached.exists() and self.dist.is_main:
            tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
            try:  # a temporary name, then rename: a kill never leaves half a final.pt
                workdir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cached, tmp)
                os.replace(tmp, final)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise disk_error(final, exc) from exc
            info["reused_from_cache"] = str(cached)
        D.barrier(self.dist)
        if final.exists():
            ckpt = load_checkpoint(final)
            model.load_state_dict(ckpt["model"])
            info.setdefault("selection", ckpt.get("selection"))
        else:
            model = train_classifier(self, workdir)
            if self.dist.is_main:
                ckpt = {"model": model.state_dict(), "selection": info.get("selection"), "key": key}
                atomic_torch_save(ckpt, final)
                try:
                    atomic_torch_save(ckpt, cached)
                except UserError:
                    log.warning("could not store f in the model cache %s", cached)
            D.barrier(self.dist)
        info.update({"backbone": self.cfg["model"]["backbone"], "key": digest})
        model = model.to(self.device)
        if self.device.type == "cuda" and self.cfg["run"]["channels_last"]:  # also when loaded
            model = model.to(memory_format=torch.channels_last)
        return freeze(model)

    def shared(self, kind: str, build):
        """A network several methods share (e.g. f' of method II), built once per run."""
        if kind not in self._shared:
            workdir = self.run_dir / "shared" / kind
            with self.stage(f"shared {kind}"):
                self._shared[kind] = build(workdir)
        return self._shared[kind]

    # ----------------------------------------------------------------- methods
    def context(self, spec: MethodSpec, method: WSOLMethod) -> FitContext:
        train, val = self.split("train"), self.split("val")
        run = self.cfg["run"]
        return FitContext(
            method=spec.label, dataset=self.dataset.name, num_classes=self.dataset.num_classes,
            train=train.source, val=val.source, val_boxes=val.boxes, device=self.device,
            options=method.opts, seed=self.seed, workdir=self.run_dir / "methods" / spec.label,
            model_config=self.model_config(), get_classifier=self.get_classifier, shared=self.shared,
            dist=self.dist, amp=bool(run["amp"]), channels_last=bool(run["channels_last"]),
            compile=bool(run["compile"]), progress=True)

    def fit_method(self, spec: MethodSpec, method: WSOLMethod) -> FitContext:
        ctx = self.context(spec, method)
        final = ctx.workdir / "final.pt"
        method.bind(ctx)
        if final.exists():
            state = load_checkpoint(final)
            method.load_state_dict(state["state"])
            method.selection = state.get("selection")
            ctx.diagnostics.update(state.get("diagnostics", {}))
            return ctx
        with self.stage(f"fit {spec.label}"), _diverged_hint(f"methods.{spec.name}.lr"), \
                _method_crash(spec.label, "fit"):
            seed_everything(self.seed + _label_seed(spec.label), self.cfg["run"]["deterministic"])
            method.fit(ctx)
        if self.dist.is_main:
            atomic_torch_save({"state": method.state_dict(), "selection": method.selection,
                               "diagnostics": ctx.diagnostics}, final)
        D.barrier(self.dist)
        return ctx

    def evaluate(self, spec: MethodSpec, method: WSOLMethod, protocol: str) -> dict[str, Any]:
        from wsolbench.evaluation import Evaluator

        ev_cfg = self.cfg["evaluation"]
        data = self.split("test", protocol)
        src = data.source
        evaluator = Evaluator(protocol=protocol, cam_curve_interval=ev_cfg["cam_curve_interval"],
                              iou_thresholds=tuple(ev_cfg["iou_thresholds"]),
                              multi_contour_eval=ev_cfg["multi_contour_eval"])
        sink = EvalSink(evaluator, self.eval_workers())  # CPU work of the evaluator off this process
        has_masks = self.dataset.has_masks("test")
        # run() trains or loads f before any method when one of them uses it; its predictions
        # also serve methods that return no logits. Without f, Top-1 metrics are null.
        f = self._classifier
        bs = int(self.cfg["run"]["eval_batch_size"])
        samples = data.decoded.samples
        it = src.iterate(bs)
        if self.progress:
            it = self.progress(it, total=-(-len(src) // (bs * self.dist.world_size)),
                               desc=f"eval {spec.label} [{protocol}]")
        with torch.no_grad():
            for batch in it:
                ids = [src.ids[i] for i in batch.index]
                with _autocast(self.device, self.cfg["run"]["amp"]), \
                        _method_crash(spec.label, "localize", ids[0]):
                    out = method.localize(batch.images, batch.labels)
                    if not isinstance(out, LocalizeOutput):
                        out = LocalizeOutput(maps=out)
                    logits = out.logits
                    if logits is None and f is not None:
                        logits = f(batch.images)
                maps = postprocess_maps(out.maps, src.out_hw, method.map_range, spec.label, ids)
                if logits is not None and (not isinstance(logits, torch.Tensor) or tuple(logits.shape)
                                           != (len(ids), self.dataset.num_classes)):
                    raise MethodOutputError(
                        f"method '{spec.label}' returned logits of shape "
                        f"{tuple(getattr(logits, 'shape', ()))} for a batch of {len(ids)} images (first "
                        f"'{ids[0]}'); they must be [B, {self.dataset.num_classes}] (or None)")
                pred = logits.float().argmax(1).cpu().numpy() if logits is not None else None
                boxes = [data.boxes[i] for i in batch.index] if data.boxes is not None else None
                masks = None
                if has_masks:  # read where they are used (a worker process, or here)
                    masks = [self._lazy_mask(samples[i], data) for i in batch.index]
                sink.accumulate(maps, ids, gt_boxes=boxes, masks=masks,
                                gt_labels=batch.labels.cpu().numpy(), pred_labels=pred)
        evaluator = sink.finish()
        if self.dist.enabled:  # each rank saw its shard (rank::world): sum the additive counters
            evaluator = Evaluator.from_state(D.sum_arrays(evaluator.state(), self.dist),
                                             **evaluator.config())
        metrics = evaluator.compute()
        return {"split": "test", "geometry": {"resize": list(data.geometry.resize),
                                              "crop": list(data.geometry.crop) if data.geometry.crop else None},
                "metrics": metrics}

    def eval_workers(self) -> int:
        n = int(self.cfg["run"].get("eval_workers", -1))
        if n < 0:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            n = default_workers(self.device.type, local_world)
        return n

    def _lazy_mask(self, sample: Sample, data: SplitData) -> LazyMask | None:
        if not sample.mask_paths:
            return None
        return LazyMask(tuple(sample.mask_paths), sample.ignore_path, sample.mask_rule,
                        data.geometry, tuple(data.source.out_hw))

    def _mask(self, sample: Sample, data: SplitData) -> np.ndarray | None:
        if not sample.mask_paths:
            return None
        mask = load_mask(sample.mask_paths, sample.ignore_path, sample.mask_rule)
        return data.geometry.map_mask(mask, out_hw=data.source.out_hw)

    # ----------------------------------------------------------------- main
    def run(self) -> Path:
        cfg = self.cfg
        check_values(cfg)
        if cfg["run"]["threads"]:
            torch.set_num_threads(int(cfg["run"]["threads"]))
        seed_everything(self.seed, cfg["run"]["deterministic"])
        specs = [parse_spec(s) for s in split_specs(cfg["run"]["methods"])]
        labels = [s.label for s in specs]
        if len(set(labels)) != len(labels):
            raise UserError(f"a method is named twice in {','.join(labels)}")
        methods = self.build_methods(specs)
        uses_f = any(m.uses_classifier for _, m in methods)
        protocols = list(cfg["run"]["protocols"])
        for p in protocols:
            self.geometry(p)
        with self.stage("dataset"):
            builder = self.dist.local_rank == 0  # generates the synthetic set once per machine
            if not builder:
                D.barrier(self.dist)
            self.dataset = load_dataset(cfg)
            if builder:
                D.barrier(self.dist)
        self.prepare_run_dir(labels)
        self.results.update({
            "schema": RESULTS_SCHEMA, "dataset": self.dataset.name, "num_classes": self.dataset.num_classes,
            "splits": {k: len(v) for k, v in self.dataset.splits.items()},
            "val_source": self.dataset.val_source, "seed": self.seed, "protocols": protocols,
            "note": "Measured by wsolbench. Test-split numbers come from checkpoints selected on "
                    "train/validation data only.",
        })
        self.results.setdefault("methods", {})
        self.results.pop("skipped_images", None)
        self.results.pop("clamped_boxes", None)
        with self.stage("decode images"):
            for split in ("train", "val"):
                self.split(split)
            for p in protocols:
                self.split("test", p)
        self.results["splits_used"] = {
            "train": len(self.split("train").source), "val": len(self.split("val").source),
            "test": len(self.split("test", protocols[0]).source)}
        self.save_results()
        if uses_f:
            self.get_classifier()
            self.save_results()
        for spec, method in methods:
            entry = self.results["methods"].get(spec.label)
            if entry and entry.get("complete"):
                log.info("%s already evaluated; skipping", spec.label)
                if (self.run_dir / "methods" / spec.label / "final.pt").exists():
                    self.fit_method(spec, method)  # loads the saved state (for figures)
                    self.fitted[spec.label] = method
                continue
            ctx = self.fit_method(spec, method)
            self.fitted[spec.label] = method
            entry = {"method": spec.name, "options": method.opts, "description": method.description,
                     "selection": method.selection, "diagnostics": ctx.diagnostics, "protocols": {}}
            with self.stage(f"evaluate {spec.label}"):
                for p in protocols:
                    entry["protocols"][p] = self.evaluate(spec, method, p)
            entry["complete"] = True
            self.results["methods"][spec.label] = entry
            self.save_results()
        self.meta["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.save_results()
        if self.dist.is_main:
            with self.stage("tables and figures"):
                from wsolbench.report.figures import write_run_figures
                from wsolbench.report.report import write_report
                from wsolbench.report.tables import write_run_tables

                write_run_tables(self.run_dir)
                status = write_run_figures(self)
            self.save_results()
            write_report(self.run_dir, status)
        D.barrier(self.dist)
        return self.run_dir


@contextmanager
def _method_crash(label: str, where: str, image_id: str | None = None):
    """A method (often a plug-in) raising inside fit/localize: one line naming it; the
    traceback stays available with --debug."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        what = (str(exc).strip().splitlines() or [""])[0][:200]
        at = f" on the batch starting with image '{image_id}'" if image_id else ""
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise UserError(f"method '{label}' ran out of GPU memory in {where}{at}; lower its batch "
                            "size (methods.NAME.batch_size, run.eval_batch_size) or use --device cpu") from exc
        raise MethodOutputError(
            f"method '{label}' failed in {where}{at}: {type(exc).__name__}: {what}; a bug in the "
            "method or a bad option of it (rerun with --debug to see the traceback)") from exc


def _check_mask_files(samples: list[Sample]) -> None:
    """Before any training: every mask file the evaluation will read must exist."""
    missing = [(s.id, p) for s in samples
               for p in (*s.mask_paths, *((s.ignore_path,) if s.ignore_path else ())) if not Path(p).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} mask file(s) of the test split are missing (first: {missing[0][1]} for "
            f"image '{missing[0][0]}'); PxAP needs them: extract the masks/segmentations again "
            "(wsolbench data check NAME --root DIR lists what is missing)")


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete ``.NAME.PID.tmp`` files that a killed process (SIGKILL) left half-written."""
    for tmp in run_dir.rglob(".*.tmp"):
        parts = tmp.name.split(".")
        if len(parts) < 4 or not parts[-2].isdigit():
            continue
        pid = int(parts[-2])
        try:
            if pid != os.getpid():
                os.kill(pid, 0)
                continue  # that process still runs: leave its file alone
        except ProcessLookupError:
            pass
        except OSError:
            continue
        tmp.unlink(missing_ok=True)


@contextmanager
def _diverged_hint(lr_key: str):
    """Add to a divergence error which setting to lower, and that resuming would diverge again."""
    try:
        yield
    except TrainingDiverged as exc:
        exc.args = (f"{exc.args[0]} (e.g. --set {lr_key}=...) and start a new run (--resume keeps "
                    "the saved configuration and would diverge the same way)",)
        exc.diverged = True
        raise


def _label_seed(label: str) -> int:
    return int(hashlib.sha1(label.encode()).hexdigest()[:6], 16)


@contextmanager
def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def dumps_json(obj: Any) -> str:
    """JSON with objects indented and lists of scalars on one line (curves stay readable);
    NaN/Inf become null, numpy values plain numbers."""

    def plain(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, Path):
            return str(o)
        return o

    def enc(o: Any, level: int) -> str:
        o = plain(o)
        pad = "  " * level
        if isinstance(o, dict):
            if not o:
                return "{}"
            items = [f"{pad}  {json.dumps(str(k))}: {enc(v, level + 1)}" for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, (list, tuple)):
            o = [plain(x) for x in o]
            if all(not isinstance(x, (dict, list, tuple)) for x in o):
                return "[" + ", ".join(enc(x, 0) for x in o) + "]"
            return "[\n" + ",\n".join(f"{pad}  {enc(v, level + 1)}" for v in o) + "\n" + pad + "]"
        if isinstance(o, float) and not math.isfinite(o):
            return "null"
        return json.dumps(o, default=_json_default)

    return enc(obj, 0)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
