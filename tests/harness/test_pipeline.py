import numpy as np
import torch

from wsolbench.data.pipeline import IMAGENET_MEAN, IMAGENET_STD, BatchSource
from wsolbench.methods.base import DistInfo


def _source(n=6, h=10, w=12, crop=(8, 8), **kw):
    imgs = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        imgs[i, :, :, 0] = i  # image index in the red channel
        imgs[i, :, :, 1] = np.arange(w)[None, :]  # column in green
        imgs[i, :, :, 2] = np.arange(h)[:, None]  # row in blue
    return BatchSource(imgs, list(range(n)), [f"{i}" for i in range(n)], crop, torch.device("cpu"), **kw)


def _raw(x):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    return (x * std + mean).round()


def test_eval_batches_take_the_centre_crop_in_order():
    src = _source()
    b = next(src.iterate(4))
    raw = _raw(b.images)
    assert b.images.shape == (4, 3, 8, 8)
    assert raw[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert raw[0, 1, 0].tolist() == list(range(2, 10))  # columns 2..9 of 12
    assert raw[0, 2, :, 0].tolist() == list(range(1, 9))  # rows 1..8 of 10


def test_training_crops_are_contiguous_windows_maybe_flipped():
    src = _source(seed=3)
    seen_flip = seen_plain = False
    for batch in src.epoch(1, 3):
        raw = _raw(batch.images)
        for k in range(len(batch.index)):
            cols = raw[k, 1, 0].tolist()
            rows = raw[k, 2, :, 0].tolist()
            assert rows == list(range(int(rows[0]), int(rows[0]) + 8))
            if cols[0] > cols[-1]:
                seen_flip = True
                cols = cols[::-1]
            else:
                seen_plain = True
            assert cols == list(range(int(cols[0]), int(cols[0]) + 8))
            assert raw[k, 0, 0, 0] == batch.index[k]  # right image, right label
            assert batch.labels[k] == batch.index[k]
    assert seen_flip or seen_plain


def test_an_epoch_replays_exactly_and_epochs_differ():
    a = [b.images for b in _source(seed=1).epoch(2, 4)]
    b = [b.images for b in _source(seed=1).epoch(2, 4)]
    c = [b.images for b in _source(seed=1).epoch(3, 4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_ranks_shard_evaluation_exactly_once():
    seen = []
    for rank in range(2):
        src = _source(n=7, dist=DistInfo(rank=rank, world_size=2))
        for b in src.iterate(2):
            seen.extend(b.index.tolist())
    assert sorted(seen) == list(range(7))
