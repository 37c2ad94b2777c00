"""Configuration: built-in defaults < benchmark.toml < command line (``--set k=v``).

The built-in defaults are the paper's values. A dataset's table may override any
top-level section for runs on that dataset, e.g.::

    [datasets.synthetic.classifier]
    epochs = 12

``--set`` always wins, also over a dataset's overrides. Unknown keys and wrong types
are errors that name the key and suggest the closest valid one. Method tables
(``[methods.NAME]``) are checked against the options the method class declares.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from wsolbench.errors import UserError, suggest

# Sections a dataset table may override for runs on that dataset.
OVERRIDABLE = ("run", "data", "model", "classifier", "evaluation", "methods")

DEFAULTS: dict[str, Any] = {
    "run": {
        "dataset": "synthetic",
        "methods": ["ours1", "ours2", "cam", "center", "full"],
        "protocols": ["paper", "wsoleval"],
        "seed": 0,
        "seeds": [],  # set by --seeds: the seeds of a multi-seed run
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "out": "results/runs",
        "cache_dir": "",  # "" = $WSOLBENCH_CACHE or ~/.cache/wsolbench
        "deterministic": False,
        "amp": True,  # bf16 autocast on CUDA
        "channels_last": True,  # on CUDA
        "compile": False,
        "data_on_device": True,  # keep the uint8 training cache on the GPU
        "data_on_device_max_gb": 8.0,  # larger training splits stay in host memory (pinned staging)
        "eval_workers": -1,  # evaluator worker processes in runs; -1 = auto (0 on CPU, cores-1 on GPU)
        "eval_batch_size": 64,
        "skip_bad_images": False,
        "threads": 0,  # torch CPU threads; 0 = torch's default
    },
    "data": {
        # paper protocol: resize to resize x resize, crop x crop (random for training)
        "resize": 256,
        "crop": 224,
        "wsoleval_size": 224,  # wsoleval protocol: resize to this, no crop
        "val_fraction": 0.1,  # held-out part of train when the dataset has no val split
    },
    "model": {"backbone": "resnet18", "pretrained": True},
    "classifier": {  # f, as in the paper
        "epochs": 200,
        "batch_size": 16,
        "lr": 0.001,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "lr_step": 80,
        "lr_gamma": 0.1,
        "select": "val_acc",  # val_acc | last
    },
    "evaluation": {
        "cam_curve_interval": 0.001,
        "iou_thresholds": [30, 50, 70],
        "multi_contour_eval": True,
    },
    "datasets": {
        # The built-in default: generated on first use, small enough for a laptop CPU.
        "synthetic": {
            "classes": 8, "train_per_class": 50, "test_per_class": 20, "size": 48, "gen_seed": 0,
            "run": {"eval_batch_size": 128},
            "data": {"resize": 54, "crop": 48, "wsoleval_size": 48, "val_fraction": 0.15},
            "model": {"backbone": "resnet18", "pretrained": False},
            "classifier": {"epochs": 15, "batch_size": 16, "lr": 0.1, "weight_decay": 5e-4,
                           "lr_step": 10, "lr_gamma": 0.1},
            "methods": {
                "ours1": {"epochs": 10, "batch_size": 32, "lr": 0.1},
                "ours2": {"epochs": 6, "batch_size": 32, "lr": 0.1, "siamese_epochs": 6,
                          "siamese_batch_size": 32, "siamese_lr": 0.05, "siamese_weight_decay": 5e-4,
                          "siamese_lr_step": 4},
            },
        },
        "cub": {"root": "data/CUB_200_2011"},
        "cars": {"root": "data/stanford_cars"},
        "flowers": {"root": "data/flowers102"},
        "tinyimagenet": {
            "root": "data/tiny-imagenet-200",
            # 64x64 images go through the paper's pipeline: resize to 256, crop 224.
            "model": {"backbone": "resnet50"},
            "methods": {"ours1": {"weight_decay": 5e-5, "epochs": 1000},
                        "ours2": {"weight_decay": 5e-5, "epochs": 1000}},
        },
    },
    "methods": {},
}

# Keys a [datasets.NAME] table may hold besides override sub-tables.
DATASET_KEYS = {"root": "", "loader": "", "metadata": "", "classes": 8, "train_per_class": 50,
                "test_per_class": 20, "size": 64, "gen_seed": 0}


def _type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list)
    return True


def _check_table(table: dict[str, Any], schema: dict[str, Any], where: str,
                 any_type: tuple[str, ...] = ()) -> None:
    for key, value in table.items():
        path = f"{where}.{key}" if where else key
        if key not in schema:
            raise UserError(f"unknown configuration key '{path}'{suggest(key, schema)}; "
                            f"valid keys in [{where or 'top level'}]: {', '.join(sorted(schema))}")
        default = schema[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise UserError(f"configuration key '{path}' must be a table")
            continue
        if path in any_type:
            continue
        if not _type_ok(default, value):
            raise UserError(f"configuration key '{path}' must be {type(default).__name__} "
                            f"(like {default!r}), got {value!r}")


PRETRAINED_KEYS = ("model.pretrained",)  # bool or path string


def validate(cfg: dict[str, Any]) -> None:
    """Check every key and type of a raw (unresolved) configuration tree."""
    _check_table(cfg, DEFAULTS, "")
    for section in ("run", "data", "model", "classifier", "evaluation"):
        _check_table(cfg.get(section, {}), DEFAULTS[section], section, any_type=PRETRAINED_KEYS)
    pre = cfg.get("model", {}).get("pretrained", True)
    if not isinstance(pre, (bool, str)):
        raise UserError(f"configuration key 'model.pretrained' must be true, false or a weight file "
                        f"path, got {pre!r}")
    for name, table in cfg.get("datasets", {}).items():
        if not isinstance(table, dict):
            raise UserError(f"configuration key 'datasets.{name}' must be a table")
        schema = {**DATASET_KEYS, **{s: {} for s in OVERRIDABLE}}
        _check_table(table, schema, f"datasets.{name}")
        for section in OVERRIDABLE:
            if section in table and section != "methods":
                _check_table(table[section], DEFAULTS[section], f"datasets.{name}.{section}",
                             any_type=tuple(f"datasets.{name}.{k}" for k in PRETRAINED_KEYS))


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_set(item: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3); values are TOML (strings may omit quotes)."""
    if "=" not in item:
        raise UserError(f"--set '{item}' must look like section.key=value")
    key, _, raw = item.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise UserError(f"--set '{item}' has no key")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def _assign(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for p in path[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {'.'.join(path)}: '{p}' is not a table")
    node[path[-1]] = value


def load_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"configuration file {path} does not exist; pass an existing --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"configuration file {path} is not valid TOML ({exc}); fix that line") from None


def default_config_file() -> Path | None:
    here = Path.cwd() / "benchmark.toml"
    return here if here.is_file() else None


def resolve(config_file: Path | None = None, sets: list[str] | None = None,
            dataset: str | None = None) -> dict[str, Any]:
    """The effective configuration for one run.

    ``dataset`` (from ``--dataset``) selects which dataset table's overrides apply.
    The returned tree has the same sections as :data:`DEFAULTS`, with ``run.dataset``
    set, and a ``dataset`` section holding the chosen dataset's own keys.
    """
    raw = load_file(config_file) if config_file else {}
    validate(raw)
    tree = deep_merge(DEFAULTS, raw)
    set_items = [parse_set(s) for s in (sets or [])]
    for path, value in set_items:
        _assign(tree, path, value)
    validate(tree)
    name = dataset or tree["run"]["dataset"]
    dtable = tree["datasets"].get(name, {})
    eff = {k: copy.deepcopy(v) for k, v in tree.items() if k != "datasets"}
    for section in OVERRIDABLE:
        if section in dtable:
            eff[section] = deep_merge(eff[section], dtable[section])
    # --set wins over the dataset's overrides as well.
    for path, value in set_items:
        if path[0] in OVERRIDABLE:
            _assign(eff, path, value)
    eff["run"]["dataset"] = name
    eff["dataset"] = {k: copy.deepcopy(v) for k, v in dtable.items() if k not in OVERRIDABLE}
    eff["dataset"]["name"] = name
    eff["datasets"] = tree["datasets"]
    return eff


def check_method_options(label: str, name: str, declared: dict[str, Any],
                         given: dict[str, Any]) -> dict[str, Any]:
    """Merge a method's declared defaults with configured values, checking keys and types."""
    _check_table(given, declared, f"methods.{name}")
    return {**declared, **given}
