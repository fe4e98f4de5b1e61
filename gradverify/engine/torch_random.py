"""A random source that repeats torch's numbers: ``ge.random.use_source(TorchSource)``.

Imported only by who asks for it (it imports torch, which the engine does not need), and
imported before a program runs, so that the program's ``import torch`` may mean the engine.
"""
from __future__ import annotations

import numpy as np
import torch


class TorchSource:
    """torch's numbers: each draw made by torch's own CPU generator seeded with the generator's seed.

    Plugged in with ``use_source(TorchSource)``, a program gets torch's random values
    (same seed, same draws in the same order), so the engine and torch can run it side by side.
    """

    def __init__(self, seed):
        self.generator = torch.Generator().manual_seed(seed)

    def _empty(self, shape, dtype):
        return torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name))

    def normal(self, shape, mean, std, dtype):
        return self._empty(shape, dtype).normal_(mean, std, generator=self.generator).numpy()

    def uniform(self, shape, low, high, dtype):
        return self._empty(shape, dtype).uniform_(low, high, generator=self.generator).numpy()

    def integers(self, low, high, shape):
        return torch.randint(low, high, shape, generator=self.generator).numpy()

    def permutation(self, n):
        return torch.randperm(n, generator=self.generator).numpy()

    def seed(self):
        return int(torch.empty((), dtype=torch.int64).random_(generator=self.generator).item())

    def bernoulli(self, probability, shape, dtype):
        return self._empty(shape, dtype).bernoulli_(probability, generator=self.generator).numpy()

    def multinomial(self, weights, num_samples, replacement):
        drawn = torch.multinomial(torch.from_numpy(weights), num_samples, replacement, generator=self.generator)
        return drawn.numpy()
