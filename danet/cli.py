"""`danet`: train, evaluate and compare attention modules for semantic segmentation.

A user's mistake is one line naming the file or key and the fix, exit 2. Each command's
`--help` gives its options; the README has a worked example.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from danet.errors import DanetError


def cmd_train(args: argparse.Namespace) -> int:
    from danet import config as C
    from danet.checks import check_config
    from danet.engine.train import run
    from danet.run_folder import RESULT, STOP

    cfg = C.build(args.config, args.overrides)
    check_config(cfg)
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.runs_root) / "train" / C.run_id(cfg)
    print(f"run dir: {run_dir}")
    (run_dir / STOP).unlink(missing_ok=True)  # a stop asked of an earlier session
    result = run(cfg, run_dir)
    if result is None:
        print(f"stopped (asked by {STOP}), checkpoint saved; the same command resumes")
        return 130
    print(
        f"mIoU {100 * result['miou']:.2f}  pixel acc {100 * result['pixel_accuracy']:.2f}  "
        f"({run_dir / RESULT})"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if sys.stderr.isatty():  # the imports take seconds; in a log, errors stay one line
        print(f"danet eval: loading {args.target} ...", file=sys.stderr, flush=True)
    from danet.engine.eval_saved import evaluate_saved

    metrics = evaluate_saved(
        Path(args.target),
        args.split,
        args.mode,
        args.config,
        args.overrides,
        Path(args.save) if args.save else None,
    )
    print(json.dumps(metrics, indent=2))
    for mode, m in metrics["eval"].items():
        print(f"{mode:>7}: mIoU {100 * m['miou']:.2f}  pixel acc {100 * m['pixel_accuracy']:.2f}",
              file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from danet.run_folder import HALTED, State
    from slurm.grid import default_parallel, describe, expand, launcher_overrides, load_grid
    from slurm.seeds_until import check_seeds_until

    grid = load_grid(args.grid)
    mine, overrides = launcher_overrides(args.overrides)
    launcher = _launcher(grid, mine, args)
    specs = expand(grid, Path(args.runs_root), overrides)
    if not launcher.max_parallel:
        launcher.max_parallel = default_parallel(specs[0].cfg, launcher)
    max_seeds = check_seeds_until(args.seeds_until, args.max_seeds, args.no_wait, specs)
    if args.dry_run:
        print(describe(specs))
        return 0
    sweep_dir = Path(args.runs_root) / grid.name
    outcomes = _run_sweep(specs, sweep_dir, launcher, max_seeds, args)
    if args.no_wait:
        print(f"submitted; follow with: danet status {sweep_dir}")
        return 0
    if any(o.state in HALTED for o in outcomes):
        again = shlex.join(["danet", "sweep", args.grid, *args.overrides])
        halted = sum(o.state in HALTED for o in outcomes)
        print(f"interrupted: {halted} runs not finished (their checkpoints are kept); "
              f"the same command resumes them: {again}", file=sys.stderr)
        return 130
    if not args.no_report:
        order = [str(v) for v in grid.axes.get("model.variant", [])]
        _report(sweep_dir, Path(args.reports) / grid.name, order)
    failed = sum(o.state == State.FAILED for o in outcomes)
    if failed:
        print(f"{failed} of {len(outcomes)} runs failed; fix the cause and run the sweep again "
              "with --retry-failed (it resumes them)", file=sys.stderr)
        return 1
    return 0


def _launcher(grid, mine: dict, args: argparse.Namespace):
    """The grid's launcher with the command line's launcher.<key>=value, --cluster and
    --max-parallel applied."""
    from slurm.grid import apply_launcher

    if args.cluster:
        mine["cluster"] = args.cluster
    if args.max_parallel:
        mine["max_parallel"] = args.max_parallel
    return apply_launcher(grid.launcher, mine, "command line")


def _run_sweep(specs, sweep_dir: Path, launcher, max_seeds: int, args: argparse.Namespace):
    """Launch the grid's runs (with the live view when waiting), then the seeds that
    --seeds-until adds; the outcomes of all of them."""
    from danet.run_folder import State
    from slurm.launch import launch
    from slurm.live import LiveView
    from slurm.seeds_until import seeds_until

    waits = not args.no_wait or launcher.cluster != "slurm"  # local jobs end with the sweep
    view = LiveView(specs, launcher, every_s=args.progress_every) if waits else None
    try:
        outcomes = launch(specs, sweep_dir, launcher, args.retry_failed, not args.no_wait,
                          **({"echo": view.echo, "tick": view.tick} if view else {}))
    finally:
        if view is not None:
            view.close()
    if args.seeds_until is not None and not any(o.state == State.FAILED for o in outcomes):
        outcomes += seeds_until(
            specs, sweep_dir, launcher, args.seeds_until, max_seeds, args.retry_failed
        )
    return outcomes


def cmd_status(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from slurm.snapshot import stranded_runs
    from slurm.status import counts, status_json, status_rows, sweep_states

    target, grid = _sweep_folder(Path(args.sweep), args.runs_root)
    expected = None
    if grid is not None:  # every run of the grid, the ones never submitted too
        from slurm.grid import expand

        expected = {s.run_id: s.cfg.train.iterations for s in expand(grid, Path(args.runs_root))}
    states = sweep_states(target, expected)
    if args.json:
        print(json.dumps({"sweep": str(target), "counts": counts(states),
                          "runs": status_json(states)}, indent=2))
        return 0
    stranded = stranded_runs(target) if target.is_dir() else []
    if stranded:
        print(
            f"note: {len(stranded)} runs of this sweep lie inside its code snapshots "
            f"({target}/.code/), written by an older version; the next `danet sweep` of this "
            "grid moves them back",
            file=sys.stderr,
        )
    if not states:
        print(f"{target}: no runs yet")
        return 0
    print(tabulate(status_rows(states), headers="keys", tablefmt="simple", disable_numparse=True))
    print(", ".join(f"{n} {state}" for state, n in sorted(counts(states).items())))
    return 0


def _sweep_folder(target: Path, runs_root: str):
    """(the sweep's folder, its Grid or None) from a grid file or a sweep folder."""
    if target.suffix in (".yaml", ".yml") and target.is_file():
        from slurm.grid import load_grid

        grid = load_grid(target)
        return Path(runs_root) / grid.name, grid
    if not target.is_dir():
        raise DanetError(f"{target}: no such sweep folder (give runs/<name> or the grid file)")
    return target, None


def cmd_cancel(args: argparse.Namespace) -> int:
    from danet.run_folder import STOP, run_folders
    from slurm.stopping import cancel

    sweep_dir, grid = _sweep_folder(Path(args.sweep), args.runs_root)
    cancelled = cancel(run_folders(sweep_dir))
    if not cancelled.count:
        print(f"{sweep_dir}: no run queued or running; nothing to cancel")
        return 0
    how = []
    if cancelled.jobs:
        how.append(f"scancel of {len(cancelled.jobs)} Slurm jobs")
    if cancelled.sweeps:
        pids = ", ".join(map(str, sorted(cancelled.sweeps)))
        how.append(f"SIGTERM to the local sweep (pid {pids})")
    resume = f"danet sweep {args.sweep}" if grid is not None else "the same danet sweep command"
    print(f"cancelled {cancelled.count} runs ({'; '.join(how) or STOP}); running ones "
          f"save a checkpoint at the end of their step. Resume with: {resume}")
    for host in sorted(cancelled.elsewhere):
        print(f"note: a local sweep on {host} runs some of them: its running runs stop, but "
              f"it may start queued ones; run danet cancel {args.sweep} on {host} to stop it",
              file=sys.stderr)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from danet import config as C
    from danet.checks import check_config

    cfg = C.build(args.config, args.overrides)
    check_config(cfg)
    print(f"# run id: {C.run_id(cfg)}")
    print(yaml.safe_dump(C.to_dict(cfg), sort_keys=False), end="")
    return 0


def cmd_variants(args: argparse.Namespace) -> int:
    from danet import plugins
    from variants.__main__ import table

    plugins.load(plugins.resolve(args.plugins))
    print(table())
    return 0


def version() -> str:
    """danet-bench's version and the commit of the code that runs."""
    from importlib import metadata

    from danet.utils import git_state

    try:
        number = metadata.version("danet-bench")
    except metadata.PackageNotFoundError:
        number = "unknown"
    state = git_state(Path(__file__).resolve().parents[1])
    commit = (state.get("commit") or "")[:12] or "no git checkout"
    edits = ", with uncommitted edits" if state.get("dirty") else ""
    return f"danet-bench {number} (commit {commit}{edits})"


class _Version(argparse.Action):
    """--version, asking git only when given."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version())
        parser.exit()


def _report(runs: Path, out: Path, order: list[str] | None = None) -> None:
    """The sweep's tables and figures in `out`/, and its main table on stdout."""
    from analysis.plots import write_plots
    from analysis.tables import (
        constant_groups,
        control_warnings,
        decomposition_display,
        display_table,
        load,
        side_by_side,
        write_tables,
    )

    df, problems, raw = load(runs)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if df.empty:
        print(f"no finished runs under {runs}; no report written", file=sys.stderr)
        return
    latency, note = side_by_side(df, raw, run=True)  # now that no run of the sweep trains
    tables = write_tables(df, out, order or [], latency, note)
    main, parts = tables["main"], tables["decomposition"]
    written, notes = write_plots(df, out)
    fixed = "; ".join(f"{k} {v}" for k, v in constant_groups(main).items())
    print(f"\n{fixed}\n" if fixed else "")
    if note:
        print(f"{note}\n")
    print(display_table(main).to_markdown(index=False, disable_numparse=True))
    for line in control_warnings(main):
        print(f"warning: {line}", file=sys.stderr)
    if not parts.empty:
        print("\nWhere the dual head's gain comes from (unadjusted 95% CIs):\n")
        print(decomposition_display(parts).to_markdown(index=False, disable_numparse=True))
    for note in notes:
        if not note.startswith("scaling"):  # a figure of `danet profile`'s sizes, not of runs
            print(f"note: {note}", file=sys.stderr)
    figures = sorted({p.stem for p in written})
    decomposition = "" if parts.empty else ", decomposition.md .csv .tex"
    print(f"\nwrote {out}/: main.md .csv .tex, per_class.md .csv .tex{decomposition}; "
          "figures (.png .svg): "
          f"{', '.join(figures)}")


# Commands whose module has its own argument parser: `danet NAME --help` shows its options.
TOOLS = {
    "tables": ("analysis.tables", "markdown, LaTeX and CSV tables with statistics from all runs"),
    "plots": ("analysis.plots", "seaborn figures (PNG and SVG) from all runs and the profile"),
    "report": ("analysis.report", "one self-contained HTML report: tables, figures, configs"),
    "profile": ("analysis.profile", "params, FLOPs, memory and latency of every variant"),
    "bench": ("analysis.bench", "training/inference speed against the matmul ceiling, options"),
    "visualize": ("analysis.visualize", "PAM attention of chosen points and CAM channel maps"),
}


def cmd_tool(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(TOOLS[args.command][0]).main(args.rest)


# The subcommands as data: name -> (function, one-line help, description, arguments); an
# argument is (its names, add_argument's keywords). `parser()` builds argparse from it.
Argument = tuple[tuple[str, ...], dict]
CONFIG = (("--config",), {"help": "YAML file of config keys (docs/configuration.md)"})
OVERRIDES = (("overrides",), {"nargs": "*", "metavar": "key=value",
                              "help": "e.g. model.variant=pam"})
RUNS_ROOT = (("--runs-root",), {"default": "runs",
                                "help": "where the grid's runs are (default: runs)"})


def _commands() -> dict[str, tuple[Callable, str, str, list[Argument]]]:
    from danet.config import EVAL_MODES
    from slurm.grid import CLUSTERS  # light: reading grids needs no torch

    sweep = "the grid file (every run of the grid, new ones too) or runs/<sweep name>"
    return {
        "train": (cmd_train, "train and evaluate one run (resumes if interrupted)",
                  "Train and evaluate one run; the same command resumes it.", [
            CONFIG,
            (("--run-dir",), {"help": "run folder (default: RUNS_ROOT/train/<run_id>)"}),
            (("--runs-root",), {"default": "runs", "help": "where run folders go (default: runs)"}),
            OVERRIDES,
        ]),
        "eval": (cmd_eval, "evaluate a run's newest checkpoint, or a checkpoint file",
                 "Evaluate a run folder's newest checkpoint, a checkpoint or weights file.", [
            (("target",), {"help": "RUN_DIR, RUN_DIR/ckpt/iter_N.pt, or a weights file"}),
            (("overrides",), {"nargs": "*", "metavar": "key=value",
                              "help": "e.g. data.root=/data/cs"}),
            (("--mode",), {"action": "append", "choices": list(EVAL_MODES),
                           "help": "repeatable; default: the run's eval.modes"}),
            (("--split",), {"default": "val", "choices": ["val", "train"], "help": "default: val"}),
            (("--config",), {"help": "YAML config for a weights file outside a run folder"}),
            (("--save",), {"metavar": "DIR",
                           "help": "write the first mode's predictions as PNGs (label ids)"}),
        ]),
        "sweep": (cmd_sweep, "run a grid of experiments (skips done runs, resumes others)",
                  "Run a grid of experiments (experiments/*.yaml) on this machine or on Slurm: "
                  "done runs are skipped, interrupted ones resumed. Ctrl-C stops the runs at a "
                  "checkpoint; the same command resumes them.", _sweep_arguments(CLUSTERS)),
        "status": (cmd_status, "a sweep's runs: state, progress, loss, mIoU, ETA, errors",
                   "Every run of a sweep: state, progress, last loss, mIoU, time, ETA, job, and "
                   "for failures the error and the log.", [
            (("sweep",), {"help": sweep}), RUNS_ROOT,
            (("--json",), {"action": "store_true",
                           "help": "machine-readable: one object per run"}),
        ]),
        "cancel": (cmd_cancel, "cancel a sweep's queued and running runs (Slurm or local)",
                   "Cancel a sweep's queued and running runs: running ones save a checkpoint at "
                   "the end of their step; Slurm jobs are scancel'ed, a local sweep is stopped. "
                   "They show as cancelled, not failed; the same `danet sweep` resumes them.", [
            (("sweep",), {"help": "the grid file or runs/<sweep name>"}), RUNS_ROOT,
        ]),
        "config": (cmd_config, "print the resolved config of a run as YAML, with its run id",
                   "Print the resolved config (defaults, --config file, key=value overrides) as "
                   "YAML, after the same checks as `danet train`.", [CONFIG, OVERRIDES]),
        "variants": (cmd_variants, "the attention registry as a markdown table, your plugins' too",
                     "Every registered attention variant: family, what it attends over, cost, "
                     "options and paper; with --plugins, your own modules as well.", [
            (("--plugins",), {"nargs": "+", "default": [], "metavar": "PLUGIN", "help":
                              "modules or .py files, as the config key plugins names them"}),
        ]),
    }


def _sweep_arguments(clusters: tuple[str, ...]) -> list[Argument]:
    """`danet sweep`'s arguments."""
    return [
        (("grid",), {"help": "grid file, e.g. experiments/ablation.yaml"}),
        (("overrides",), {"nargs": "*", "metavar": "key=value", "help": "config keys for every "
                          "run, or launcher.<key>=value (e.g. launcher.partition=gpu)"}),
        (("--cluster",), {"choices": list(clusters), "help": "override the grid's launcher"}),
        (("--max-parallel",), {"type": int, "default": 0, "help": "local: runs at once"}),
        (("--retry-failed",), {"action": "store_true", "help": "resubmit runs that failed"}),
        (("--no-wait",), {"action": "store_true",
                          "help": "submit and return; follow with danet status"}),
        (("--runs-root",), {"default": "runs", "help": "runs go to RUNS_ROOT/<sweep>/"}),
        (("--reports",), {"default": "reports", "help": "the report goes to REPORTS/<sweep>/"}),
        (("--dry-run",), {"action": "store_true",
                          "help": "list the runs and their resolved settings, launch nothing"}),
        (("--no-report",), {"action": "store_true", "help": "write no tables or figures"}),
        (("--progress-every",), {
            "type": float, "default": 30.0, "metavar": "S",
            "help": "outside a terminal: a progress line every S seconds and at each start and "
            "end (0: only the start and done lines); a terminal shows a live view instead"}),
        (("--seeds-until",), {
            "type": float, "metavar": "W",
            "help": "after the grid's runs, add seeds (the next unused one, to the variant and "
            "to the baseline 'none' where it lacks it) to every variant whose 95%% CI of the "
            "mIoU gain over the baseline is wider than +-W points (or has none yet), until none "
            "is or --max-seeds is reached; the rule looks only at the width, never at whether "
            "the interval excludes zero"}),
        (("--max-seeds",), {"type": int, "metavar": "M", "help":
                            "with --seeds-until: at most M seeds per variant (default 10)"}),
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="danet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-V", "--version", action=_Version, nargs=0, help="version and commit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (func, help_text, description, arguments) in _commands().items():
        command = sub.add_parser(name, help=help_text, description=description)
        for names, keywords in arguments:
            command.add_argument(*names, **keywords)
        command.set_defaults(func=func)
    for name, (_, help_text) in TOOLS.items():  # each parses its own arguments
        tool = sub.add_parser(name, help=help_text, add_help=False)
        tool.add_argument("rest", nargs=argparse.REMAINDER)
        tool.set_defaults(func=cmd_tool)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:  # everything after the name is the tool's own
        args = argparse.Namespace(command=argv[0], rest=argv[1:], func=cmd_tool)
        extra: list[str] = []
    else:
        args, extra = p.parse_known_args(argv)
    # key=value overrides may come after options too (argparse alone takes them only before)
    unknown = [
        a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")
    ]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    try:
        return args.func(args)
    except DanetError as e:
        print(f"danet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
