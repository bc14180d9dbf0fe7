"""Imports flow one way: the library (danet/) never imports the launcher or the analysis, and
reading a grid or a table never loads the training loop (`danet/cli.py`, the command line,
dispatches to all three)."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_library_imports_neither_launcher_nor_analysis():
    for path in sorted((REPO / "danet").rglob("*.py")):
        if path.name == "cli.py":  # the command line is the one place that ties them together
            continue
        outward = {n for n in _imported(path) if n.split(".")[0] in ("slurm", "analysis")}
        assert not outward, f"{path.relative_to(REPO)} imports {sorted(outward)}"


def test_grids_checks_and_tables_load_without_the_training_loop():
    code = (
        "import sys; import slurm.grid, slurm.launch, slurm.status, analysis.collect, "
        "analysis.tables, analysis.plots, analysis.bench, analysis.profile, danet.checks; "
        "print('danet.engine.train' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
