"""Imports flow one way, and each contract has one owner.

The layers: variants/ (the attention registry, the ground floor) imports nothing of danet/ but
its error helpers (danet.errors); danet/ builds on variants/ and never imports the launcher
(slurm/) or the analysis (analysis/), except its command line (danet/cli.py), which dispatches
to all of them; analysis/ reads finished runs and never launches (no slurm/); slurm/ launches
and reads the analysis in one place only: `--seeds-until` (slurm/seeds_until.py) decides the
next seeds from the statistics. No module imports another's private (`_name`) names, and
reading a grid or a table never loads the training loop.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = ("danet", "variants", "slurm", "analysis", "tests")

# What each folder may import of the project (a module, or anything under it).
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "variants": ("variants", "danet.errors"),
    "danet": ("danet", "variants"),
    "analysis": ("analysis", "danet", "variants"),
    "slurm": ("slurm", "danet", "variants"),
}
# The files that tie layers together, and what else each may import.
EXCEPTIONS: dict[str, tuple[str, ...]] = {
    "danet/cli.py": ("slurm", "analysis"),  # the command line dispatches to every layer
    "danet/generated_docs.py": ("slurm.grid",),  # `make docs`: the launcher's key table too
    "slurm/seeds_until.py": ("analysis.collect", "analysis.stats"),  # seeds from the statistics
}


def _imports(tree: ast.AST, package: str = "") -> list[tuple[str, list[str]]]:
    """(module, names imported from it) of every import, those inside functions too;
    relative imports resolved against `package`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.append((module, [alias.name for alias in node.names]))
    return found


def _project(module: str) -> bool:
    return module.split(".")[0] in PROJECT


def _within(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def layer_violations(source: str, path: str) -> list[str]:
    """The imports of file `path` (relative to the repository) that break MAY_IMPORT."""
    allowed = MAY_IMPORT[path.split("/")[0]] + EXCEPTIONS.get(path, ())
    wrong = []
    for module, names in _imports(ast.parse(source)):
        # `from danet import config` imports the module danet.config
        for target in [f"{module}.{n}" for n in names] if module in PROJECT else [module]:
            if _project(target) and not _within(target, allowed):
                wrong.append(target)
    return wrong


def private_violations(source: str, package: str) -> list[str]:
    """`from x import _y`, `import x._y` and `x._y` where x is a project module the file
    imported: another module's private names (dunder names are not private)."""

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    tree, wrong, bound = ast.parse(source), [], set()
    for module, names in _imports(tree, package):
        if not _project(module):
            continue
        wrong += [f"{module}.{n}" for n in names if private(n)]
        wrong += [module] if any(private(part) for part in module.split(".")) else []
        bound.update(names or [module.split(".")[0]])
    for node in ast.walk(tree):
        on_module = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if on_module and private(node.attr) and node.value.id in bound:
            wrong.append(f"{node.value.id}.{node.attr}")
    return wrong


def _files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (REPO / f).rglob("*.py"))


def test_each_layer_imports_only_the_layers_below_it():
    wrong = {}
    for path in _files("variants", "danet", "analysis", "slurm"):
        rel = str(path.relative_to(REPO))
        if found := layer_violations(path.read_text(), rel):
            wrong[rel] = found
    assert not wrong, f"imports against the layers (tests/test_imports.py MAY_IMPORT): {wrong}"


def test_no_module_uses_a_private_name_of_another():
    wrong = {}
    for path in _files(*PROJECT):
        rel = path.relative_to(REPO)
        package = ".".join(rel.parent.parts)
        if found := private_violations(path.read_text(), package):
            wrong[str(rel)] = found
    assert not wrong, f"private names used from another module: {wrong}"


@pytest.mark.parametrize(
    "path, source",
    [
        ("variants/x.py", "from danet.config import coerce"),
        ("variants/x.py", "def f():\n    from danet import plugins"),
        ("variants/x.py", "import danet.plugins"),
        ("danet/engine/x.py", "from slurm.status import run_state"),
        ("analysis/x.py", "from slurm import launch"),
        ("slurm/status.py", "from analysis.stats import BASELINE"),
    ],
)
def test_the_layer_check_catches_an_upward_import(path, source):
    assert layer_violations(source, path)


@pytest.mark.parametrize(
    "source",
    [
        "from danet.models.convert import _one_line",
        "import variants\nvariants._REGISTRY.clear()",
        "from .test_sweep import _sweep",
        "import danet._private",
    ],
)
def test_the_private_check_catches_a_private_name(source):
    assert private_violations(source, "tests")


def test_allowed_imports_pass_the_checks():
    ok = "from danet.errors import DanetError\nimport torch"
    assert not layer_violations(ok, "variants/x.py")
    assert not layer_violations("from analysis.stats import BASELINE", "slurm/seeds_until.py")
    assert not private_violations("from __future__ import annotations\nimport os\nos._exit", "x")


def test_grids_checks_and_tables_load_without_the_training_loop():
    code = (
        "import sys; import slurm.grid, slurm.launch, slurm.status, analysis.collect, "
        "analysis.tables, analysis.plots, analysis.bench, analysis.profile, danet.checks; "
        "print('danet.engine.train' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
