"""Several processes (torchrun, gloo on the CPU): sharding, the gathered evaluation, rank-0 writes.

The end-to-end tests start ``python -m torch.distributed.run --standalone --nproc-per-node=2
-m wsolbench run ...`` (and the ``wsolbench run --nproc 2`` shortcut) on the tiny synthetic
set. A ``sitecustomize`` audit hook records every file-system write of the non-zero ranks
under the test's folders, so "only rank 0 writes" is checked directly, not inferred.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, run_cli
from wsolbench.data.pipeline import BatchSource
from wsolbench.methods.base import DistInfo
from wsolbench.train import distributed as D

TEST_IMAGES = 8  # tiny_config: 2 classes x 4 test images


def _source(n: int, rank: int = 0, world: int = 1) -> BatchSource:
    imgs = np.zeros((n, 6, 6, 3), np.uint8)
    imgs[:, :, :, 0] = np.arange(n, dtype=np.uint8)[:, None, None]
    return BatchSource(imgs, [i % 3 for i in range(n)], [str(i) for i in range(n)], (4, 4),
                       torch.device("cpu"), seed=1, dist=DistInfo(rank=rank, world_size=world))


@pytest.mark.parametrize("n,world", [(7, 2), (8, 2), (10, 3), (2, 3)])
def test_evaluation_shards_cover_the_split_exactly_once(n, world):
    seen = []
    for rank in range(world):
        src = _source(n, rank, world)
        for batch in src.iterate(3):
            seen.extend(batch.index.tolist())
            # the images are the right ones (red channel holds the index)
            assert batch.images.shape[0] == len(batch.index)
    assert sorted(seen) == list(range(n))


@pytest.mark.parametrize("n,batch,world", [(16, 8, 2), (17, 8, 2), (20, 6, 3)])
def test_training_shards_run_equal_steps_and_split_the_global_batch(n, batch, world):
    single = [b.index.tolist() for b in _source(n).epoch(3, batch)]
    per_rank = [[b.index.tolist() for b in _source(n, r, world).epoch(3, batch)] for r in range(world)]
    steps = {len(s) for s in per_rank}
    assert steps == {_source(n, 0, world).steps_per_epoch(batch)}  # DDP needs equal step counts
    covered = sorted({i for s in per_rank for b in s for i in b})
    assert covered == list(range(n))  # every image every epoch (the padding repeats a few)
    if batch % world == 0 and n % batch == 0:
        # the global batch is the configured one: step k of all ranks = step k of one process
        for k, idx in enumerate(single):
            assert sorted(i for s in per_rank for i in s[k]) == sorted(idx)


def test_sum_arrays_keeps_shapes_and_dtypes_without_a_group():
    state = {"n": np.zeros((), np.int64), "h": np.arange(3, dtype=np.int64), "f": np.ones(2)}
    out = D.sum_arrays(state, DistInfo())
    assert out["n"].shape == () and out["h"].dtype == np.int64


# --------------------------------------------------------------------------- end to end
AUDIT = textwrap.dedent('''
    """Test helper: record file-system writes of ranks != 0 under WSOLBENCH_AUDIT_ROOT."""
    import atexit, os, sys

    _root = os.environ.get("WSOLBENCH_AUDIT_ROOT")
    _rank = os.environ.get("RANK")
    if _root and _rank not in (None, "0"):
        _root = os.path.realpath(_root)
        _seen = []
        _off = [False]
        _W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def _under(p):
            try:
                p = os.fsdecode(p)
            except TypeError:
                return False
            return os.path.realpath(os.path.abspath(p)).startswith(_root + os.sep)

        def _hook(event, args):
            if _off[0]:
                return
            if event == "open":
                path, mode, flags = args
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \\
                    (mode is None and isinstance(flags, int) and flags & _W)
                if writing and not isinstance(path, int) and _under(path):
                    _seen.append(f"open {path} {mode}")
            elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.truncate",
                           "shutil.copyfile", "shutil.rmtree", "os.symlink", "os.link"):
                if args and not isinstance(args[0], int) and _under(args[0]):
                    _seen.append(f"{event} {args[0]}")

        def _dump():
            _off[0] = True
            with open(os.environ["WSOLBENCH_AUDIT_LOG"] + "." + _rank, "w") as fh:
                fh.write("\\n".join(_seen))

        sys.addaudithook(_hook)
        atexit.register(_dump)
''')


def _audit_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(AUDIT)
    pythonpath = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": pythonpath, "WSOLBENCH_AUDIT_ROOT": str(tmp_path / "w"),
            "WSOLBENCH_AUDIT_LOG": str(tmp_path / "audit"), "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def _check_run(tmp_path: Path, out: Path, methods: tuple[str, ...]) -> dict:
    # one run folder, nothing beside it, no temporary file left
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert not [p for p in out.rglob("*.tmp")]
    res = json.loads((out / "results.json").read_text())
    assert res["splits_used"]["test"] == TEST_IMAGES
    meta = json.loads((out / "meta.json").read_text())
    assert meta["world_size"] == 2
    for m in methods:
        entry = res["methods"][m]
        assert entry["complete"], m
        for protocol in ("paper", "wsoleval"):
            met = entry["protocols"][protocol]["metrics"]
            # the counters gathered from both ranks count every test image once
            for key in ("num_images", "num_box_images", "num_labeled_images", "num_mask_images"):
                assert met[key] == TEST_IMAGES, (m, protocol, key, met[key])
            for key in ("gt_known_loc", "top1_loc", "top1_cls", "pxap"):
                assert met[key] is not None and 0.0 <= met[key] <= 100.0, (m, protocol, key)
    # rank 1 wrote nothing under the test folders: not in the run folder, not in the cache
    logs = sorted(tmp_path.glob("audit.*"))
    assert [p.name for p in logs] == ["audit.1"], logs  # the hook ran in rank 1
    assert logs[0].read_text() == "", logs[0].read_text()[:2000]
    return res


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_torchrun_two_processes_gloo(tmp_path, tiny_config):
    cfg = tiny_config(("ours1", "ours2", "cam"), cache=tmp_path / "w" / "cache")
    out = tmp_path / "w" / "runs" / "run"
    env = {**os.environ, **_audit_env(tmp_path)}
    env.pop("WORLD_SIZE", None)
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "wsolbench", "run", "--config", str(cfg), "--out", str(out), "--device", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=380)
    assert p.returncode == 0, p.stderr[-4000:]
    assert p.stdout.count("run folder:") == 1  # printed by rank 0 only
    res = _check_run(tmp_path, out, ("ours1", "ours2", "cam"))
    # f was trained here, under DDP (a fresh cache), and both methods selected an epoch
    assert "reused_from_cache" not in res["classifier"]
    assert (out / "shared" / "classifier" / "last.pt").is_file()
    for m in ("ours1", "ours2"):
        assert res["methods"][m]["selection"]["selected_epoch"] in (1, 2)
    # one cache file per decoded split (train, val, test x 2 protocols): no duplicate builds
    assert len(list((tmp_path / "w" / "cache" / "images").rglob("*.u8"))) == 4


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_nproc_shortcut_starts_torchrun(tmp_path, tiny_config):
    cfg = tiny_config(("cam", "center"))  # the session's shared cache: f is usually reused
    out = tmp_path / "w" / "runs" / "run"
    p = run_cli("run", "--nproc", "2", "--config", str(cfg), "--out", str(out), "--device", "cpu",
                env=_audit_env(tmp_path), timeout=380)
    assert p.returncode == 0, p.stderr[-4000:]
    _check_run(tmp_path, out, ("cam", "center"))


def test_eval_sink_workers_give_the_counters_of_one_evaluator(tmp_path):
    """Batches spread over worker processes sum to exactly what one evaluator counts."""
    import cv2

    from wsolbench.evaluation import Evaluator, Geometry
    from wsolbench.train.eval_pool import EvalSink, LazyMask, shutdown_pool

    rng = np.random.default_rng(0)
    geo = Geometry(resize=(20, 20), crop=(16, 16))
    batches = []
    for b in range(5):
        maps = rng.random((3, 16, 16)).astype(np.float32)
        ids = [f"{b}-{k}" for k in range(3)]
        boxes = [np.array([[2, 3, 10, 12]]) for _ in ids]
        masks = []
        for k in range(3):
            path = tmp_path / f"m{b}{k}.png"
            cv2.imwrite(str(path), (rng.random((20, 20)) > 0.5).astype(np.uint8) * 255)
            masks.append(LazyMask((path,), None, "binary", geo, (16, 16)))
        batches.append((maps, ids, boxes, masks, rng.integers(0, 3, 3), rng.integers(0, 3, 3)))
    results = []
    for workers in (0, 2):
        sink = EvalSink(Evaluator(protocol="wsoleval", cam_curve_interval=0.01), workers)
        for maps, ids, boxes, masks, gl, pl in batches:
            sink.accumulate(maps, ids, gt_boxes=boxes, masks=masks, gt_labels=gl, pred_labels=pl)
        results.append(sink.finish().state())
    shutdown_pool()
    assert results[0].keys() == results[1].keys()
    for k in results[0]:
        assert np.array_equal(results[0][k], results[1][k]), k
    assert int(results[1]["num_images"]) == 15 and int(results[1]["num_mask_images"]) == 15


def test_gpu_placement_budget_keeps_cub_on_the_gpu_and_tiny_imagenet_on_the_host():
    from wsolbench.data.pipeline import device_budget

    gib = 2**30
    cub = 5994 * 256 * 256 * 3  # 1.2 GB
    tiny = 100_000 * 256 * 256 * 3  # 19.7 GB
    assert device_budget(cub, int(8 * gib), 80 * gib) == (True, 8 * gib)
    assert device_budget(tiny, int(8 * gib), 140 * gib)[0] is False
    assert device_budget(tiny, int(32 * gib), 64 * gib) == (False, 16 * gib)  # 1/4 of the GPU
    assert device_budget(cub, None, 4 * gib) == (False, gib)  # a small GPU
