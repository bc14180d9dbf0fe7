"""The run folder has one owner (danet/run_folder.py): its names, its readers, the run states."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from danet import run_folder as F
from danet.run_folder import State

REPO = Path(__file__).resolve().parent.parent
NAMES = {F.CONFIG, F.LOG, F.RESULT, F.CHECKPOINTS, F.TENSORBOARD, F.LOCK, F.JOB, F.ERROR, F.STOP,
         F.CANCELLED, F.COST_CACHE, F.CODE_SNAPSHOTS, F.SUBMITIT, F.LAUNCH_LOCK}
STATES = {s.value for s in State}


def _literals(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_only_the_owner_spells_a_run_file_name():
    found = {}
    for folder in ("danet", "slurm", "analysis"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == REPO / "danet" / "run_folder.py":
                continue
            if names := _literals(path) & NAMES:
                found[str(path.relative_to(REPO))] = sorted(names)
    assert not found, f"run folder names spelled outside danet/run_folder.py: {found}"


def _compared(path: Path) -> set[str]:
    """The strings a file compares with (`x == "done"`, `x in ("pending", "running")`)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                out |= {i.value for i in items if isinstance(i, ast.Constant)}
    return out


def test_the_launcher_compares_no_run_state_as_a_string():
    """slurm/ and the command line compare states through danet.run_folder.State."""
    found = {}
    for path in [*sorted((REPO / "slurm").rglob("*.py")), REPO / "danet" / "cli.py"]:
        if states := _compared(path) & STATES:
            found[str(path.relative_to(REPO))] = sorted(states)
    assert not found, f"run states compared as strings: {found}"


def test_read_log_skips_torn_lines_and_keeps_the_order(tmp_path):
    assert F.read_log(tmp_path) == []  # no log yet
    records = [{"iteration": 1, "loss": 2.0}, {"event": "resume", "iteration": 1}]
    text = "".join(json.dumps(r) + "\n" for r in records)
    (tmp_path / F.LOG).write_text(text + "3\n" + '{"iteration": 2, "lo')  # a number, torn
    assert F.read_log(tmp_path) == records


def test_results_read_strictly_for_the_analysis_and_leniently_for_the_status(tmp_path):
    assert F.read_result(tmp_path) is None
    with pytest.raises(OSError):
        F.load_result(tmp_path)
    (tmp_path / F.RESULT).write_text('{"miou": 0.5')  # torn
    assert F.read_result(tmp_path) is None
    with pytest.raises(ValueError):
        F.load_result(tmp_path)
    (tmp_path / F.RESULT).write_text('{"miou": 0.5}')
    assert F.read_result(tmp_path) == F.load_result(tmp_path) == {"miou": 0.5}


def test_run_folders_are_those_with_a_config_or_a_job(tmp_path):
    for name, file in (("a", F.CONFIG), ("b", F.JOB), ("c", "other.txt")):
        (tmp_path / name).mkdir()
        (tmp_path / name / file).write_text("{}")
    assert [p.name for p in F.run_folders(tmp_path)] == ["a", "b"]
    assert F.run_folders(tmp_path / "absent") == []


def test_states_read_and_print_as_their_names():
    assert State("done") is State.DONE and f"{State.CANCELLED}" == "cancelled"
    assert json.dumps({State.NEW: State.RUNNING}) == '{"new": "running"}'
    assert {"pending", "running", "requeued"} == F.ACTIVE
