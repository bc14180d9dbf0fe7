from __future__ import annotations

import pytest
import torch

from danet import config as C

# Small and fast: a 64 px version of the built-in dataset and a few iterations.
TINY = [
    "data.image_size=64",
    "data.crop_size=64",
    "data.train_size=16",
    "data.val_size=4",
    "train.batch_size=2",
    "train.iterations=4",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.threads=1",
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_cfg():
    def make(*overrides: str) -> C.Config:
        return C.build(None, TINY + list(overrides))

    return make
