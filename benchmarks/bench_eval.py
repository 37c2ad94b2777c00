"""Speed of the wsoleval box evaluation: the fast Evaluator against the literal reference loop.

Generates CUB-test-sized synthetic data (5,794 maps of 224x224 by default): CAM-like score
maps (a Gaussian bump plus uniform noise on a 7x7 grid, bilinearly upsampled to 224x224, as
a ResNet-50 CAM is), one GT box around the bump (jittered) and Top-1 labels. Then

* times the straightforward reference (``wsolbench.evaluation.reference``: per image, per
  grid threshold, ``cv2.threshold`` + ``cv2.findContours`` + largest / all contour boxes,
  one IoU call per image) and the fast :class:`~wsolbench.evaluation.Evaluator`,
* checks that the hit counters (every threshold, every IoU) and every box metric are
  identical,
* reports peak memory of the fast evaluator (``tracemalloc``: Python and numpy allocations)
  for two numbers of images, maps generated on the fly, to show it does not grow with n,
* optionally repeats a smaller comparison on noisier / smoother map models.

Timings exclude map generation. Usage::

    python benchmarks/bench_eval.py [--n 5794] [--ref-n N] [--out results/benchmarks/eval_speed.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import sys
import time
import tracemalloc

import cv2
import numpy as np

from wsolbench.evaluation import Evaluator, threshold_grid
from wsolbench.evaluation.reference import reference_box_counts, reference_box_metrics

IOUS = (30, 50, 70)
METRIC_KEYS = ("max_box_acc", "max_box_acc_threshold", "max_box_acc_v2", "box_acc_by_iou",
               "best_threshold_by_iou", "top1_loc")


def make_batch(start: int, stop: int, seed: int, noise: float, size: int = 224, cells: int = 7):
    """Maps [B, size, size] float32, GT boxes, labels and predictions of images start..stop-1.

    Image i is generated from its own seed, so any subset can be regenerated identically."""
    maps, boxes, labels, preds = [], [], [], []
    yy, xx = np.mgrid[0:cells, 0:cells]
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        cx, cy = rng.uniform(1.0, cells - 1.0, 2)
        sx, sy = rng.uniform(0.7, 2.5, 2)
        z = np.exp(-((xx - cx) ** 2 / (2 * sx ** 2) + (yy - cy) ** 2 / (2 * sy ** 2)))
        z = z + noise * rng.random((cells, cells))
        maps.append(cv2.resize(z.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR))
        jitter = rng.normal(0.0, 0.25, 4)
        x0, x1 = (cx - sx * (1 + jitter[0])) / cells * size, (cx + sx * (1 + jitter[1])) / cells * size
        y0, y1 = (cy - sy * (1 + jitter[2])) / cells * size, (cy + sy * (1 + jitter[3])) / cells * size
        box = np.clip(np.round([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]), 0, size - 1)
        boxes.append(box.astype(np.int64)[None])
        label = int(rng.integers(0, 200))
        labels.append(label)
        preds.append(label if rng.random() < 0.7 else int(rng.integers(0, 200)))
    return np.stack(maps), boxes, np.array(labels), np.array(preds)


def batches(n: int, batch: int):
    for s in range(0, n, batch):
        yield s, min(n, s + batch)


def run_reference(n, args, noise):
    grid = threshold_grid(args.interval)
    total = None
    wall = cpu = 0.0
    for s, e in batches(n, args.batch):
        maps, boxes, labels, preds = make_batch(s, e, args.seed, noise)
        t0, c0 = time.perf_counter(), time.process_time()
        c = reference_box_counts(maps, boxes, grid, IOUS, labels, preds)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        if total is None:
            total = c
        else:
            for k in total:
                total[k] = total[k] + c[k]
    return reference_box_metrics(total, grid, IOUS), wall, cpu


def run_fast(n, args, noise, trace_memory=False):
    ev = Evaluator("wsoleval", cam_curve_interval=args.interval, iou_thresholds=IOUS)
    wall = cpu = 0.0
    if trace_memory:
        tracemalloc.start()
    for s, e in batches(n, args.batch):
        maps, boxes, labels, preds = make_batch(s, e, args.seed, noise)
        t0, c0 = time.perf_counter(), time.process_time()
        ev.accumulate(maps, [str(i) for i in range(s, e)], gt_boxes=boxes, gt_labels=labels,
                      pred_labels=preds)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    peak = None
    if trace_memory:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return ev, wall, cpu, peak


def compare(ref: dict, ev: Evaluator) -> list[str]:
    """Names of everything that differs (counters and metrics); empty when identical."""
    st, res = ev.state(), ev.compute()
    diffs = []
    for k_ref, k_st in (("hits_largest", "box_hits_largest"), ("hits_multi", "box_hits_multi"),
                        ("top1_hits", "top1_hits"), ("num_box_images", "num_box_images"),
                        ("num_top1_images", "num_top1_images")):
        if not np.array_equal(np.asarray(ref[k_ref]), np.asarray(st[k_st])):
            diffs.append(k_st)
    for k in METRIC_KEYS:
        if ref.get(k) != res.get(k):
            diffs.append(k)
    if res["gt_known_loc"] != ref.get("max_box_acc"):
        diffs.append("gt_known_loc")
    return diffs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5794, help="number of maps (default: CUB test, 5794)")
    p.add_argument("--ref-n", type=int, default=None,
                   help="maps for the reference (default: all; fewer -> per-image time extrapolated)")
    p.add_argument("--interval", type=float, default=0.001, help="cam_curve_interval (default 0.001)")
    p.add_argument("--noise", type=float, default=0.3, help="noise amplitude of the map model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--mem-n", default=None,
                   help="two image counts for the memory check (default: max(n/8, 2 batches),n)")
    p.add_argument("--extra-noise", default="0.0,1.0,3.0",
                   help="other noise levels for a smaller comparison ('' to skip)")
    p.add_argument("--extra-n", type=int, default=150)
    p.add_argument("--out", default=None, help="also write the printed report to this file")
    args = p.parse_args(argv)

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    cmd = " ".join(shlex.quote(a) for a in ["python", "benchmarks/bench_eval.py", *sys.argv[1:]]) \
        if argv is None else "python benchmarks/bench_eval.py " + " ".join(argv)
    say(f"$ {cmd}")
    say(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, numpy {np.__version__}, "
        f"opencv {cv2.__version__} ({cv2.getNumThreads()} threads)")
    n, ref_n = args.n, min(args.ref_n or args.n, args.n)
    grid = threshold_grid(args.interval)
    say(f"# load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other jobs share "
        "this machine: wall times inflate under load, cpu times much less)")
    say(f"# {n} maps 224x224, CAM-like (7x7 bump + {args.noise} noise, bilinear), 1 GT box each; "
        f"grid {args.interval} ({len(grid)} thresholds), IoU {IOUS}; batches of {args.batch}")
    say()

    ref, r_wall, r_cpu = run_reference(ref_n, args, args.noise)
    per_ref = r_wall / ref_n
    say(f"reference (per image x per threshold findContours): {ref_n} maps in {r_wall:.1f} s wall "
        f"({r_cpu:.1f} s cpu) = {1e3 * per_ref:.2f} ms/map")
    if ref_n < n:
        say(f"  extrapolated to {n} maps: {per_ref * n:.1f} s (from the per-map time of {ref_n})")

    ev, f_wall, f_cpu, _ = run_fast(n, args, args.noise)
    per_fast = f_wall / n
    say(f"fast Evaluator:                                     {n} maps in {f_wall:.1f} s wall "
        f"({f_cpu:.1f} s cpu) = {1e3 * per_fast:.2f} ms/map")
    say(f"speed-up: {per_ref / per_fast:.1f}x wall per map ({(r_cpu / ref_n) / (f_cpu / n):.1f}x cpu)")

    check = ev if ref_n == n else run_fast(ref_n, args, args.noise)[0]
    diffs = compare(ref, check)
    say(f"identical on the {ref_n} reference maps (hit counters at every threshold and IoU, "
        f"{', '.join(METRIC_KEYS)}, gt_known_loc): {'YES' if not diffs else 'NO: ' + ', '.join(diffs)}")
    res = ev.compute()
    say(f"  MaxBoxAcc {res['max_box_acc']:.2f} (thr {res['max_box_acc_threshold']:.3f}), "
        f"MaxBoxAccV2 {res['max_box_acc_v2']:.2f} "
        f"({' / '.join(f'{v:.2f}' for v in res['box_acc_by_iou'].values())}), "
        f"Top-1 loc {res['top1_loc']:.2f}, Top-1 cls {res['top1_cls']:.2f}")
    say()

    mem = ([int(x) for x in args.mem_n.split(",")] if args.mem_n
           else [min(n, max(2 * args.batch, n // 8)), n])
    say("memory of the fast evaluator (tracemalloc peak over Python/numpy allocations while "
        "accumulating; maps generated batch by batch):")
    state_bytes = sum(v.nbytes for v in ev.state().values())
    for k in mem:
        _, _, _, peak = run_fast(k, args, args.noise, trace_memory=True)
        say(f"  n = {k:5d}: peak {peak / 2**20:7.2f} MiB")
    say(f"  evaluator state: {state_bytes / 2**10:.1f} KiB of additive counters, independent of n; "
        f"process max RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    say()

    extra = [float(x) for x in args.extra_noise.split(",") if x.strip()]
    if extra:
        say(f"other map models ({args.extra_n} maps each; ms/map wall (cpu), ratio reference / fast):")
        for noise in extra:
            r, rw, rc = run_reference(args.extra_n, args, noise)
            e, fw, fc, _ = run_fast(args.extra_n, args, noise)
            d = compare(r, e)
            k = 1e3 / args.extra_n
            say(f"  noise {noise:3.1f}: reference {k * rw:6.2f} ({k * rc:6.2f}), fast {k * fw:5.2f} "
                f"({k * fc:5.2f}): {rw / fw:5.1f}x wall, {rc / fc:5.1f}x cpu, identical: "
                f"{'YES' if not d else 'NO: ' + ', '.join(d)}")
            diffs = diffs + d
    say(f"# load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
