"""Wall time per stage of a whole ``wsolbench run --methods ours1,ours2,cam`` at CUB's sizes.

A synthetic dataset is generated at the sizes of CUB-200-2011 (54 classes x 111 = 5,994
training images, like CUB; 54 x 107 = 5,778 test images, CUB has 5,794 -- the generator
makes the same number of images per class and has at most 64 classes; 224 px), then the
run uses the paper's protocol and schedules, set explicitly on the command line (the
synthetic dataset's own small schedules are overridden): f 200 epochs, batch 16; g of
ours1 and ours2 100 epochs, batch 128; f' 200 epochs, batch 16; resize 256, crop 224,
random-init backbones (no network needed). The stage times come from the run's
meta.json; generating the dataset is timed separately (it is not part of a run).

    python benchmarks/bench_run_cub_size.py --device cuda                 # the real thing
    python benchmarks/bench_run_cub_size.py --device cuda --nproc 2       # through torchrun
    python benchmarks/bench_run_cub_size.py --quick                       # CPU smoke test

The command line of the run is printed first so it can be repeated by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAPER = {  # the paper's schedules (benchmark.toml defaults), restated so the synthetic
    # dataset's small overrides do not apply
    "classifier.epochs": 200, "classifier.batch_size": 16, "classifier.lr": 0.001,
    "classifier.weight_decay": 1e-4, "classifier.lr_step": 80, "classifier.lr_gamma": 0.1,
    "methods.ours1.epochs": 100, "methods.ours1.batch_size": 128, "methods.ours1.lr": 1e-4,
    "methods.ours2.epochs": 100, "methods.ours2.batch_size": 128, "methods.ours2.lr": 1e-4,
    "methods.ours2.siamese_epochs": 200, "methods.ours2.siamese_batch_size": 16,
    "methods.ours2.siamese_lr": 0.001, "methods.ours2.siamese_weight_decay": 1e-4,
    "methods.ours2.siamese_lr_step": 80,
    "data.resize": 256, "data.crop": 224, "data.wsoleval_size": 224, "data.val_fraction": 0.1,
    "run.eval_batch_size": 64, "model.pretrained": "false",
}
QUICK = {"classifier.epochs": 1, "methods.ours1.epochs": 1, "methods.ours2.epochs": 1,
         "methods.ours2.siamese_epochs": 1, "classifier.batch_size": 8, "methods.ours1.batch_size": 8,
         "methods.ours2.batch_size": 8, "methods.ours2.siamese_batch_size": 8,
         "data.resize": 36, "data.crop": 32, "data.wsoleval_size": 32, "run.eval_batch_size": 16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--methods", default="ours1,ours2,cam")
    ap.add_argument("--nproc", type=int, default=1, help="processes through torchrun (wsolbench run --nproc)")
    ap.add_argument("--workdir", type=Path, help="dataset, cache and run folder (default: temporary)")
    ap.add_argument("--classes", type=int, default=54)
    ap.add_argument("--train-per-class", type=int, default=111)
    ap.add_argument("--test-per-class", type=int, default=107)
    ap.add_argument("--size", type=int, default=224, help="generated image size")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra --set for the run (e.g. run.compile=true)")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: 4 classes, 32 px, 1 epoch")
    args = ap.parse_args()
    settings = dict(PAPER)
    if args.quick:
        args.classes, args.train_per_class, args.test_per_class, args.size = 4, 6, 3, 32
        settings.update(QUICK)
        if args.device == "cuda":
            args.device = "cpu"
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="wsolbench-bench-run-")
        args.workdir = Path(tmp.name)
    cache = args.workdir / "cache"
    ds = {"classes": args.classes, "train_per_class": args.train_per_class,
          "test_per_class": args.test_per_class, "size": args.size}

    from wsolbench.data.synthetic import ensure_synthetic

    t = time.perf_counter()
    ensure_synthetic(cache / "datasets", **ds, seed=0)  # timed apart from the run
    gen_s = time.perf_counter() - t

    sets = [f"run.cache_dir={json.dumps(str(cache))}"]
    sets += [f"datasets.synthetic.{k}={v}" for k, v in ds.items()]
    sets += [f"{k}={v}" for k, v in settings.items()] + args.sets
    out = args.workdir / "run"
    cmd = [sys.executable, "-m", "wsolbench", "run", "--dataset", "synthetic", "--methods", args.methods,
           "--protocols", "paper,wsoleval", "--device", args.device, "--out", str(out)]
    if args.nproc > 1:
        cmd += ["--nproc", str(args.nproc)]
    for s in sets:
        cmd += ["--set", s]
    print("$ " + shlex.join(["wsolbench"] + cmd[3:]), flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        print(p.stdout[-6000:])
        sys.exit(f"the run failed (exit {p.returncode})")
    meta = json.loads((out / "meta.json").read_text())
    res = json.loads((out / "results.json").read_text())
    import torch

    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "-"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"device {args.device} ({gpu}), processes {args.nproc}")
    print(f"dataset: synthetic {args.classes} classes, {res['splits']} images "
          f"(used: {res.get('splits_used')}), generated at {args.size} px in {gen_s:.1f} s "
          "(not part of the run)")
    print(f"{'stage':48s} {'seconds':>9s}")
    for stage, s in meta["durations_s"].items():
        note = "  (inside the next 'fit' stage)" if stage.startswith("shared ") else ""
        print(f"{stage:48s} {s:9.1f}{note}")
    print(f"{'wall time of the command (start-up included)':48s} {wall:9.1f}")
    for m, entry in res["methods"].items():
        met = entry["protocols"]["paper"]["metrics"]
        print(f"  {m}: paper GT-known loc {met['gt_known_loc']}, num_images {met['num_images']}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
