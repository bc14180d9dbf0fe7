"""Grid files (experiments/*.yaml) -> fully resolved runs with deterministic ids.

A grid file has four keys:
  name:     the sweep's name; runs go to RUNS_ROOT/<name>/<run_id>/, reports to reports/<name>.*
  config:   overrides applied to every run (nested mapping of danet.config keys)
  grid:     axis -> list of values; one run per element of the cartesian product. An axis is
            a dotted config key with plain values, or any name with mappings of config keys
            as values (a bundle: keys that change together, e.g. a variant and its lr).
            `model.variant: all` is every registered variant, the grid's plugins' included
  launcher: how to launch (see Launcher)
A top-level `plugins:` list is the config key `plugins` (your own attention modules), as in
`config:`; relative .py paths are resolved against the grid file's folder.
"""

from __future__ import annotations

import itertools
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from danet import config as C
from danet.errors import DanetError, coerce, did_you_mean, unknown_choice

CLUSTERS = ("local", "slurm", "debug")


@dataclass
class Launcher:
    """How runs are launched. Every key can be set in the grid file's `launcher:` block and
    on the command line as `launcher.<key>=value` (`make sweep PARTITION=...` sets one)."""

    cluster: str = "local"  # local: this machine; slurm: sbatch job arrays; debug: in-process
    max_parallel: int = 0  # local: runs at once; 0: one a GPU (runs on GPUs), else cores // threads
    timeout_min: int = 120  # a run's time limit (submitit kills a local job after it, too)
    runs_per_job: int = 1  # local: runs a job trains one after another, imports paid once
    partition: str = ""  # slurm: --partition; "" the cluster's default
    nodes: int = 1  # slurm: nodes per run; DDP spans them
    gpus_per_node: int = 0  # slurm: GPUs per node (--gpus-per-node)
    tasks_per_node: int = 1  # processes per node, one per GPU: DDP's world is nodes x this
    cpus_per_task: int = 0  # slurm: --cpus-per-task; 0: the cluster's default
    mem_gb: int = 0  # slurm: --mem per node in GB; 0: the cluster's default
    qos: str = ""  # slurm: --qos; "" the cluster's default
    account: str = ""  # slurm: --account; "" the cluster's default
    constraint: str = ""  # slurm: --constraint (node features); "" none
    sbatch: dict = field(default_factory=dict)  # other sbatch options, e.g. {exclude: node7}
    array_parallelism: int = 0  # slurm: array tasks running at once (%N); 0: no limit
    max_array_size: int = 0  # runs per array; 0: the cluster's MaxArraySize (more: refused)
    signal_delay_s: int = 90  # slurm: USR2 this long before the time limit (checkpoint, requeue)
    snapshot: bool = True  # slurm: jobs run a copy of the code taken at submission (rsync)


@dataclass
class RunSpec:
    run_id: str
    cfg: C.Config
    run_dir: Path
    axes: dict[str, Any] = field(default_factory=dict)  # this run's grid values


@dataclass
class Grid:
    name: str
    path: Path
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    launcher: Launcher


TOP_KEYS = ("name", "config", "grid", "launcher", "plugins")


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    data = C.load_yaml(path)
    for key in data:
        if key not in TOP_KEYS:
            raise DanetError(
                f"{path}: unknown key '{key}'{did_you_mean(key, TOP_KEYS)}; "
                f"valid: {', '.join(TOP_KEYS)}"
            )
    name = data.get("name") or path.stem
    if not isinstance(name, str) or "/" in name:
        raise DanetError(f"{path}: 'name' must be a plain string (a folder name), got {name!r}")
    base = data.get("config") or {}
    axes = data.get("grid") or {}
    if not isinstance(base, dict):
        raise DanetError(f"{path}: 'config' must be a mapping of config keys")
    if not isinstance(axes, dict):
        raise DanetError(f"{path}: 'grid' must map config keys to lists of values")
    keys = C.flat_keys()
    for key, values in axes.items():
        if key == "model.variant" and values == "all":
            continue  # expanded below, once the plugins are known
        if not isinstance(values, list) or not values:
            raise DanetError(f"{path}: grid axis '{key}' must be a non-empty list, got {values!r}")
        bundles = [isinstance(v, dict) for v in values]
        if any(bundles) and not all(bundles):
            raise DanetError(f"{path}: grid axis '{key}' mixes mappings and plain values")
        if not any(bundles) and key not in keys:
            raise DanetError(
                f"{path}: grid axis '{key}' is not a config key{did_you_mean(key, keys)}; "
                "an axis of other name needs mappings of config keys as values"
            )
    if data.get("plugins"):  # the same as config: {plugins: [...]}, added to its entries
        extra = data["plugins"]
        if not isinstance(extra, list):
            raise DanetError(f"{path}: 'plugins' must be a list of modules or .py files")
        base = {**base, "plugins": [*(C.flatten(base).get("plugins") or []), *extra]}
    if axes.get("model.variant") == "all":
        axes = {**axes, "model.variant": every_variant(base, path)}
    launcher = _launcher(data.get("launcher") or {}, path)
    return Grid(name, path, base, axes, launcher)


def every_variant(base: dict[str, Any], path: Path) -> list[Any]:
    """`model.variant: all`: every registered variant, the grid's own plugins' included, and
    the matched control of each head skeleton in use: `none` with the dual head when a
    variant has two branches (DANet), as {model.variant: none, model.head: dual}."""
    import variants
    from danet import plugins

    cfg = C.apply(C.Config(), C.flatten(base), f"{path} (config)", path.parent)
    try:
        plugins.load(cfg.plugins)
    except DanetError as e:
        raise DanetError(f"{path}: {e}") from None
    names: list[Any] = variants.available()
    if any(len(variants.info(n).branches) == 2 for n in names):
        names = [{"model.variant": n} for n in names]
        names.insert(1, {"model.variant": "none", "model.head": "dual"})
    return names


def launcher_overrides(items: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split `launcher.<key>=value` items from config overrides."""
    mine = [i for i in items if i.startswith("launcher.")]
    rest = [i for i in items if not i.startswith("launcher.")]
    return {k[len("launcher.") :]: v for k, v in C.parse_overrides(mine).items()}, rest


def apply_launcher(base: Launcher, d: dict[str, Any], source: str) -> Launcher:
    return _launcher({**{f.name: getattr(base, f.name) for f in fields(Launcher)}, **d}, source)


def _launcher(d: dict[str, Any], path: Path | str) -> Launcher:
    types = typing.get_type_hints(Launcher)
    out = Launcher()
    for key, value in d.items():
        if key not in types:
            raise DanetError(
                f"{path}: unknown launcher key '{key}'{did_you_mean(key, types)}; "
                f"valid: {', '.join(types)}"
            )
        value = coerce(f"launcher.{key}", value, types[key], str(path))  # as config keys
        if types[key] is int and value < 0:
            raise DanetError(f"{path}: 'launcher.{key}' must be 0 or more, got {value}")
        setattr(out, key, value)
    if out.cluster not in CLUSTERS:
        raise unknown_choice(f"launcher.cluster in {path}", out.cluster, CLUSTERS)
    if out.runs_per_job < 1:
        raise DanetError(
            f"{path}: 'launcher.runs_per_job' must be 1 or more, got {out.runs_per_job}"
        )
    if out.runs_per_job > 1 and (out.nodes > 1 or out.tasks_per_node > 1):
        raise DanetError(
            f"{path}: launcher.runs_per_job={out.runs_per_job} needs runs of one process each, "
            f"not DDP (launcher.tasks_per_node={out.tasks_per_node}, launcher.nodes="
            f"{out.nodes}); set launcher.runs_per_job=1"
        )
    return out


def expand(grid: Grid, runs_root: Path, overrides: list[str] | None = None) -> list[RunSpec]:
    """One RunSpec per grid point, in the file's axis order; each config checked up front."""
    from danet.checks import check_config  # here: reading a grid (its launcher) needs no torch

    base = C.apply(C.Config(), C.flatten(grid.base), f"{grid.path} (config)", grid.path.parent)
    base = C.apply(base, C.parse_overrides(overrides or []), "command line")
    keys = list(grid.axes)
    specs: list[RunSpec] = []
    for values in itertools.product(*(grid.axes[k] for k in keys)):
        point: dict[str, Any] = {}
        for key, value in zip(keys, values):
            point.update(C.flatten(value) if isinstance(value, dict) else {key: value})
        cfg = C.apply(base, point, f"{grid.path} (grid)", grid.path.parent)
        try:
            check_config(cfg)
        except DanetError as e:
            raise DanetError(f"{grid.path}: grid point {point}: {e}") from None
        rid = C.run_id(cfg)
        # absolute: a job may start in a code snapshot, where a relative path lands inside it
        specs.append(RunSpec(rid, cfg, runs_root.absolute() / grid.name / rid, point))
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise DanetError(
            f"{grid.path}: two grid points resolve to the same config; remove the repeat"
        )
    return specs


def with_seed(spec: RunSpec, seed: int) -> RunSpec:
    """The run of spec's grid cell with another seed: only `seed` changes, so its id and folder
    follow the grid's naming (a sweep adding seeds, or any sweep of that cell and seed, agree)."""
    cfg = C.apply(spec.cfg, {"seed": seed}, "seed")
    rid = C.run_id(cfg)
    return RunSpec(rid, cfg, spec.run_dir.parent / rid, {**spec.axes, "seed": seed})


def default_parallel(cfg: C.Config, launcher: Launcher | None = None) -> int:
    """Local runs at once: one per GPU set when the runs use GPUs, else the cores divided by
    train.threads."""
    from slurm.local_gpus import local_gpus, parallel_runs

    per_run = launcher.tasks_per_node if launcher else 1
    on_gpus = parallel_runs(cfg, per_run, local_gpus())
    if on_gpus:
        return on_gpus
    threads = cfg.train.threads or 1
    return max(1, (os.cpu_count() or 1) // threads)


def describe(specs: list[RunSpec]) -> str:
    """The resolved configs of a sweep: the keys all runs share, then each run's own."""
    flat = [C.flatten(C.to_dict(s.cfg)) for s in specs]
    shared = {k: v for k, v in flat[0].items() if all(f[k] == v for f in flat)}
    lines = [f"{len(specs)} runs; resolved settings shared by all:"]
    lines += [f"  {k}: {_show(v)}" for k, v in shared.items()]
    lines.append("per run:")
    for spec, f in zip(specs, flat):
        own = "  ".join(f"{k}={_show(v)}" for k, v in f.items() if k not in shared)
        lines.append(f"  {spec.run_id}  {own}  -> {spec.run_dir}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return '""' if value == "" else str(value)
