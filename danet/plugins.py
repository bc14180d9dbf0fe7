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
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from danet.errors import DanetError

FIX = "fix it, or remove it from the config key 'plugins'"
_LOADING = ""  # the plugin being imported: registrations made meanwhile name it


def loading() -> str:
    """The entry of the plugin being imported now ("" outside a plugin's import)."""
    return _LOADING


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
    import variants
    from danet.data import layouts

    if is_file(entry):
        path = Path(entry).absolute()
        name = module_name(path)
        if name in sys.modules:
            return
        source = source_file(path)
        if not source.is_file():
            raise DanetError(f"plugin {entry}: file not found; {FIX}")
        spec = importlib.util.spec_from_file_location(name, source)
        if spec is None or spec.loader is None:
            raise DanetError(f"plugin {entry}: not a Python file; {FIX}")
        module = importlib.util.module_from_spec(spec)
    else:
        name = entry
        if name in sys.modules:
            return
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as e:  # a parent package missing, or a bad name
            spec, error = None, f"{type(e).__name__}: {e}"
        else:
            error = f"no module named '{name}'"
        if spec is None:
            raise DanetError(
                f"plugin {entry}: cannot be imported ({error}); give a module on the Python "
                f"path or a path to a .py file; {FIX}"
            )
        module = None
    global _LOADING
    before = set(variants._REGISTRY), set(layouts.LAYOUTS)
    _LOADING = entry
    try:
        if module is None:
            importlib.import_module(name)
        else:
            sys.modules[name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException as e:
        sys.modules.pop(name, None)
        for added in set(variants._REGISTRY) - before[0]:  # a later import starts clean
            del variants._REGISTRY[added]
        for added in set(layouts.LAYOUTS) - before[1]:
            for registry in (layouts.LAYOUTS, layouts.LISTERS, layouts.SOURCES):
                registry.pop(added, None)
        if isinstance(e, DanetError):  # from variants.register: names the plugin already
            raise
        if not isinstance(e, Exception):
            raise
        first = (str(e).splitlines() or [""])[0]
        raise DanetError(
            f"plugin {entry} failed to import: {type(e).__name__}: {first}; {FIX}"
        ) from None
    finally:
        _LOADING = ""


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
