"""`danet sweep --seeds-until W`: after the grid's own runs, add seeds until every variant's
Δ mIoU interval vs the baseline is at most ±W points wide (or --max-seeds is reached). The
rule looks at the interval's width only, never at whether it excludes zero.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from danet import config as C
from danet.errors import DanetError
from danet.run_folder import State
from slurm.grid import Launcher, RunSpec, with_seed
from slurm.launch import Outcome, launch

if TYPE_CHECKING:  # pandas only when the loop runs
    import pandas as pd


MAX_SEEDS = 10  # --max-seeds' default


def check_seeds_until(
    width: float | None, max_seeds: int | None, no_wait: bool, specs: list[RunSpec]
) -> int:
    """Checks --seeds-until W and --max-seeds M before anything runs, and returns M (its
    default when not given): W > 0 points, M >= 2 (an interval needs two seeds), the grid
    has baseline runs, and the sweep waits (the loop reads finished runs)."""
    from analysis.stats import BASELINE

    if width is None:
        if max_seeds is not None:
            raise DanetError("--max-seeds only applies with --seeds-until W")
        return MAX_SEEDS
    if not (width > 0 and math.isfinite(width)):
        raise DanetError(f"--seeds-until must be a half-width above 0 (mIoU points), got {width}")
    max_seeds = MAX_SEEDS if max_seeds is None else max_seeds
    if max_seeds < 2:
        raise DanetError(f"--max-seeds must be 2 or more (an interval needs two), got {max_seeds}")
    if no_wait:
        raise DanetError("--seeds-until waits for the runs to decide on more; drop --no-wait")
    if not any(s.cfg.model.variant == BASELINE for s in specs):
        raise DanetError(
            f"--seeds-until narrows the interval of each variant's gain over '{BASELINE}', "
            f"and the grid has no run of '{BASELINE}'"
        )
    return max_seeds


def cell_key(spec: RunSpec) -> str:
    """A grid cell: the resolved config without its seed."""
    d = C.to_dict(spec.cfg)
    d.pop("seed")
    return json.dumps(d, sort_keys=True)


def seeds_needed(
    summary: pd.DataFrame, width: float, max_seeds: int, baseline: str
) -> pd.DataFrame:
    """The rows of `analysis.stats.summarize` whose variant needs another seed: a Δ interval
    wider than ±width (or none yet) and fewer than max_seeds seeds. Only the width counts, never
    whether the interval excludes zero: a rule that stops once a result looks significant
    would make it look significant more often than the level says. Rows without a baseline
    in their group are left out: no number of seeds gives them an interval."""
    uncompared = ("baseline", "control", "no baseline", "no matched control")
    rows = summary[(summary["variant"] != baseline) & ~summary["ci_method"].isin(uncompared)]
    n = rows["seeds"].map(lambda s: len(str(s).split(",")))
    wide = rows["ci_halfwidth"].isna() | (rows["ci_halfwidth"] > width)
    return rows[wide & (n < max_seeds)]


def next_seed(used: set[int]) -> int:
    """The smallest seed (0, 1, ...) not in used."""
    return next(s for s in itertools.count() if s not in used)


def _state(
    sweep_dir: Path, cells: dict[str, RunSpec], baseline: str, echo
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs, summary, group keys): the finished runs of these grid cells under sweep_dir, mIoU
    in percent, with their cell (other runs there, e.g. of an older version of the grid, are
    left out), and their `analysis.stats.summarize`."""
    import pandas as pd

    from analysis.collect import collect
    from analysis.stats import group_keys, summarize

    df, problems = collect(sweep_dir)
    for p in problems:
        echo(f"warning: {p}")
    if df.empty:
        return df, pd.DataFrame(), []
    owner = {
        with_seed(spec, int(seed)).run_id: cell
        for cell, spec in cells.items()
        for seed in df["seed"].unique()
    }
    df = df[df["run_id"].isin(owner)].copy()
    df["cell"] = df["run_id"].map(owner)
    df["miou"] = 100 * df["miou"]
    keys = group_keys(df)
    df[keys] = df[keys].astype(str)  # a missing value is a group like any other, and matches
    return df, summarize(df, "miou", keys, baseline), keys


def _label(row: pd.Series, varying: list[str]) -> str:
    where = f" [{', '.join(str(row[k]) for k in varying)}]" if varying else ""
    return f"{row['variant']}{where}"


def added_runs(
    need: pd.DataFrame, df: pd.DataFrame, cells: dict[str, RunSpec], keys: list[str], baseline: str
) -> list[RunSpec]:
    """For each row of need, the next unused seed of that variant in that group, in every cell
    of the variant and in every cell of its matched control (`vs`: the baseline with its head)
    that lacks it, so pairs stay real."""
    new: dict[str, RunSpec] = {}
    for _, row in need.iterrows():
        group = df[(df[keys] == row[keys]).all(axis=1)] if keys else df
        mine = group[group["variant"] == row["variant"]]
        seed = next_seed({int(s) for s in mine["seed"]})
        control = row.get("vs") or baseline
        for cell, runs in group[group["variant"].isin([row["variant"], control])].groupby("cell"):
            if seed not in set(runs["seed"].astype(int)):
                spec = with_seed(cells[cell], seed)
                new[spec.run_id] = spec
    return list(new.values())


def _widths(
    summary: pd.DataFrame, width: float, max_seeds: int, baseline: str, varying: list[str]
) -> str:
    """'pam: half-width 7.31 > 2.0, n=3; cam: no interval yet, n=1' for the variants of summary
    (with the values of the group columns in `varying`, those that differ between groups)."""
    parts = []
    compared = ~summary["ci_method"].isin(("baseline", "control"))
    for _, row in summary[(summary["variant"] != baseline) & compared].iterrows():
        n = len(str(row["seeds"]).split(","))
        half = float(row["ci_halfwidth"])
        if math.isnan(half):
            text = "no interval yet"
        else:
            text = f"half-width {half:.2f} {'>' if half > width else '<='} {width}"
        capped = ", --max-seeds reached" if n >= max_seeds and not half <= width else ""
        parts.append(f"{_label(row, varying)}: {text}, n={n}{capped}")
    return "; ".join(parts)


def seeds_until(
    specs: list[RunSpec],
    sweep_dir: Path,
    launcher: Launcher,
    width: float,
    max_seeds: int,
    retry_failed: bool = False,
    echo=print,
) -> list[Outcome]:
    """After the grid's own runs: while some variant's Δ mIoU interval vs the baseline is wider
    than ±width points (or missing) and it has fewer than max_seeds seeds, add its next unused
    seed (and the baseline's run of that seed), launch them with `launch`, and look again.
    Returns the outcomes of the added runs; a failed one ends the loop."""
    from analysis.stats import BASELINE

    cells = {cell_key(s): s for s in specs}
    outcomes: list[Outcome] = []
    # each round adds a seed to every variant it names, so max_seeds rounds always suffice
    # (the bound only matters if finished runs cannot be read back)
    round_ = 0
    while True:
        round_ += 1
        df, summary, keys = _state(sweep_dir, cells, BASELINE, echo)
        if summary.empty:
            echo(f"seeds-until {width}: no finished runs of this grid under {sweep_dir}")
            return outcomes
        varying = [k for k in keys if summary[k].nunique() > 1]
        need = seeds_needed(summary, width, max_seeds, BASELINE)
        if need.empty or round_ > max_seeds:
            status = _widths(summary, width, max_seeds, BASELINE, varying)
            rounds = f"{round_ - 1} round{'' if round_ == 2 else 's'}"
            echo(f"seeds-until {width}: done after {rounds} ({status})")
            return outcomes
        new = added_runs(need, df, cells, keys, BASELINE)
        status = _widths(need, width, max_seeds, BASELINE, varying)
        echo(f"seeds-until {width}: round {round_} adds {len(new)} runs ({status})")
        outcomes += launch(new, sweep_dir, launcher, retry_failed, True, echo)
        if any(o.state == State.FAILED for o in outcomes):
            return outcomes
