"""Data order that a resumed run can continue exactly: (index, draw) pairs from iteration k on."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def seed_from(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class ResumableSampler(Sampler):
    """Endless epochs, each a permutation seeded by (seed, epoch), starting at draw `start`.

    Yields (index, draw): `draw` counts samples since the start of training and seeds that
    sample's augmentation, so the stream after a resume equals the uninterrupted one.
    `rank`/`world` take every world-th draw, for a distributed run.
    """

    def __init__(self, length: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        self.length, self.seed, self.start, self.rank, self.world = length, seed, start, rank, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        draw = self.start + self.rank
        while True:
            epoch, pos = divmod(draw, self.length)
            perm = torch.randperm(
                self.length, generator=torch.Generator().manual_seed(seed_from(self.seed, epoch))
            )
            while pos < self.length:
                yield int(perm[pos]), draw
                draw += self.world
                pos += self.world
