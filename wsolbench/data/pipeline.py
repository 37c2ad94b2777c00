"""Batches from the uint8 cache, augmented with tensor operations on the device.

The training pipeline is: uint8 ``[N, H, W, 3]`` (resized once) -> index a batch -> move
to the device -> random crop + horizontal flip as tensor indexing -> float, normalize.
Evaluation batches take the centre crop (or the whole image when the protocol has no
crop). All randomness derives from ``(seed, epoch, rank)``, so an epoch can be replayed
exactly after a resume, and shards of several ranks never overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from wsolbench.methods.base import DistInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Batch:
    images: torch.Tensor  # float [B, 3, h, w], normalized, on the device
    labels: torch.Tensor  # long [B] on the device
    index: np.ndarray  # positions in the source


class BatchSource:
    """One split's images and labels, ready to be served as device batches."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], ids: Sequence[str],
                 crop_hw: tuple[int, int] | None, device: torch.device, *, seed: int = 0,
                 dist: DistInfo | None = None, on_device: bool = False,
                 channels_last: bool = False):
        self.images_u8 = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ids = list(ids)
        self.full_hw = tuple(images.shape[1:3])
        self.crop_hw = tuple(crop_hw) if crop_hw else self.full_hw
        self.device = device
        self.seed = seed
        self.dist = dist or DistInfo()
        self.channels_last = channels_last
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0
        # On CUDA the whole uint8 split lives on the GPU when asked: no host work per step.
        self._store = torch.from_numpy(np.ascontiguousarray(images)).to(device) if on_device else None
        self._labels_dev = torch.from_numpy(self.labels).to(device)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.crop_hw

    # ----------------------------------------------------------------- batches
    def _gather(self, index: np.ndarray) -> torch.Tensor:
        if self._store is not None:
            return self._store[torch.from_numpy(index).to(self.device)]
        u8 = torch.from_numpy(np.ascontiguousarray(self.images_u8[np.sort(index)]))
        order = np.argsort(np.argsort(index))  # memmaps read fastest in file order
        u8 = u8[torch.from_numpy(order)]
        if self.device.type == "cuda":
            u8 = u8.pin_memory().to(self.device, non_blocking=True)
        return u8

    def _finish(self, u8: torch.Tensor) -> torch.Tensor:
        x = u8.permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def get(self, index: np.ndarray, *, augment: bool, generator: torch.Generator | None = None) -> Batch:
        """The images at ``index``: random crop + flip when ``augment``, else centre crop."""
        index = np.asarray(index, dtype=np.int64)
        u8 = self._gather(index)  # [B, H, W, 3]
        b = len(index)
        (H, W), (ch, cw) = self.full_hw, self.crop_hw
        if augment:
            g = generator or torch.Generator().manual_seed(self.seed)
            oy = torch.randint(0, H - ch + 1, (b,), generator=g)
            ox = torch.randint(0, W - cw + 1, (b,), generator=g)
            flip = torch.rand(b, generator=g) < 0.5
            rows = (oy[:, None] + torch.arange(ch)).to(u8.device)
            cols = ox[:, None] + torch.arange(cw)
            cols = torch.where(flip[:, None], cols.flip(1), cols).to(u8.device)
            bidx = torch.arange(b, device=u8.device)[:, None, None]
            u8 = u8[bidx, rows[:, :, None], cols[:, None, :]]
        elif (ch, cw) != (H, W):
            top, left = (H - ch) // 2, (W - cw) // 2
            u8 = u8[:, top:top + ch, left:left + cw]
        return Batch(self._finish(u8), self._labels_dev[torch.from_numpy(index).to(self.device)], index)

    def epoch_generator(self, epoch: int, stream: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(
            (self.seed * 1_000_003 + epoch * 7919 + self.dist.rank * 131 + stream) % (2**63))

    def epoch(self, epoch: int, batch_size: int, *, augment: bool = True, shuffle: bool = True,
              drop_last: bool = False) -> Iterator[Batch]:
        """Training batches of ``epoch`` for this rank (shards padded to equal length)."""
        n = len(self)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        order = torch.randperm(n, generator=g).numpy() if shuffle else np.arange(n)
        if self.dist.enabled:
            per_rank = -(-n // self.dist.world_size)
            order = np.resize(order, per_rank * self.dist.world_size)[self.dist.rank::self.dist.world_size]
        aug_g = self.epoch_generator(epoch, stream=1)
        stop = len(order) - (len(order) % batch_size if drop_last and len(order) >= batch_size else 0)
        for start in range(0, stop, batch_size):
            yield self.get(order[start:start + batch_size], augment=augment, generator=aug_g)

    def steps_per_epoch(self, batch_size: int, drop_last: bool = False) -> int:
        n = -(-len(self) // self.dist.world_size)
        return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)

    def iterate(self, batch_size: int, *, shard: bool = True) -> Iterator[Batch]:
        """Evaluation batches in order; with ``shard`` each rank sees images rank::world."""
        idx = np.arange(len(self))
        if shard and self.dist.enabled:
            idx = idx[self.dist.rank::self.dist.world_size]
        for start in range(0, len(idx), batch_size):
            yield self.get(idx[start:start + batch_size], augment=False)

    def subset(self, index: Sequence[int]) -> "BatchSource":
        index = np.asarray(index, dtype=np.int64)
        sub = BatchSource.__new__(BatchSource)
        sub.__dict__.update(self.__dict__)
        sub.images_u8 = self.images_u8[index] if self._store is None else self.images_u8
        sub.labels = self.labels[index]
        sub.ids = [self.ids[i] for i in index]
        sub._labels_dev = torch.from_numpy(sub.labels).to(self.device)
        if self._store is not None:
            sub._store = self._store[torch.from_numpy(index).to(self.device)]
        return sub
