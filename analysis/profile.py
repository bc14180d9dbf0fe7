"""`danet profile`: parameters, multiply-adds, peak memory and latency of every
registered attention variant, as the module alone (C = 512), as the DANet head around it
(2048 -> 512 -> 19 classes, head="auto") and as the whole Segmentor (ResNet-50/101, OS8).

Conventions (stated again in every printed table header):
- GMACs = 1e9 multiply-adds; GFLOPs = 2 x GMACs.
- `gmacs_fvcore`: fvcore `FlopCountAnalysis` (1 flop = 1 multiply-add) restricted to the
  products: conv, linear, matmul/bmm (and addmm/baddbmm), einsum, plus handles added here
  for what fvcore misses: `aten::scaled_dot_product_attention` and the CPU chunked
  attention (`prim::PythonOp._ChunkedAttention`, variants.attention_ops), and an exact
  einsum handle (fvcore's own one parses numpy's rounded printout). Softmax, BN, pooling,
  upsampling and elementwise ops are excluded; `gmacs_fvcore_all` adds fvcore's own
  counts of norms/pooling/upsampling (1 per element) for reference.
- `gflops_flopcounter`: torch.utils.flop_counter.FlopCounterMode (2 per multiply-add; counts
  conv/mm/bmm/SDPA, not BN, softmax or upsampling), run on the meta device, so even the
  129x129 attention map or a 769x769 ResNet-101 costs nothing to count.
- `rel_diff` = gflops_flopcounter / (2 x gmacs_fvcore) - 1.
- Counting uses impl="naive" for pam/danet/sagan/nonlocal so the N x N products are plain
  bmm ops; the handles above also count the other impls (tests check both). Memory and
  latency use the variants' default impl ("auto"), the path a run takes.
- Memory: peak tensor memory beyond parameters and input, batch 1 (analysis.bench_attention):
  CUDA max_memory_allocated on a GPU, torch's MemTracker on the CPU. Forward is measured
  under no_grad in eval mode; forward+backward in train mode. Latency: median of
  `--repeats` forward passes (no_grad, eval) with torch.utils.benchmark.
- The whole model: FlopCounterMode on meta; fvcore by composition (backbone traced once per
  backbone and input, plus the head traced at the feature size; upsampling has no
  products). Memory/latency of the whole model only on a GPU or with --full.
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import variants
from analysis.bench_attention import open_gates
from danet.data.transforms import pair
from danet.engine.cost import (
    call_times,
    flopcounter_flops,
    fvcore_counts,
    params_of,
    peak_memory_mb,
)
from danet.utils import command_parser, stopped_early

C_MODULE = 512
HEAD_IN, HEAD_INTER, NUM_CLASSES = 2048, 512, 19
SIZES = (33, 65, 97, 129)
QUICK_SIZES = (33, 65)
MODEL_INPUTS = ((512, 1024), (769, 769))
BACKBONES = ("resnet50", "resnet101")
SCOPES = ("module", "head", "model")

CONVENTION = (
    "GMACs = 1e9 multiply-adds (fvcore + handles: conv, linear, matmul/bmm, einsum, SDPA; "
    "softmax/BN/pool/upsample/elementwise excluded); GFLOPs = 2 x GMACs (FlopCounterMode, "
    "meta device); rel_diff = GFLOPs / (2 x GMACs) - 1"
)

COLUMNS = [
    "variant",
    "scope",
    "backbone",
    "size",
    "input",
    "params_m",
    "gmacs_fvcore",
    "gflops_flopcounter",
    "rel_diff",
    "gmacs_fvcore_all",
    "fvcore_method",
    "mem_fwd_mb",
    "mem_fwdbwd_mb",
    "mem_method",
    "latency_ms",
    "repeats",
    "device",
    "torch",
]


# ---------------------------------------------------------------- what is profiled


def count_opts(variant: str) -> dict[str, Any]:
    """Options that make the attention products plain bmm ops (impl="naive")."""
    return {"impl": "naive"} if "impl" in variants.options(variant) else {}


def build(
    variant: str,
    scope: str,
    backbone: str = "",
    opts: dict | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The module (C = 512), the DANet head (2048 -> 512 -> 19) or the Segmentor."""
    opts = dict(opts or {})
    torch.manual_seed(0)
    with torch.device(device):
        if scope == "module":
            module = variants.create(variant, C_MODULE, **opts)
        elif scope == "head":
            from danet.models.head import DANetHead

            module = DANetHead(HEAD_IN, NUM_CLASSES, variant, opts, HEAD_INTER, "auto")
        elif scope == "model":
            from danet.config import ModelConfig
            from danet.models.segmentor import Segmentor

            cfg = ModelConfig(backbone=backbone, variant=variant, variant_opts=opts)
            module = Segmentor(cfg, NUM_CLASSES)
        else:
            raise ValueError(f"unknown scope {scope!r}; one of {SCOPES}")
    return module if str(device) == "meta" else open_gates(module)


def input_shape(scope: str, size: int | tuple[int, int]) -> tuple[int, ...]:
    h, w = pair(size)
    return (1, {"module": C_MODULE, "head": HEAD_IN, "model": 3}[scope], h, w)


def feature_size(size: tuple[int, int]) -> tuple[int, int]:
    """Output-stride-8 feature size of a ResNet (three stride-2 stages, each rounding up)."""
    h, w = size
    for _ in range(3):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


@functools.cache
def _backbone_macs(backbone: str, size: tuple[int, int]) -> tuple[float, float]:
    from danet.models.backbone import Backbone

    torch.manual_seed(0)
    body = Backbone(backbone).eval()
    counts = fvcore_counts(body, (torch.randn(1, 3, *size),))
    return counts["macs"], counts["macs_all"]


def _head_macs(variant: str, shape: tuple[int, ...]) -> tuple[float, float]:
    head = build(variant, "head", opts=count_opts(variant)).eval()
    counts = fvcore_counts(head, (torch.randn(*shape),))
    return counts["macs"], counts["macs_all"]


def count_row(variant: str, scope: str, size, backbone: str = "", fvcore: bool = True) -> dict:
    """Parameters, fvcore MACs and FlopCounterMode FLOPs of one variant x scope x size."""
    shape = input_shape(scope, size)
    opts = count_opts(variant)
    meta = build(variant, scope, backbone, opts, device="meta")
    flops = flopcounter_flops(meta, (torch.empty(shape, device="meta"),))
    row: dict[str, Any] = {"params_m": params_of(meta) / 1e6, "gflops_flopcounter": flops / 1e9}
    macs = macs_all = math.nan
    method = "skipped (--quick)"
    if fvcore and scope == "model":
        fh, fw = feature_size(shape[-2:])
        bb, bb_all = _backbone_macs(backbone, tuple(shape[-2:]))
        hd, hd_all = _head_macs(variant, (1, HEAD_IN, fh, fw))
        macs, macs_all = bb + hd, bb_all + hd_all
        method = "traced: backbone + head at features"
    elif fvcore:
        module = build(variant, scope, opts=opts).eval()
        counts = fvcore_counts(module, (torch.randn(shape),))
        macs, macs_all = counts["macs"], counts["macs_all"]
        method = "traced"
    row.update(
        gmacs_fvcore=macs / 1e9,
        gmacs_fvcore_all=macs_all / 1e9,
        fvcore_method=method,
        rel_diff=(flops / (2 * macs) - 1) if macs > 0 else math.nan,
    )
    return row


def measure_row(
    variant: str, scope: str, size, backbone: str, device: str, repeats: int
) -> dict[str, Any]:
    """Peak memory of forward and forward+backward, and the forward latency (median)."""
    module = build(variant, scope, backbone, device=device)
    x = torch.randn(input_shape(scope, size), device=device)

    def sync() -> None:
        if x.is_cuda:
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.no_grad():
            module(x)
        sync()

    def forward_backward() -> None:
        out = module(xg)
        outs = out if isinstance(out, list) else [out]
        sum(o.square().mean() for o in outs).backward()
        sync()

    module.eval()
    mem_fwd, method = peak_memory_mb(forward, x.device, module, x, beyond=True)
    module.train()
    xg = x.clone().requires_grad_(True)
    mem_fwdbwd, _ = peak_memory_mb(forward_backward, x.device, module, xg, beyond=True)
    module.zero_grad(set_to_none=True)
    module.eval()
    times = call_times(forward, repeats)
    return {
        "mem_fwd_mb": mem_fwd,
        "mem_fwdbwd_mb": mem_fwdbwd,
        "mem_method": method,
        "latency_ms": statistics.median(times) * 1e3 if times else math.nan,
        "repeats": repeats,
    }


def profile(
    variant_names: Sequence[str] | None = None,
    scopes: Sequence[str] = SCOPES,
    sizes: Sequence[int] = SIZES,
    model_inputs: Sequence[tuple[int, int]] = MODEL_INPUTS,
    backbones: Sequence[str] = BACKBONES,
    device: str = "cpu",
    repeats: int = 3,
    measure: bool = True,
    full: bool = False,
    model_fvcore: bool = True,
    on_row: Callable[[Any], None] | None = None,
) -> Any:
    """One tidy row per variant x scope x size (x backbone for the model), as a DataFrame.
    `on_row(df)` gets the rows so far after each row (main saves and prints it at once)."""
    import pandas as pd

    rows = []
    for variant in variant_names or variants.available():
        jobs: list[tuple[str, Any, str]] = []
        if "module" in scopes:
            jobs += [("module", s, "") for s in sizes]
        if "head" in scopes:
            jobs += [("head", s, "") for s in sizes]
        if "model" in scopes:
            jobs += [("model", tuple(s), b) for b in backbones for s in model_inputs]
        for scope, size, backbone in jobs:
            shape = input_shape(scope, size)
            h, w = shape[-2:]
            row: dict[str, Any] = {
                "variant": variant,
                "scope": scope,
                "backbone": backbone,
                "size": f"{h}x{w}",
                "input": "x".join(map(str, shape)),
            }
            row.update(count_row(variant, scope, size, backbone, model_fvcore or scope != "model"))
            if measure and (scope != "model" or full or device.startswith("cuda")):
                row.update(measure_row(variant, scope, size, backbone, device, repeats))
            else:
                why = "not measured (--no-measure)" if not measure else "skipped (CPU; --full)"
                row.update(
                    mem_fwd_mb=math.nan,
                    mem_fwdbwd_mb=math.nan,
                    mem_method=why,
                    latency_ms=math.nan,
                    repeats=0,
                )
            row.update(device=device, torch=torch.__version__)
            rows.append(row)
            if on_row:
                on_row(pd.DataFrame(rows, columns=COLUMNS))
    return pd.DataFrame(rows, columns=COLUMNS)


def write_csv(df, path: Path) -> None:
    """Atomically (readers never see a half-written file)."""
    from danet.utils import atomic_write_bytes

    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_bytes(path, buf.getvalue().encode())


# the figures of a row's line on stderr, as to_markdown shows them
FIGURES = ("params_m", "gmacs_fvcore", "gflops_flopcounter", "rel_diff", "mem_fwd_mb",
           "mem_fwdbwd_mb", "latency_ms")


def row_line(row: dict[str, Any]) -> str:
    """One profiled row as a line, e.g. `[profile] pam head 33x33: params_m 4.2, ...`."""
    where = " ".join(str(row[k]) for k in ("variant", "scope", "backbone", "size") if row[k])
    figures = [f"{k} {row[k]:.4g}" for k in FIGURES if row[k] == row[k]]  # NaN: not measured
    return f"[profile] {where}: " + ", ".join(figures)


def saved_and_printed(df, path: Path) -> None:
    """main's on_row: the CSV rewritten with every row so far (a run stopped at any point
    keeps them), then the new row on stderr."""
    write_csv(df, path)
    print(row_line(df.iloc[-1].to_dict()), file=sys.stderr, flush=True)


def to_markdown(df) -> str:
    """The table printed by main: one section per scope, the convention in every header."""
    parts = []
    shown = [
        "variant",
        "backbone",
        "size",
        "params_m",
        "gmacs_fvcore",
        "gflops_flopcounter",
        "rel_diff",
        "mem_fwd_mb",
        "mem_fwdbwd_mb",
        "latency_ms",
    ]
    for scope in SCOPES:
        part = df[df["scope"] == scope]
        if part.empty:
            continue
        methods = ", ".join(sorted(set(part["mem_method"])))
        cols = [c for c in shown if c != "backbone" or scope == "model"]
        parts.append(
            f"### {scope} ({_scope_text(scope)}), batch 1, {part['device'].iloc[0]}, "
            f"torch {torch.__version__}\n{CONVENTION}. Memory: peak MiB beyond params + "
            f"input [{methods}]; latency: median forward ms.\n\n"
            + part[cols].to_markdown(index=False, floatfmt=".4g")
        )
    return "\n\n".join(parts)


def _scope_text(scope: str) -> str:
    return {
        "module": f"attention module alone, C = {C_MODULE}",
        "head": f"DANet head {HEAD_IN} -> {HEAD_INTER} -> {NUM_CLASSES} classes, head=auto",
        "model": "Segmentor, backbone at output stride 8",
    }[scope]


def parser() -> argparse.ArgumentParser:
    p = command_parser("danet profile", __doc__)
    p.add_argument("--quick", action="store_true", help="sizes 33 and 65; model: resnet50 only")
    p.add_argument("--out", default="reports/profile.csv", help="the CSV, rewritten at each row")
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda[:N] (default: cuda when there is one)",
    )
    p.add_argument("--variants", nargs="+", default=None, help="default: all registered")
    p.add_argument(
        "--plugins", nargs="+", default=[], help="your modules or .py files (config: plugins)"
    )
    p.add_argument(
        "--scopes", nargs="+", default=list(SCOPES), choices=SCOPES,
        help="the module alone, the DANet head around it, the whole model (default: all)",
    )
    p.add_argument(
        "--sizes", type=int, nargs="+", default=None,
        help="feature sizes (side of the H x W grid; default: 33 65 97 129)",
    )
    p.add_argument("--repeats", type=int, default=None, help="default: 3 on CPU, 10 on GPU")
    p.add_argument("--full", action="store_true", help="measure the whole model on the CPU too")
    p.add_argument("--no-measure", action="store_true", help="count only (no memory/latency)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from danet import plugins
    from danet.errors import DanetError

    try:
        plugins.load(plugins.resolve(args.plugins))
        for name in args.variants or ():
            variants.info(name)
    except DanetError as e:  # names the valid ones
        print(f"error: {e}", file=sys.stderr)
        return 2
    repeats = args.repeats or (10 if args.device.startswith("cuda") else 3)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    try:
        df = profile(
            args.variants,
            scopes=args.scopes,
            sizes=sizes,
            model_inputs=MODEL_INPUTS[:1] if args.quick else MODEL_INPUTS,
            backbones=BACKBONES[:1] if args.quick else BACKBONES,
            device=args.device,
            repeats=1 if args.quick and args.repeats is None else repeats,
            measure=not args.no_measure,
            full=args.full,
            model_fvcore=not args.quick,
            on_row=functools.partial(saved_and_printed, path=Path(args.out)),
        )
    except KeyboardInterrupt:  # Ctrl-C: every row measured is already in the CSV
        return stopped_early("danet profile", Path(args.out))
    write_csv(df, Path(args.out))
    print(to_markdown(df))
    print(f"\nwrote {args.out} ({len(df)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
