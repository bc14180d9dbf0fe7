"""Several processes on one run (gloo on the CPU), and a run killed or preempted mid-way."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from danet import config as C
from danet.engine.distributed import CPUSyncBatchNorm
from danet.engine.train import run

from .conftest import TINY

DDP = TINY + ["train.batch_size=4", "train.iterations=12", "data.val_size=8", "train.log_every=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _syncbn_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    gen = torch.Generator().manual_seed(0)
    x, dy = (torch.randn(4, 3, 5, 6, dtype=torch.float64, generator=gen) * 3 + 1 for _ in "ab")
    ref = nn.BatchNorm2d(3).double()
    bn = CPUSyncBatchNorm(3).double()
    for m in (ref, bn):
        m.weight.data = torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64)
        m.bias.data = torch.tensor([0.1, 0.0, 0.3], dtype=torch.float64)
    xr = x.clone().requires_grad_()
    yr = ref(xr)
    (yr * dy).sum().backward()
    part = slice(2 * rank, 2 * rank + 2)
    xs = x[part].clone().requires_grad_()
    y = bn(xs)
    (y * dy[part]).sum().backward()
    grads = torch.cat([bn.weight.grad, bn.bias.grad])
    dist.all_reduce(grads)  # DDP sums (then averages) parameter gradients the same way
    diffs = {
        "y": float((y - yr[part]).detach().abs().max()),
        "dx": float((xs.grad - xr.grad[part]).abs().max()),
        "dparams": float((grads - torch.cat([ref.weight.grad, ref.bias.grad])).abs().max()),
        "running": float((bn.running_var - ref.running_var).abs().max()),
    }
    Path(out, f"{rank}.json").write_text(json.dumps(diffs))
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_equals_batchnorm_on_the_whole_batch(tmp_path):
    mp.spawn(_syncbn_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        diffs = json.loads((tmp_path / f"{rank}.json").read_text())
        assert max(diffs.values()) < 1e-12, diffs


def _train_worker(rank: int, world: int, port: int, run_dir: str, overrides: list[str]) -> None:
    nn.Dropout2d.forward = lambda self, x: x  # see the test's docstring
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    run(C.build(None, overrides), Path(run_dir), progress=False)


def test_two_process_run_equals_one_process_run_with_the_same_total_batch(tmp_path):
    """Tolerance: mIoU to 1e-4 and the loss curve to 1e-5 relative (measured on an AMD EPYC,
    AVX2: equal mIoU, losses 5e-7 apart; a near-tie pixel may flip). The two processes take the
    single run's batch between them (same samples and augmentation), SyncBN normalises over
    the whole batch, and the loss is averaged over all labelled pixels; what remains is the
    order of floating-point sums in the all-reduce. Dropout is switched off because its masks
    are drawn per process (from seed, rank and iteration), so they cannot match one process's;
    with it on the two runs differ as two dropout draws do."""
    mp.spawn(_train_worker, args=(1, _free_port(), str(tmp_path / "one"), DDP), nprocs=1)
    mp.spawn(_train_worker, args=(2, _free_port(), str(tmp_path / "two"), DDP), nprocs=2)
    one, two = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "two"))
    assert (one["world_size"], two["world_size"], two["sync_bn"]) == (1, 2, True)
    assert two["batch_per_process"] == 2
    assert abs(one["miou"] - two["miou"]) <= 1e-4  # argmax of logits that differ in the last bits
    logs = [
        [r["loss"] for r in map(json.loads, (tmp_path / d / "log.jsonl").read_text().splitlines())
         if "loss" in r]
        for d in ("one", "two")
    ]
    assert len(logs[0]) == len(logs[1]) == 6
    for a, b in zip(*logs):
        assert abs(a - b) <= 1e-5 * abs(a)
    assert not (tmp_path / "two" / "ckpt" / "iter_0000006.pt").with_suffix(".tmp").exists()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch
    import danet.utils
    from danet import config as C
    from danet.engine.train import run

    real_save = torch.save
    def torn_save(obj, f, *args, **kwargs):
        # the checkpoint's temporary file (a path, or the open file object it is written to)
        name = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else f
        if "iter_0000004" in str(name):  # half a file, then SIGKILL, as a kill during the write
            real_save(obj, f, *args, **kwargs)
            if hasattr(f, "flush"):
                f.flush()
            size = os.path.getsize(name)
            with open(name, "r+b") as h:
                h.truncate(size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)
    torch.save = torn_save
    run(C.build(None, sys.argv[2:]), Path(sys.argv[1]), progress=False)
    """
)


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, tiny_cfg):
    args = TINY + ["train.iterations=6", "model.variant=pam"]
    out = subprocess.run(
        [sys.executable, "-c", KILLER, str(tmp_path / "killed"), *args],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    ckpt = tmp_path / "killed" / "ckpt"
    assert sorted(p.name for p in ckpt.glob("iter_*.pt")) == ["iter_0000002.pt"]
    assert list(ckpt.glob(".iter_0000004.pt.*.tmp"))  # the torn temporary file, not renamed
    resumed = run(
        tiny_cfg("train.iterations=6", "model.variant=pam"), tmp_path / "killed", progress=False
    )
    assert not list(ckpt.glob("*.tmp"))
    whole = run(
        tiny_cfg("train.iterations=6", "model.variant=pam"), tmp_path / "whole", progress=False
    )
    # exact: train.threads=1 in both processes on one CPU, so the same kernels in the same order
    assert resumed["miou"] == whole["miou"]
    events = [json.loads(x) for x in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "iteration": 2} in events


PREEMPTED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from danet import config as C
    from danet.engine import step, train
    from danet.engine.preemption import Preemption

    preemption = Preemption()
    def handler(signum, frame):  # what submitit's USR2 handler does through TrainJob.checkpoint
        preemption.save_now()
        sys.exit(3)
    signal.signal(signal.SIGUSR2, handler)
    real = step.poly_lr
    def poly_lr(optimizer, it, total, power):
        if it == 3:  # mid-way through iteration 4 (0-based 3), the job is told to stop
            os.kill(os.getpid(), signal.SIGUSR2)
        return real(optimizer, it, total, power)
    step.poly_lr = poly_lr
    train.run(C.build(None, sys.argv[2:]), Path(sys.argv[1]), progress=False,
              preemption=preemption)
    """
)


def test_preemption_saves_the_last_finished_iteration_and_resumes_exactly(tmp_path, tiny_cfg):
    args = ["train.iterations=6", "model.variant=pam", "train.checkpoint_every=100"]
    out = subprocess.run(
        [sys.executable, "-c", PREEMPTED, str(tmp_path / "pre"), *TINY, *args],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == 3, out.stderr
    # the signal came during iteration 4; it was held until that iteration had finished
    ckpt = tmp_path / "pre" / "ckpt"
    assert sorted(p.name for p in ckpt.glob("iter_*.pt")) == ["iter_0000004.pt"]
    resumed = run(tiny_cfg(*args), tmp_path / "pre", progress=False)
    whole = run(tiny_cfg(*args), tmp_path / "whole", progress=False)
    assert resumed["miou"] == whole["miou"]  # exact: as in the test above
