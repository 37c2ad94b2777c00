"""torch.distributed glue: the run is started by torchrun, never by a launcher of ours.

``torchrun --nproc-per-node N -m wsolbench run ...`` (or ``wsolbench run --nproc N``,
which starts exactly that) sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*`` in
the environment; :func:`init_from_env` joins that process group. On CUDA the group has
two backends, ``cpu:gloo,cuda:nccl``, so collectives work on host tensors (the
evaluator's counters, pickled objects) as well as on GPU tensors. Several machines:
``torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT``;
the run folder (``--out``) and the cache (``run.cache_dir``) must then lie on a file
system all machines see (rank 0 writes, the other ranks read checkpoints from it).

Rules the harness follows under several processes:

* every rank executes the same sequence of collectives (barriers, all-reduces);
* files are written by rank 0 only (:attr:`DistInfo.is_main`); the per-node image cache
  is built by local rank 0 of each machine while the others wait at a barrier;
* decisions that depend on the file system (does a checkpoint exist?) are taken on rank
  0 and broadcast, so all ranks take the same branch.
"""

from __future__ import annotations

import atexit
import datetime
import os
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as tdist

from wsolbench.methods.base import DistInfo

# Rank 0 may work alone for a while (decoding the image cache, writing tables and
# figures) while the other ranks wait at a barrier: NCCL's default of 10 minutes is short.
DEFAULT_TIMEOUT_S = 3 * 3600


def init_from_env(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not tdist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("WSOLBENCH_DIST_TIMEOUT_S",
                                                                  DEFAULT_TIMEOUT_S)))
        if device_kind == "cuda":
            torch.cuda.set_device(local_rank)
            backend = "cpu:gloo,cuda:nccl"
        else:
            backend = "gloo"
        tdist.init_process_group(backend=backend, timeout=timeout)
        atexit.register(_destroy_at_exit)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def _destroy_at_exit() -> None:
    if tdist.is_initialized():
        try:
            tdist.destroy_process_group()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


def all_reduce_sum(t: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """Sum ``t`` over all ranks, in place (host or device tensor); returns ``t``."""
    if dist.enabled:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def sum_arrays(state: Mapping[str, Any], dist: DistInfo) -> dict[str, Any]:
    """Element-wise sum over ranks of a dict of numeric numpy arrays / scalars.

    Used for the evaluator's additive counters. Integers travel as int64 and floats as
    float64 (exact for counts); every rank must pass the same keys with the same shapes.
    The result keeps each value's dtype (and scalars stay scalars).
    """
    if not dist.enabled:
        return dict(state)
    out: dict[str, Any] = {}
    for key in sorted(state):  # the same order on every rank
        value = state[key]
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"evaluator state '{key}' is not numeric ({arr.dtype}); only additive "
                            "numeric counters can be summed over ranks")
        wide = torch.float64 if arr.dtype.kind == "f" else torch.int64
        t = torch.from_numpy(np.array(arr, copy=True)).to(wide)  # keeps 0-d shapes (ascontiguousarray does not)
        all_reduce_sum(t, dist)
        summed = t.numpy().astype(arr.dtype, copy=False)
        out[key] = summed if isinstance(value, np.ndarray) else summed.item()
    return out


def broadcast_buffers(modules: Mapping[str, torch.nn.Module], dist: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) of ``modules``."""
    if not dist.enabled:
        return
    for m in modules.values():
        for b in m.buffers():
            tdist.broadcast(b, src=0)


def barrier(dist: DistInfo) -> None:
    if dist.enabled:
        tdist.barrier()


def broadcast_object(obj, dist: DistInfo, src: int = 0):
    """``obj`` of rank ``src`` on every rank (pickled)."""
    if not dist.enabled:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj, dist: DistInfo) -> list:
    """The list of every rank's ``obj``, in rank order."""
    if not dist.enabled:
        return [obj]
    out: list = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def shutdown(dist: DistInfo) -> None:
    if dist.enabled and tdist.is_initialized():
        tdist.destroy_process_group()
