"""Batches from the uint8 cache, augmented with tensor operations, no worker processes.

The training pipeline is: uint8 ``[N, H, W, 3]`` (resized once, see :mod:`.cache`) ->
index a batch -> random crop + horizontal flip -> float, normalize, on the training
device. Evaluation batches take the centre crop (or the whole image when the protocol
has no crop). All randomness derives from ``(seed, epoch, rank)`` and is drawn on the
host with a ``torch.Generator``, so an epoch replays exactly after a resume and is the
same whether the images live on the GPU or on the host.

Where the images live:

* ``on_device`` (CUDA): the whole uint8 split is copied to the GPU once; a batch is one
  gather kernel (crop and flip included) plus one small non-blocking copy of the
  indices. No host work per step, no synchronisation.
* CUDA, split on the host (evaluation splits, or a training split larger than
  ``on_device_max_bytes``): uint8 crop windows are copied straight from the memory-mapped
  cache (in file order) into one pinned buffer and sent with ``non_blocking=True``, so
  the host prepares batch k+1 while the GPU still works on batch k; normalized there.
* CPU: crop windows go straight into the normalized float batch through OpenCV lookup
  tables, in one pass; float batch buffers are reused once nothing references them.

Batches are ``[B, 3, h, w]`` float: contiguous, or with channels-last strides when
``channels_last`` (the runner asks for that on CUDA, where the networks are converted too).

Several processes (torchrun): the configured batch size is the GLOBAL batch, as in a
one-GPU run. Each rank takes the shard ``order[rank::world]`` of the epoch's permutation
(padded to a multiple of the world size) in batches of ``ceil(batch / world)``, so step k
of all ranks together sees the same images as step k of a one-process run (when the
batch divides evenly) and every rank runs the same number of steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from wsolbench.methods.base import DistInfo

log = logging.getLogger("wsolbench")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ON_DEVICE_MAX_BYTES = 8 * 2**30  # also at most a quarter of the GPU's memory
_UPLOAD_CHUNK = 256  # images per host->GPU copy when the split is moved to the GPU
_POOL_SIZE = 8  # CPU float batch buffers kept for reuse (triplets need 3 per step, +3 held)


def _make_use_count():
    """``t -> number of other owners of t's storage`` (private torch API; None if absent)."""
    fn = getattr(torch._C, "_storage_Use_Count", None)
    if fn is None:
        return None
    try:
        probe = torch.empty(1)
        base = fn(probe.untyped_storage()._cdata)  # the tensor + the temporary storage object
    except Exception:  # noqa: BLE001 - any failure: no reuse
        return None
    return lambda t: fn(t.untyped_storage()._cdata) - base


_storage_use_count = _make_use_count()
_THREADS: list = []


def _threads():
    """A thread pool over this process's cores for CPU batch assembly (None on one core)."""
    if not _THREADS:
        import os
        from concurrent.futures import ThreadPoolExecutor

        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        _THREADS.append(ThreadPoolExecutor(min(n, 8), thread_name_prefix="wsolbench-batch")
                        if n > 1 else None)
    return _THREADS[0]


@dataclass
class Batch:
    images: torch.Tensor  # float [B, 3, h, w], normalized, on the device
    labels: torch.Tensor  # long [B] on the device
    index: np.ndarray  # positions in the source


def device_budget(nbytes: int, max_bytes: int | None, gpu_total_bytes: int) -> tuple[bool, int]:
    """(whether a uint8 split of ``nbytes`` goes to the GPU, the budget in bytes): at most
    ``max_bytes`` (default 8 GiB) and a quarter of the GPU's memory. CUB's training split at
    256 px is 1.2 GB (on the GPU); Tiny-ImageNet's 100,000 images at 256 px, 20 GB (host)."""
    limit = DEFAULT_ON_DEVICE_MAX_BYTES if max_bytes is None else int(max_bytes)
    limit = min(limit, int(gpu_total_bytes) // 4)
    return nbytes <= limit, limit


def local_batch_size(batch_size: int, world_size: int) -> int:
    """Per-rank batch for a global ``batch_size`` shared by ``world_size`` ranks, and at least
    2 when the global batch is at least 2 (BatchNorm cannot train on one image; the loop
    skips such batches): with more ranks than half the batch, the global batch grows to
    2 x world."""
    batch_size, world_size = int(batch_size), max(1, int(world_size))
    local = -(-batch_size // world_size)
    return max(local, 2) if batch_size >= 2 and world_size > 1 else max(local, 1)


class BatchSource:
    """One split's images and labels, ready to be served as device batches."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], ids: Sequence[str],
                 crop_hw: tuple[int, int] | None, device: torch.device, *, seed: int = 0,
                 dist: DistInfo | None = None, on_device: bool = False,
                 channels_last: bool = False, on_device_max_bytes: int | None = None,
                 name: str = "split"):
        self.images_u8 = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ids = list(ids)
        self.full_hw = tuple(int(v) for v in images.shape[1:3])
        self.crop_hw = tuple(int(v) for v in crop_hw) if crop_hw else self.full_hw
        if self.crop_hw[0] > self.full_hw[0] or self.crop_hw[1] > self.full_hw[1]:
            raise ValueError(f"crop {self.crop_hw} is larger than the images {self.full_hw}")
        self.device = torch.device(device)
        self.seed = seed
        self.dist = dist or DistInfo()
        self.channels_last = channels_last
        self._cuda = self.device.type == "cuda"
        self._affine: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pool: list[torch.Tensor] = []  # CPU float batch buffers, see _float_buffer
        self._luts: tuple[list[np.ndarray], np.ndarray] | None = None  # CPU, see _lut
        self._store: torch.Tensor | None = None
        self.placement = "host"
        if on_device and self._fits_on_device(name, on_device_max_bytes):
            self._store = self._upload(images)
            self.placement = "device"
        elif self._cuda:
            self.placement = "host (pinned staging)"
        self._labels_dev = torch.from_numpy(self.labels).to(self.device)

    # ----------------------------------------------------------------- placement
    def _fits_on_device(self, name: str, max_bytes: int | None) -> bool:
        if not self._cuda:
            return False
        nbytes = int(np.prod(self.images_u8.shape)) * self.images_u8.dtype.itemsize
        total = torch.cuda.get_device_properties(self.device).total_memory
        fits, limit = device_budget(nbytes, max_bytes, total)
        if not fits:
            log.info("the %s images (%.2f GB uint8) exceed the GPU budget for them (%.2f GB: "
                     "run.data_on_device_max_gb, at most 1/4 of the GPU); they stay in host memory "
                     "(memory-mapped cache) and go to the GPU per batch through pinned buffers",
                     name, nbytes / 1e9, limit / 1e9)
        return fits

    def _upload(self, images: np.ndarray) -> torch.Tensor:
        """Copy the uint8 split to the GPU in chunks (no full copy in host RAM)."""
        store = torch.empty(tuple(images.shape), dtype=torch.uint8, device=self.device)
        for start in range(0, len(images), _UPLOAD_CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + _UPLOAD_CHUNK]))
            store[start:start + len(chunk)].copy_(chunk)
        return store

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.crop_hw

    # ----------------------------------------------------------------- batches
    def _h2d(self, t: torch.Tensor) -> torch.Tensor:
        """Host tensor -> device; on CUDA through pinned memory, without waiting."""
        if not self._cuda:
            return t
        if not t.is_pinned():
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def _finish(self, u8: torch.Tensor, planar: bool = False) -> torch.Tensor:
        """uint8 ``[B, h, w, 3]`` (or ``[B, 3, h, w]`` when ``planar``) -> normalized float
        ``[B, 3, h, w]``: channels-last strides when ``channels_last``, else contiguous.

        One conversion into a float buffer, then one multiply-add. Channels-last: the
        affine map runs over rows of ``w * 3`` interleaved values (vectorizes well; a
        per-channel broadcast over an innermost dimension of 3 does not)."""
        if planar:
            b, _, h, w = u8.shape
        else:
            b, h, w, _ = u8.shape
        if self.channels_last and not planar:
            x = self._float_buffer((b, h, w, 3), u8.device)
            x.copy_(u8)
            scale, shift = self._affine_for(w)
            rows = x.view(b * h, w * 3)
            torch.addcmul(shift, rows, scale, out=rows)
            return x.permute(0, 3, 1, 2)  # NCHW view with channels-last strides
        x = self._float_buffer((b, 3, h, w), u8.device)
        x.copy_(u8 if planar else u8.permute(0, 3, 1, 2))
        scale, shift = self._affine_for(0)
        x.mul_(scale).add_(shift)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _float_buffer(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A float tensor for a batch. On the CPU a buffer of an earlier batch is reused when
        nothing references it any more (its storage has no other owner): a fresh 77 MB
        tensor per batch of 128 costs more in page faults than the conversion itself."""
        if device.type != "cpu" or _storage_use_count is None:
            return torch.empty(shape, dtype=torch.float32, device=device)
        free = [i for i, t in enumerate(self._pool) if _storage_use_count(t) == 0]
        for i in free:
            t = self._pool[i]
            if tuple(t.shape[1:]) == tuple(shape[1:]) and t.shape[0] >= shape[0]:
                return t[: shape[0]]
        t = torch.empty(shape, dtype=torch.float32, device=device)
        if len(self._pool) < _POOL_SIZE:
            self._pool.append(t)
        elif free:  # replace a buffer nobody uses that does not fit
            self._pool[free[0]] = t
        return t

    def _affine_for(self, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) with ``(x - mean) / std == x * scale + shift``: per row of ``w``
        interleaved RGB pixels (``[w * 3]``), or per channel (``[1, 3, 1, 1]``) for ``w == 0``."""
        if w not in self._affine:
            mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64) * 255.0
            std = torch.tensor(IMAGENET_STD, dtype=torch.float64) * 255.0
            scale, shift = (1.0 / std).float(), (-mean / std).float()
            if w:
                scale, shift = scale.repeat(w), shift.repeat(w)
            else:
                scale, shift = scale.view(1, 3, 1, 1), shift.view(1, 3, 1, 1)
            self._affine[w] = (scale.to(self.device), shift.to(self.device))
        return self._affine[w]

    def _windows(self, b: int, augment: bool, generator: torch.Generator | None):
        (H, W), (ch, cw) = self.full_hw, self.crop_hw
        if augment:
            g = generator or torch.Generator().manual_seed(self.seed)
            oy = torch.randint(0, H - ch + 1, (b,), generator=g)
            ox = torch.randint(0, W - cw + 1, (b,), generator=g)
            flip = torch.rand(b, generator=g) < 0.5
        else:
            oy = torch.full((b,), (H - ch) // 2, dtype=torch.int64)
            ox = torch.full((b,), (W - cw) // 2, dtype=torch.int64)
            flip = torch.zeros(b, dtype=torch.bool)
        return oy, ox, flip

    def _gather_device(self, index: np.ndarray, oy, ox, flip, augment: bool):
        assert self._store is not None
        (H, W), (ch, cw) = self.full_hw, self.crop_hw
        # one small copy carries index, offsets and flips
        meta = self._h2d(torch.stack([torch.from_numpy(index), oy, ox, flip.long()]))
        idx = meta[0]
        if augment:
            dev = self._store.device
            rows = meta[1][:, None] + torch.arange(ch, device=dev)
            cols = meta[2][:, None] + torch.arange(cw, device=dev)
            cols = torch.where(meta[3][:, None].bool(), cols.flip(1), cols)
            u8 = self._store[idx[:, None, None], rows[:, :, None], cols[:, None, :]]
        else:
            u8 = self._store[idx]
            if (ch, cw) != (H, W):
                top, left = (H - ch) // 2, (W - cw) // 2
                u8 = u8[:, top:top + ch, left:left + cw]
        return u8, self._labels_dev[idx]

    def _windows_host(self, index: np.ndarray, oy, ox, flip,
                      positions: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(position in the batch, crop window, flipped where asked) from the memory-mapped
        cache, in file order (memory maps read fastest in order)."""
        ch, cw = self.crop_hw
        src = self.images_u8
        oy_, ox_, flip_ = oy.numpy(), ox.numpy(), flip.numpy()
        if positions is None:
            positions = np.argsort(index, kind="stable")
        for j in positions:
            y, x = int(oy_[j]), int(ox_[j])
            win = src[int(index[j]), y:y + ch, x:x + cw]
            yield int(j), (cv2.flip(win, 1) if flip_[j] else win)  # SIMD; numpy ::-1 is ~6x slower

    def _gather_host(self, index: np.ndarray, oy, ox, flip):
        """GPU: uint8 crops into one pinned buffer (planar ``[B, 3, h, w]`` unless
        ``channels_last``), sent with ``non_blocking``; normalized on the GPU."""
        ch, cw = self.crop_hw
        planar = not self.channels_last
        shape = (len(index), 3, ch, cw) if planar else (len(index), ch, cw, 3)
        buf = torch.empty(shape, dtype=torch.uint8, pin_memory=self._cuda)
        out = buf.numpy()
        for j, win in self._windows_host(index, oy, ox, flip):
            if planar:
                out[j] = cv2.split(win)  # (cv2.split into given arrays is ~7x slower)
            else:
                out[j] = win
        labels = torch.from_numpy(self.labels[index])
        return self._h2d(buf), self._h2d(labels), planar

    def _gather_cpu(self, index: np.ndarray, oy, ox, flip) -> torch.Tensor:
        """CPU: crops straight into the normalized float batch through OpenCV lookup tables
        (uint8 value -> (v - mean) / std per channel): one pass, no torch element-wise ops
        (whose OpenMP threads stall badly on a loaded machine). Parts of the batch go to
        threads (OpenCV releases the GIL): between training steps the cores are idle."""
        ch, cw = self.crop_hw
        b = len(index)
        planar = not self.channels_last
        x = self._float_buffer((b, 3, ch, cw) if planar else (b, ch, cw, 3), self.device)
        out = x.numpy()
        per, lut3 = self._lut()

        def fill(positions: np.ndarray) -> None:
            for j, win in self._windows_host(index, oy, ox, flip, positions):
                if planar:  # (cv2.split into given arrays is ~7x slower than returning new ones)
                    for c, plane in enumerate(cv2.split(win)):
                        cv2.LUT(plane, per[c], dst=out[j, c])
                else:
                    cv2.LUT(win, lut3, dst=out[j])

        order = np.argsort(index, kind="stable")
        pool = _threads()
        if pool is None or b < 8:
            fill(order)
        else:
            list(pool.map(fill, np.array_split(order, pool._max_workers)))
        return x if planar else x.permute(0, 3, 1, 2)

    def _lut(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Per-channel lookup tables ``[1, 256]`` float32, and the same as one 3-channel table."""
        if self._luts is None:
            v = np.arange(256, dtype=np.float64)
            per = [((v - m * 255.0) / (s * 255.0)).astype(np.float32).reshape(1, 256)
                   for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
            self._luts = (per, np.ascontiguousarray(np.stack(per, axis=-1)))  # [1, 256, 3]
        return self._luts

    def get(self, index: np.ndarray, *, augment: bool, generator: torch.Generator | None = None) -> Batch:
        """The images at ``index``: random crop + flip when ``augment``, else centre crop."""
        index = np.asarray(index, dtype=np.int64)
        oy, ox, flip = self._windows(len(index), augment, generator)
        if self._store is not None:
            u8, labels = self._gather_device(index, oy, ox, flip, augment)
            return Batch(self._finish(u8), labels, index)
        if self.device.type == "cpu":
            return Batch(self._gather_cpu(index, oy, ox, flip),
                         torch.from_numpy(self.labels[index]), index)
        u8, labels, planar = self._gather_host(index, oy, ox, flip)
        return Batch(self._finish(u8, planar), labels, index)

    def epoch_generator(self, epoch: int, stream: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(
            (self.seed * 1_000_003 + epoch * 7919 + self.dist.rank * 131 + stream) % (2**63))

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's part of an epoch order (padded by wrapping to a multiple of the world)."""
        if not self.dist.enabled:
            return order
        per_rank = -(-len(order) // self.dist.world_size)
        return np.resize(order, per_rank * self.dist.world_size)[self.dist.rank::self.dist.world_size]

    def epoch(self, epoch: int, batch_size: int, *, augment: bool = True, shuffle: bool = True,
              drop_last: bool = False) -> Iterator[Batch]:
        """Training batches of ``epoch`` for this rank; ``batch_size`` is the global batch."""
        n = len(self)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        order = torch.randperm(n, generator=g).numpy() if shuffle else np.arange(n)
        order = self.shard(order)
        bs = local_batch_size(batch_size, self.dist.world_size)
        aug_g = self.epoch_generator(epoch, stream=1)
        stop = len(order) - (len(order) % bs if drop_last and len(order) >= bs else 0)
        for start in range(0, stop, bs):
            yield self.get(order[start:start + bs], augment=augment, generator=aug_g)

    def steps_per_epoch(self, batch_size: int, drop_last: bool = False) -> int:
        n = -(-len(self) // self.dist.world_size)
        bs = local_batch_size(batch_size, self.dist.world_size)
        return n // bs if drop_last and n >= bs else -(-n // bs)

    def iterate(self, batch_size: int, *, shard: bool = True) -> Iterator[Batch]:
        """Evaluation batches in order; with ``shard`` each rank sees images rank::world
        (every image exactly once over all ranks). ``batch_size`` is per rank here."""
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
        sub._pool = []
        if self._store is not None:
            sub._store = self._store[torch.from_numpy(index).to(self.device)]
        return sub
