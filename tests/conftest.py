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


@pytest.fixture(scope="session", autouse=True)
def _scene_cache(tmp_path_factory):
    """The built-in dataset's scene cache in the session's temporary folder, not ~/.cache
    (inherited by the subprocesses that tests start)."""
    import os

    from danet.data import scene_cache

    old = os.environ.get(scene_cache.ENV)
    os.environ[scene_cache.ENV] = str(tmp_path_factory.mktemp("scene-cache"))
    yield
    if old is None:
        os.environ.pop(scene_cache.ENV, None)
    else:
        os.environ[scene_cache.ENV] = old


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_network(monkeypatch):
    """Any network connection fails the test: weights and data come from local files only."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def tiny_cfg():
    def make(*overrides: str) -> C.Config:
        return C.build(None, TINY + list(overrides))

    return make


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node Slurm (slurm/local_cluster.sh) for the session; SLURM_CONF points the
    clients at it. Skipped where it cannot start (not root, Slurm not installed: `make
    system-packages`), unless DANET_REQUIRE_SLURM=1 (CI) makes that a failure."""
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).parent.parent / "slurm" / "local_cluster.sh"
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "LOCAL_SLURM_NO_INSTALL": "1"}  # tests never install (.ci/run does)
    out = subprocess.run(["bash", str(script), "start", str(folder)], capture_output=True,
                         text=True, timeout=300, env=env)
    if out.returncode != 0:
        message = f"no local Slurm: {out.stderr.strip().splitlines()[-1:]}"
        if os.environ.get("DANET_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    yield folder
    subprocess.run(["bash", str(script), "stop", str(folder)], capture_output=True, timeout=120)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5) -> None:
    """Poll `predicate` until it is true; fail naming `what` after `timeout` seconds."""
    import time

    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def clean_registries():
    """Variants, datasets and plugin modules registered by a test leave with it (other tests
    list every variant and dataset)."""
    import sys

    import variants
    from danet.data import layouts

    names, datasets, loaded = set(variants.available()), set(layouts.LAYOUTS), set(sys.modules)
    yield
    for name in set(variants.available()) - names:
        variants.unregister(name)
    for name in set(layouts.LAYOUTS) - datasets:
        layouts.unregister_dataset(name)
    for name in set(sys.modules) - loaded:
        if name.startswith("danet_plugin_"):
            del sys.modules[name]


def tiny_grid(path, name: str, *overrides: str, variants=("none", "pam")):
    """A local grid file of TINY settings (plus `overrides`, key=value) over `variants`, two
    runs at once: what the sweep tests launch as a user would."""
    import yaml

    config: dict = {}
    for item in [*TINY, *overrides]:
        key, value = item.split("=", 1)
        section, leaf = key.split(".")
        config.setdefault(section, {})[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump({
        "name": name, "config": config, "grid": {"model.variant": list(variants)},
        "launcher": {"cluster": "local", "max_parallel": 2, "timeout_min": 10},
    }))
    return path
