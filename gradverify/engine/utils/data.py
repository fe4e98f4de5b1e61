"""``ge.utils.data``: datasets and mini-batch loading, as torch.utils.data (in one process).

A :class:`DataLoader` draws its random numbers as torch's does (a base seed per pass, then a
shuffling generator seeded from the default generator), so with a source that repeats torch's
numbers (:func:`gradverify.engine.random.use_source`) the batches are torch's.
"""
from __future__ import annotations

import math

from .. import api
from ..random import Generator, generator_arg
from ..core import Tensor


class Dataset:
    """A map-style dataset: ``dataset[i]`` and ``len(dataset)`` (subclasses define both)."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


class TensorDataset(Dataset):
    """Samples are the ``index``-th rows of each tensor (all tensors share their first dimension)."""

    def __init__(self, *tensors):
        if not tensors or any(not isinstance(t, Tensor) for t in tensors):
            raise TypeError("tensors: expected one or more Tensors")
        if any(t.shape[:1] != tensors[0].shape[:1] for t in tensors):
            raise ValueError(f"tensors: expected one first dimension, got shapes {[t.shape for t in tensors]}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


def default_collate(batch):
    """Samples stacked into a batch: tensors and numbers stacked, tuples and dicts collated by position or key."""
    first = batch[0]
    if isinstance(first, Tensor):
        return api.stack(list(batch))
    if isinstance(first, (bool, int, float)):
        return api.tensor(batch, dtype=api.float64 if isinstance(first, float) else None)
    if isinstance(first, dict):
        return {key: default_collate([sample[key] for sample in batch]) for key in first}
    if isinstance(first, (tuple, list)):
        return [default_collate(list(items)) for items in zip(*batch)]
    raise TypeError(f"default_collate: cannot batch samples of type {type(first).__name__}")


class DataLoader:
    """Mini-batches of ``dataset`` in order, or reshuffled every pass with ``shuffle=True`` (``generator=``
    to seed the shuffling); the last batch is smaller unless ``drop_last``.  Loads in this process."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, collate_fn=None, generator=None,
                 num_workers=0, pin_memory=False):
        if batch_size is None or batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        if generator is not None:
            generator_arg(generator)
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, int(batch_size), bool(shuffle), drop_last
        self.collate_fn = collate_fn or default_collate
        self.generator = generator

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        source = generator_arg(self.generator).source
        source.seed()  # torch draws each pass's base seed for workers, also without workers
        n = len(self.dataset)
        if self.shuffle:
            shuffler = self.generator
            if shuffler is None:
                shuffler = Generator().manual_seed(source.seed())
            order = shuffler.source.permutation(n).tolist()
        else:
            order = range(n)
        for start in range(0, n, self.batch_size):
            indices = order[start:start + self.batch_size]
            if len(indices) < self.batch_size and self.drop_last:
                return
            yield self.collate_fn([self.dataset[i] for i in indices])
