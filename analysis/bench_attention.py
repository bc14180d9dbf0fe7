"""`make bench-attention`: PAM naive vs memory-efficient, then every variant in the DANet
head against the `none` head, forward + backward, side by side in one run.

Peak memory is the most tensor memory alive at once during one forward + backward, beyond
the module's parameters and input: on the CPU counted by torch's MemTracker (every tensor
storage, as CUDA's allocator statistics would), on a GPU torch.cuda.max_memory_allocated.
Time is the median of `--repeats` forward + backward passes after that first one.

    .venv/bin/python -m analysis.bench_attention [--sizes 33 65 97 129] [--channels 512]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

import variants
from danet.engine.cost import call_times, peak_memory_mb


def open_gates(module: nn.Module) -> nn.Module:
    """Set every scalar gate (DANet's gamma, initialised to 0) to 0.5: at 0 the attention's
    output is multiplied away, so autograd may skip it and its cost would not be measured."""
    with torch.no_grad():
        for p in module.parameters():
            if p.shape == (1,):
                p.fill_(0.5)
    return module


def measure(
    variant: str,
    channels: int,
    size: int,
    repeats: int = 3,
    device: str = "cpu",
    head: bool = False,
    **opts,
) -> dict[str, float]:
    """Peak memory (MiB) and median time (s) of one forward + backward at batch 1, of the
    module alone or (head=True) of the DANet head around it, `channels` in, 512 wide."""
    from danet.models.head import DANetHead

    torch.manual_seed(0)
    if head:
        module = DANetHead(channels, 19, variant, opts, inter_channels=512).to(device)
    else:
        module = variants.create(variant, channels, **opts).to(device)
    open_gates(module)
    x = torch.randn(1, channels, size, size, device=device, requires_grad=True)

    def step() -> None:
        sum(o.square().mean() for o in _outputs(module(x))).backward()
        if x.is_cuda:
            torch.cuda.synchronize()

    peak, _ = peak_memory_mb(step, x.device, module, x, beyond=True)
    times = call_times(step, repeats)
    return {"peak_mb": peak, "time_s": statistics.median(times) if times else float("nan")}


def _outputs(out) -> list[torch.Tensor]:
    return out if isinstance(out, list) else [out]


def variant_rows(size: int, in_channels: int, repeats: int, device: str) -> list[dict]:
    base = measure("none", in_channels, size, repeats, device, head=True)
    rows = []
    for name in variants.available():
        r = base if name == "none" else measure(name, in_channels, size, repeats, device, head=True)
        rows.append(
            {
                "variant": name,
                "head MiB": r["peak_mb"],
                "memory x none": r["peak_mb"] / base["peak_mb"],
                "head s": r["time_s"],
                "time x none": r["time_s"] / base["time_s"],
            }
        )
    return rows


def pam_rows(sizes: list[int], channels: int, repeats: int, device: str) -> list[dict]:
    rows = []
    for size in sizes:
        naive = measure("pam", channels, size, repeats, device, impl="naive")
        eff = measure("pam", channels, size, repeats, device, impl="efficient")
        rows.append(
            {
                "size": f"{size}x{size}",
                "naive MiB": naive["peak_mb"],
                "efficient MiB": eff["peak_mb"],
                "memory eff/naive": eff["peak_mb"] / naive["peak_mb"],
                "naive s": naive["time_s"],
                "efficient s": eff["time_s"],
                "time eff/naive": eff["time_s"] / naive["time_s"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[33, 65, 97, 129])
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--head-size", type=int, default=65, help="feature size of the variant table")
    p.add_argument("--head-in", type=int, default=2048, help="channels into the head")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    print(
        f"PAM forward + backward, C = {args.channels}, batch 1, {args.device}, "
        f"{torch.get_num_threads()} threads, time: median of {args.repeats}"
    )
    rows = pam_rows(args.sizes, args.channels, args.repeats, args.device)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g"))
    print(
        f"\nDANet head ({args.head_in} -> 512 -> 19 classes) with each variant, feature "
        f"{args.head_size}x{args.head_size}, forward + backward, against the `none` head"
    )
    rows = variant_rows(args.head_size, args.head_in, args.repeats, args.device)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
