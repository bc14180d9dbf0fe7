"""The paper's attention figure for a saved model: `danet visualize RUN IMAGE --points x,y ...`.

For each point, PAM's attention row (softmax over all positions, DANet's position attention)
drawn over the image; and the channel maps that CAM outputs (its "enhanced" channels, the
strongest by mean activation unless --channels names them). IMAGE is an image file, or
`val:N` for image N of the run's validation set (the built-in dataset has no files).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from danet.data import build_dataset  # noqa: E402
from danet.data.transforms import normalize, to_tensors  # noqa: E402
from danet.errors import DanetError  # noqa: E402
from variants.danet import CAM, PAM  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _find(model, cls):
    """The head's first module of class cls (PAM or CAM), in the order sa, sc."""
    for name in ("sa", "sc"):
        module = getattr(model.head, name, None)
        if isinstance(module, cls):
            return module
    return None


@torch.inference_mode()
def attention_maps(
    model, img: torch.Tensor, points: list[tuple[int, int]], channels: list[int] | None = None
):
    """({point: PAM attention over the feature grid (h, w), sums to 1}, CAM output (C, h, w)
    or None, the channels chosen). img is one normalised image (1, 3, H, W)."""
    pam, cam = _find(model, PAM), _find(model, CAM)
    H, W = img.shape[-2:]
    for px, py in points:
        if not (0 <= px < W and 0 <= py < H):
            raise DanetError(f"--points {px},{py} lies outside the {W}x{H} image")
    if pam is None and cam is None:
        raise DanetError(
            "the model has neither PAM nor CAM in its head; visualize a pam, cam or danet run"
        )
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    if pam is not None:
        hooks.append(pam.register_forward_hook(lambda m, i, o: seen.__setitem__("pam_in", i[0])))
    if cam is not None:
        hooks.append(cam.register_forward_hook(lambda m, i, o: seen.__setitem__("cam_out", o)))
    model.eval()
    try:
        model(img)
    finally:
        for h in hooks:
            h.remove()
    maps = {}
    if pam is not None:
        x = seen["pam_in"]
        h, w = x.shape[-2:]
        q, k = pam.query_conv(x).flatten(2)[0], pam.key_conv(x).flatten(2)[0]  # (C/8, N)
        for px, py in points:
            # pixel -> feature cell, as the model's align_corners=True upsampling maps them
            fy, fx = round(py * (h - 1) / max(H - 1, 1)), round(px * (w - 1) / max(W - 1, 1))
            row = torch.softmax(q[:, fy * w + fx] @ k, dim=0)  # DANet: no 1/sqrt(d) scaling
            maps[(px, py)] = row.view(h, w).float()
    cam_out = seen.get("cam_out")
    if cam_out is not None and channels is None:
        channels = cam_out[0].mean((1, 2)).topk(min(6, cam_out.shape[1])).indices.tolist()
    return maps, (cam_out[0].float() if cam_out is not None else None), channels


def _show(img: torch.Tensor) -> np.ndarray:
    rgb = img[0].permute(1, 2, 0).cpu().numpy() * STD + MEAN
    return np.clip(rgb, 0, 1)


def _up(m: torch.Tensor, size) -> np.ndarray:
    return torch.nn.functional.interpolate(
        m[None, None], size=size, mode="bilinear", align_corners=True
    )[0, 0].numpy()


def draw(img, maps, cam_out, channels, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rgb, size = _show(img), img.shape[-2:]
    written = []
    for (px, py), m in maps.items():
        fig, ax = plt.subplots(figsize=(5, 5 * size[0] / size[1]))
        ax.imshow(rgb)
        ax.imshow(_up(m, size), cmap="jet", alpha=0.5)
        ax.plot([px], [py], marker="x", color="white", markersize=12, mew=3)
        ax.set_title(f"PAM attention of point ({px}, {py})")
        ax.axis("off")
        path = out / f"pam_point_{px}_{py}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    if cam_out is not None:
        fig, axes = plt.subplots(1, len(channels) + 1, figsize=(3 * (len(channels) + 1), 3))
        axes[0].imshow(rgb)
        axes[0].set_title("image")
        for ax, c in zip(axes[1:], channels):
            ax.imshow(_up(cam_out[c], size), cmap="jet")
            ax.set_title(f"CAM channel {c}")
        for ax in axes:
            ax.axis("off")
        path = out / "cam_channels.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
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
    p = argparse.ArgumentParser(prog="danet visualize", description=__doc__.splitlines()[0])
    p.add_argument("target", help="run folder or checkpoint")
    p.add_argument("image", help="an image file, or val:N")
    p.add_argument("--points", nargs="+", type=_point, default=[], metavar="X,Y")
    p.add_argument("--channels", nargs="+", type=int, help="CAM channels (default: strongest 6)")
    p.add_argument("--out", help="folder for the PNGs (default: reports/visualize/<run>)")
    p.add_argument("--config", help="YAML config for a weights file outside a run folder")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    from danet.engine.eval_saved import load_saved

    args = parser().parse_args(argv)
    target = Path(args.target)
    cfg, model, _, _ = load_saved(target, args.config, args.overrides)
    img = load_image(args.image, cfg)
    if not args.points:  # the image centre, so a bare call still shows PAM
        args.points = [(img.shape[-1] // 2, img.shape[-2] // 2)]
    maps, cam_out, channels = attention_maps(model, img, args.points, args.channels)
    name = target.name if target.is_dir() else target.stem
    out = Path(args.out) if args.out else Path("reports") / "visualize" / name
    for path in draw(img, maps, cam_out, channels, out):
        print(path)
    return 0
