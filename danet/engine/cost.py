"""What a model costs, counted and measured for one exact model and input: parameters,
forward multiply-adds, peak tensor memory and latency. A run records it in result.json
(`cost`, docs/result-schema.md); `danet profile` and the benchmarks count with the same code.

Multiply-adds: fvcore's FlopCountAnalysis (1 flop = 1 multiply-add) restricted to products
(conv, linear, matmul/bmm, addmm/baddbmm, einsum), with handles added here for what fvcore
misses: `aten::scaled_dot_product_attention`, the CPU chunked attention
(`prim::PythonOp._ChunkedAttention`, variants.attention_ops) and an exact einsum (fvcore's
own parses numpy's rounded printout). FlopCounterMode (2 per multiply-add) cross-checks it.

Memory: the most tensor memory alive at once while a step runs. On a GPU CUDA's allocator
statistics; on the CPU torch's MemTracker, a dispatch mode that follows every tensor storage
(the process's RSS would count the allocator's and libraries' memory, the same for every
variant).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import variants
from danet import config as C
from danet.data.transforms import pair
from danet.engine import distributed, speed, step
from danet.models.head import ATTENTION_SLOTS
from danet.models.segmentor import STRIDE, HeadOnFeatures
from danet.utils import atomic_write_json, device_name

# fvcore's operator names (by_operator keys) that are multiply-add products
PRODUCT_OPERATORS = frozenset(
    {
        "conv",
        "linear",
        "matmul",
        "bmm",
        "addmm",
        "baddbmm",
        "einsum",
        "scaled_dot_product_attention",
        "PythonOp._ChunkedAttention",
    }
)
LATENCY_REPEATS = 10


# ---------------------------------------------------------------- counting


def _shapes(inputs) -> list[list[int] | None]:
    from fvcore.nn.jit_handles import get_shape

    return [get_shape(v) for v in inputs]


def sdpa_macs(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> int:
    """softmax(Q K^T) V multiply-adds: q ... x L x E, k ... x S x E, v ... x S x Ev."""
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _sdpa_handle(inputs, outputs) -> int:
    q, k, v = _shapes(inputs)[:3]
    return sdpa_macs(q, k, v)


def _chunked_attention_handle(inputs, outputs) -> int:
    """variants.attention_ops._ChunkedAttention(q B x N x d, k B x d x M, v B x C x M)."""
    q, k, v = _shapes(inputs)[:3]
    b, n, d = q
    return b * n * k[2] * (d + v[1])


def einsum_macs(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """Exact multiply-adds of a two-operand einsum evaluated directly: the product of the
    sizes of every distinct index (a one-operand einsum is a reduction: no products)."""
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    if len(lhs) < 2:
        return 0
    sizes: dict[str, int] = {}
    for letters, shape in zip(lhs, shapes):
        for letter, dim in zip(letters, shape):
            sizes[letter] = dim
    return math.prod(sizes.values())


def _einsum_handle(inputs, outputs) -> int:
    equation = inputs[0].toIValue()
    shapes = _shapes(list(inputs[1].node().inputs()))
    return einsum_macs(equation, shapes)


HANDLES: dict[str, Callable] = {
    "aten::scaled_dot_product_attention": _sdpa_handle,
    "prim::PythonOp._ChunkedAttention": _chunked_attention_handle,
    "aten::einsum": _einsum_handle,
}


def fvcore_analysis(module: nn.Module, inputs: tuple):
    """fvcore's FlopCountAnalysis with this module's handles added and warnings silenced."""
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    analysis = FlopCountAnalysis(module, inputs).set_op_handle(**HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis


def fvcore_counts(
    module: nn.Module, inputs: tuple, submodules: Sequence[str] = ()
) -> dict[str, Any]:
    """{'macs': products only, 'macs_all': fvcore's total, 'by_operator', 'skipped', and
    'by_module': {name: products} for each of `submodules` (fvcore's dotted names)}."""
    with torch.no_grad():
        analysis = fvcore_analysis(module, inputs)
        by_op = dict(analysis.by_operator())
        per_module = analysis.by_module_and_operator() if submodules else {}
    products = lambda ops: float(sum(v for k, v in ops.items() if k in PRODUCT_OPERATORS))  # noqa: E731
    return {
        "macs": products(by_op),
        "macs_all": float(sum(by_op.values())),
        "by_operator": by_op,
        "by_module": {name: products(per_module.get(name, {})) for name in submodules},
        "skipped": dict(analysis.unsupported_ops()),
    }


def count_macs(module: nn.Module, inputs: torch.Tensor | tuple) -> float:
    """Multiply-adds of one forward: fvcore + handles, products only (module docstring).
    fvcore traces with real tensors (not meta), so keep inputs modest on the CPU."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    return fvcore_counts(module, inputs)["macs"]


def flopcounter_flops(
    module: nn.Module, inputs: torch.Tensor | tuple, by_op: bool = False
) -> float | tuple[float, dict[str, float]]:
    """FlopCounterMode's FLOPs (2 per multiply-add) of one forward; works on meta tensors."""
    from torch.utils.flop_counter import FlopCounterMode

    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    total = float(counter.get_total_flops())
    if not by_op:
        return total
    ops = {str(k).split(".")[-1]: float(v) for k, v in counter.get_flop_counts()["Global"].items()}
    return total, ops


def params_of(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- memory


def _tensor_bytes(objects: Sequence[Any]) -> int:
    """Bytes of the tensors held by modules (parameters, buffers), optimisers and tensors."""
    seen: dict[int, int] = {}
    for obj in objects:
        if isinstance(obj, nn.Module):
            tensors = [*obj.parameters(), *obj.buffers()]
        elif isinstance(obj, torch.optim.Optimizer):
            tensors = [t for s in obj.state.values() for t in s.values() if torch.is_tensor(t)]
        else:
            tensors = [obj]
        for t in tensors:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def peak_memory_mb(
    step_fn: Callable[[], Any], device: torch.device, *external: Any, beyond: bool = False
) -> tuple[float, str]:
    """(MiB, method): the most tensor memory alive at once while step_fn() runs, counting the
    `external` modules, optimisers and tensors it uses (the model, its optimiser, the input)
    and everything step_fn allocates; with `beyond`, only what exceeds those externals."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step_fn()
        torch.cuda.synchronize(device)
        extra = torch.cuda.max_memory_allocated(device) - base
        held = 0 if beyond else _tensor_bytes(external)
        return (extra + held) / 2**20, "cuda max_memory_allocated"
    # torch's own tracker (a dispatch mode that follows every storage); private but pinned
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(*external)
    with tracker:
        step_fn()
    snapshot = tracker.get_tracker_snapshot("peak")[device]
    total = snapshot["Total"]
    if beyond:  # parameters, buffers, optimiser state and the other tensors passed in
        total -= _tensor_bytes(external)
    return total / 2**20, "MemTracker (CPU tensor storages)"


# ---------------------------------------------------------------- one run's model


def attention_names(model: nn.Module) -> list[str]:
    """Dotted names of the model's attention modules: the head's (none for the identity),
    then those inserted into the backbone (model.backbone_attention)."""
    head = model.head
    inserted = getattr(model.backbone, "attention_names", [])
    return [
        f"head.{slot}"
        for slot in ATTENTION_SLOTS
        if hasattr(head, slot) and not isinstance(getattr(head, slot), variants.Identity)
    ] + [f"backbone.{name}" for name in inserted]


def without_attention(model: nn.Module) -> nn.Module:
    """A copy of the model with each attention module replaced by the identity."""
    bare = copy.deepcopy(model)
    for name in attention_names(bare):
        parent, _, slot = name.rpartition(".")
        setattr(bare.get_submodule(parent), slot, variants.Identity(0))
    return bare


def eval_input(cfg: C.Config, val_set) -> tuple[int, int, int, int]:
    """The input of one evaluation forward: the window for slide/msflip, else the first
    validation image as evaluated (its own size, or eval.resize's keep-ratio scale)."""
    from danet.engine.inference import resize_to

    mode = cfg.eval.modes[0]
    if mode in ("slide", "msflip"):
        h, w = pair(cfg.eval.crop_size or cfg.data.crop_size)
        return (1, 3, int(h), int(w))
    image = val_set[0][0]
    h, w = resize_to(int(image.shape[-2]), int(image.shape[-1]), cfg.eval.resize)
    return (1, 3, h, w)


def train_input(cfg: C.Config, world_size: int) -> tuple[int, int, int, int]:
    h, w = pair(cfg.data.crop_size)
    return (cfg.train.batch_size // world_size, 3, int(h), int(w))


def measure_key(
    cfg: C.Config, num_classes: int, inputs: Sequence[Sequence[int]], device: torch.device
) -> str:
    """What the cost depends on: the model's config (not its weights) and class count, the
    plugins' code, the inputs, the speed options, the device and thread count, torch's
    version."""
    from danet import plugins

    d = C.to_dict(cfg)
    what = {
        "model": {k: v for k, v in d["model"].items() if k != "pretrained"},
        "classes": num_classes,
        "plugins": [p["sha256"] for p in plugins.record(cfg.plugins)],
        "inputs": [list(s) for s in inputs],
        "train": {k: d["train"][k] for k in ("amp", "channels_last", "loss_weights")},
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _training_peak(
    model: nn.Module, cfg: C.Config, shape: Sequence[int], num_classes: int, device: torch.device
) -> tuple[float, str]:
    """Peak memory of one training step (forward, losses, backward, SGD update) of a copy
    of the model, counting its parameters, gradients, optimiser state and the batch."""
    net = copy.deepcopy(model).train()
    optimizer = step.make_optimizer(net, cfg.train)
    scaler = speed.grad_scaler(cfg.train, device)
    gen = torch.Generator().manual_seed(0)
    lab = torch.randint(0, num_classes, (shape[0], *shape[2:]), generator=gen).to(device)
    if cfg.model.freeze_backbone:  # the step trains the head on cached stride-8 features
        b, _, h, w = shape
        img = torch.randn(b, net.backbone.out_channels, h // STRIDE, w // STRIDE, generator=gen)
        img, lab = img.to(device), lab[:, : STRIDE * (h // STRIDE), : STRIDE * (w // STRIDE)]
        net = HeadOnFeatures(net.head)  # what is in memory for the step, but the idle backbone
    else:
        img = torch.randn(*shape, generator=gen).to(device)

    def one_step() -> None:
        step.train_step(net, optimizer, scaler, (img, lab), cfg, -1, distributed.SINGLE, device)

    return peak_memory_mb(one_step, device, net, optimizer, img, lab)


def call_times(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `fn`, the accelerator's queued work included: the
    one timing helper of the project (cost, profile, bench). By hand: torch.utils.benchmark's
    Timer runs two warm-up calls before each timing, and a training step must run once."""
    accelerator = torch.accelerator.is_available()
    out = []
    for _ in range(repeats):
        if accelerator:
            torch.accelerator.synchronize()
        start = time.perf_counter()
        fn()
        if accelerator:
            torch.accelerator.synchronize()
        out.append(time.perf_counter() - start)
    return out


def latency_ms(model: nn.Module, shape: Sequence[int], device: torch.device, repeats: int) -> float:
    """Median time (ms) of a batch-1 forward in eval mode, after one warm-up pass."""
    x = torch.randn(*shape, device=device)
    model.eval()

    def forward() -> None:
        with torch.inference_mode():
            model(x)
        if x.is_cuda:
            torch.cuda.synchronize(device)

    forward()
    return 1e3 * statistics.median(call_times(forward, repeats))


def measure(
    model: nn.Module,
    cfg: C.Config,
    num_classes: int,
    eval_shape: Sequence[int],
    device: torch.device,
    world_size: int = 1,
    repeats: int = LATENCY_REPEATS,
) -> dict[str, Any]:
    """The `cost` record of result.json for this model at the run's evaluation and training
    inputs, measured on copies (the model's weights are not changed). A model with
    synchronised BatchNorm would wait for the other processes: pass a single-process one."""
    t0 = time.perf_counter()
    model = copy.deepcopy(model).eval()
    names = attention_names(model)
    eval_x = torch.randn(*eval_shape, device=device)
    counts = fvcore_counts(model, (eval_x,), ["head", *names])
    flops = flopcounter_flops(model, eval_x)
    shape = train_input(cfg, world_size)
    peak, method = _training_peak(model, cfg, shape, num_classes, device)
    bare, _ = _training_peak(without_attention(model), cfg, shape, num_classes, device)
    latency = latency_ms(model, eval_shape, device, repeats)
    attention = [model.get_submodule(n) for n in names]
    return {
        "eval_input": list(eval_shape),
        "params": params_of(model),
        "params_head": params_of(model.head),
        "params_attention": sum(params_of(m) for m in attention),
        "gmacs": counts["macs"] / 1e9,
        "gmacs_head": counts["by_module"]["head"] / 1e9,
        "gmacs_attention": sum(counts["by_module"][n] for n in names) / 1e9,
        "gflops_flopcounter": flops / 1e9,
        "rel_diff": flops / (2 * counts["macs"]) - 1 if counts["macs"] else math.nan,
        "train_input": list(shape),
        # frozen: the training step is the head's alone, on cached features (model.freeze_backbone)
        "backbone": "frozen" if cfg.model.freeze_backbone else "trained",
        "train_peak_mb": peak,
        "train_peak_without_attention_mb": bare,
        "attention_peak_mb": peak - bare,
        "memory_method": method,
        "latency_ms": latency,
        "images_per_s": 1e3 / latency,
        "latency_repeats": repeats,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "measure_time_s": time.perf_counter() - t0,
    }


def cached_measure(cache_dir: Path, key: str, make: Callable[[], dict]) -> dict[str, Any]:
    """The cost for `key` from cache_dir, else make() and store it: the seeds of one variant
    share a model and input, so only the first to finish measures."""
    path = cache_dir / f"{key}.json"
    try:
        return {**json.loads(path.read_text()), "cached": True}
    except (OSError, json.JSONDecodeError):
        pass
    cost = {**make(), "key": key}
    atomic_write_json(path, cost)
    return {**cost, "cached": False}
