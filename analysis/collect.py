"""Every result.json under a folder -> one tidy pandas DataFrame (one row per run).

Analysis reads result.json files only (schema 1). Each is checked on load (`check_result`:
every field the analysis reads, with its type); an unreadable, other-schema or malformed
file is reported by path and field and skipped as a whole, and nothing else is lost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.stats import DUAL
from danet import RESULT_SCHEMA, placement
from danet.errors import DanetError
from danet.run_folder import RESULT, load_result

FIX = "delete the file to re-run, or fix it"
COLUMNS = (
    "run_id",
    "variant",
    "backbone",
    "dataset",
    "setting",
    "seed",
    "iterations",
    "miou",
    "pixel_accuracy",
    "params",
    "head_params",
    "train_time_s",
)
# result.json's `cost` (danet.engine.cost) read into columns of the same names; NaN for runs
# recorded without it
COST = (
    "gmacs",
    "gmacs_head",
    "gmacs_attention",
    "params_attention",
    "train_peak_mb",
    "attention_peak_mb",
    "latency_ms",
    "images_per_s",
)


def crop_label(crop) -> str:
    """176 -> '176x176', [512, 1024] -> '512x1024' (mmseg's Crop Size)."""
    if isinstance(crop, (list, tuple)):
        return "x".join(str(int(c)) for c in crop)
    if crop is None or crop != crop:
        return ""
    return f"{int(crop)}x{int(crop)}"


def numerics(speed: dict | None) -> str:
    """The speed options that change a run's numbers (danet.engine.speed), so that tables
    never pool them: "fp32" (the defaults), else e.g. "bf16 + channels_last"."""
    speed = speed or {}
    amp = speed.get("amp", "off")
    parts = ["fp32" if amp == "off" else amp]
    return " + ".join(parts + [k for k in ("channels_last", "compile") if speed.get(k)])


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fraction(v: Any) -> bool:
    return _number(v) and 0 <= v <= 1


def _size(v: Any) -> bool:
    return _number(v) and v >= 0


def _names(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(c, str) for c in v)


def _ious(v: Any) -> bool:
    return isinstance(v, dict) and all(x is None or _fraction(x) for x in v.values())


# Every field the analysis reads from a result.json: (accepts the value, what it must be).
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{k: (lambda v: isinstance(v, str), "a string") for k in COLUMNS[:5]},
    "seed": (_integer, "an integer"),
    "iterations": (lambda v: _integer(v) and v >= 0, "a non-negative integer"),
    "miou": (_fraction, "a number in [0, 1]"),
    "pixel_accuracy": (_fraction, "a number in [0, 1]"),
    "params": (lambda v: _integer(v) and v >= 0, "a non-negative integer"),
    "head_params": (lambda v: _integer(v) and v >= 0, "a non-negative integer"),
    "train_time_s": (_size, "a non-negative number"),
    "classes": (_names, "a list of class names"),
    "per_class_iou": (_ious, "a mapping of class -> IoU in [0, 1] or null"),
}
# Read when present; absent or null is fine (runs before the speed record have none).
OPTIONAL = ("speed", "eval", "config", "versions", "cost")
# (field, key): what the analysis reads inside the optional mappings
NESTED: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("speed", "amp"): (lambda v: isinstance(v, str), "a string"),
    ("speed", "channels_last"): (lambda v: isinstance(v, bool), "true or false"),
    ("speed", "compile"): (lambda v: isinstance(v, bool), "true or false"),
    ("config", "data"): (lambda v: isinstance(v, dict), "a mapping"),
    # attention_peak_mb is a difference of two measurements: it may come out below zero
    **{("cost", k): (_number if k == "attention_peak_mb" else _size, "a number") for k in COST},
}


def _placement(v: Any) -> bool:
    """A model.backbone_attention value in its normal form (danet.placement)."""
    try:
        return placement.normalize(v, "") == v
    except DanetError:
        return False


def _bad(field: str, what: str, value: Any) -> str:
    return f"'{field}' must be {what}, got {value!r}"


def check_result(data: dict[str, Any]) -> str | None:
    """What is wrong with a schema-1 result, naming the field; None when the analysis can
    read every field it uses."""
    for field, (accepts, what) in FIELDS.items():
        if field not in data:
            return f"no '{field}' field"
        if not accepts(data[field]):
            return _bad(field, what, data[field])
    extra = [c for c in data["per_class_iou"] if c not in data["classes"]]
    lacking = [c for c in data["classes"] if c not in data["per_class_iou"]]
    if extra:
        return f"'per_class_iou' has class {extra[0]!r}, which 'classes' does not list"
    if lacking:
        return f"'per_class_iou' has no IoU for class {lacking[0]!r} of 'classes'"
    for field in OPTIONAL:
        if data.get(field) is not None and not isinstance(data[field], dict):
            return _bad(field, "a mapping or null", data[field])
    for (field, key), (accepts, what) in NESTED.items():
        value = (data.get(field) or {}).get(key)
        if value is not None and not accepts(value):
            return _bad(f"{field}.{key}", what, value)
    model = (data.get("config") or {}).get("model")
    inside = model.get("backbone_attention") if isinstance(model, dict) else None
    if inside is not None and not _placement(inside):
        what = "{} or {variant, stages, where, opts}"
        return _bad("config.model.backbone_attention", what, inside)
    for mode, metrics in (data.get("eval") or {}).items():
        if not isinstance(metrics, dict) or not _fraction(metrics.get("miou")):
            got = metrics.get("miou") if isinstance(metrics, dict) else metrics
            return _bad(f"eval.{mode}.miou", "a number in [0, 1]", got)
    return None


def skeleton(data: dict[str, Any]) -> dict[str, Any]:
    """The run's head skeleton: `head` (single or dual; runs recorded before the field: single),
    `losses` (the weights of its outputs' losses), `module` (the registry name), and `variant`
    relabelled with the head where the module would have the other one: a single-module
    variant in the dual head is "pam (dual)", the dual head's baseline "none (dual)" (the
    matched control of DANet, analysis.stats). Attention inside the backbone
    (model.backbone_attention) is named after it, "none + gc@block[3,4]", so that tables
    never pool runs with and without it; `backbone_attention` holds that placement alone."""
    branches = data.get("branches") or [data["variant"]]
    head = data.get("head") if data.get("head") in ("single", "dual") else "single"
    outputs = 3 if head == "dual" else 1
    weights = ((data.get("config") or {}).get("train") or {}).get("loss_weights") or [1.0] * 3
    label = data["variant"]
    if head == "dual" and (len(branches) < 2 or branches[1] == "none"):
        label += DUAL
    losses = ":".join(f"{float(w):g}" for w in list(weights)[:outputs])
    model = (data.get("config") or {}).get("model") or {}
    inside = placement.label(model.get("backbone_attention"))
    if inside:
        label += f" + {inside}"
    return {
        "variant": label,
        "module": data["variant"],
        "head": head,
        "losses": losses,
        "backbone_attention": inside,
    }


def _read(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """(the result in a run's result.json, '') or (None, why it is skipped)."""
    try:
        data = load_result(run_dir)
    except (OSError, ValueError) as e:  # unreadable, undecodable or not JSON
        return None, f"unreadable ({e}); skipped"
    if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        return None, f"schema {found!r}, expected {RESULT_SCHEMA}; skipped"
    problem = check_result(data)
    return (None, f"{problem}; {FIX}") if problem else (data, "")


def collect(*roots: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per valid result.json under the roots, and one problem line per file skipped
    (its path, the field and the fix): a run is either wholly in the table or listed there."""
    df, problems, _ = collect_results(*roots)
    return df, problems


def collect_results(*roots: str | Path) -> tuple[pd.DataFrame, list[str], dict[str, dict]]:
    """collect(), and each valid result as read (by run folder, the rows' `path`), so that
    nothing reads a result.json twice."""
    rows, problems, results = [], [], {}
    for root in roots:
        for path in sorted(Path(root).rglob(RESULT)):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue  # a sweep's code snapshots (.code/) and job logs hold no runs of theirs
            data, problem = _read(path.parent)
            if data is None:
                problems.append(f"{path}: {problem}")
                continue
            results[str(path.parent)] = data
            row = {c: data[c] for c in COLUMNS}
            row.update(skeleton(data))
            spent = data.get("cost") or {}
            row.update({k: spent.get(k, math.nan) for k in COST})
            row["numerics"] = numerics(data.get("speed"))
            row["crop_size"] = crop_label(data.get("config", {}).get("data", {}).get("crop_size"))
            row["sweep"] = path.parent.parent.name
            row["path"] = str(path.parent)
            per_class = data["per_class_iou"]
            row.update({f"iou/{k}": per_class[k] for k in data["classes"]})
            rows.append(row)
    return pd.DataFrame(rows), problems, results


def runs_read(n_runs: int, problems: Sequence[str]) -> str:
    """'12 runs', or '12 runs (2 unreadable files skipped: a, b)' for a summary line: a
    table never leaves out a run without saying so."""
    runs = f"{n_runs} run{'' if n_runs == 1 else 's'}"
    if not problems:
        return runs
    paths = ", ".join(p.split(": ", 1)[0] for p in problems)
    files = "file" if len(problems) == 1 else "files"
    return f"{runs} ({len(problems)} unreadable {files} skipped: {paths})"
