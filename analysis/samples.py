"""A picture of the built-in dataset: images and label maps of both settings.

.venv/bin/python -m analysis.samples analysis/figures/samples.png
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from danet.data import synthetic  # noqa: E402
from danet.utils import atomic_write_bytes  # noqa: E402

# label colours: background black, the two members of each pair in two shades of one colour
PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[:8] = [
    (0, 0, 0),
    (220, 220, 220),
    (120, 120, 120),
    (255, 200, 0),
    (170, 90, 0),
    (255, 90, 40),
    (40, 90, 255),
    (60, 200, 60),
]
PALETTE[synthetic.IGNORE] = (255, 255, 255)


def samples_figure(path: Path, n: int = 4) -> None:
    rows = []
    for setting in synthetic.SETTINGS:
        pairs = [synthetic.generate(i, "val", setting) for i in range(n)]
        images = np.concatenate([img for img, _ in pairs], axis=1)
        labels = np.concatenate([PALETTE[lab] for _, lab in pairs], axis=1)
        rows.append(np.concatenate([images, labels], axis=1))
    grid = np.concatenate(rows, axis=0)
    fig, ax = plt.subplots(figsize=(grid.shape[1] / 100, grid.shape[0] / 100), dpi=100)
    ax.imshow(grid, interpolation="nearest")
    ax.axis("off")
    fig.subplots_adjust(0, 0, 1, 1)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    samples_figure(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/samples.png"))
