"""Where a run reports, besides its checkpoints: RUN_DIR/log.jsonl (one JSON object per line),
TensorBoard events in RUN_DIR/tb (train.tensorboard), and a tqdm bar on stderr. Opened and
closed in one place; only the writing process (rank 0) opens files, elsewhere every call
does nothing but tick the (disabled) bar.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from danet.errors import no_space
from danet.models.head import OUTPUTS
from danet.run_folder import LOG, TENSORBOARD
from danet.utils import progress_bar


class Sinks:
    def __init__(
        self, run_dir: Path, start: int, total: int, main: bool, tensorboard: bool, progress: bool
    ) -> None:
        self.log = (run_dir / LOG).open("a") if main else None
        self.board = _board(run_dir, start) if main and tensorboard else None
        self.bar = progress_bar(total, run_dir.name, progress and main, log_every=30.0,
                                initial=start)
        self.logged, self.at = start, time.perf_counter()  # for images/s between two logs

    def __enter__(self) -> Sinks:
        return self

    def __exit__(self, kind: type | None, *exc: Any) -> None:
        self.bar.close()
        for sink in (self.log, self.board):
            if sink is None:
                continue
            try:
                sink.close()
            except OSError:  # a full disk again: the error already raised is the one to show
                if kind is None:
                    raise

    def event(self, **record: Any) -> None:
        if self.log:
            try:
                self.log.write(json.dumps(record) + "\n")
                self.log.flush()
            except OSError as e:
                full = no_space(e, Path(self.log.name))
                if full is None:
                    raise
                raise full from None

    def warn(self, message: str) -> None:
        if self.log:
            print(f"warning: {message}", file=sys.stderr)
            self.event(event="warning", message=message)

    def train(self, done: int, loss: float, parts: list[float], lr: float, elapsed: float,
              batch_size: int, device) -> None:
        """A logged training iteration: the loss (total and per output), lr, speed, memory."""
        self.event(iteration=done, loss=loss, losses=parts, lr=lr, time=elapsed)
        if self.board:
            now = time.perf_counter()
            rate = (done - self.logged) * batch_size / (now - self.at)
            self.board.add_scalar("train/loss", loss, done)
            for name, part in zip(OUTPUTS, parts):
                self.board.add_scalar(f"train/loss_{name}", part, done)
            self.board.add_scalar("train/lr", lr, done)
            self.board.add_scalar("train/images_per_s", rate, done)
            if device.type == "cuda":  # the run's cost in result.json has the CPU's
                memory = torch.cuda.max_memory_allocated(device) / 2**20
                self.board.add_scalar("train/peak_memory_mb", memory, done)
            self.logged, self.at = done, now
        self.bar.set_postfix(loss=f"{loss:.3f}")

    def evaluated(self, by_mode: dict[str, dict], iteration: int) -> None:
        for mode, metrics in by_mode.items():
            self.event(event="eval", iteration=iteration, mode=mode, miou=metrics["miou"])
            if self.board:  # in percent, as the tables
                self.board.add_scalar(f"val/miou_{mode}", 100 * metrics["miou"], iteration)

    def finished(self, config: dict[str, Any], result: dict[str, Any]) -> None:
        """The run's config and final metrics as TensorBoard hparams, so that runs compare
        in its HPARAMS view."""
        if not self.board:
            return
        metrics = {f"hparam/miou_{m}": 100 * v["miou"] for m, v in result["eval"].items()}
        for key in ("gmacs", "train_peak_mb", "latency_ms"):
            if (result.get("cost") or {}).get(key) is not None:
                metrics[f"hparam/{key}"] = result["cost"][key]
        self.board.add_hparams(_scalars(config), metrics, run_name=".")


def _scalars(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as TensorBoard hparams: dotted keys; lists and other values as text."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_scalars(value, f"{prefix}{key}."))
        else:
            plain = isinstance(value, (bool, int, float, str))
            out[f"{prefix}{key}"] = value if plain else str(value)
    return out


def _board(run_dir: Path, start: int):
    """TensorBoard's writer. Events past the checkpoint it resumes from (all of them when it
    restarts from 0 because no checkpoint was readable) are dropped, so no step shows twice."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / TENSORBOARD), purge_step=start + 1)
