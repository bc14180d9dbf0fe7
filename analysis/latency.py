"""Latency of every model of a table, measured side by side: one process, the same threads,
interleaved, when no run trains.

A run's own latency (`cost.latency_ms` in result.json) is taken while the sweep's other runs
train on the same cores, and the seeds of a variant share the first one's: its order across
variants is the machine's load, not the modules' work. Here each model of the table (one per
row: its run's config, its evaluation input, random weights: a forward's time does not depend
on their values) is built in this process, warmed up, and then timed in rounds, one batch-1
forward per model per round, the models' order rotating from round to round, so that a slow
moment of the machine falls on every model alike. Reported: the median over rounds and half
the interquartile range as its spread. The measurement is cached per machine (CPU or GPU
name), thread count, torch version and set of models, so `danet tables` after a sweep reads
what the sweep's report step measured.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from danet.utils import atomic_write_json

ROUNDS = 20  # forwards per model, interleaved
BUDGET_S = 120.0  # fewer rounds (at least MIN_ROUNDS) when the models are slow
MIN_ROUNDS = 5


def machine() -> str:
    """The CPU's model name (or the GPU's), as the OS reports it."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _model(config: dict[str, Any], num_classes: int) -> torch.nn.Module:
    from danet import config as C
    from danet import plugins
    from danet.models import Segmentor

    cfg = C.from_dict(config, "a run's config.yaml")
    plugins.load(cfg.plugins)
    # the architecture alone: a weights file changes no forward's time
    cfg.model.pretrained, cfg.model.freeze_backbone = "", False
    return Segmentor(cfg.model, num_classes).eval()


def measure(
    models: dict[str, tuple[dict, int, Sequence[int]]], threads: int, rounds: int = ROUNDS,
    budget_s: float = BUDGET_S,
) -> dict[str, Any]:
    """{label: (run config, class count, input shape)} -> the side-by-side measurement:
    per label the median and half-IQR in ms and the samples; with the machine, threads and
    rounds."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        built = {k: (_model(cfg, n), torch.randn(*shape)) for k, (cfg, n, shape) in models.items()}
        samples: dict[str, list[float]] = {k: [] for k in built}
        order = list(built)
        with torch.inference_mode():
            for model, x in built.values():  # warm-up: allocations, oneDNN's kernel choice
                model(x)
                model(x)
            start = time.perf_counter()
            for r in range(rounds):
                for k in order[r % len(order):] + order[: r % len(order)]:
                    model, x = built[k]
                    t0 = time.perf_counter()
                    model(x)
                    samples[k].append(1e3 * (time.perf_counter() - t0))
                if r + 1 >= MIN_ROUNDS and time.perf_counter() - start > budget_s:
                    break
    finally:
        torch.set_num_threads(before)
    return {
        "machine": machine(), "threads": threads, "rounds": len(next(iter(samples.values()))),
        "torch": torch.__version__,
        "models": {k: summary(v) for k, v in samples.items()},
    }


def summary(values: Sequence[float]) -> dict[str, Any]:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"median_ms": float(median), "spread_ms": float(q3 - q1) / 2, "samples": list(values)}


def cache_key(models: dict[str, tuple[dict, int, Sequence[int]]], threads: int) -> str:
    what = {
        "machine": machine(), "threads": threads, "torch": torch.__version__,
        "models": {k: [cfg.get("model"), cfg.get("plugins"), n, list(shape)]
                   for k, (cfg, n, shape) in models.items()},
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]


def cached_measure(
    models: dict[str, tuple[dict, int, Sequence[int]]], threads: int, folder: Path,
    run: bool = True,
) -> dict[str, Any] | None:
    """The same set's earlier measurement on this machine from `folder`, else measure() (None
    when not `run`)."""
    path = folder / f"{cache_key(models, threads)}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        pass
    if not run:
        return None
    result = measure(models, threads)
    atomic_write_json(path, result)
    return result


def table_latency(
    df, raw: dict[str, dict], keys: Sequence[str], folder: Path, threads: int = 0,
    run: bool = True,
) -> tuple[dict[tuple, dict], str]:
    """Side-by-side latency of each (group values..., variant) of a runs DataFrame (its first
    run's config and evaluation input), and the line that says how it was measured. `threads`:
    0 takes the runs' train.threads when they agree (else torch's default). Not `run`: only an
    earlier measurement of the same models on this machine, if any."""
    models, cells = {}, {}
    for cell, runs in df.groupby([*keys, "variant"], sort=False, dropna=False):
        data = raw[runs["path"].iloc[0]]
        shape = (data.get("cost") or {}).get("eval_input")
        if not shape:
            continue
        label = " | ".join(map(str, cell))
        models[label] = (data["config"], len(data["classes"]), shape)
        cells[label] = cell
    if not models:
        return {}, ""
    if not threads:
        asked = {int(raw[p]["config"]["train"].get("threads") or 0) for p in df["path"]}
        threads = asked.pop() if len(asked) == 1 and 0 not in asked else torch.get_num_threads()
    result = cached_measure(models, threads, folder, run)
    if result is None:
        return {}, ""
    line = (
        f"Latency: median ± half the interquartile range of {result['rounds']} batch-1 "
        f"forwards per model at its evaluation input, all models in one process taking turns "
        f"(not during training), {result['threads']} thread(s), {result['machine']}"
    )
    return {cells[k]: v for k, v in result["models"].items()}, line
