"""Every result.json under a folder -> one tidy pandas DataFrame (one row per run).

Analysis reads result.json files only (schema 1); an unreadable or other-schema file is
reported by path and skipped, and nothing else is lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

SCHEMA = 1
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
    "peak_memory_mb",
)


def numerics(speed: dict | None) -> str:
    """The speed options that change a run's numbers (danet.engine.speed), so that tables
    never pool them: "fp32" (the defaults), else e.g. "bf16 + channels_last"."""
    speed = speed or {}
    amp = speed.get("amp", "off")
    parts = ["fp32" if amp == "off" else amp]
    return " + ".join(parts + [k for k in ("channels_last", "compile") if speed.get(k)])


def collect(*roots: str | Path) -> tuple[pd.DataFrame, list[str]]:
    rows, problems = [], []
    for root in roots:
        for path in sorted(Path(root).rglob("result.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                problems.append(f"{path}: unreadable ({e}); skipped")
                continue
            if not isinstance(data, dict) or data.get("schema") != SCHEMA:
                found = data.get("schema") if isinstance(data, dict) else None
                problems.append(f"{path}: schema {found!r}, expected {SCHEMA}; skipped")
                continue
            missing = [c for c in COLUMNS if c not in data]
            if missing:
                problems.append(f"{path}: missing {', '.join(missing)}; skipped")
                continue
            row = {c: data[c] for c in COLUMNS}
            row["numerics"] = numerics(data.get("speed"))
            row["sweep"] = path.parent.parent.name
            row["path"] = str(path.parent)
            per_class = data.get("per_class_iou", {})
            row.update({f"iou/{k}": per_class[k] for k in data.get("classes", per_class)})
            rows.append(row)
    return pd.DataFrame(rows), problems
