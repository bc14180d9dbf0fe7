"""The paper's attention figure for a saved model: `danet visualize RUN IMAGE --points x,y ...`.

For each point (the query), the row of the position-attention map (softmax over positions)
that the run's own module forms, drawn over the image with a colour bar and the point marked:
DANet's PAM (pam, danet runs), SAGAN's self-attention (sagan; its keys are 2x2-pooled, so
each weight covers a 2x2 window of the feature grid) and the Non-local block (nonlocal;
`dot_product` mode: theta . phi / N instead of a softmax). And the channel maps that CAM
outputs (its "enhanced" channels, the strongest by mean activation unless --channels names
them) for cam and danet runs. Other variants form no such map and are refused. IMAGE is an
image file, or `val:N` for image N of the run's validation set (the built-in dataset has no
files).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.cm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

import variants  # noqa: E402
from danet.data import build_dataset  # noqa: E402
from danet.data.transforms import normalize, to_tensors  # noqa: E402
from danet.errors import DanetError  # noqa: E402
from danet.utils import command_parser  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
DPI = 200
# the classes drawn, as the registry builds them: a head's modules are found by their class
PAM, CAM = variants.info("pam").factory, variants.info("cam").factory
SAGAN, NON_LOCAL = variants.info("sagan").factory, variants.info("nonlocal").factory
POSITION = (PAM, SAGAN, NON_LOCAL)  # the modules that form an N x M map per query
TITLE = {PAM: "PAM", SAGAN: "SAGAN", NON_LOCAL: "Non-local"}
# why a variant has no per-query map over positions, for the refusal
NO_MAP = {
    "none": "it has no attention module",
    "cam": "it attends over channels",
    "se": "it reweights channels",
    "eca": "it reweights channels",
    "cbam": "it gates channels, then positions with one sigmoid map shared by every query",
    "gc": "it pools one global context with one softmax over positions for every query",
    "ccnet": "each position attends only over its own row and column, recurrently",
    "ema": "positions attend to a few EM bases, not to each other",
    "efficient": "its linear attention never forms the map: keys, queries normalised apart",
}
SUPPORTED = "pam, danet, sagan or nonlocal"


@dataclass
class AttentionMaps:
    """What `danet visualize` draws. rows: point -> the query's weights over the key grid
    (sum 1 for a softmax); grid: the feature grid (h, w) of the queries; key_stride: 2 where
    the keys are 2x2-pooled (SAGAN), so key cell (a, b) covers feature rows 2a..2a+1."""

    module: str = ""  # the drawn module's title ("" when none)
    rows: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    grid: tuple[int, int] = (0, 0)
    key_stride: int = 1
    cam_out: torch.Tensor | None = None  # CAM's output (C, h, w)
    channels: list[int] | None = None


def variant_name(module: nn.Module) -> str:
    """The registry name of a head slot's module ('none' for the identity)."""
    for name in variants.available():
        if type(module) is variants.info(name).factory:
            return name
    return type(module).__name__


def _first(model: nn.Module, classes: tuple[type, ...]) -> nn.Module | None:
    """The head's first module of one of these classes (sa before sc, as the head registers
    them; inside a DualAttention too)."""
    return next((m for m in model.head.modules() if isinstance(m, classes)), None)


def refusal(model: nn.Module) -> str:
    """Why the model's head has no map to draw, naming its variant."""
    names = [variant_name(getattr(model.head, s)) for s in ("sa", "sc") if hasattr(model.head, s)]
    name = next((n for n in names if n != "none"), "none")
    why = NO_MAP.get(name, "it forms no softmax map over positions per query")
    return f"variant '{name}' forms no position-attention map ({why}); visualize a {SUPPORTED} run"


def query_key(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """(query B x N x d, key B x d x M, key grid (hk, wk)) exactly as the module's forward
    forms them from its input x (its own projections, SAGAN's own pooling)."""
    if isinstance(module, PAM):
        key = module.key_conv(x)
        query = module.query_conv(x).flatten(2).transpose(1, 2)
    elif isinstance(module, SAGAN):
        key = module.subsample(module.key_conv(x))
        query = module.query_conv(x).flatten(2).transpose(1, 2)
    elif isinstance(module, NON_LOCAL):
        key = module.phi(x)
        query = module.theta(x).flatten(2).transpose(1, 2)
    else:
        raise TypeError(f"{type(module).__name__} forms no position-attention map")
    return query, key.flatten(2), tuple(key.shape[-2:])


def attention_row(module: nn.Module, query: torch.Tensor, key: torch.Tensor, i: int):
    """Query i's weights over the M keys, as the module's naive path forms its map
    (variants.attention_ops.attention_naive: softmax over keys of the unscaled q . k; the
    Non-local dot-product mode: q . k / M)."""
    energy = torch.bmm(query[:, i : i + 1], key)[0, 0]  # M
    if isinstance(module, NON_LOCAL) and module.mode == "dot_product":
        return energy / key.shape[-1]
    return torch.softmax(energy, dim=-1)


def feature_cell(point: tuple[int, int], size: tuple[int, int], grid: tuple[int, int]):
    """The feature cell (row, col) of an image pixel (x, y), as the model's align_corners=True
    upsampling maps the grid onto the image."""
    (px, py), (H, W), (h, w) = point, size, grid
    return round(py * (h - 1) / max(H - 1, 1)), round(px * (w - 1) / max(W - 1, 1))


def _hooked_forward(model: nn.Module, img: torch.Tensor, pos, cam) -> dict[str, torch.Tensor]:
    """One forward pass, keeping the position module's input and CAM's output."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    if pos is not None:
        hooks.append(pos.register_forward_hook(lambda m, i, o: seen.__setitem__("pos_in", i[0])))
    if cam is not None:
        hooks.append(cam.register_forward_hook(lambda m, i, o: seen.__setitem__("cam_out", o)))
    model.eval()
    try:
        model(img)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.inference_mode()
def attention_maps(
    model: nn.Module,
    img: torch.Tensor,
    points: list[tuple[int, int]],
    channels: list[int] | None = None,
    log: Callable[[str], None] | None = None,
) -> AttentionMaps:
    """The attention rows of the points and CAM's output for one normalised image
    (1, 3, H, W). Raises DanetError for a point outside the image, or a model whose head
    has neither a position-attention module nor CAM. `log` hears of the forward pass once
    those checks pass (a large model's takes a while)."""
    H, W = img.shape[-2:]
    for px, py in points:
        if not (0 <= px < W and 0 <= py < H):
            raise DanetError(f"--points {px},{py} lies outside the {W}x{H} image")
    pos, cam = _first(model, POSITION), _first(model, (CAM,))
    if pos is None and cam is None:
        raise DanetError(refusal(model))
    if log:
        log(f"attention maps of the {W}x{H} image (one forward pass)")
    seen = _hooked_forward(model, img, pos, cam)
    maps = AttentionMaps()
    if pos is not None:
        x = seen["pos_in"]
        maps.module, maps.grid = TITLE[type(pos)], tuple(x.shape[-2:])
        maps.key_stride = 2 if isinstance(pos, SAGAN) and pos.pool else 1
        query, key, key_grid = query_key(pos, x)
        for point in points:
            fy, fx = feature_cell(point, (H, W), maps.grid)
            row = attention_row(pos, query, key, fy * maps.grid[1] + fx)
            maps.rows[point] = row.view(key_grid).float()
    cam_out = seen.get("cam_out")
    if cam_out is not None:
        maps.cam_out = cam_out[0].float()
        strongest = maps.cam_out.mean((1, 2)).topk(min(6, cam_out.shape[1])).indices
        maps.channels = channels or strongest.tolist()
    return maps


def _show(img: torch.Tensor) -> np.ndarray:
    rgb = img[0].permute(1, 2, 0).cpu().numpy() * STD + MEAN
    return np.clip(rgb, 0, 1)


def _up(m: torch.Tensor, size) -> np.ndarray:
    return torch.nn.functional.interpolate(
        m[None, None], size=size, mode="bilinear", align_corners=True
    )[0, 0].numpy()


def on_image(row: torch.Tensor, maps: AttentionMaps, size) -> np.ndarray:
    """A key-grid row as an image-sized map: each pooled key's weight spread over the window
    it pools (SAGAN), then upsampled as the model upsamples its features."""
    s = maps.key_stride
    cells = row.repeat_interleave(s, 0).repeat_interleave(s, 1)[: maps.grid[0], : maps.grid[1]]
    return _up(cells, size)


def point_figure(rgb: np.ndarray, weights: np.ndarray, point: tuple[int, int], title: str):
    """The attention of one query over the image, a colour bar, and the query marked."""
    px, py = point
    fig, ax = plt.subplots(figsize=(4.2, 4.2 * rgb.shape[0] / rgb.shape[1]), layout="constrained")
    ax.imshow(rgb)
    im = ax.imshow(weights, cmap="jet", alpha=0.5)
    # a white-edged black cross: visible on every colour of the map
    ax.plot([px], [py], marker="X", ms=11, mfc="black", mec="white", mew=1.5, ls="", gid="query")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    # from a mappable of its own: the overlay's alpha would wash out the bar's colours
    bar = matplotlib.cm.ScalarMappable(norm=im.norm, cmap=im.cmap)
    fig.colorbar(bar, ax=ax, shrink=0.85, label="attention weight")
    return fig


def channel_figure(rgb: np.ndarray, cam_out: torch.Tensor, channels: list[int]):
    """The image and CAM's output channels on one shared colour scale."""
    size = rgb.shape[:2]
    ups = [_up(cam_out[c], size) for c in channels]
    lo, hi = min(float(u.min()) for u in ups), max(float(u.max()) for u in ups)
    fig, axes = plt.subplots(
        1, len(channels) + 1, figsize=(2.2 * (len(channels) + 1) + 0.8, 2.4), layout="constrained"
    )
    axes[0].imshow(rgb)
    axes[0].set_title("image", fontsize=9)
    for ax, c, u in zip(axes[1:], channels, ups):
        im = ax.imshow(u, cmap="jet", vmin=lo, vmax=hi)
        ax.set_title(f"CAM channel {c}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.85, label="CAM output (activation)")
    return fig


def _title(maps: AttentionMaps, point: tuple[int, int]) -> str:
    keys = f"{maps.grid[0]}x{maps.grid[1]} positions"
    if maps.key_stride > 1:
        hk = -(-maps.grid[0] // maps.key_stride)
        wk = -(-maps.grid[1] // maps.key_stride)
        keys = f"{hk}x{wk} 2x2-pooled keys"
    return f"{maps.module} attention of the query {point}, marked ×\nover {keys}"


def draw(img: torch.Tensor, maps: AttentionMaps, out: Path, progress: bool = False) -> list[Path]:
    """The PNGs: <module>_point_X_Y.png per point and cam_channels.png. `progress`: a bar of
    the PNGs written on stderr (each takes about a second at DPI 200)."""
    from danet.utils import progress_bar

    out.mkdir(parents=True, exist_ok=True)
    rgb, size = _show(img), img.shape[-2:]
    prefix = {"PAM": "pam", "SAGAN": "sagan", "Non-local": "nonlocal"}
    # each figure is made when it is drawn: one open figure at a time, however many points
    figures: dict[str, Callable[[], Any]] = {}
    for (px, py), row in maps.rows.items():
        weights, title = on_image(row, maps, size), _title(maps, (px, py))
        name = f"{prefix[maps.module]}_point_{px}_{py}.png"
        figures[name] = partial(point_figure, rgb, weights, (px, py), title)
    if maps.cam_out is not None:
        figures["cam_channels.png"] = partial(channel_figure, rgb, maps.cam_out, maps.channels)
    written = []
    with progress_bar(len(figures), "drawing", progress, unit="png") as bar:
        for name, make in figures.items():
            fig = make()
            fig.savefig(out / name, dpi=DPI, bbox_inches="tight")
            plt.close(fig)
            written.append(out / name)
            bar.update()
    return written


def load_image(spec: str, cfg) -> torch.Tensor:
    if spec.startswith("val:"):
        index = int(spec[4:])
        val = build_dataset(cfg.data, "val", cfg.seed)
        if not 0 <= index < len(val):
            raise DanetError(f"{spec}: the validation set has {len(val)} images")
        return val[index][0][None]
    try:
        with Image.open(spec) as im:
            rgb = np.array(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DanetError(f"{spec}: unreadable image ({e})") from None
    img, _ = to_tensors(rgb, np.zeros(rgb.shape[:2], np.uint8))
    return normalize(img)[None]


def _point(text: str) -> tuple[int, int]:
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not x,y (pixels, e.g. 120,64)") from None
    return x, y


def parser() -> argparse.ArgumentParser:
    p = command_parser("danet visualize", __doc__)
    p.add_argument("target", help="run folder or checkpoint")
    p.add_argument("image", help="an image file, or val:N")
    p.add_argument(
        "--points", nargs="+", type=_point, default=[], metavar="X,Y",
        help="query points in image pixels (x from the left, y from the top)",
    )
    p.add_argument("--channels", nargs="+", type=int, help="CAM channels (default: strongest 6)")
    p.add_argument("--out", help="folder for the PNGs (default: reports/visualize/<run>)")
    p.add_argument("--config", help="YAML config for a weights file outside a run folder")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys (data.root=...)")
    return p


def main(argv: list[str] | None = None) -> int:
    from danet.engine.eval_saved import load_saved

    args = parser().parse_args(argv)
    target = Path(args.target)
    cfg, model, _, _ = load_saved(target, args.config, args.overrides)
    img = load_image(args.image, cfg)
    asked = bool(args.points)
    if not asked:  # the image centre, so a bare call still shows the position attention
        args.points = [(img.shape[-1] // 2, img.shape[-2] // 2)]
    maps = attention_maps(model, img, args.points, args.channels, log=say)
    if asked and not maps.rows:
        say(f"{refusal(model)}; --points ignored")
    name = target.name if target.is_dir() else target.stem
    out = Path(args.out) if args.out else Path("reports") / "visualize" / name
    for path in draw(img, maps, out, progress=True):
        print(path)
    return 0


def say(message: str) -> None:
    """A step of `danet visualize` on stderr (a large model's forward pass takes a while)."""
    print(f"danet visualize: {message}", file=sys.stderr, flush=True)
