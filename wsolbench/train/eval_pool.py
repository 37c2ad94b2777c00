"""Feeding the streaming evaluator from a run, without making the GPU wait for it.

Inside ``wsolbench run`` the maps of a batch go from the model straight to the shared
:class:`~wsolbench.evaluation.Evaluator` (no file per image). Its work per image (box
sweep over the threshold grid, PxAP histograms, reading the ground-truth mask) is CPU
work: on a GPU it costs more than the forward pass unless several CPU cores share it.
:class:`EvalSink` does that: each batch becomes one task for a pool of worker processes;
a task accumulates its batch into a fresh evaluator and returns the evaluator's additive
counters, which the sink sums (the same ``state()``/``merge_state()`` contract the
distributed gather uses, so the result is exactly that of one evaluator seeing every
batch). At most ``2 x workers`` batches are in flight, so memory does not grow with the
split. With ``workers = 0`` (the default on the CPU, where the forward pass already uses
every core) batches are accumulated inline.

This module imports no torch: the worker processes (``spawn``) start fast.
"""

from __future__ import annotations

import atexit
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_POOL: ProcessPoolExecutor | None = None
_POOL_WORKERS = 0
_WORKER_EVALUATORS: dict[str, Any] = {}


@dataclass(frozen=True)
class LazyMask:
    """A ground-truth mask read (and mapped to the evaluated frame) where it is used."""

    paths: tuple[Path, ...]
    ignore_path: Path | None
    rule: str
    geometry: Any  # wsolbench.evaluation.Geometry
    out_hw: tuple[int, int]

    def load(self) -> np.ndarray:
        from wsolbench.data.masks import load_mask

        mask = load_mask(self.paths, self.ignore_path, self.rule)
        return self.geometry.map_mask(mask, out_hw=self.out_hw)


def _resolve(masks):
    if masks is None:
        return None
    return [m.load() if isinstance(m, LazyMask) else m for m in masks]


def _accumulate_task(config: dict, maps: np.ndarray, ids: list[str], gt_boxes, masks,
                     gt_labels, pred_labels) -> dict:
    """Worker side: this batch's additive counters."""
    from wsolbench.evaluation import Evaluator

    key = repr(sorted(config.items()))
    ev = _WORKER_EVALUATORS.get(key)
    if ev is None:
        ev = _WORKER_EVALUATORS[key] = Evaluator(**config)
    ev.reset()
    ev.accumulate(maps, ids, gt_boxes=gt_boxes, masks=_resolve(masks), gt_labels=gt_labels,
                  pred_labels=pred_labels)
    return ev.state()


def default_workers(device_type: str, local_world_size: int = 1) -> int:
    """Auto choice: no workers on the CPU; on a GPU the cores of this rank, minus one for the
    process that drives the GPU, at most 16."""
    if device_type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(16, cores // max(1, local_world_size) - 1))


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool(workers: int) -> ProcessPoolExecutor:
    global _POOL, _POOL_WORKERS
    if _POOL is None or _POOL_WORKERS != workers:
        shutdown_pool()
        import multiprocessing as mp

        # spawn: never fork a process that holds a CUDA context or OpenMP threads.
        # Workers ignore Ctrl-C: the main process handles it and prints how to resume.
        _POOL = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                    initializer=_ignore_sigint)
        _POOL_WORKERS = workers
    return _POOL


def shutdown_pool() -> None:
    global _POOL, _POOL_WORKERS
    if _POOL is not None:
        _POOL.shutdown(wait=True, cancel_futures=True)
        _POOL, _POOL_WORKERS = None, 0


atexit.register(shutdown_pool)


class EvalSink:
    """``accumulate`` batches like an Evaluator; ``finish()`` returns the filled Evaluator."""

    def __init__(self, evaluator: Any, workers: int = 0):
        self.evaluator = evaluator
        self.workers = int(workers)
        self._config = evaluator.config()
        self._in_flight: deque[Future] = deque()

    def accumulate(self, maps: np.ndarray, ids: Sequence[str], *, gt_boxes=None,
                   masks: Sequence[Any] | None = None, gt_labels=None, pred_labels=None) -> None:
        if self.workers <= 0:
            self.evaluator.accumulate(maps, list(ids), gt_boxes=gt_boxes, masks=_resolve(masks),
                                      gt_labels=gt_labels, pred_labels=pred_labels)
            return
        while len(self._in_flight) >= 2 * self.workers:
            self._merge(self._in_flight.popleft())
        self._in_flight.append(_pool(self.workers).submit(
            _accumulate_task, self._config, np.ascontiguousarray(maps), list(ids), gt_boxes,
            None if masks is None else list(masks), gt_labels, pred_labels))

    def _merge(self, fut: Future) -> None:
        self.evaluator.merge_state(fut.result())  # re-raises a worker's error here

    def finish(self) -> Any:
        try:
            while self._in_flight:
                self._merge(self._in_flight.popleft())
        finally:
            for fut in self._in_flight:
                fut.cancel()
            self._in_flight.clear()
        return self.evaluator
