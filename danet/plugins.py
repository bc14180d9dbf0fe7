"""Attention modules from the user's own code: the config key `plugins` names Python modules
(`my_pkg.attention`) or .py files (`./my_attention.py`) whose import calls
`variants.register(...)` (attention modules) or `danet.data.register_dataset(...)` (dataset
layouts that need code). Every process that checks or builds a model loads them first
(danet.checks.check_config), so sweep jobs in fresh processes find them too.

Relative file paths are made absolute when the config is read (`resolve`): against the folder
of the grid or config file that names them, else the current directory.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from danet.errors import DanetError, one_line

FIX = "fix it, or remove it from the config key 'plugins'"


def is_file(entry: str) -> bool:
    """A path to a .py file (else an importable module name)."""
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def resolve(entries: Iterable[str], base: Path | None = None) -> tuple[str, ...]:
    """File entries made absolute against `base` (default: the current directory)."""
    base = Path.cwd() if base is None else base
    return tuple(
        str((base / e).absolute().resolve()) if is_file(e) and not Path(e).is_absolute() else e
        for e in entries
    )


def module_name(path: Path) -> str:
    """A stable module name for a plugin file: the same file is the same module."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    return f"danet_plugin_{stem}_{digest}"


# A Slurm sweep's code snapshot holds a copy of each plugin file (slurm/snapshot.py), listed
# here by original path; jobs running that snapshot import the copies, so editing a plugin
# after submission changes no queued run, as for the project's own code.
SNAPSHOT_DIR = Path(__file__).resolve().parents[1] / ".plugins"
MANIFEST = "manifest.json"


def copy_into(target: Path, entries: Iterable[str]) -> dict[str, dict]:
    """Copy the plugin files among `entries` into the code snapshot `target`; the manifest
    that jobs read (original path -> copy and sha256) is returned and written there."""
    import shutil

    from danet.utils import atomic_write_json, sha256_file

    folder = target / SNAPSHOT_DIR.name
    manifest: dict[str, dict] = {}
    for entry in dict.fromkeys(entries):
        if not is_file(entry):
            continue
        path = Path(entry).absolute()
        if not path.is_file():
            raise DanetError(f"plugin {entry}: file not found; {FIX}")
        copy = folder / f"{module_name(path)}.py"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
        manifest[str(path)] = {"copy": copy.name, "sha256": sha256_file(copy)}
    if manifest:
        atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def source_file(path: Path) -> Path:
    """The file to import for plugin file `path`: its copy when this code is a sweep's snapshot
    that holds one, else the file itself."""
    import json

    manifest = SNAPSHOT_DIR / MANIFEST
    if not manifest.is_file():
        return path
    found = json.loads(manifest.read_text()).get(str(path))
    return SNAPSHOT_DIR / found["copy"] if found else path


def load(entries: Iterable[str]) -> None:
    """Import each plugin once (again: nothing happens); a DanetError names the plugin."""
    for entry in entries:
        _load_one(entry)


def _load_one(entry: str) -> None:
    import variants  # here, not above: resolving and copying plugin paths needs no torch
    from danet.data import layouts

    name = module_name(Path(entry).absolute()) if is_file(entry) else entry
    if name in sys.modules:
        return
    spec = _spec(entry)
    try:  # what it registers names it; a failed import registers nothing
        with variants.registering(entry), layouts.registering(entry):
            if spec is None:
                importlib.import_module(name)
            else:
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException as e:
        sys.modules.pop(name, None)
        if isinstance(e, DanetError) or not isinstance(e, Exception):  # register's own words
            raise
        raise DanetError(f"plugin {entry} failed to import: {one_line(e)}; {FIX}") from None


def _spec(entry: str) -> importlib.machinery.ModuleSpec | None:
    """The spec to execute for a plugin file; None for a module, found on the Python path."""
    if is_file(entry):
        path = Path(entry).absolute()
        source = source_file(path)
        if not source.is_file():
            raise DanetError(f"plugin {entry}: file not found; {FIX}")
        spec = importlib.util.spec_from_file_location(module_name(path), source)
        if spec is None or spec.loader is None:
            raise DanetError(f"plugin {entry}: not a Python file; {FIX}")
        return spec
    try:
        found, error = importlib.util.find_spec(entry), f"no module named '{entry}'"
    except (ImportError, ValueError) as e:  # a parent package missing, or a bad name
        found, error = None, one_line(e)
    if found is None:
        raise DanetError(
            f"plugin {entry}: cannot be imported ({error}); give a module on the Python "
            f"path or a path to a .py file; {FIX}"
        )
    return None


def record(entries: Iterable[str]) -> list[dict]:
    """result.json's `plugins`: each plugin's file, the file imported (a snapshot's copy, or
    the same) and its sha256 (a module plugin: its module's file)."""
    from danet.utils import sha256_file

    out = []
    for entry in entries:
        if is_file(entry):
            path = Path(entry).absolute()
            loaded = source_file(path)
        else:
            module = sys.modules.get(entry)
            path = loaded = Path(getattr(module, "__file__", None) or entry)
        sha = sha256_file(loaded) if loaded.is_file() else None
        out.append({"entry": entry, "path": str(path), "loaded_from": str(loaded), "sha256": sha})
    return out
