"""The README's commands as a user types them, from a fresh clone, with the default runs folder:
`make sweep GRID=...` (local, then `CLUSTER=slurm` against the local Slurm cluster),
`make status GRID=...`, `make tables`, and the same sweep a second time.

Each test asserts what the user relies on: every run is done exactly once, in
`runs/<sweep>/<run_id>/`; a second sweep runs nothing; status and tables agree with the
result.json files on disk.

What differs from a user's machine, and why:
- The clone's `.venv` is a thin venv over this checkout's installed packages (a `.pth` file;
  `bin/danet` calls `danet.cli.main`), with its install stamp set, so `make` does not spend
  minutes installing 5 GB of torch per test. The Makefile's install step itself runs in CI,
  whose `make test` starts from a fresh clone.
- The grid is a tiny one passed with `GRID=` (the default grid's 8 runs take about 9 minutes
  here); it keeps every default but the size of the images and the number of iterations.
- `make sweep` with no GRID (the worked example) is not run here, for its length; the README
  shows its real output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import TINY

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """This working tree (tracked and new files, as `git ls-files` sees them) as a fresh
    repository with one commit, and a thin .venv that `make` accepts as installed."""
    root = tmp_path / "danet-bench"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=root, check=True)

    venv = root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    ours = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    # the clone's code first; only plain path lines, so this checkout's editable install
    # (a .pth of its own site folder) is not activated
    (site / "_danet_clone.pth").write_text(f"{root}\n{ours}\n")
    danet = venv / "bin" / "danet"
    danet.write_text(
        f"#!{venv}/bin/python\nimport sys\nfrom danet.cli import main\nsys.exit(main())\n"
    )
    danet.chmod(0o755)
    (venv / ".installed").touch()
    return root


def _grid(folder: Path) -> Path:
    config: dict = {}
    for item in TINY:
        key, value = item.split("=", 1)
        section, leaf = key.split(".")
        config.setdefault(section, {})[leaf] = yaml.safe_load(value)
    path = folder / "tiny.yaml"
    body = {
        "name": "tiny",
        "config": config,
        "grid": {"model.variant": ["none", "pam"], "seed": [0, 1]},
        "launcher": {"timeout_min": 10, "cpus_per_task": 1, "mem_gb": 1},
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _make(clone: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    out = subprocess.run(
        ["make", *args], cwd=clone, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert out.returncode == 0, f"make {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


def _results(clone: Path) -> dict[str, dict]:
    """Every result.json under the clone's runs folder, by run folder (relative)."""
    return {
        str(p.parent.relative_to(clone)): json.loads(p.read_text())
        for p in (clone / "runs").rglob("result.json")
    }


def _check_done_once(clone: Path, sweep: str) -> None:
    results = _results(clone)
    assert sorted(Path(k).parent.as_posix() for k in results) == [f"runs/{sweep}"] * 4, results
    for run in results:
        log = [json.loads(x) for x in (clone / run / "log.jsonl").read_text().splitlines()]
        steps = [x["iteration"] for x in log if "loss" in x]
        assert steps == [1, 2, 3, 4], (run, steps)  # trained once: no step repeated

    status = _make(clone, "status", f"GRID={clone.parent / 'tiny.yaml'}").stdout
    assert "4 done" in status, status
    rows = {line.split()[0]: line for line in status.splitlines()[2:] if "-s" in line}
    for run, result in results.items():
        row = rows[Path(run).name]  # run, state, progress, loss, mIoU, time, ETA, resumes, ...
        assert row.split()[1:3] == ["done", "4/4"] and f" {100 * result['miou']:.2f} " in row

    _make(clone, "tables")
    table = pd.read_csv(clone / "reports" / "tables" / "main.csv")
    assert sorted(table["Method"]) == ["none", "pam"] and list(table["n"]) == [2, 2]
    for variant, rows in pd.DataFrame(results.values()).groupby("variant"):
        shown = table.loc[table["Method"] == variant, "mIoU"].item()
        assert shown == pytest.approx(100 * rows["miou"].mean(), abs=0.01)


def test_make_sweep_local_twice_with_the_default_runs_folder(clone):
    grid = _grid(clone.parent)
    first = _make(clone, "sweep", f"GRID={grid}").stdout
    assert "4 runs: 0 done, 4 to run" in first and first.count("  done ") == 4, first
    assert (clone / "reports" / "tiny" / "main.md").is_file()
    _check_done_once(clone, "tiny")
    again = _make(clone, "sweep", f"GRID={grid}").stdout
    assert "4 runs: 4 done, 0 to run" in again and "  start " not in again, again

    # Before run paths were absolute, a Slurm sweep with the default runs folder wrote its
    # runs to runs/<sweep>/.code/<stamp>/runs/<sweep>/<run_id>/: status points them out and
    # the next sweep moves them back, training nothing.
    sweep = clone / "runs" / "tiny"
    stranded = sweep / ".code" / "20261203-101010-0123abcd" / "runs" / "tiny"
    stranded.mkdir(parents=True)
    moved = sorted(p for p in sweep.iterdir() if not p.name.startswith("."))[:2]
    for run in moved:
        run.rename(stranded / run.name)
    status = _make(clone, "status", f"GRID={grid}")
    assert "2 done" in status.stdout and "2 runs of this sweep lie inside" in status.stderr
    third = _make(clone, "sweep", f"GRID={grid}").stdout
    assert "moved 2 run folders" in third and "4 runs: 4 done, 0 to run" in third, third
    assert all((run / "result.json").is_file() for run in moved)
    _check_done_once(clone, "tiny")


@pytest.mark.slurm
def test_make_sweep_on_slurm_twice_with_the_default_runs_folder(slurm_cluster, clone):
    grid = _grid(clone.parent)
    first = _make(clone, "sweep", f"GRID={grid}", "CLUSTER=slurm").stdout
    assert "4 runs: 0 done, 4 to run" in first and first.count("  done ") == 4, first
    snapshots = list((clone / "runs" / "tiny" / ".code").iterdir())
    assert len(snapshots) == 1 and not list(snapshots[0].rglob("result.json"))
    _check_done_once(clone, "tiny")
    for result in _results(clone).values():
        assert Path(result["code_dir"]).parent == clone / "runs" / "tiny" / ".code"
    again = _make(clone, "sweep", f"GRID={grid}", "CLUSTER=slurm").stdout
    assert "4 runs: 4 done, 0 to run" in again and "submitted" not in again, again
