"""Attention modules from the user's own code (config key `plugins`, danet/plugins.py): each
mistake is one line naming the plugin, exit 2; a plugin outside the repository runs in a sweep."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import variants
from danet import config as C
from danet import plugins
from danet.checks import check_config
from danet.cli import main
from danet.data import build_dataset, num_classes
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


pytestmark = pytest.mark.usefixtures("clean_registries")


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
}


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
                                    "grid": {"model.variant": ["myscale", "none"]}}))
    monkeypatch.chdir(REPO)
    assert main(["sweep", str(grid), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"plugins: [{(tmp_path / 'grids' / 'mine.py').resolve()}]" in out
    assert "model.variant=myscale" in out


def test_variants_table_lists_a_plugin(tmp_path, capsys):
    (tmp_path / "mine.py").write_text(GOOD)
    assert main(["variants", "--plugins", str(tmp_path / "mine.py")]) == 0
    assert "| `myscale` | gating | nothing | N C | `init=0.5` |" in capsys.readouterr().out
    assert main(["variants", "--plugins", str(tmp_path / "nope.py")]) == 2
    assert "danet variants: error: plugin " in capsys.readouterr().err


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
    }))
    out = subprocess.run(
        [sys.executable, "-m", "danet.cli", "sweep", "grid.yaml", "--runs-root",
         str(tmp_path / "runs"), "--reports", str(tmp_path / "reports")],
        capture_output=True, text=True, timeout=600, cwd=home,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = {
        json.loads(p.read_text())["variant"]: json.loads(p.read_text())
        for p in (tmp_path / "runs" / "mine").glob("*/result.json")
    }
    assert set(results) == {"myscale", "none"}
    path = (home / "my_attention.py").resolve()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert results["myscale"]["plugins"] == [{"entry": str(path), "path": str(path),
                                              "loaded_from": str(path), "sha256": sha}]
    # danet eval reads the run's config.yaml, and its plugins with it
    run_dir = next(p.parent for p in (tmp_path / "runs" / "mine").glob("myscale-*/result.json"))
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 0
    assert '"miou"' in capsys.readouterr().out


# ---------------------------------------------------------------- dataset plugins

EXAMPLE_DATASET = REPO / "experiments" / "plugin_example" / "my_dataset.py"


def _side_by_side(root: Path, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The example plugin's layout: <split>/<stem>.jpg beside <split>/<stem>_mask.png."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        written[split] = []
        for stem in ("a", "b"):
            raw = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(40, 56))
            Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
                root / split / f"{stem}.jpg"
            )
            Image.fromarray(raw).save(root / split / f"{stem}_mask.png")
            written[split].append(raw)
    return written


def test_the_example_dataset_plugin_decodes_and_trains(tmp_path, monkeypatch, capsys):
    root = tmp_path / "photos"
    written = _side_by_side(root)
    overrides = [f"plugins=[{EXAMPLE_DATASET}]", "data.name=side_by_side",
                 f"data.root={root}", "data.crop_size=[32,48]"]
    cfg = C.build(None, [*TINY, *overrides])
    check_config(cfg)
    val = build_dataset(cfg.data, "val")
    assert val.classes == ("background", "road", "car") and num_classes(cfg.data) == 3
    assert [image.name for image, _ in val.samples] == ["a.jpg", "b.jpg"]
    for i, raw in enumerate(written["val"]):
        np.testing.assert_array_equal(val.load(i)[1], raw)  # 0-2 classes, 255 unlabelled
    code, err = _train(tmp_path, monkeypatch, capsys, *overrides, "train.iterations=2")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").glob("*/*/result.json")
    result = json.loads(run_dir.read_text())
    assert result["config"]["data"]["name"] == "side_by_side"
    assert result["classes"] == ["background", "road", "car"]
    assert result["plugins"][0]["sha256"] == hashlib.sha256(
        EXAMPLE_DATASET.read_bytes()).hexdigest()


BAD_DATASETS = {
    "clash": ("from danet.data import register_dataset\n"
              "register_dataset('camvid', lambda root, split: [], ['a'])\n",
              "'camvid' is a built-in dataset; give yours another name"),
    "classes": ("from danet.data import register_dataset\n"
                "register_dataset('mine', lambda root, split: [], [])\n",
                "classes must be a non-empty list of names"),
    "label_ids": ("from danet.data import register_dataset\n"
                  "register_dataset('mine', lambda root, split: [], ['a'], label_ids={7: 1})\n",
                  "label_ids 7 -> 1 is outside raw 0-255 -> class 0-0"),
    "lister": ("from danet.data import register_dataset\n"
               "def pairs(root, split):\n    return [root / 'x.png']\n"
               "register_dataset('mine', pairs, ['a'])\n",
               r"list_samples must return \(image, label\) path pairs, got PosixPath"),
    "raises": ("from danet.data import register_dataset\n"
               "def pairs(root, split):\n    raise KeyError(split)\n"
               "register_dataset('mine', pairs, ['a'])\n",
               r"dataset 'mine' \(plugin .*bad.py\): list_samples\(.*, 'train'\) failed: "
               "KeyError: 'train'"),
    "missing": ("from danet.data import register_dataset\n"
                "def pairs(root, split):\n    return [(root / 'a.jpg', root / 'a.png')]\n"
                "register_dataset('mine', pairs, ['a'])\n",
                r"a.jpg: missing \(the image, listed by dataset 'mine'"),
}


@pytest.mark.parametrize("case", BAD_DATASETS)
def test_a_bad_dataset_plugin_is_one_line_exit_2(tmp_path, monkeypatch, capsys, case):
    text, message = BAD_DATASETS[case]
    (tmp_path / "bad.py").write_text(text)
    (tmp_path / "data").mkdir()
    name = "camvid" if case == "clash" else "mine"
    code, err = _train(tmp_path, monkeypatch, capsys, "plugins=[./bad.py]",
                       f"data.name={name}", f"data.root={tmp_path / 'data'}")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("danet train: error: ") and re.search(message, err[0]), err[0]
    assert not list((tmp_path / "runs").glob("*/*/result.json"))  # nothing ran


def test_an_unknown_dataset_lists_the_plugins_datasets(tmp_path, monkeypatch, capsys):
    code, err = _train(tmp_path, monkeypatch, capsys, f"plugins=[{EXAMPLE_DATASET}]",
                       "data.name=side_by_sid")
    assert code == 2 and len(err) == 1
    assert "side_by_side" in err[0] and "data.name" in err[0], err[0]
