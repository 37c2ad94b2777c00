"""torch.distributed glue: the run is started by torchrun, never by a launcher of ours."""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist

from wsolbench.methods.base import DistInfo


def init_from_env(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not tdist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        tdist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def all_reduce_sum(t: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    if dist.enabled:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def barrier(dist: DistInfo) -> None:
    if dist.enabled:
        tdist.barrier()


def broadcast_object(obj, dist: DistInfo):
    if not dist.enabled:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(dist: DistInfo) -> None:
    if dist.enabled and tdist.is_initialized():
        tdist.destroy_process_group()
