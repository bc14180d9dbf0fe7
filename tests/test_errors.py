"""Each user mistake: one line naming the key or file and the valid choices, exit 2."""

import argparse
import re
import subprocess
import sys

import pytest
import yaml

from danet import config as C
from danet.errors import DanetError


def _cli(capsys, *args: str) -> tuple[int, str]:
    """`danet ARGS` in this process (the same code as a shell's, without the start-up):
    (exit code, stderr)."""
    from danet.cli import main

    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def danet(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "danet.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "model.variant=pamm"],
            "unknown model.variant 'pamm' (did you mean 'pam'?); valid: a2net, ann, axial, cam,",
        ),
        (["train", "train.lrr=0.1"], "unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
        (["train", "train.lr=fast"], "'train.lr' must be a number, got 'fast'"),
        (["train", "model.backbone=resnet5"], "unknown model.backbone 'resnet5'"),
        (["train", "data.setting=global"], "unknown data.setting 'global'"),
        (
            ["train", "model.variant_opts={reductio: 4}", "model.variant=pam"],
            "unknown option 'reductio' for variant 'pam' (did you mean 'reduction'?); "
            "valid options: impl, reduction",
        ),
        (["train", "train.iterations=0"], "'train.iterations' must be positive, got 0"),
        (
            ["train", "train.loss_weights=[1]"],
            "'train.loss_weights' has 1 weights; variant 'danet' has 3 outputs",
        ),
        (["train", "data.scale_range=[2, 1]"], "'data.scale_range' must be [low, high]"),
        (
            ["train", "data.scale_mode=danet-v0.5"],
            "unknown data.scale_mode 'danet-v0.5' (did you mean 'danet-v0.5.0'?)",
        ),
        (
            ["train", "data.scale_mode=mmseg", "data.base_size=1024"],
            "'data.scale_mode' mmseg reads 'data.base_size' as [long, short], got 1024",
        ),
        (
            ["train", "data.scale_mode=danet-v0.5.0", "data.base_size=[2048,1024]"],
            "'data.scale_mode' danet-v0.5.0 reads 'data.base_size' as one side",
        ),
        (["train", "lr0.1"], "override 'lr0.1' is not key=value"),
    ],
)
def test_cli_error_is_one_line(args, message, capsys):
    code, err = _cli(capsys, *args)
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_cli_error_as_typed_in_a_shell():
    """The same in a fresh process, as a user's shell runs it: one line, exit 2."""
    out = danet("train", "model.variant=pamm")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    import variants

    assert out.stderr.splitlines() == [
        "danet train: error: unknown model.variant 'pamm' (did you mean 'pam'?); valid: "
        + ", ".join(sorted(variants.available()))
    ]


def test_bad_files(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lr: [1\n")
    assert "not valid YAML" in _cli(capsys, "train", "--config", str(cfg))[1]
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ngrid:\n  model.variant: [none, dual]\n")
    code, err = _cli(capsys, "sweep", str(grid), "--dry-run")
    assert code == 2 and "grid point {'model.variant': 'dual'}" in err
    assert "unknown model.variant 'dual'" in err
    grid.write_text("name: g\ngrids:\n  seed: [0]\n")
    assert "unknown key 'grids' (did you mean 'grid'?)" in _cli(capsys, "sweep", str(grid))[1]
    grid.write_text("name: g\nlauncher:\n  max_paralel: 2\n")
    assert (
        "unknown launcher key 'max_paralel' (did you mean 'max_parallel'?)"
        in _cli(capsys, "sweep", str(grid))[1]
    )
    grid.write_text("name: g\nlauncher:\n  max_parallel: two\n  snapshot: 1\n")
    code, err = _cli(capsys, "sweep", str(grid), "--dry-run")  # typed as config keys
    assert code == 2 and "'launcher.max_parallel' must be an integer, got 'two'" in err
    grid.write_text("name: g\nlauncher:\n  snapshot: 1\n")
    code, err = _cli(capsys, "sweep", str(grid), "--dry-run")
    assert "g.yaml: 'launcher.snapshot' must be true or false, got 1" in err
    code, err = _cli(capsys, "sweep", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml: file not found" in err
    code, err = _cli(capsys, "eval", str(tmp_path))
    assert code == 2 and "config.yaml: not found" in err


def test_config_file_and_overrides_compose(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  variant: cam\n  variant_opts: {form: paper}\ntrain:\n  lr: 0.02\n")
    cfg = C.build(f, ["train.lr=0.03"])
    assert cfg.model.variant == "cam" and cfg.model.variant_opts == {"form": "paper"}
    assert cfg.train.lr == 0.03
    assert C.from_dict(C.to_dict(cfg)) == cfg
    with pytest.raises(DanetError, match=r"c.yaml: 'train.batch_size' must be an integer, got 2.5"):
        f.write_text("train:\n  batch_size: 2.5\n")
        C.build(f)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser: the built-in ones and each tool module's own."""
    import importlib

    from danet.cli import TOOLS, parser

    top = parser()
    (sub,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    out = {"danet": top, **{f"danet {k}": v for k, v in sub.choices.items() if k not in TOOLS}}
    for name, (module, _) in TOOLS.items():
        out[f"danet {name}"] = importlib.import_module(module).parser()
    return out


def test_every_command_and_option_explains_itself():
    """`danet --help` lists every subcommand with a line; every option of every command has
    help text; each description is whole sentences (none cut off mid-sentence)."""
    from danet.cli import TOOLS

    parsers = _parsers()
    top_help = parsers["danet"].format_help()
    for name in [n.split()[1] for n in parsers if n != "danet"]:
        assert re.search(rf"^    {name} +\S", top_help, re.M), f"{name} not listed with help"
    assert set(TOOLS) <= {n.split()[-1] for n in parsers}
    for prog, p in parsers.items():
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), f"{prog} {action.dest}: no help text"
        description = (p.description or "").strip()
        assert description, f"{prog}: no description"
        assert description[-1] in ".:)", f"{prog}: description cut off: ...{description[-40:]}"


def test_help_of_every_command_prints_cleanly():
    """Each `danet CMD --help` as typed, in one process: exit 0, its own usage line, and
    nothing on stderr (no library warning), and `--version` names the commit."""
    from danet.cli import TOOLS, parser

    (sub,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = [*sub.choices, *TOOLS]
    script = (
        "import sys\nfrom danet.cli import main\n"
        f"for cmd in {sorted(set(commands))!r}:\n"
        "    try:\n        main([cmd, '--help'])\n    except SystemExit as e:\n"
        "        assert e.code in (0, None), (cmd, e.code)\n"
        "    print('=== end', cmd, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    for cmd in set(commands):
        assert f"usage: danet {cmd} " in out.stdout, cmd
    version = danet("--version")
    assert version.returncode == 0 and re.match(r"danet-bench \S+ \(commit \w+", version.stdout)


def test_config_prints_the_resolved_config_with_its_run_id(capsys):
    from danet.cli import main

    assert main(["config", "model.variant=pam", "train.lr=0.02"]) == 0
    out = capsys.readouterr().out
    cfg = C.from_dict(yaml.safe_load(out))
    assert cfg == C.build(None, ["model.variant=pam", "train.lr=0.02"])
    assert out.startswith(f"# run id: {C.run_id(cfg)}\n")
    code, err = _cli(capsys, "config", "model.variant=pan")
    assert code == 2 and "did you mean 'pam'" in err
