"""Random numbers: ``ge.Generator`` (torch.Generator's interface) and the draws every random function makes.

The random functions (randn, rand, randint, randperm, normal, multinomial, nn.init, dropout) draw
through the few methods of a generator below, each a distribution torch draws too (``normal_``,
``uniform_``, ``random_``, ``randperm``, ``multinomial``, ``bernoulli_``), so the order and kind of the
draws are torch's.  The numbers come from a *source* made from the seed: numpy's PCG64 unless
:func:`use_source` plugs in another, such as :class:`gradverify.engine.torch_random.TorchSource`, which
repeats torch's numbers (to run a program on torch and on the engine with identical random streams).
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from .devices import check_device


class NumpySource:
    """The engine's own numbers, from numpy's PCG64 seeded with the generator's seed."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def normal(self, shape, mean, std, dtype):
        return self.rng.normal(mean, std, shape).astype(dtype, copy=False)

    def uniform(self, shape, low, high, dtype):
        return self.rng.uniform(low, high, shape).astype(dtype, copy=False)

    def integers(self, low, high, shape):
        return self.rng.integers(low, high, size=shape, dtype=np.int64)

    def permutation(self, n):
        return self.rng.permutation(n).astype(np.int64, copy=False)

    def seed(self):
        """A seed for another generator: a non-negative 63-bit integer (torch's ``random_()`` of an int64)."""
        return int(self.rng.integers(0, 2**63))

    def bernoulli(self, probability, shape, dtype):
        return (self.rng.random(shape) < probability).astype(dtype)

    def multinomial(self, weights, num_samples, replacement):
        """``num_samples`` indices per row of the 2-d ``weights`` (checked: non-negative, positive sums)."""
        weights = weights.astype(np.float64)
        if replacement:
            rows = [self.rng.choice(row.size, size=num_samples, p=row / row.sum()) for row in weights]
            return np.array(rows, dtype=np.int64).reshape(weights.shape[0], num_samples)
        # torch's way without replacement: the largest weight / Exp(1) keys (zero weights come last).
        keys = weights / self.rng.exponential(size=weights.shape)
        return np.argsort(-keys, axis=1, kind="stable")[:, :num_samples].astype(np.int64)


_SOURCE = [NumpySource]
# torch's default generator starts from this seed.
_DEFAULT_SEED = 67280421310721


@contextlib.contextmanager
def use_source(make_source):
    """Within the block, generators seeded (``manual_seed``) draw from ``make_source(seed)``.

    ``make_source(seed)`` returns an object with :class:`NumpySource`'s methods.
    The default generator is reseeded with its seed on entry and on exit.
    """
    if not callable(make_source):
        raise TypeError(f"make_source: expected a function of the seed, got {type(make_source).__name__}")
    saved = _SOURCE[0]
    _SOURCE[0] = make_source
    default_generator.manual_seed(default_generator.initial_seed())
    try:
        yield
    finally:
        _SOURCE[0] = saved
        default_generator.manual_seed(default_generator.initial_seed())


class Generator:
    """A seeded stream of random numbers, as ``torch.Generator``: pass it as ``generator=`` to random functions.

    ``manual_seed(seed)`` restarts the stream (and returns the generator), so equal seeds give equal streams.
    """

    def __init__(self, device="cpu"):
        self.device = check_device(device)
        self.manual_seed(_DEFAULT_SEED)

    def manual_seed(self, seed):
        seed = int(seed)
        if not -(2**63) <= seed < 2**64:
            raise RuntimeError(f"seed: expected a 64-bit integer, got {seed}")
        self._seed = seed % 2**64
        self.source = _SOURCE[0](self._seed)
        return self

    def seed(self):
        """Reseed from the operating system's entropy and return the new seed."""
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        self.manual_seed(seed)
        return seed

    def initial_seed(self):
        """The seed the stream last started from."""
        return self._seed


default_generator = Generator()


def generator_arg(generator, argname="generator"):
    """The generator to draw from: ``generator``, or the default one when None."""
    if generator is None:
        return default_generator
    if not isinstance(generator, Generator):
        raise TypeError(f"{argname}: expected a ge.Generator, got {type(generator).__name__}")
    return generator


def manual_seed(seed):
    """Seed the default generator (randn, rand, nn init, dropout ...) and return it."""
    return default_generator.manual_seed(seed)


def seed():
    """Seed the default generator from the operating system's entropy and return the seed."""
    return default_generator.seed()


def initial_seed():
    """The seed the default generator last started from."""
    return default_generator.initial_seed()
