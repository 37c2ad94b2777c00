"""Evaluation inside a run: is it dominated by the model's forward pass? Peak memory?

The test split of a generated synthetic dataset (boxes and masks, CUB-like sizes on CUDA)
is evaluated with the real ``Runner.evaluate`` (method I: g and f, both random-init), under
each protocol; next to it, on the same batches:

* forward: the same loop without the evaluator (``BatchSource.iterate`` -> ``localize``),
  i.e. the data path plus the model, synchronised once at the end;
* model: ``localize`` alone on a batch already on the device (no data path).

``forward / evaluate`` is the share of the evaluation the forward pass accounts for (1.0 =
the evaluator costs nothing on top). The evaluator's CPU work runs in ``run.eval_workers``
processes (auto: none on the CPU, cores - 1 on a GPU); maps go batch by batch from the model
to it, no file per image.

Memory: each size runs in its own process; the peak of the process's anonymous memory
(RssAnon, sampled every 5 ms; page-cache pages of the memory-mapped image cache excluded)
and, on CUDA, of ``torch.cuda.max_memory_allocated`` during ``evaluate`` is reported for
the split and for a quarter of it: it must not grow with the split.

    python benchmarks/bench_eval_in_run.py --quick          # CPU smoke run
    python benchmarks/bench_eval_in_run.py                  # CPU, 256 test images, 64 px
    python benchmarks/bench_eval_in_run.py --device cuda    # CUB size: 5794 test images, 224 px
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_anon_kb() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class PeakSampler:
    def __init__(self, period: float = 0.005):
        self.period, self.peak, self._stop = period, 0, threading.Event()

    def __enter__(self):
        self.base = rss_anon_kb()
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon_kb())
            time.sleep(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_anon_kb())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 1024


def child(args) -> None:
    import torch

    from wsolbench.config import resolve
    from wsolbench.methods.ours import MethodI
    from wsolbench.methods.spec import parse_spec
    from wsolbench.models.classifier import Classifier, freeze
    from wsolbench.models.unet import UNet
    from wsolbench.runner import Runner, _autocast, load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    classes = 8
    resize = round(args.size * 256 / 224)
    sets = [f"run.device=\"{args.device}\"", f"run.cache_dir=\"{args.workdir}/cache\"",
            f"run.eval_batch_size={args.batch}", f"run.eval_workers={args.workers}",
            f"datasets.synthetic.classes={classes}", "datasets.synthetic.train_per_class=2",
            f"datasets.synthetic.test_per_class={-(-args.full // classes)}",
            f"datasets.synthetic.size={args.size}", f"data.resize={resize}", f"data.crop={args.size}",
            f"data.wsoleval_size={args.size}", "model.pretrained=false",
            f"evaluation.cam_curve_interval={args.interval}"]
    cfg = resolve(None, sets, dataset="synthetic")
    runner = Runner(cfg)
    runner.dataset = load_dataset(cfg)
    runner.dataset.splits["test"] = runner.dataset.splits["test"][: args.n]
    runner.run_dir = Path(args.workdir) / f"run-{args.n}"
    runner._uses_f = [True]
    spec = parse_spec("ours1")
    method = MethodI()
    method.bind(runner.context(spec, method))
    cl = cuda and bool(cfg["run"]["channels_last"])

    def prep(m):
        m = m.to(device).eval()
        return m.to(memory_format=torch.channels_last) if cl else m

    runner._classifier = freeze(prep(Classifier("resnet18", classes)))
    method.g, method._g_backbone = prep(UNet("resnet18")), "resnet18"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    out = {"n": args.n, "workers": runner.eval_workers(), "protocols": {}}
    for protocol in args.protocols.split(","):
        data = runner.split("test", protocol)
        src = data.source
        n_img = len(src)
        amp = cfg["run"]["amp"]
        # warm-up (cuDNN autotuning, worker start) on one batch
        with torch.no_grad(), _autocast(device, amp):
            method.localize(next(src.iterate(args.batch)).images, None)
        sync()
        # the model alone
        x = next(src.iterate(args.batch)).images
        n_batches = -(-n_img // args.batch)
        sync()
        t = time.perf_counter()
        with torch.no_grad(), _autocast(device, amp):
            for _ in range(n_batches):
                o = method.localize(x, None)
        sync()
        t_model = time.perf_counter() - t
        # data path + model
        t = time.perf_counter()
        acc = torch.zeros((), device=device)
        with torch.no_grad(), _autocast(device, amp):
            for batch in src.iterate(args.batch):
                o = method.localize(batch.images, batch.labels)
                acc += o.maps[:, 0, 0].sum()
        sync()
        t_fwd = time.perf_counter() - t
        # the run's evaluation
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        with PeakSampler() as mem:
            t = time.perf_counter()
            res = runner.evaluate(spec, method, protocol)
            t_eval = time.perf_counter() - t
        m = res["metrics"]
        assert m["num_images"] == n_img, (m["num_images"], n_img)
        out["protocols"][protocol] = {
            "images": n_img, "model_s": t_model, "forward_s": t_fwd, "evaluate_s": t_eval,
            "host_peak_mb": mem.delta_mb, "host_peak_abs_mb": mem.peak / 1024,
            "gpu_peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
            "num_box_images": m["num_box_images"], "num_mask_images": m["num_mask_images"]}
        del o, x
    print("RESULT " + json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--test-images", type=int, help="split size (default: 5794 on CUDA = CUB, 256 on CPU)")
    ap.add_argument("--size", type=int, help="crop size (default: 224 on CUDA, 64 on CPU)")
    ap.add_argument("--batch", type=int, default=64, help="eval batch (run.eval_batch_size default)")
    ap.add_argument("--workers", type=int, default=-1, help="run.eval_workers (-1: the run's auto choice)")
    ap.add_argument("--protocols", default="paper,wsoleval")
    ap.add_argument("--interval", type=float, default=0.001, help="wsoleval threshold step")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--workdir", help="keep the generated dataset and caches here (default: temporary)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 32 images, 32 px")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--full", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    cuda = args.device.startswith("cuda")
    if args.quick:
        args.test_images, args.size = args.test_images or 32, args.size or 32
    args.test_images = args.test_images or (5794 if cuda else 256)
    args.size = args.size or (224 if cuda else 64)
    tmp = tempfile.TemporaryDirectory(prefix="wsolbench-bench-eval-") if not args.workdir else None
    workdir = args.workdir or tmp.name
    results = []
    sizes = [max(1, args.test_images // 4), args.test_images]
    for n in sizes:
        cmd = [sys.executable, __file__, "--child", "--n", str(n), "--full", str(args.test_images),
               "--device", args.device, "--size", str(args.size), "--batch", str(args.batch),
               "--workers", str(args.workers), "--protocols", args.protocols,
               "--interval", str(args.interval), "--threads", str(args.threads), "--workdir", workdir]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode != 0 or not line:
            sys.exit(f"child for n={n} failed:\n{p.stderr[-4000:]}")
        results.append(json.loads(line[0][len("RESULT "):]))
    if tmp is not None:
        tmp.cleanup()
    import torch

    gpu = torch.cuda.get_device_name(0) if cuda and torch.cuda.is_available() else "-"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"device {args.device} ({gpu})")
    print(f"method I (g = U-Net resnet18, f = resnet18), crop {args.size}, eval batch {args.batch}, "
          f"evaluator workers {results[-1]['workers']}, wsoleval grid step {args.interval}; "
          "synthetic test split with a box and a mask per image")
    full = results[-1]
    print(f"{'protocol':9s} {'images':>6s} {'model img/s':>12s} {'forward img/s':>14s} "
          f"{'evaluate img/s':>15s} {'forward/evaluate':>17s}")
    for proto, r in full["protocols"].items():
        n = r["images"]
        print(f"{proto:9s} {n:6d} {n / r['model_s']:12.1f} {n / r['forward_s']:14.1f} "
              f"{n / r['evaluate_s']:15.1f} {r['forward_s'] / r['evaluate_s']:16.0%}")
    print("peak memory during evaluate (process anonymous memory; in brackets: above its level "
          "just before evaluate):")
    for res in results:
        for proto, r in res["protocols"].items():
            gpu_peak = f", GPU peak {r['gpu_peak_gb']:.2f} GB" if r["gpu_peak_gb"] is not None else ""
            print(f"  {proto:9s} {res['n']:6d} test images: host {r['host_peak_abs_mb']:.0f} MB "
                  f"(+{r['host_peak_mb']:.0f} MB){gpu_peak}")


if __name__ == "__main__":
    main()
