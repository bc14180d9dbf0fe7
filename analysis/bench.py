"""`danet bench` / `make bench`: training and inference speed against the machine's own
ceiling, and every speed option on and off side by side, in one process and one run.

Sections of reports/bench.csv (and of the markdown tables printed and written beside it):
- ceiling: dense n x n by n x n matmul throughput, the better of torch.mm (MKL / cuBLAS) and
  oneDNN's inner product (CPU), in fp32 and, where the device has fast kernels for them,
  bf16 and fp16 (and TF32 on a GPU), at the thread count of each setting.
- train: the training step of danet.engine.train (the real DataLoader, forward, three
  losses, backward, SGD step) per variant: images/s, achieved GFLOP/s = 3 x the forward
  FLOPs (FlopCounterMode, as `danet profile`) / step time, and that over the fp32 ceiling.
- inference: images/s at (crop height, 2 x crop width), whole image and sliding window.
- option: each speed option against the defaults, the two trainers stepping in alternating
  blocks (so drift of a shared machine hits both), from the same seed on the same batches;
  `exact` says whether their losses stayed bit-identical, `loss_rel_diff` how far apart.
- data: the real loader against batches already in memory, alternating the same way.
- check: the targets (issue 7): danet R50-D8 at >= 60 % of the fp32 ceiling, its step
  <= 1.15 x the identity dual head's, data loading within 5 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import variants
from danet import config as C
from danet.data import build_dataset
from danet.data.sampler import seed_from
from danet.data.transforms import pair
from danet.engine import distributed, speed
from danet.engine.cost import call_times, flopcounter_flops, peak_memory_mb
from danet.engine.inference import predict
from danet.engine.step import build_model, pick_device, train_loader, train_step
from danet.models import Segmentor
from danet.utils import (
    command_parser,
    device_name,
    seed_everything,
    stopped_early,
    torch_benchmark,
)

REPO = Path(__file__).resolve().parents[1]
IDENTITY = "none+dual"  # the DANet head's two branches with the identity in place of PAM/CAM
TARGET_FRACTION, TARGET_OVERHEAD, TARGET_DATA = 0.60, 1.15, 1.05


@dataclass
class Setting:
    name: str
    about: str
    overrides: list[str]
    steps: int  # timed steps per variant
    warmup: int
    rounds: int  # alternating blocks in a side-by-side comparison
    block: int  # steps per block
    options: tuple[str, ...]  # names in OPTIONS compared at this setting
    inference_hw: tuple[int, int] = (0, 0)  # (0, 0): (crop h, 2 x crop w)
    gpu_only: bool = False


@dataclass(frozen=True)
class Option:
    name: str
    overrides: tuple[str, ...]  # the option on
    baseline: tuple[str, ...] = ()  # what it is compared with, on top of the defaults
    needs: str = ""  # cuda | bf16 | workers: skipped where the device lacks it


OPTIONS = {
    o.name: o
    for o in (
        Option("channels_last", ("train.channels_last=true",)),
        Option("amp_bf16", ("train.amp=bf16",), needs="bf16"),
        Option("amp_fp16", ("train.amp=fp16",), needs="cuda"),
        Option("compile", ("train.compile=true",)),
        Option("workers_1", ("data.num_workers=1",), needs="workers"),
        Option("workers_2", ("data.num_workers=2",), needs="workers"),
        Option(
            "persistent_workers_off",
            ("data.num_workers=1", "data.persistent_workers=false"),
            ("data.num_workers=1",),
            needs="workers",
        ),
        Option("pin_memory_off", ("data.pin_memory=false",), needs="cuda"),
        Option("cudnn_benchmark_off", ("train.cudnn_benchmark=false",), needs="cuda"),
        Option("keep_freed_memory_off", ("train.keep_freed_memory=false",)),
    )
}
MODEL_OPTIONS = (
    "channels_last", "amp_bf16", "amp_fp16", "compile", "cudnn_benchmark_off",
    "keep_freed_memory_off",
)
R50 = ["model.backbone=resnet50", "train.threads=0"]
SETTINGS = {
    s.name: s
    for s in (
        Setting(
            "default",
            "the default sweep (experiments/ablation.yaml): tiny, 176 px, batch 4, 1 thread",
            [],
            steps=20,
            warmup=5,
            rounds=6,
            block=5,
            options=tuple(OPTIONS),
        ),
        Setting(
            "r50-d8",
            "ResNet-50-D8, crop 512, batch 2 (built-in scenes at 576 px)",
            [*R50, "data.image_size=576", "data.crop_size=512", "train.batch_size=2"],
            steps=3,
            warmup=2,
            rounds=2,
            block=2,
            options=MODEL_OPTIONS,
        ),
        Setting(
            "r50-d8-cityscapes",
            "ResNet-50-D8, crop 512x1024, batch 2 per GPU, inference at 1024x2048 (mmseg)",
            [*R50, "data.image_size=1152", "data.crop_size=[512,1024]", "train.batch_size=2"],
            steps=10,
            warmup=3,
            rounds=3,
            block=5,
            options=MODEL_OPTIONS,
            inference_hw=(1024, 2048),
            gpu_only=True,
        ),
    )
}
QUICK = ["data.image_size=64", "data.crop_size=64", "data.train_size=16", "data.val_size=4"]


# ---------------------------------------------------------------- timing


def side_by_side(
    fns: dict[str, Callable[[], Any]], rounds: int, block: int
) -> dict[str, list[float]]:
    """Per-call times of each function, run in alternating blocks (A B, B A, A B, ...)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            times[name] += call_times(fns[name], block)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------- the ceiling


def _has(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the device has fast kernels for dtype (not an emulation)."""
    if device.type == "cuda":
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    if dtype == torch.float32:
        return True
    probe = {
        torch.bfloat16: "_is_mkldnn_bf16_supported",
        torch.float16: "_is_mkldnn_fp16_supported",
    }
    check = getattr(torch.ops.mkldnn, probe[dtype], None)
    return bool(check and check())


def matmul_ceiling(device: torch.device, n: int = 0) -> list[dict[str, Any]]:
    """GFLOP/s of an n x n by n x n product in each precision at torch's thread count: by
    torch.mm (MKL on a CPU, cuBLAS on a GPU) and, on a CPU, by oneDNN's inner product on
    tensors already in its layout (oneDNN runs torch's convolutions; on this AMD CPU MKL's
    fp32 GEMM reaches under half of it)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    threads = torch.get_num_threads()
    rows = []
    cases = [("fp32", torch.float32, False)]
    if device.type == "cuda":
        cases.append(("tf32", torch.float32, True))
    cases += [("bf16", torch.bfloat16, False), ("fp16", torch.float16, False)]
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for label, dtype, allow in cases:
            if not _has(dtype, device):
                continue
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            cases = {"torch.mm": "torch.mm(a, b)"}
            if device.type == "cpu":
                cases["oneDNN"] = "torch._C._nn.mkldnn_linear(a1, b1, None)"
            names = dict(torch=torch, a=a, b=b)
            if device.type == "cpu":
                names.update(a1=a.to_mkldnn(), b1=b.to_mkldnn())
            for impl, stmt in cases.items():
                # Timer runs one thread unless told otherwise
                timer = torch_benchmark().Timer(stmt, globals=names, num_threads=threads)
                seconds = timer.blocked_autorange(min_run_time=1.0).median
                rows.append({"dtype": label, "impl": impl, "gflops": 2 * n**3 / seconds / 1e9})
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return rows


# ---------------------------------------------------------------- training and inference


def forward_gflops(cfg: C.Config, num_classes: int) -> float:
    """FlopCounterMode's forward GFLOPs of one batch, on the meta device (as danet profile)."""
    from analysis.profile import count_opts

    opts = {**cfg.model.variant_opts, **count_opts(cfg.model.variant)}
    model_cfg = dataclasses.replace(cfg.model, variant_opts=opts, pretrained="")
    with torch.device("meta"):
        model = Segmentor(model_cfg, num_classes).eval()
    h, w = pair(cfg.data.crop_size)
    x = torch.empty(cfg.train.batch_size, 3, h, w, device="meta")
    return flopcounter_flops(model, x) / 1e9


@dataclass
class Trainer:
    """One run's model, optimiser and loader, stepping as danet.engine.train does; every
    step's dropout is seeded by (seed, step), so two trainers can be compared step by step."""

    cfg: C.Config
    device: torch.device
    train_set: Any
    losses: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        seed_everything(self.cfg.seed)
        n = len(self.train_set.classes)
        self.model, self.optimizer, self.scaler = build_model(self.cfg, n, self.device)
        self.model.train()
        self.net = speed.compiled(self.model, self.cfg.train)
        self.batches = iter(
            train_loader(self.train_set, self.cfg, 0, distributed.SINGLE, self.device)
        )

    def step(self, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        speed.set_backends(self.cfg.train, self.device)  # global flags: set for each trainer
        torch.manual_seed(seed_from(self.cfg.seed, len(self.losses)))
        loss, _ = train_step(
            self.net,
            self.optimizer,
            self.scaler,
            batch if batch is not None else next(self.batches),
            self.cfg,
            self.train_set.ignore_index,
            distributed.SINGLE,
            self.device,
        )
        self.losses.append(float(loss.detach()))


def with_overrides(cfg: C.Config, overrides: list[str] | tuple[str, ...]) -> C.Config:
    return C.apply(cfg, C.parse_overrides(list(overrides)), "danet bench")


def losses_compared(a: list[float], b: list[float]) -> tuple[bool, float]:
    n = min(len(a), len(b))
    diff = max((abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a[:n], b[:n])), default=0.0)
    return a[:n] == b[:n], diff


class Bench:
    """Runs the sections; each row, as soon as it is measured, goes to `out` (the CSV and its
    markdown, rewritten atomically: a bench stopped at any point keeps every row so far) and
    to stderr as one line."""

    def __init__(self, device: torch.device, quick: bool, out: Path | None = None) -> None:
        self.device, self.quick, self.out = device, quick, out
        self.rows: list[dict[str, Any]] = []
        self.ceilings: dict[int, dict[str, float]] = {}

    def add(self, section: str, setting: str, **row: Any) -> None:
        self.rows.append({"section": section, "setting": setting, **row})
        if self.out is not None:
            write(self.rows, self.device, self.out)
        self.log(row_line(self.rows[-1]))  # after the write: a printed row is on disk

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # ------------------------------------------------------------ ceiling

    def ceiling(self, setting: str, threads: int) -> dict[str, float]:
        if threads not in self.ceilings:
            self.log(f"[bench] matmul ceiling, {threads} threads")
            best: dict[str, float] = {}
            for r in matmul_ceiling(self.device, 512 if self.quick else 0):
                self.add("ceiling", setting, threads=threads, **r)
                best[r["dtype"]] = max(best.get(r["dtype"], 0.0), r["gflops"])
            self.ceilings[threads] = best
        return self.ceilings[threads]

    # ------------------------------------------------------------ one setting

    def run_setting(
        self, s: Setting, variant_names: list[str], option_names: list[str], cfg: C.Config
    ) -> None:
        threads = cfg.train.threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        ceiling = self.ceiling(s.name, threads)["fp32"]
        train_set = build_dataset(cfg.data, "train", cfg.seed)
        k = len(train_set.classes)
        common = {"threads": threads, "batch": cfg.train.batch_size}

        step_s: dict[str, float] = {}
        for name in variant_names:
            vcfg = variant_config(cfg, name)
            gflops = forward_gflops(vcfg, k)
            self.log(f"[bench] {s.name}: train {name} ({gflops:.1f} forward GFLOPs a batch)")
            trainer = Trainer(vcfg, self.device, train_set)
            for _ in range(s.warmup):
                trainer.step()
            times = call_times(trainer.step, s.steps)
            step_s[name] = median(times)
            memory = self.peak_mb(trainer)
            achieved = 3 * gflops / step_s[name]
            self.add(
                "train", s.name, variant=name, **common, steps=len(times),
                step_ms=1e3 * step_s[name], images_per_s=cfg.train.batch_size / step_s[name],
                forward_gflops=gflops, achieved_gflops=achieved,
                fraction_of_fp32=achieved / ceiling, peak_memory_mb=memory,
            )
            del trainer
            if name == "danet" and s.name.startswith("r50"):
                self.add(
                    "check", s.name, variant=name, name="fraction_of_fp32", **common,
                    value=achieved / ceiling, target=f">= {TARGET_FRACTION}",
                    ok=achieved / ceiling >= TARGET_FRACTION,
                    note="danet step's achieved FLOP/s / the best fp32 matmul's",
                )
            if name == "danet" and s.name == "r50-d8-cityscapes":  # mmseg's V100 figures
                self.add(
                    "reference", s.name, variant=name, **common, peak_memory_mb=memory,
                    images_per_s=cfg.train.batch_size / step_s[name],
                    note="mmseg DANet R50-D8 512x1024 on a V100: 7.4 GB to train, 2.66 fps "
                    "inference (model zoo, configs/danet; docs/reference.md, section 2); "
                    "inference rows below: 1024x2048",
                )

        if "danet" in variant_names and IDENTITY in variant_names:
            self.attention_overhead(s, cfg, train_set, common)
        self.data_loading(s, cfg, train_set, common)
        for name in [v for v in ("none", "danet") if v in variant_names]:
            self.inference(s, variant_config(cfg, name), k, common)
        for name in option_names:
            if name in s.options:
                self.option(s, OPTIONS[name], cfg, train_set, common)

    def peak_mb(self, trainer: Trainer) -> float:
        """One more training step's peak tensor memory (model, gradients, optimiser state,
        batch and activations), as a run records it in result.json's cost."""
        return peak_memory_mb(trainer.step, self.device, trainer.model, trainer.optimizer)[0]

    def attention_overhead(self, s: Setting, cfg: C.Config, train_set, common: dict) -> None:
        """danet against the same head with the identity in both branches, side by side."""
        self.log(f"[bench] {s.name}: danet against {IDENTITY}, side by side")
        a = Trainer(variant_config(cfg, "danet"), self.device, train_set)
        b = Trainer(variant_config(cfg, IDENTITY), self.device, train_set)
        for _ in range(s.warmup):
            a.step(), b.step()
        times = side_by_side({"danet": a.step, IDENTITY: b.step}, s.rounds, s.block)
        ratio = median(times["danet"]) / median(times[IDENTITY])
        self.add(
            "check", s.name, variant="danet", name="attention_overhead", **common,
            value=ratio, target=f"<= {TARGET_OVERHEAD}", ok=ratio <= TARGET_OVERHEAD,
            note=f"danet step / {IDENTITY} step, {len(times['danet'])} steps each",
        )

    def data_loading(self, s: Setting, cfg: C.Config, train_set, common: dict) -> None:
        """The real loader against the same batches already in memory, side by side."""
        self.log(f"[bench] {s.name}: data loading against batches in memory")
        vcfg = variant_config(cfg, "danet")
        loaded = Trainer(vcfg, self.device, train_set)
        memory = Trainer(vcfg, self.device, train_set)
        total = s.warmup + s.rounds * s.block
        kept = [next(memory.batches) for _ in range(total)]
        for _ in range(s.warmup):
            loaded.step(), memory.step(kept[len(memory.losses)])
        times = side_by_side(
            {"loader": loaded.step, "memory": lambda: memory.step(kept[len(memory.losses)])},
            s.rounds,
            s.block,
        )
        ratio = median(times["loader"]) / median(times["memory"])
        same, _ = losses_compared(loaded.losses, memory.losses)
        self.add(
            "data", s.name, variant="danet", **common, value=ratio,
            step_ms=1e3 * median(times["loader"]), baseline_ms=1e3 * median(times["memory"]),
            exact=same, note=f"num_workers={cfg.data.num_workers}",
        )
        self.add(
            "check", s.name, variant="danet", name="data_loading", **common, value=ratio,
            target=f"<= {TARGET_DATA}", ok=ratio <= TARGET_DATA,
            note="step with the real loader / step with the batches in memory",
        )

    def inference(self, s: Setting, vcfg: C.Config, num_classes: int, common: dict) -> None:
        ch, cw = pair(vcfg.data.crop_size)
        h, w = s.inference_hw if s.inference_hw != (0, 0) else (ch, 2 * cw)
        seed_everything(0)
        model = speed.prepare(Segmentor(vcfg.model, num_classes).to(self.device), vcfg.train)
        model.eval()
        img = torch.randn(1, 3, h, w, device=self.device)
        for mode in ("whole", "slide"):
            self.log(f"[bench] {s.name}: inference {vcfg.model.variant} {mode} at {h}x{w}")

            def run(mode: str = mode) -> None:
                with speed.autocast(vcfg.train.amp, self.device):
                    predict(model, img, mode, vcfg.eval, vcfg.data.crop_size)

            run()
            times = call_times(run, max(2, s.steps))
            self.add(
                "inference", s.name, variant=vcfg.model.variant, mode=mode, size=f"{h}x{w}",
                threads=common["threads"], batch=1, steps=len(times), step_ms=1e3 * median(times),
                images_per_s=1 / median(times),
            )

    def option(self, s: Setting, option: Option, cfg: C.Config, train_set, common: dict) -> None:
        base = with_overrides(variant_config(cfg, "danet"), option.baseline)
        if option.needs == "cuda" and self.device.type != "cuda":
            self.add("option", s.name, name=option.name, **common, note="needs a CUDA device")
            return
        if option.needs == "bf16" and not _has(torch.bfloat16, self.device):
            self.add("option", s.name, name=option.name, **common, note="no fast bf16 here")
            return
        on = with_overrides(base, option.overrides)
        if option.needs == "workers" and on.data.num_workers >= (os.cpu_count() or 1):
            self.add("option", s.name, name=option.name, **common, note="fewer cores")
            return
        self.log(f"[bench] {s.name}: option {option.name}, side by side with the defaults")
        a, b = Trainer(on, self.device, train_set), Trainer(base, self.device, train_set)
        first = call_times(a.step, 1)[0]  # includes compilation for compile
        b.step()
        for _ in range(s.warmup - 1):
            a.step(), b.step()
        times = side_by_side({"on": a.step, "off": b.step}, s.rounds, s.block)
        same, diff = losses_compared(a.losses, b.losses)
        on_s, off_s = median(times["on"]), median(times["off"])
        self.add(
            "option", s.name, variant="danet", name=option.name, **common,
            setting_on=" ".join(option.overrides), steps=len(times["on"]),
            step_ms=1e3 * on_s, baseline_ms=1e3 * off_s, value=off_s / on_s,
            first_step_s=first, exact=same, loss_rel_diff=diff,
        )


def variant_config(cfg: C.Config, name: str) -> C.Config:
    if name == IDENTITY:
        return with_overrides(cfg, ["model.variant=none", "model.head=dual"])
    return with_overrides(cfg, [f"model.variant={name}", "model.head=auto"])


def setting_config(s: Setting, quick: bool) -> C.Config:
    path = REPO / "experiments" / "ablation.yaml"  # the default sweep's shared settings
    cfg = C.from_dict(C.load_yaml(path).get("config") or {}, f"{path} (config)")
    overrides = s.overrides + (QUICK if quick else [])
    return with_overrides(cfg, [*overrides, "train.tensorboard=false"])


# ---------------------------------------------------------------- output

COLUMNS = [
    "section", "setting", "variant", "name", "mode", "size", "dtype", "impl", "threads",
    "batch", "steps", "step_ms", "baseline_ms", "images_per_s", "forward_gflops",
    "achieved_gflops", "fraction_of_fp32", "gflops", "value", "target", "ok", "exact",
    "loss_rel_diff", "first_step_s", "peak_memory_mb", "setting_on", "note", "device",
]


# (section, title, {column: header}, {column: number format}) of each markdown table
TABLES = [
    ("ceiling", "**Dense matmul ceiling** (GFLOP/s, n x n by n x n)",
     {"threads": "threads", "dtype": "dtype", "impl": "impl", "gflops": "GFLOP/s"},
     {"gflops": ".1f"}),
    ("train", "**Training step** (loader, forward, 3 losses, backward, SGD step); achieved = "
     "3 x forward FLOPs / step time, as a fraction of the best fp32 ceiling at that thread "
     "count",
     {"setting": "setting", "variant": "variant", "batch": "batch", "step_ms": "step ms",
      "images_per_s": "images/s", "forward_gflops": "fwd GFLOP/batch",
      "achieved_gflops": "achieved GFLOP/s", "fraction_of_fp32": "of fp32 ceiling",
      "peak_memory_mb": "peak MiB"},
     {"step_ms": ".1f", "images_per_s": ".2f", "forward_gflops": ".1f", "achieved_gflops": ".1f",
      "fraction_of_fp32": ".2f", "peak_memory_mb": ".0f"}),
    ("inference", "**Inference** (batch 1; slide: crop-sized windows at stride 2/3)",
     {"setting": "setting", "variant": "variant", "mode": "mode", "size": "image",
      "step_ms": "ms", "images_per_s": "images/s"},
     {"step_ms": ".1f", "images_per_s": ".2f"}),
    ("option", "**Speed options**, danet, side by side with the defaults (speed-up = default "
     "step / step with the option; exact = bit-identical losses over the same steps)",
     {"setting": "setting", "name": "option", "step_ms": "ms", "baseline_ms": "default ms",
      "value": "speed-up", "first_step_s": "first step s", "exact": "exact",
      "loss_rel_diff": "max loss rel. diff", "note": "note"},
     {"step_ms": ".1f", "baseline_ms": ".1f", "value": ".3f", "first_step_s": ".1f",
      "loss_rel_diff": ".1e"}),
    ("data", "**Data loading**, danet: step with the real loader / with batches in memory",
     {"setting": "setting", "step_ms": "loader ms", "baseline_ms": "in-memory ms",
      "value": "ratio", "exact": "same losses", "note": "loader"},
     {"step_ms": ".1f", "baseline_ms": ".1f", "value": ".3f"}),
    ("reference", "**Against mmsegmentation** (training peak memory and images/s here)",
     {"setting": "setting", "variant": "variant", "peak_memory_mb": "peak MiB",
      "images_per_s": "train images/s", "note": "published"},
     {"peak_memory_mb": ".0f", "images_per_s": ".2f"}),
    ("check", "**Targets**",
     {"setting": "setting", "name": "check", "value": "measured", "target": "target",
      "ok": "met", "note": "what"},
     {"value": ".3f"}),
]


def _shown(value: Any, spec: str | None) -> str:
    if isinstance(value, float):
        return format(value, spec or ".4g")
    return str(value)


def row_line(row: dict[str, Any]) -> str:
    """One measured row as a line of its table's headers and figures, e.g. `[bench] default
    train: variant danet, batch 4, step ms 260.1, images/s 15.38, ...`."""
    _, columns, digits = next(table[1:] for table in TABLES if table[0] == row["section"])
    figures = [
        f"{header} {_shown(row[col], digits.get(col))}"
        for col, header in columns.items()
        if col != "setting" and col in row and row[col] == row[col]  # NaN: not measured
    ]
    return f"[bench] {row['setting']} {row['section']}: " + ", ".join(figures)


def frame(rows: list[dict[str, Any]], device: torch.device):
    """The rows as the CSV holds them: COLUMNS' order, the device named on each."""
    import pandas as pd

    df = pd.DataFrame(rows)
    df["device"] = device_name(device)
    return df[[c for c in COLUMNS if c in df]]


def write(rows: list[dict[str, Any]], device: torch.device, out: Path) -> None:
    """The CSV and, beside it, its markdown tables, each replaced atomically (never torn)."""
    from danet.utils import atomic_write_bytes

    df = frame(rows, device)
    atomic_write_bytes(out, df.to_csv(index=False).encode())
    atomic_write_bytes(out.with_suffix(".md"), to_markdown(df, device_name(device)).encode())


def to_markdown(df, device: str) -> str:
    """The tables docs/speed.md carries: ceiling, training, inference, options, data, targets."""
    settings = [f"{n}: {SETTINGS[n].about}" for n in dict.fromkeys(df.setting) if n in SETTINGS]
    out = [
        f"Device: {device}. One process; medians of per-step times. Settings: "
        + "; ".join(settings)
        + ".\n"
    ]
    for section, title, columns, digits in TABLES:
        part = df[df.section == section]
        if part.empty:
            continue
        shown = part[[c for c in columns if c in part]].copy()
        for col, spec in digits.items():
            if col in shown:
                shown[col] = shown[col].map(lambda x, f=spec: "" if x != x else format(x, f))
        out += [
            title + "\n",
            shown.rename(columns=columns).fillna("").to_markdown(index=False) + "\n",
        ]
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    p = command_parser("danet bench", __doc__)
    p.add_argument("--settings", help="comma-separated; default: default,r50-d8 (+ GPU ones)")
    p.add_argument("--variants", help="comma-separated; default: none+dual and every variant")
    p.add_argument("--options", help="comma-separated speed options; default: all")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--out", default="reports/bench.csv", help="CSV; the markdown goes beside")
    p.add_argument("--quick", action="store_true", help="64 px scenes, few steps (tests)")
    p.add_argument(
        "--plugins", nargs="+", default=[], help="your modules or .py files (config: plugins)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from danet import plugins
    from danet.errors import DanetError

    args = parser().parse_args(argv)

    try:
        plugins.load(plugins.resolve(args.plugins))
        device = pick_device(args.device)
        settings = _pick(args.settings, SETTINGS, "--settings") or [
            n for n, s in SETTINGS.items() if device.type == "cuda" or not s.gpu_only
        ]
        names = [IDENTITY, *variants.available()]
        chosen = _pick(args.variants, dict.fromkeys(names), "--variants") or names
        options = _pick(args.options, OPTIONS, "--options") or list(OPTIONS)
    except DanetError as e:
        print(f"danet bench: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    bench = Bench(device, args.quick, out)
    try:
        for name in settings:
            s = SETTINGS[name]
            if args.quick:
                s = dataclasses.replace(s, steps=2, warmup=1, rounds=2, block=1)
            bench.run_setting(s, chosen, options, setting_config(s, args.quick))
    except KeyboardInterrupt:  # Ctrl-C: what was measured is already on disk
        return stopped_early("danet bench", out)
    print(to_markdown(frame(bench.rows, device), device_name(device)))
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


def _pick(given: str | None, known: dict, flag: str) -> list[str]:
    from danet.errors import unknown_choice

    if not given:
        return []
    names = [n.strip() for n in given.split(",") if n.strip()]
    for n in names:
        if n not in known:
            raise unknown_choice(flag, n, known)
    return names


if __name__ == "__main__":
    sys.exit(main())
