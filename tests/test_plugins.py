"""Attention modules from the user's own code (config key `plugins`, danet/plugins.py): each
mistake is one line naming the plugin, exit 2; a plugin outside the repository runs in a sweep."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import variants
from danet import config as C
from danet import plugins
from danet.cli import main
from danet.errors import DanetError

from .conftest import TINY

REPO = Path(__file__).parent.parent

GOOD = """
import torch
from torch import nn

import variants


class Scale(nn.Module):
    def __init__(self, channels: int, init: float = 0.5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((1,), init))

    def forward(self, x):
        return x * (1 + self.gamma)


variants.register("myscale", Scale, family="gating", attends="nothing", cost="N C")
"""


@pytest.fixture(autouse=True)
def _clean_registry():
    """Plugins registered here leave the registry (other tests list every variant)."""
    registry, loaded = dict(variants._REGISTRY), set(sys.modules)
    yield
    variants._REGISTRY.clear()
    variants._REGISTRY.update(registry)
    for name in set(sys.modules) - loaded:
        if name.startswith("danet_plugin_"):
            del sys.modules[name]


def _train(tmp_path, monkeypatch, capsys, *overrides):
    """`danet train ...` as typed in tmp_path; (exit code, stderr lines)."""
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--runs-root", str(tmp_path / "runs"), *TINY, *overrides])
    return code, capsys.readouterr().err.strip().splitlines()


def test_register_checks_options_from_the_signature():
    def make(channels: int, width: int = 2, scale: float = 1.0) -> nn.Module:
        return nn.Conv2d(channels, channels, 1)

    variants.register("tiny_conv", make)
    assert variants.options("tiny_conv") == {"width": 2, "scale": 1.0}
    assert variants.check_options("tiny_conv", {"scale": "1e-3"}) == {"scale": 1e-3}
    with pytest.raises(DanetError, match="model.variant_opts.width must be an integer"):
        variants.check_options("tiny_conv", {"width": 1.5})
    with pytest.raises(DanetError, match="unknown option 'depth' for variant 'tiny_conv'"):
        variants.create("tiny_conv", 8, depth=3)
    assert isinstance(variants.create("tiny_conv", 8, width=3), nn.Conv2d)
    variants.check_shape("tiny_conv", {})
    variants.register("tiny_conv", make)  # the same factory again: nothing new


def test_register_refuses_a_taken_name_and_a_factory_that_is_not_callable():
    with pytest.raises(DanetError, match=r"the name 'pam' is taken \(a built-in: .*PAM\)"):
        variants.register("pam", lambda channels: nn.Identity())
    variants.register("mine", lambda channels: nn.Identity())
    with pytest.raises(DanetError, match="'mine' is taken"):
        variants.register("mine", nn.Identity)
    with pytest.raises(DanetError, match="the factory must be callable"):
        variants.register("other", 3)


def test_a_plugin_file_loads_once_from_any_path(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    cfg = C.build(None, ["plugins=[./mine.py]", "model.variant=myscale"])
    assert cfg.plugins == (str(tmp_path.resolve() / "mine.py"),)
    plugins.load(cfg.plugins)
    plugins.load(cfg.plugins)  # idempotent: no clash
    assert variants.info("myscale").source == cfg.plugins[0]
    x = torch.randn(1, 4, 3, 3)
    assert torch.allclose(variants.create("myscale", 4)(x), 1.5 * x)
    # relative to the config file that names it, not to the current directory
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cfg.yaml").write_text("plugins: [../mine.py]\n")
    monkeypatch.chdir(REPO)
    assert C.build(tmp_path / "sub" / "cfg.yaml").plugins == cfg.plugins


BAD = {
    "import": ("class A(nn.Module):\n    pass\n", "failed to import: NameError: name 'nn' is "
               "not defined"),
    "clash": ("import variants\nfrom torch import nn\nvariants.register('pam', nn.Identity)\n",
              r"the name 'pam' is taken \(a built-in"),
    "not_a_module": ("import variants\nvariants.register('mine', lambda channels: 3)\n",
                     "its factory returned int, not a torch.nn.Module"),
    "shape": ("import variants\nfrom torch import nn\n"
              "variants.register('mine', lambda channels: nn.Conv2d(channels, 2 * channels, 1))\n",
              r"changes the shape of its input: \(1, 16, 8, 8\) -> \(1, 32, 8, 8\)"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_a_bad_plugin_is_one_line_naming_it_exit_2(tmp_path, monkeypatch, capsys, case):
    text, message = BAD[case]
    (tmp_path / "bad.py").write_text(text)
    variant = "pam" if case == "clash" else "mine"
    code, err = _train(
        tmp_path, monkeypatch, capsys, "plugins=[./bad.py]", "model.variant=" + variant
    )
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("danet train: error: ") and str(tmp_path / "bad.py") in err[0]
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_a_missing_plugin_file_or_module(tmp_path, monkeypatch, capsys):
    code, err = _train(tmp_path, monkeypatch, capsys, "plugins=[./nope.py]")
    assert code == 2 and len(err) == 1
    assert f"plugin {tmp_path.resolve() / 'nope.py'}: file not found" in err[0]
    code, err = _train(tmp_path, monkeypatch, capsys, "plugins=[no_such_pkg.attention]")
    assert code == 2 and len(err) == 1
    assert "plugin no_such_pkg.attention: cannot be imported" in err[0]


def test_a_grid_names_its_plugin_relative_to_itself(tmp_path, monkeypatch, capsys):
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "mine.py").write_text(GOOD)
    grid = tmp_path / "grids" / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "plugins": ["mine.py"],
                                    "grid": {"model.variant": ["myscale", "none"]}}))  # fmt: skip
    monkeypatch.chdir(REPO)
    assert main(["sweep", str(grid), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"plugins: [{(tmp_path / 'grids' / 'mine.py').resolve()}]" in out
    assert "model.variant=myscale" in out


def test_variants_table_lists_a_plugin(tmp_path, capsys):
    from variants.__main__ import main as table_main

    (tmp_path / "mine.py").write_text(GOOD)
    assert table_main(["--plugins", str(tmp_path / "mine.py")]) == 0
    assert "| `myscale` | gating | nothing | N C | `init=0.5` |" in capsys.readouterr().out
    assert table_main(["--plugins", str(tmp_path / "nope.py")]) == 2


def _tiny_config() -> dict:
    config: dict = {}
    for item in TINY:
        key, value = item.split("=", 1)
        section, leaf = key.split(".")
        config.setdefault(section, {})[leaf] = yaml.safe_load(value)
    config["train"].update(iterations=2, tensorboard=False)
    return config


def test_a_plugin_outside_the_repository_runs_in_a_local_sweep(tmp_path, capsys):
    """As a user types it: the plugin in its own folder, jobs in fresh processes."""
    home = tmp_path / "my_project"
    home.mkdir()
    (home / "my_attention.py").write_text(GOOD)
    grid = home / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "mine", "config": {**_tiny_config(), "plugins": ["my_attention.py"]},
        "grid": {"model.variant": ["myscale", "none"]},
        "launcher": {"cluster": "local", "max_parallel": 2, "timeout_min": 10},
    }))  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "danet.cli", "sweep", "grid.yaml", "--runs-root",
         str(tmp_path / "runs"), "--reports", str(tmp_path / "reports")],
        capture_output=True, text=True, timeout=600, cwd=home,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = {
        json.loads(p.read_text())["variant"]: json.loads(p.read_text())
        for p in (tmp_path / "runs" / "mine").glob("*/result.json")
    }
    assert set(results) == {"myscale", "none"}
    path = (home / "my_attention.py").resolve()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert results["myscale"]["plugins"] == [{"entry": str(path), "path": str(path),
                                              "sha256": sha}]  # fmt: skip
    # danet eval reads the run's config.yaml, and its plugins with it
    run_dir = next(p.parent for p in (tmp_path / "runs" / "mine").glob("myscale-*/result.json"))
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 0
    assert '"miou"' in capsys.readouterr().out
